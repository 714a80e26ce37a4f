"""Softmax and log-softmax along one axis."""

from __future__ import annotations

from typing import Any, NamedTuple

from scratchlm.backend import get_array_module
from scratchlm.functional._checks import check_float

Array = Any


def _check_axis(op, x, axis):
    if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis must be an int in [{-x.ndim}, {x.ndim}) for x of "
                         f"shape {tuple(x.shape)}; got {axis!r}")


class SoftmaxCache(NamedTuple):
    probs: Array   # (...) the softmax output, all the backward needs
    axis: int


def softmax_forward(x, axis=-1):
    """Softmax along ``axis``.

    Math:  probs_i = exp(x_i - m) / sum_j exp(x_j - m),  m = max_j x_j
    Subtracting the row maximum changes nothing mathematically and keeps
    exp() from overflowing: every exponent is <= 0.
    Shapes: x (...) -> probs (...)
    Returns: probs, SoftmaxCache
    """
    op = "softmax_forward"
    check_float(op, "x", x, min_ndim=1)
    _check_axis(op, x, axis)
    xp = get_array_module(x)
    probs = x - x.max(axis=axis, keepdims=True)         # (1) shift by the row max
    xp.exp(probs, out=probs)                            # (2) e = exp(x - m)
    probs /= probs.sum(axis=axis, keepdims=True)        # (3) normalise
    return probs, SoftmaxCache(probs, axis)


def softmax_backward(dout, cache):
    """Gradient of softmax_forward.

    Math:  the Jacobian is d probs_i / d x_j = probs_i (delta_ij - probs_j), so
           dx = probs * (dout - sum_j dout_j probs_j)
    Returns: dx (...)
    """
    probs, axis = cache
    dx = dout * probs
    dx -= probs * dx.sum(axis=axis, keepdims=True)
    return dx


class LogSoftmaxCache(NamedTuple):
    probs: Array   # (...) exp(out), the softmax
    axis: int


def log_softmax_forward(x, axis=-1):
    """Log of the softmax along ``axis``, computed stably.

    Math:  out_i = x_i - m - log sum_j exp(x_j - m),  m = max_j x_j
    Shapes: x (...) -> out (...)
    Returns: out, LogSoftmaxCache
    """
    op = "log_softmax_forward"
    check_float(op, "x", x, min_ndim=1)
    _check_axis(op, x, axis)
    xp = get_array_module(x)
    out = x - x.max(axis=axis, keepdims=True)           # (1) shift by the row max
    probs = xp.exp(out)                                 # (2) exp(x - m)
    sum_exp = probs.sum(axis=axis, keepdims=True)
    out -= xp.log(sum_exp)                              # (3) subtract log sum exp
    probs /= sum_exp                                    #     softmax, for the backward
    return out, LogSoftmaxCache(probs, axis)


def log_softmax_backward(dout, cache):
    """Gradient of log_softmax_forward.

    Math:  d out_i / d x_j = delta_ij - probs_j, so
           dx = dout - probs * sum_i dout_i
    Returns: dx (...)
    """
    probs, axis = cache
    return dout - probs * dout.sum(axis=axis, keepdims=True)
