"""Layer normalization for the CPU engine: layernorm_forward's steps on blocks of rows,
over the threads."""

from __future__ import annotations

import numpy as np

from scratchlm.backend import get_array_module
from scratchlm.functional.layernorm import (
    LayerNormCache, _check_layernorm, layernorm_backward, layernorm_forward,
)
from scratchlm.kernels.cpu.threads import for_blocks, parallel_for

BLOCK = 1 << 17     # elements per block: its temporaries stay in a core's L2 cache


def _row_means(a, ones, out):
    """out = each row's mean of a (rows, C): a matrix-vector product a @ 1, then / C."""
    np.matmul(a, ones, out=out)
    out /= a.shape[-1]
    return out


def layernorm_forward_fast(x, gamma, beta, eps=1e-5):
    """layernorm_forward on blocks of rows over the CPU threads (tested equal to rounding).

    The steps (1)-(6) of layernorm_forward on each block, written straight
    into the output and the cache (no temporaries); the row sums of (1) and
    (3) are matrix-vector products with a vector of ones (BLAS sums a row in
    another order than NumPy's mean: equal to rounding).
    Shapes, returns and cache as layernorm_forward.
    """
    _check_layernorm("layernorm_forward_fast", x, gamma, beta)
    C = x.shape[-1]
    if get_array_module(x, gamma, beta) is not np or x.size < 2 * BLOCK:
        return layernorm_forward(x, gamma, beta, eps)
    x2 = x.reshape(-1, C)                               # (N, C)
    N = x2.shape[0]
    y, x_hat = np.empty((N, C), dtype=x.dtype), np.empty((N, C), dtype=x.dtype)
    rstd = np.empty((N, 1), dtype=x.dtype)
    rows = max(1, BLOCK // C)
    ones = np.ones((C, 1), dtype=x.dtype)

    def blocks(lo, hi):
        mu = np.empty((rows, 1), dtype=x.dtype)         # this thread's scratch
        for a, b in for_blocks(lo, hi, rows):
            xh, yb, r, m = x_hat[a:b], y[a:b], rstd[a:b], mu[:b - a]
            _row_means(x2[a:b], ones, m)                # (1)
            np.subtract(x2[a:b], m, out=xh)             # (2) centred
            np.multiply(xh, xh, out=yb)                 #     (y's block as scratch)
            _row_means(yb, ones, r)                     # (3) var
            r += eps                                    # (4) rstd = 1 / sqrt(var + eps)
            np.sqrt(r, out=r)
            np.reciprocal(r, out=r)
            xh *= r                                     # (5)
            np.multiply(xh, gamma, out=yb)              # (6) y = gamma * x_hat + beta
            yb += beta

    parallel_for(N, blocks, rows)
    return y.reshape(x.shape), LayerNormCache(x_hat.reshape(x.shape),
                                              rstd.reshape(*x.shape[:-1], 1), gamma)


def layernorm_backward_fast(dout, cache):
    """layernorm_backward on blocks of rows over the CPU threads (tested equal to rounding).

    dx by the plain op's closed form, block by block in place, the row means
    as matrix-vector products; dgamma and dbeta add the blocks' column sums
    (the same sums, grouped differently).
    """
    x_hat, rstd, gamma = cache
    C = x_hat.shape[-1]
    if get_array_module(dout, x_hat) is not np or x_hat.size < 2 * BLOCK:
        return layernorm_backward(dout, cache)
    x_hat2, rstd2 = x_hat.reshape(-1, C), rstd.reshape(-1, 1)
    dout2 = dout.reshape(-1, C)
    N = x_hat2.shape[0]
    dx = np.empty((N, C), dtype=np.result_type(dout, x_hat))
    rows = max(1, BLOCK // C)
    ones = np.ones((C, 1), dtype=dx.dtype)
    partial = {}                                        # block start -> (dgamma, dbeta)

    def blocks(lo, hi):
        tmp = np.empty((rows, C), dtype=dx.dtype)       # this thread's scratch
        mean_g, mean_gx = np.empty((rows, 1), dtype=dx.dtype), np.empty((rows, 1), dx.dtype)
        for a, b in for_blocks(lo, hi, rows):
            n = b - a
            d, xh, g, t = dout2[a:b], x_hat2[a:b], dx[a:b], tmp[:n]
            dbeta = d.sum(axis=0)                       # back through (6), + beta
            np.multiply(d, xh, out=t)
            dgamma = t.sum(axis=0)                      # back through (6), * gamma
            partial[a] = (dgamma, dbeta)
            np.multiply(d, gamma, out=g)                # dx_hat
            _row_means(g, ones, mean_g[:n])
            np.multiply(g, xh, out=t)
            _row_means(t, ones, mean_gx[:n])
            g -= mean_g[:n]                             # back through (5)-(1)
            np.multiply(xh, mean_gx[:n], out=t)
            g -= t
            g *= rstd2[a:b]

    parallel_for(N, blocks, rows)
    sums = [partial[a] for a in sorted(partial)]
    dgamma = sums[0][0].copy()
    dbeta = sums[0][1].copy()
    for dg, db in sums[1:]:
        dgamma += dg
        dbeta += db
    return dx.reshape(x_hat.shape), dgamma, dbeta
