"""The linear layer for the CPU engine: products through ``blas.matmul``, the bias over
the threads."""

from __future__ import annotations

from scratchlm.backend import get_array_module
from scratchlm.functional.linear import LinearCache, _check_linear
from scratchlm.kernels.cpu.blas import matmul
from scratchlm.kernels.cpu.threads import parallel_for

ROWS_PER_THREAD = 64      # fewer rows than this per thread: not worth a thread


def linear_forward_fast(x, W, b=None):
    """linear_forward for the CPU threads (same math, tested equal).

    The product is ``blas.matmul``: with MKL installed, blocks of rows
    over the threads, one single-threaded MKL call each; otherwise one
    NumPy call on the BLAS's own threads (one large product keeps both
    cores busier than two half products from threads of ours). The bias is
    added over the fast path's threads. Shapes and returns as linear_forward.
    """
    _check_linear("linear_forward_fast", x, W, b)
    xp = get_array_module(x, W)
    C_in, C_out = W.shape
    x2 = x.reshape(-1, C_in)                            # (N, C_in)
    N = x2.shape[0]
    y = xp.empty((N, C_out), dtype=x.dtype)

    def bias_rows(lo, hi):
        y[lo:hi] += b                                   # (2)

    matmul(x2, W, out=y)                                # (1)
    if b is not None:
        parallel_for(N, bias_rows, ROWS_PER_THREAD)
    return y.reshape(*x.shape[:-1], C_out), LinearCache(x, W, b is not None)


def linear_backward_fast(dout, cache, need_dW=True, need_db=True):
    """linear_backward for the CPU threads (same math, tested equal).

    dx = dY W^T and dW = X^T dY are ``blas.matmul`` (the transposes are
    views: the BLAS reads them in place), and NumPy's column sums for
    db = sum_rows dY are one vectorised pass over dY (faster here than
    splitting the columns over threads, or a ones-vector product through
    BLAS). Shapes and returns as linear_backward.
    """
    x, W, has_bias = cache
    C_in, C_out = W.shape
    dout2 = dout.reshape(-1, C_out)                     # (N, C_out)
    db = dout2.sum(axis=0) if has_bias and need_db else None   # back through (2)
    dx = matmul(dout2, W.T)                             # back through (1): x
    dW = matmul(x.reshape(-1, C_in).T, dout2) if need_dW else None   # back through (1): W
    return dx.reshape(x.shape), dW, db
