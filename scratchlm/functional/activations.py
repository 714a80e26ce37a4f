"""Element-wise activations: GELU (tanh and exact erf forms), SiLU (swish), ReLU, tanh."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from scratchlm.backend import erf, get_array_module
from scratchlm.functional._checks import check_float

Array = Any

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)   # the tanh form's scale
INV_SQRT_2 = 1.0 / math.sqrt(2.0)           # erf(x / sqrt 2) is the normal CDF
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # the normal density's constant
GELU_CUBIC = 0.044715                       # the tanh form's cubic coefficient


# Activation names as transformers spells them -> the GELU form, or silu/relu/tanh.
ACTIVATIONS = {
    "gelu": "gelu_erf", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh", "relu": "relu", "tanh": "tanh",
    "swish": "silu", "silu": "silu",                # Marian's "swish" is SiLU
}


class GeluCache(NamedTuple):
    x: Array            # (...) the input; the backward recomputes Phi(x) or tanh(u) from it
    approximate: str    # "tanh" (GPT-2) or "none" (exact, BERT)


def gelu_forward(x, approximate="none"):
    """Gaussian error linear unit, y = x * Phi(x), exact or in its tanh form.

    Math:
        "none" (exact, BERT):  Phi = (1 + erf(x / sqrt 2)) / 2,         (1)
                               y   = x Phi                              (2)
        "tanh" (GPT-2):        u = sqrt(2/pi) (x + 0.044715 x^3),       (1)
                               t = tanh(u),                             (2)
                               y = x (1 + t) / 2                        (3)
    Shapes: x (...) -> y (...)
    Returns: y, GeluCache (only x: the backward recomputes the rest)
    """
    op = "gelu_forward"
    check_float(op, "x", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh'; got {approximate!r}")
    xp = get_array_module(x)
    if approximate == "tanh":
        u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)   # (1) x*x*x: x**3 is slow in float32
        t = xp.tanh(u)                                      # (2)
        y = 0.5 * x * (1.0 + t)                             # (3)
    else:
        Phi = 0.5 * (1.0 + erf(x * INV_SQRT_2))             # (1) the normal CDF
        y = x * Phi                                         # (2)
    return y, GeluCache(x, approximate)


def gelu_backward(dout, cache):
    """Gradient of gelu_forward.

    Math:
        "none":  dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        "tanh":  dy/dx = (1 + t) / 2 + x / 2 * (1 - t^2) * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    Phi(x), or u and t, are recomputed from x (one array cached instead of two).
    Returns: dx (...)
    """
    x, approximate = cache
    xp = get_array_module(x)
    if approximate == "tanh":
        t = xp.tanh(SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x))   # (1)-(2) recomputed
        du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x)     # back through (1)
        dt_du = 1.0 - t * t                                          # back through (2)
        dy_dx = 0.5 * (1.0 + t) + 0.5 * x * dt_du * du_dx            # back through (3):
    else:                                                            # both operands
        Phi = 0.5 * (1.0 + erf(x * INV_SQRT_2))                      # (1) recomputed
        phi = INV_SQRT_2PI * xp.exp(-0.5 * x * x)                    # dPhi/dx, the density
        dy_dx = Phi + x * phi                                        # back through (2), (1)
    return dout * dy_dx


class SiluCache(NamedTuple):
    x: Array            # (...) the input
    sig: Array          # (...) sigma(x), reused by the backward


def silu_forward(x):
    """Sigmoid linear unit (swish with beta = 1), Marian's default activation.

    Math:  s = sigma(x) = 1 / (1 + exp(-x))      (1)
           y = x * s                              (2)
    sigma is computed as 0.5 * (1 + tanh(x / 2)), which equals it exactly in
    real numbers and never overflows exp() for large |x|.
    Shapes: x (...) -> y (...)
    Returns: y, SiluCache
    """
    check_float("silu_forward", "x", x)
    xp = get_array_module(x)
    s = 0.5 * (1.0 + xp.tanh(0.5 * x))                  # (1)
    return x * s, SiluCache(x, s)                       # (2)


def silu_backward(dout, cache):
    """Gradient of silu_forward.

    Math: dy/dx = s + x * s (1 - s)          product rule on (2), with s' = s (1 - s)
                = s (1 + x (1 - s))
    """
    x, s = cache
    return dout * (s * (1.0 + x * (1.0 - s)))           # back through (2), (1)


class ReluCache(NamedTuple):
    positive: Array     # (...) bool, x > 0


def relu_forward(x):
    """Rectified linear unit.

    Math:  y = max(x, 0)
    Shapes: x (...) -> y (...)
    Returns: y, ReluCache
    """
    check_float("relu_forward", "x", x)
    y = get_array_module(x).maximum(x, 0.0)             # (1)
    return y, ReluCache(x > 0)


def relu_backward(dout, cache):
    """Gradient of relu_forward: dx = dout where x > 0, else 0 (0 at the kink)."""
    return dout * cache.positive                        # back through (1)


class TanhCache(NamedTuple):
    y: Array            # (...) tanh(x), all the backward needs


def tanh_forward(x):
    """Hyperbolic tangent.

    Math:  y = tanh(x)
    Shapes: x (...) -> y (...)
    Returns: y, TanhCache
    """
    check_float("tanh_forward", "x", x)
    y = get_array_module(x).tanh(x)
    return y, TanhCache(y)


def tanh_backward(dout, cache):
    """Gradient of tanh_forward: dx = dout * (1 - y^2)."""
    y = cache.y
    dx = 1.0 - y * y                                    # dy/dx = 1 - tanh(x)^2
    dx *= dout
    return dx
