"""Inverted dropout: zero each element with probability p, scale the rest."""

from __future__ import annotations

from typing import Any, NamedTuple

from scratchlm.backend import get_array_module, is_cupy_array
from scratchlm.functional._checks import check_float, check_probability

Array = Any


class DropoutCache(NamedTuple):
    keep: Array | None   # (...) bool mask of kept elements; None when dropout is off
    scale: float         # 1 / (1 - p)


def _generator(op, rng, x):
    """A random Generator on x's backend, from a Generator or an int seed."""
    xp = get_array_module(x)
    if rng is None:
        raise ValueError(f"{op}: p > 0 needs rng= (a random Generator, or an int seed) "
                         "so that the mask can be reproduced")
    if isinstance(rng, int) and not isinstance(rng, bool):
        return xp.random.default_rng(rng)
    if not hasattr(rng, "random"):
        raise TypeError(f"{op}: rng must be a random Generator or an int seed; "
                        f"got {type(rng).__name__}")
    rng_on_gpu = type(rng).__module__.split(".")[0] == "cupy"
    if rng_on_gpu != is_cupy_array(x):
        raise TypeError(f"{op}: rng is a {'cupy' if rng_on_gpu else 'numpy'} Generator but "
                        f"x is a {'cupy' if is_cupy_array(x) else 'numpy'} array; "
                        "use a Generator of x's backend")
    return rng


def dropout_forward(x, p, rng=None, training=True):
    """Randomly zero elements of x with probability p (inverted dropout).

    Math:  keep_i ~ Bernoulli(1 - p),  y_i = x_i * keep_i / (1 - p)
    Scaling by 1/(1 - p) in training keeps E[y] = x, so evaluation is the
    identity. With p = 0 or training=False the op is the identity.
    Shapes: x (...) -> y (...)
    Args: rng: a random Generator of x's backend, or an int seed.
    Returns: y, DropoutCache
    """
    op = "dropout_forward"
    check_float(op, "x", x)
    p = check_probability(op, "p", p)
    if p == 0.0 or not training:
        return x, DropoutCache(None, 1.0)
    rng = _generator(op, rng, x)
    keep = rng.random(x.shape, dtype=x.dtype) >= p      # (1) P(keep) = 1 - p
    scale = 1.0 / (1.0 - p)
    y = x * keep                                        # (2)
    y *= scale                                          # (3)
    return y, DropoutCache(keep, scale)


def dropout_backward(dout, cache):
    """Gradient of dropout_forward: dx = dout * keep / (1 - p) (dout when off)."""
    keep, scale = cache
    if keep is None:
        return dout
    dx = dout * keep                                    # back through (2)
    dx *= scale                                         # back through (3)
    return dx
