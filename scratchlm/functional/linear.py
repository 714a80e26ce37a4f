"""Linear (affine) map: y = x @ W + b, with W stored (C_in, C_out)."""

from __future__ import annotations

from typing import Any, NamedTuple

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
