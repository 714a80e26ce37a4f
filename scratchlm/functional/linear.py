"""Linear (affine) map: y = x @ W + b, with W stored (C_in, C_out)."""

from __future__ import annotations

from typing import Any, NamedTuple

from scratchlm.backend import get_array_module, matmul, parallel_for
from scratchlm.functional._checks import check_float, check_same_dtype, check_shape

Array = Any


class LinearCache(NamedTuple):
    x: Array         # (..., C_in) the input, needed for dW
    W: Array         # (C_in, C_out) the weight, needed for dx
    has_bias: bool   # whether db is returned


def linear_forward(x, W, b=None):
    """Affine map of the last axis of x.

    Math:  y = x W + b,   y_j = sum_i x_i W_ij + b_j
    Shapes: x (..., C_in), W (C_in, C_out), b (C_out,) or None -> y (..., C_out)
    Returns: y, LinearCache
    """
    _check_linear("linear_forward", x, W, b)
    C_in, C_out = W.shape
    y = x.reshape(-1, C_in) @ W                         # (1) (N, C_out): one matrix product,
    if b is not None:                                   #     not one per leading index
        y += b                                          # (2) in place: y is ours
    return y.reshape(*x.shape[:-1], C_out), LinearCache(x, W, b is not None)


def _check_linear(op, x, W, b):
    check_float(op, "x", x, min_ndim=1)
    check_float(op, "W", W, ndim=2)
    if W.shape[0] != x.shape[-1]:
        raise ValueError(f"{op}: W must have shape ({x.shape[-1]}, C_out) to match "
                         f"x (..., {x.shape[-1]}); got {tuple(W.shape)} "
                         "(weights are stored (C_in, C_out): transposed?)")
    if b is not None:
        check_float(op, "b", b)
        check_shape(op, "b", b, (W.shape[1],), " to match W (C_in, C_out)")
    check_same_dtype(op, x=x, W=W, b=b)


def linear_backward(dout, cache, need_dW=True, need_db=True):
    """Gradients of linear_forward.

    With X the input flattened to (N, C_in) and dY the upstream (N, C_out):
        dx = dY W^T          (back through (1), the x operand)
        dW = X^T dY          (back through (1), the W operand)
        db = sum_rows dY     (back through (2))
    need_dW=False / need_db=False skip dW / db (a frozen weight or bias):
    dW = X^T dY costs as much as dx, so a frozen layer halves its backward.
    Returns: dx (..., C_in), dW (C_in, C_out) or None, db (C_out,) or None
    """
    x, W, has_bias = cache
    C_in, C_out = W.shape
    dout2 = dout.reshape(-1, C_out)                     # (N, C_out), a view
    db = dout2.sum(axis=0) if has_bias and need_db else None   # back through (2)
    dx = dout2 @ W.T                                    # back through (1): x; W.T is a view
    dW = x.reshape(-1, C_in).T @ dout2 if need_dW else None    # back through (1): W
    return dx.reshape(x.shape), dW, db


# --- the fast CPU variant: the same products; the rest over the threads -------------

ROWS_PER_THREAD = 64      # fewer rows than this per thread: not worth a thread


def linear_forward_fast(x, W, b=None):
    """linear_forward for the CPU threads (same math, tested equal).

    The product is ``backend.matmul``: with MKL installed, blocks of rows
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

    dx = dY W^T and dW = X^T dY are ``backend.matmul`` (the transposes are
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
