"""Multi-head scaled dot-product attention, its masks, and the KV cache.

The heads are split off the model width first, C = H * D, so every head
attends independently:

    x (B, T, C) --split_heads--> (B, H, T, D) --attention--> (B, H, T, D)
                --merge_heads--> (B, T, C)

Masks. ``causal=True`` lets query i see keys j <= i only (with a KV cache the
queries are the last Tq of Tk positions, so query i sits at Tk - Tq + i).
``mask`` adds a second, user mask:
  * a boolean (or 0/1 integer) array, True/1 = may attend, broadcastable to
    (B, H, Tq, Tk); a 2-D mask is read as a (B, Tk) key-padding mask, as the
    ``attention_mask`` of Hugging Face models;
  * a floating array, added to the scores as it is (0 to keep, a very
    negative number or -inf to mask).
Masked scores take the dtype's most negative finite value (never a magic
-1e4), so exp() underflows to exactly 0 and the masked key receives no
weight and no gradient. A query row whose keys are all masked gives zeros
and zero gradients, never NaN.

Faster variants (blocked and threaded, or blockwise with an online softmax)
live in the engine, ``scratchlm/kernels/cpu/attention.py``, tested equal.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from scratchlm.backend import get_array_module
from scratchlm.functional._checks import (
    check_float, check_probability, check_same_dtype, check_shape,
)
from scratchlm.functional.dropout import DropoutCache, dropout_backward, dropout_forward
from scratchlm.functional.softmax import SoftmaxCache, softmax_backward, softmax_forward

Array = Any


def split_heads(x, n_head):
    """(B, T, C) -> (B, H, T, D), D = C / H; a strided view, no copy.

    The backward of split_heads is merge_heads, and vice versa.
    """
    check_float("split_heads", "x", x, ndim=3)
    if isinstance(n_head, bool) or not isinstance(n_head, int) or n_head < 1:
        raise ValueError(f"split_heads: n_head must be a positive int; got {n_head!r}")
    B, T, C = x.shape
    if C % n_head:
        raise ValueError(f"split_heads: width C={C} must be divisible by n_head={n_head}")
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, C), C = H * D (one copy, to make rows contiguous)."""
    check_float("merge_heads", "x", x, ndim=4)
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


class AttentionCache(NamedTuple):
    q: Array            # (B, H, Tq, D)
    k: Array            # (B, H, Tk, D)
    v: Array            # (B, H, Tk, D)
    att: Array          # (B, H, Tq, Tk) the attention weights, before dropout
    att_dropped: Array  # (B, H, Tq, Tk) weights after dropout (att itself when off)
    dropout: Any        # DropoutCache of the weights
    softmax: SoftmaxCache  # of the scores (its probs are att where every row sees a key)
    seen: Any           # (B, H, Tq, 1) bool: rows that see some key; None: every row does
    scale: float        # the score scale, 1/sqrt(D) by default
    causal: bool = False    # whether the causal mask was applied


NO_DROPOUT = DropoutCache(None, 1.0)    # the dropout cache of p = 0


def causal_keep(Tq, Tk, xp=np):
    """(Tq, Tk) bool: query i (at position Tk - Tq + i) may see key j <= its position."""
    return xp.tri(Tq, Tk, k=Tk - Tq, dtype=bool)


def _prepare_mask(op, mask, B, H, Tq, Tk, xp):
    """Sort a user mask into a boolean keep-mask or an additive float mask."""
    if mask is None:
        return None, None
    if not hasattr(mask, "dtype"):
        raise TypeError(f"{op}: mask must be an array; got {type(mask).__name__}")
    if mask.ndim == 2:                                  # (B, Tk) key padding
        if tuple(mask.shape) != (B, Tk):
            raise ValueError(f"{op}: a 2-D mask is a key-padding mask of shape (B, Tk) = "
                             f"({B}, {Tk}); got {tuple(mask.shape)}")
        mask = mask[:, None, None, :]                   # (B, 1, 1, Tk)
    try:                                                # to exactly (B, H, Tq, Tk): no extra axes
        fits = np.broadcast_shapes(tuple(mask.shape), (B, H, Tq, Tk)) == (B, H, Tq, Tk)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"(B, H, Tq, Tk) = ({B}, {H}, {Tq}, {Tk})")
    if mask.dtype.kind == "b":
        return mask, None
    if mask.dtype.kind in "iu":
        return mask != 0, None
    if mask.dtype.kind == "f":
        return None, mask
    raise TypeError(f"{op}: mask must be boolean, integer (0/1) or floating; got {mask.dtype}")


def _check_attention(op, q, k, v, causal, dropout_p):
    """Shapes and dtypes of q, k, v; returns B, H, Tq, Tk, D and the checked dropout_p."""
    for name, a in (("q", q), ("k", k), ("v", v)):
        check_float(op, name, a, ndim=4)
    check_same_dtype(op, q=q, k=k, v=v)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    if k.shape[:2] != (B, H) or k.shape[3] != D or v.shape != k.shape:
        raise ValueError(f"{op}: k and v must have shape (B, H, Tk, D) = ({B}, {H}, Tk, {D}) "
                         f"to match q {tuple(q.shape)}; got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if causal and Tk < Tq:
        raise ValueError(f"{op}: causal attention needs at least as many keys as queries; "
                         f"got Tq={Tq}, Tk={Tk}")
    return B, H, Tq, Tk, D, check_probability(op, "dropout_p", dropout_p)


def attention_forward(q, k, v, causal=False, mask=None, dropout_p=0.0, rng=None,
                      scale=None):
    """Scaled dot-product attention over heads, with optional masks and dropout.

    Math (per batch and head):
        scores = q k^T * scale                 (1)  scale = 1/sqrt(D) by default
        scores = masked(scores)                (2)  masked -> most negative value
        att    = softmax(scores) along keys    (3)
        att    = att * seen                    (3b) rows that see no key -> 0
        att_d  = dropout(att, p)               (4)
        out    = att_d v                       (5)
    Shapes: q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, D) -> out (B, H, Tq, D)
    Args: causal: query i attends to keys at positions <= its own;
          mask: see the module docstring; dropout_p, rng: dropout on att.
    Returns: out, AttentionCache
    """
    op = "attention_forward"
    B, H, Tq, Tk, D, dropout_p = _check_attention(op, q, k, v, causal, dropout_p)
    xp = get_array_module(q, k, v, mask)
    keep, additive = _prepare_mask(op, mask, B, H, Tq, Tk, xp)
    if causal:
        tril = causal_keep(Tq, Tk, xp)                  # (Tq, Tk)
        keep = tril if keep is None else keep & tril
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    lowest = xp.finfo(q.dtype).min

    scores = (q @ k.swapaxes(-1, -2)) * scale           # (1) (B, H, Tq, Tk)
    seen = None
    if additive is not None:
        scores = scores + additive                      # (2) additive mask; -inf entries
        visible = ~xp.isneginf(scores)                  #     become the most negative value,
        scores = xp.maximum(scores, lowest)             #     so no row is all -inf
    if keep is not None:                                # (2) masked -> most negative value,
        scores = xp.where(keep, scores, lowest)         #     as in transformers
        visible = keep if additive is None else visible & keep
    if mask is not None:                                # a user mask can hide every key of a row
        seen = visible.any(axis=-1, keepdims=True)      # (B, H, Tq, 1)
    # A row whose kept scores all carry the most negative value from an additive
    # mask (a left-padded query) is uniform over all its keys, as in transformers.
    att, softmax_cache = softmax_forward(scores, axis=-1)   # (3)
    if seen is not None:
        att = att * seen                                # (3b) a row that sees no key: zeros
    att_d, drop_cache = dropout_forward(att, dropout_p, rng)  # (4)
    out = att_d @ v                                     # (5) (B, H, Tq, D)
    return out, AttentionCache(q, k, v, att, att_d, drop_cache, softmax_cache, seen, scale,
                               bool(causal))


def attention_backward(dout, cache, datt=None):
    """Gradients of attention_forward with respect to q, k and v.

    ``datt``: an optional upstream gradient (B, H, Tq, Tk) of the weights
    att_d themselves (the attentions a model returns), from a loss on them;
    it adds to the one that comes back from out.

    Math, undoing the forward steps in reverse:
        (5)  dv = att_d^T dout,   datt_d = dout v^T  (+ datt)
        (4)  datt = dropout_backward(datt_d)
        (3b) datt = datt * seen
        (3)  dscores = softmax_backward(datt) = att * (datt - sum_keys(datt * att))
        (2)  the mask adds (or puts in) constants: dscores passes through as it
             is, as autograd passes it through transformers' additive mask. It
             is 0 wherever att is 0; only a row whose every score is the most
             negative value (a padded query: uniform weights) carries it there
        (1)  dscores *= scale;  dq = dscores k,  dk = dscores^T q
    Returns: dq (B, H, Tq, D), dk (B, H, Tk, D), dv (B, H, Tk, D)
    """
    q, k, v, att, att_d, drop_cache, softmax_cache, seen, scale, _ = cache
    dv = att_d.swapaxes(-1, -2) @ dout                  # back through (5): v
    datt_d = dout @ v.swapaxes(-1, -2)                  # back through (5): att_d
    if datt is not None:
        datt_d = datt_d + datt                          # att_d's second use: gradients add
    datt = dropout_backward(datt_d, drop_cache)         # back through (4)
    if seen is not None:
        datt = datt * seen                              # back through (3b)
    dscores = softmax_backward(datt, softmax_cache)     # back through (3)
    dscores = dscores * scale                           # back through (1): the scale ...
    dq = dscores @ k                                    # ... then the q operand
    dk = dscores.swapaxes(-1, -2) @ q                   # ... and the k operand
    return dq, dk, dv


class KVCache:
    """Keys and values of past positions, for incremental decoding (no gradients).

    Preallocated (B, H, T_max, D) buffers; ``append`` writes the new positions
    and returns views over all positions so far, ready for attention_forward
    with causal=True (the new queries are the last ones).
    """

    def __init__(self, B, H, T_max, D, dtype, xp=np):
        self.k = xp.empty((B, H, T_max, D), dtype=dtype)
        self.v = xp.empty((B, H, T_max, D), dtype=dtype)
        self.length = 0

    def append(self, k, v):
        """Add (B, H, T_new, D) keys and values; return (B, H, T_all, D) views."""
        op = "KVCache.append"
        B, H, T_max, D = self.k.shape
        T_new = check_float(op, "k", k, ndim=4).shape[2]
        check_shape(op, "k", k, (B, H, T_new, D), f" to match the cache ({B}, {H}, T, {D})")
        check_shape(op, "v", check_float(op, "v", v, ndim=4), k.shape, " to match k")
        check_same_dtype(op, cache=self.k, k=k, v=v)
        if self.length + T_new > T_max:
            raise ValueError(f"KVCache.append: {self.length} cached + {T_new} new positions "
                             f"exceed the cache length T_max={T_max}")
        end = self.length + T_new
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, rows):
        """Row i of the cache becomes the old row rows[i] (B,), for beam search: the
        cached keys and values follow the beams a step has chosen."""
        n = self.length
        self.k[:, :, :n] = self.k[rows, :, :n]
        self.v[:, :, :n] = self.v[rows, :, :n]
