"""Embedding lookup: row ids of a table, and the scatter-add that undoes it."""

from __future__ import annotations

from typing import Any, NamedTuple

from scratchlm.backend import get_array_module, scatter_add
from scratchlm.functional._checks import check_float, check_ids

Array = Any


class EmbeddingCache(NamedTuple):
    ids: Array        # (...) integer ids that were looked up
    W_shape: tuple    # (V, C) shape of the table, for dW
    dtype: Any        # dtype of the table


def embedding_forward(ids, W):
    """Look up one row of W per id.

    Math:  out[..., :] = W[ids[...], :]   (a one-hot row times W)
    Shapes: ids (...) integers in [0, V), W (V, C) -> out (..., C)
    Returns: out, EmbeddingCache
    """
    op = "embedding_forward"
    check_float(op, "W", W, ndim=2)
    check_ids(op, "ids", ids, W.shape[0])
    out = W[ids]                                        # (1) fancy indexing copies
    return out, EmbeddingCache(ids, W.shape, W.dtype)


def embedding_backward(dout, cache):
    """Gradient of embedding_forward with respect to the table.

    Math:  dW[v, :] = sum over positions p with ids[p] == v of dout[p, :]
    An id that appears twice gets both rows added: a scatter-add, never
    ``dW[ids] += dout``, which would keep only one of them.
    Returns: dW (V, C)
    """
    ids, W_shape, dtype = cache
    xp = get_array_module(dout)
    dW = xp.zeros(W_shape, dtype=dtype)
    scatter_add(dW, ids.reshape(-1), dout.reshape(-1, W_shape[1]))  # back through (1)
    return dW
