"""Embedding lookup: row ids of a table, and the scatter-add that undoes it."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

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


def embedding_backward_fast(dout, cache):
    """embedding_backward by sorting instead of scattering (same sums, same order: equal).

    A stable sort of the ids puts the rows of each id next to each other, in
    their original order; ``add.reduceat`` then sums each run of rows in one
    pass, and each id's sum lands in its row of dW. ``np.add.at`` does the
    same additions one element at a time, many times slower.
    Returns: dW (V, C)
    """
    ids, W_shape, dtype = cache
    if get_array_module(dout) is not np:
        return embedding_backward(dout, cache)
    ids1 = ids.reshape(-1)
    dW = np.zeros(W_shape, dtype=dtype)
    if ids1.size == 0:
        return dW
    order = np.argsort(ids1, kind="stable")
    sorted_ids = ids1[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    rows = dout.reshape(-1, W_shape[1])[order]          # (N, C), grouped by id
    dW[sorted_ids[starts]] = np.add.reduceat(rows, starts, axis=0)
    return dW
