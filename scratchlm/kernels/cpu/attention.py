"""Attention for the CPU engine: row blocks and head groups over the threads, and a
blockwise variant with an online softmax.

* ``attention_forward_fast`` / ``attention_backward_fast``: the same steps as
  attention_forward, a few heads of one sequence and a block of their query
  rows at a time, so a block's scores stay in the cache; heads shared out
  over the CPU threads; output in merged-heads layout. Same cache, same
  gradients (tested equal).
* ``attention_forward_blockwise`` / ``attention_backward_blockwise``: memory
  O(T) per row instead of O(T^2): keys and values in blocks with an online
  softmax; the cache keeps each row's maximum and sum of exponentials, and
  the backward recomputes the blocks from them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from scratchlm.backend import get_array_module
from scratchlm.functional.attention import (
    NO_DROPOUT, AttentionCache, _check_attention, _prepare_mask, attention_backward,
    attention_forward, causal_keep,
)
from scratchlm.functional.softmax import SoftmaxCache
from scratchlm.kernels.cpu.threads import num_threads, parallel_for

Array = Any

PER_HEAD_FROM = 1 << 12          # fewer scores per head (decoding): the plain batched op
ROW_BLOCK = 64                    # query rows per block: a block's scores stay in the cache
GROUP_SCORES = 1 << 17           # scores per block over a group of heads (512 KiB in float32)


def _row_blocks(Tq, Tk, causal):
    """(i0, i1, kend): query rows [i0, i1) and the keys [0, kend) that any of them may see.

    Causal, query i sits at position Tk - Tq + i and sees keys j <= that, so
    a block of rows needs only the keys up to its last row: the scores to
    the right of kend are masked for every row of the block, their weights
    exactly 0. Skipping them leaves the result unchanged and, at Tq = Tk,
    computes (1 + 1/n) / 2 of the scores with n blocks (5/8 at n = 4).
    Not causal: kend = Tk for every block.
    """
    return [(i0, min(i0 + ROW_BLOCK, Tq), Tk - Tq + min(i0 + ROW_BLOCK, Tq) if causal else Tk)
            for i0 in range(0, Tq, ROW_BLOCK)]


def _head_groups(B, H, Tk):
    """(bs, hs): the units of work, slices of sequences and heads that every NumPy call of
    a block takes together (fewer calls: the threads wait less on each other for Python's
    lock), as many heads as keep a block's scores within GROUP_SCORES; where all the heads
    of a sequence fit, several sequences, leaving at least one unit per thread."""
    per_head = ROW_BLOCK * Tk
    G = max(1, min(H, GROUP_SCORES // per_head))
    nb = 1
    if G == H:
        nb = max(1, min(GROUP_SCORES // (per_head * H), B // max(1, num_threads())))
    return [(slice(b0, min(b0 + nb, B)), slice(h0, min(h0 + G, H)))
            for b0 in range(0, B, nb) for h0 in range(0, H, G)]


def attention_forward_fast(q, k, v, causal=False, mask=None, dropout_p=0.0, rng=None,
                           scale=None):
    """attention_forward in blocks of query rows, groups of heads shared out over the threads.

    The same steps (1)-(5), for a few heads of one sequence at a time and a
    block of their query rows at a time (_row_blocks, _head_groups), so the
    block's scores are in the cache through all the steps; each product is
    single-threaded BLAS over the group. With ``causal``, a block skips the
    keys none of its rows may see: their weights are exactly 0 in the plain
    op, and are written as 0 here. The scale goes on q before the product
    (rows x D numbers, not rows x Tk), and the row sums are one
    matrix-vector product. The output is written in merged-heads layout:
    ``out`` is a (B, H, Tq, D) view of a (B, Tq, H, D) array, so
    merge_heads(out) needs no copy. With a user mask, dropout on the
    weights, or a few scores per head (decoding one token), this is
    attention_forward itself.
    Shapes, returns and cache as attention_forward (tested equal).
    """
    xp = get_array_module(q, k, v, mask)
    if mask is not None or dropout_p != 0.0 or xp is not np \
            or q.shape[2] * k.shape[2] < PER_HEAD_FROM:   # decoding: few scores per head
        return attention_forward(q, k, v, causal, mask, dropout_p, rng, scale)
    B, H, Tq, Tk, D, dropout_p = _check_attention("attention_forward_fast", q, k, v, causal,
                                                  dropout_p)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    hide = ~causal_keep(Tq, Tk) if causal else None     # (Tq, Tk) the future, when causal
    lowest = np.finfo(q.dtype).min
    blocks, units = _row_blocks(Tq, Tk, causal), _head_groups(B, H, Tk)
    att = np.empty((B, H, Tq, Tk), dtype=q.dtype)
    out = np.empty((B, Tq, H, D), dtype=q.dtype).transpose(0, 2, 1, 3)   # (B, H, Tq, D)

    def work(lo, hi):
        nb, G = units[0][0].stop - units[0][0].start, units[0][1].stop - units[0][1].start
        q_scaled = np.empty((nb, G, ROW_BLOCK, D), dtype=q.dtype)   # this thread's scratch
        row_stat = np.empty((nb, G, ROW_BLOCK, 1), dtype=q.dtype)
        ones = np.ones((Tk, 1), dtype=q.dtype)          # row sums as a matrix-vector product
        for bs, hs in units[lo:hi]:
            A, Q, K, V, O = att[bs, hs], q[bs, hs], k[bs, hs], v[bs, hs], out[bs, hs]
            nu, g = A.shape[:2]
            for i0, i1, kend in blocks:
                n = i1 - i0
                s = A[..., i0:i1, :kend]                # (nu, g, n, kend), filled in place
                qs, m = q_scaled[:nu, :g, :n], row_stat[:nu, :g, :n]
                np.multiply(Q[..., i0:i1, :], scale, out=qs)
                np.matmul(qs, K[..., :kend, :].swapaxes(-1, -2), out=s)   # (1)
                if hide is not None:                    # (2b) only a block's last n keys
                    j0 = max(0, kend - n)               #      can be in a row's future
                    np.copyto(s[..., j0:], lowest, where=hide[i0:i1, j0:kend])
                np.max(s, axis=-1, keepdims=True, out=m)           # (3) softmax
                s -= m
                np.exp(s, out=s)
                np.matmul(s, ones[:kend], out=m)
                np.reciprocal(m, out=m)
                s *= m
                A[..., i0:i1, kend:] = 0.0              # the skipped keys' weights
                np.matmul(s, V[..., :kend, :], out=O[..., i0:i1, :])   # (5)

    parallel_for(len(units), work)
    return out, AttentionCache(q, k, v, att, att, NO_DROPOUT, SoftmaxCache(att, -1), None,
                               scale, bool(causal))


def _future_is_zero(att, blocks):
    """Whether every weight to the right of each block's keys is exactly 0.

    True for causal attention, except where an additive mask left a query
    only keys with the most negative score: that row's softmax is then
    uniform over all the keys, future ones included (as in transformers).
    One pass over the scores the check skips; exact for every mask.
    """
    return not any(att[..., i0:i1, kend:].any() for i0, i1, kend in blocks if kend < att.shape[-1])


def attention_backward_fast(dout, cache, out=None, datt=None):
    """attention_backward in row blocks and head groups over the threads (tested equal).

    The scores' gradient and dq go by blocks of query rows, as the forward.
    Causal, where every weight past a block's keys is 0 (``_future_is_zero``),
    each block's products skip those keys, and dk, dv go by blocks of keys,
    each from the rows that may see it; otherwise every block takes every
    key. ``out``: optional (dq, dk, dv) arrays (or views, such as the head
    views of a fused (B, T, 3C) gradient) to write into. With dropout on the
    weights, or an upstream gradient ``datt`` of the weights themselves,
    this is attention_backward. The weights used are ``att_dropped``
    (= att with no dropout): rows that see no key are zeros there, so their
    gradients are zeros, as attention_backward's.
    Returns: dq, dk, dv
    """
    q, k, v, att = cache.q, cache.k, cache.v, cache.att_dropped
    scale = cache.scale
    if cache.dropout.keep is not None or datt is not None or get_array_module(dout) is not np:
        grads = attention_backward(dout, cache, datt)
        if out is None:
            return grads
        for o, g in zip(out, grads):
            o[...] = g
        return out
    causal = cache.causal and _future_is_zero(att, _row_blocks(q.shape[2], k.shape[2], True))
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    dq, dk, dv = out if out is not None else (np.empty_like(q), np.empty_like(k),
                                              np.empty_like(v))
    blocks, units = _row_blocks(Tq, Tk, causal), _head_groups(B, H, Tk)
    first_key = blocks[0][2] - blocks[0][1] if causal else Tk   # keys every row may see

    def work(lo, hi):
        nb, G = units[0][0].stop - units[0][0].start, units[0][1].stop - units[0][1].start
        dscores = np.empty((nb, G, Tq, Tk), dtype=q.dtype)   # this thread's scratch
        tmp = np.empty((nb, G, ROW_BLOCK, Tk), dtype=q.dtype)
        row_dot = np.empty((nb, G, ROW_BLOCK, 1), dtype=q.dtype)
        ones = np.ones((Tk, 1), dtype=q.dtype)
        for bs, hs in units[lo:hi]:
            A, Q, K, V, dO = att[bs, hs], q[bs, hs], k[bs, hs], v[bs, hs], dout[bs, hs]
            dQ, dK, dV = dq[bs, hs], dk[bs, hs], dv[bs, hs]
            nu, g = A.shape[:2]
            dS = dscores[:nu, :g]
            for i0, i1, kend in blocks:                 # rows: the scores' gradient, dq
                n = i1 - i0
                ds, ab = dS[..., i0:i1, :kend], A[..., i0:i1, :kend]
                t, r = tmp[:nu, :g, :n, :kend], row_dot[:nu, :g, :n]
                np.matmul(dO[..., i0:i1, :], V[..., :kend, :].swapaxes(-1, -2), out=ds)  # (5)
                ds *= ab                                # back through (3)
                np.matmul(ds, ones[:kend], out=r)
                np.multiply(ab, r, out=t)
                ds -= t
                ds *= scale                             # back through (1)
                np.matmul(ds, K[..., :kend, :], out=dQ[..., i0:i1, :])
            if first_key > 0:                           # keys that every row may see
                np.matmul(dS[..., :first_key].swapaxes(-1, -2), Q, out=dK[..., :first_key, :])
                np.matmul(A[..., :first_key].swapaxes(-1, -2), dO, out=dV[..., :first_key, :])
            if causal:                                  # each block's own keys, from its rows on
                for i0, i1, kend in blocks:
                    j0 = kend - (i1 - i0)
                    np.matmul(dS[..., i0:, j0:kend].swapaxes(-1, -2), Q[..., i0:, :],
                              out=dK[..., j0:kend, :])
                    np.matmul(A[..., i0:, j0:kend].swapaxes(-1, -2), dO[..., i0:, :],
                              out=dV[..., j0:kend, :])

    parallel_for(len(units), work)
    return dq, dk, dv


# --- memory-efficient attention: keys in blocks, an online softmax --------------------

class BlockwiseAttentionCache(NamedTuple):
    q: Array            # (B, H, Tq, D)
    k: Array            # (B, H, Tk, D)
    v: Array            # (B, H, Tk, D)
    out: Array          # (B, H, Tq, D) the output, for the rows' sum of dout * out
    row_max: Array      # (B, H, Tq, 1) each row's largest score m (0 for a row of -inf)
    row_sum: Array      # (B, H, Tq, 1) each row's sum of exp(s - m) (+inf: the row sees nothing)
    keep: Any           # (B, H, Tq, Tk) boolean user mask (a broadcast view), or None
    additive: Any       # (B, H, Tq, Tk) additive mask (a broadcast view), or None
    causal: bool
    scale: float
    block_size: int


def _block_scores(q, k, b, h, i0, i1, j0, j1, keep, additive, causal, Tk_minus_Tq, scale,
                  lowest):
    """Scores of queries i0:i1 against keys j0:j1 of head (b, h), masked as in steps (1)-(2).

    Returns the (i1 - i0, j1 - j0) scores and the block's boolean keep-mask (None: all kept).
    """
    s = q[b, h, i0:i1] @ k[b, h, j0:j1].T              # (1)
    s *= scale
    if additive is not None:
        s += additive[b, h, i0:i1, j0:j1]               # (2a)
    kept = None if keep is None else keep[b, h, i0:i1, j0:j1]
    if causal and j1 - 1 > i0 + Tk_minus_Tq:            # some key of the block is in the future
        tril = (np.arange(j0, j1)[None, :] <= np.arange(i0, i1)[:, None] + Tk_minus_Tq)
        kept = tril if kept is None else kept & tril
    if kept is not None:
        np.copyto(s, lowest, where=~kept)               # (2b)
    return s, kept


def _key_blocks(i0, i1, Tk, bs, causal, additive, Tk_minus_Tq):
    """Key blocks that queries i0:i1 can see. Blocks wholly in the future of every query are
    skipped, except under an additive mask: a row whose kept scores all carry the most
    negative value is uniform over all its keys, future ones included, as in the plain op."""
    last = Tk if not causal or additive is not None else min(Tk, i1 + Tk_minus_Tq)
    return [(j0, min(j0 + bs, last)) for j0 in range(0, last, bs)]


def attention_forward_blockwise(q, k, v, causal=False, mask=None, dropout_p=0.0, rng=None,
                                scale=None, block_size=256):
    """attention_forward in O(T) memory per row: keys in blocks, with an online softmax.

    Math (one query row, key blocks j = 1, 2, ...; s_j its masked, scaled scores):
        m_j = max(m_{j-1}, max s_j)                running maximum (m_0 = -inf)
        l_j = l_{j-1} exp(m_{j-1} - m_j) + sum exp(s_j - m_j)
        o_j = o_{j-1} exp(m_{j-1} - m_j) + exp(s_j - m_j) v_j
        out = o_J / l_J
    which is softmax(s) v without ever holding a whole row of scores: only a
    block_size x block_size block. The cache keeps m_J and l_J per row (not
    their log-sum-exp m + log l, which loses log l when m is the dtype's most
    negative value). Masks as in attention_forward; no dropout.
    Shapes as attention_forward.
    Returns: out (B, H, Tq, D), BlockwiseAttentionCache
    """
    op = "attention_forward_blockwise"
    B, H, Tq, Tk, D, dropout_p = _check_attention(op, q, k, v, causal, dropout_p)
    if dropout_p != 0.0:
        raise ValueError(f"{op}: dropout on the attention weights is not supported in the "
                         f"blockwise path; got dropout_p={dropout_p} (use attention_forward)")
    xp = get_array_module(q, k, v, mask)
    if xp is not np:
        raise TypeError(f"{op}: the blockwise path runs on NumPy arrays only")
    keep, additive = _prepare_mask(op, mask, B, H, Tq, Tk, xp)
    full = (B, H, Tq, Tk)
    keep = None if keep is None else np.broadcast_to(keep, full)
    additive = None if additive is None else np.broadcast_to(additive, full)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    bs, shift, lowest = int(block_size), Tk - Tq, np.finfo(q.dtype).min
    out = np.empty((B, Tq, H, D), dtype=q.dtype).transpose(0, 2, 1, 3)   # (B, H, Tq, D)
    row_max = np.empty((B, H, Tq, 1), dtype=q.dtype)
    row_sum = np.empty((B, H, Tq, 1), dtype=q.dtype)

    def heads(lo, hi):
        for n in range(lo, hi):
            b, h = divmod(n, H)
            for i0 in range(0, Tq, bs):
                i1 = min(i0 + bs, Tq)
                m = np.full((i1 - i0, 1), -np.inf, dtype=q.dtype)   # running row maximum
                l = np.zeros((i1 - i0, 1), dtype=q.dtype)           # running sum of exps
                o = np.zeros((i1 - i0, D), dtype=q.dtype)           # running weighted values
                seen = np.zeros((i1 - i0, 1), dtype=bool) if mask is not None else None
                for j0, j1 in _key_blocks(i0, i1, Tk, bs, causal, additive, shift):
                    s, kept = _block_scores(q, k, b, h, i0, i1, j0, j1, keep, additive,
                                            causal, shift, scale, lowest)
                    if seen is not None:                # rows that see some key (as plain)
                        sees = kept if additive is None else (
                            ~np.isneginf(s) if kept is None else kept & ~np.isneginf(s))
                        seen |= sees.any(axis=-1, keepdims=True) if sees is not None else True
                    m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
                    m_safe = np.where(np.isneginf(m_new), 0.0, m_new)  # rows all -inf so far:
                    s -= m_safe                         # shift by 0, their exps are 0
                    p = np.exp(s, out=s)                # exp(s_j - m_j)
                    rescale = np.exp(m - m_safe)        # exp(m_{j-1} - m_j)
                    l *= rescale
                    l += p.sum(axis=-1, keepdims=True)
                    o *= rescale
                    o += p @ v[b, h, j0:j1]
                    m = m_new
                empty = l == 0                          # every score -inf: zeros, as plain
                if seen is not None:
                    empty |= ~seen
                o /= np.where(empty, 1.0, l)
                o[empty[:, 0]] = 0.0
                out[b, h, i0:i1] = o
                row_max[b, h, i0:i1] = np.where(np.isneginf(m), 0.0, m)
                row_sum[b, h, i0:i1] = np.where(empty, np.inf, l)

    parallel_for(B * H, heads)
    return out, BlockwiseAttentionCache(q, k, v, out, row_max, row_sum, keep, additive,
                                        bool(causal), scale, bs)


def attention_backward_blockwise(dout, cache):
    """Gradients of attention_forward_blockwise, recomputing each block from the row statistics.

    Math (one query row; att_j = exp(s_j - m) / l, the softmax weights of block j):
        delta  = sum_d dout * out                  (= sum_keys datt * att)
        dv_j  += att_j^T dout
        datt_j = dout v_j^T
        ds_j   = att_j * (datt_j - delta) * scale  (the softmax Jacobian, as plain)
        dq    += ds_j k_j,   dk_j += ds_j^T q
    Returns: dq (B, H, Tq, D), dk (B, H, Tk, D), dv (B, H, Tk, D)
    """
    q, k, v, out, row_max, row_sum, keep, additive, causal, scale, bs = cache
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    shift, lowest = Tk - Tq, np.finfo(q.dtype).min
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)

    def heads(lo, hi):
        for n in range(lo, hi):
            b, h = divmod(n, H)
            for i0 in range(0, Tq, bs):
                i1 = min(i0 + bs, Tq)
                do = dout[b, h, i0:i1]                  # (bq, D)
                delta = (do * out[b, h, i0:i1]).sum(axis=-1, keepdims=True)
                m, l = row_max[b, h, i0:i1], row_sum[b, h, i0:i1]
                for j0, j1 in _key_blocks(i0, i1, Tk, bs, causal, additive, shift):
                    s, _ = _block_scores(q, k, b, h, i0, i1, j0, j1, keep, additive, causal,
                                         shift, scale, lowest)
                    s -= m
                    att = np.exp(s, out=s)
                    att /= l                            # l = +inf: a row that sees nothing
                    dv[b, h, j0:j1] += att.T @ do
                    ds = do @ v[b, h, j0:j1].T          # datt
                    ds -= delta
                    ds *= att
                    ds *= scale
                    dq[b, h, i0:i1] += ds @ k[b, h, j0:j1]
                    dk[b, h, j0:j1] += ds.T @ q[b, h, i0:i1]

    parallel_for(B * H, heads)
    return dq, dk, dv


def attention_backward_any(dout, cache, datt=None, out=None):
    """The backward of either CPU forward: blockwise for a BlockwiseAttentionCache, else fast.

    ``datt`` as attention_backward's (the blockwise forward returns no weights, so
    none); ``out``: optional (dq, dk, dv) arrays to write into (the fast backward
    writes there directly; the blockwise one's results are copied in).
    """
    if isinstance(cache, BlockwiseAttentionCache):
        if datt is not None:
            raise ValueError("attention_backward: the blockwise forward keeps no weights, so "
                             "it takes no gradient of them (datt)")
        grads = attention_backward_blockwise(dout, cache)
        if out is None:
            return grads
        for o, g in zip(out, grads):
            o[...] = g
        return out
    return attention_backward_fast(dout, cache, out=out, datt=datt)
