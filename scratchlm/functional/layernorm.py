"""Layer normalization over the last axis, with a learned scale and shift."""

from __future__ import annotations

from typing import Any, NamedTuple

from scratchlm.backend import get_array_module
from scratchlm.functional._checks import check_float, check_same_dtype, check_shape

Array = Any


class LayerNormCache(NamedTuple):
    x_hat: Array   # (..., C) normalized input
    rstd: Array    # (..., 1) 1 / sqrt(var + eps)
    gamma: Array   # (C,)


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Normalize each row of x over its last axis, then scale and shift.

    Math (one row x in R^C):
        mu    = (1/C) sum_i x_i
        var   = (1/C) sum_i (x_i - mu)^2          (biased, as PyTorch)
        x_hat = (x - mu) / sqrt(var + eps)
        y     = gamma * x_hat + beta
    Shapes: x (..., C), gamma (C,), beta (C,) -> y (..., C)
    Returns: y, LayerNormCache
    """
    _check_layernorm("layernorm_forward", x, gamma, beta)
    xp = get_array_module(x, gamma, beta)
    mu = x.mean(axis=-1, keepdims=True)                 # (1)
    xc = x - mu                                         # (2) centred
    var = (xc * xc).mean(axis=-1, keepdims=True)        # (3)
    rstd = 1.0 / xp.sqrt(var + eps)                     # (4) eps keeps constant rows finite
    x_hat = xc * rstd                                   # (5)
    y = gamma * x_hat + beta                            # (6)
    return y, LayerNormCache(x_hat, rstd, gamma)


def _check_layernorm(op, x, gamma, beta):
    check_float(op, "x", x, min_ndim=1)
    C = x.shape[-1]
    check_shape(op, "gamma", check_float(op, "gamma", gamma), (C,), f" to match x (..., {C})")
    check_shape(op, "beta", check_float(op, "beta", beta), (C,), f" to match x (..., {C})")
    check_same_dtype(op, x=x, gamma=gamma, beta=beta)


def layernorm_backward(dout, cache):
    """Gradients of layernorm_forward.

    With g = dout * gamma and means taken over the last axis:
        dbeta  = sum over rows of dout
        dgamma = sum over rows of dout * x_hat
        dx     = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
    Steps (1)-(5) collapse into the closed form for dx: differentiating
    x_hat = (x - mu) * rstd through mu and var gives the two mean terms.
    Returns: dx (..., C), dgamma (C,), dbeta (C,)
    """
    x_hat, rstd, gamma = cache
    rows = tuple(range(dout.ndim - 1))                  # every axis but the last
    dbeta = dout.sum(axis=rows)                         # back through (6), + beta
    dgamma = (dout * x_hat).sum(axis=rows)              # back through (6), * gamma
    g = dout * gamma                                    # dx_hat
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)     # back through (5)-(1)
                 - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta
