"""Cross-entropy over logits, with ignored targets."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from scratchlm.backend import for_blocks, get_array_module, parallel_for
from scratchlm.functional._checks import check_float

Array = Any


class CrossEntropyCache(NamedTuple):
    probs: Array     # (N, V) softmax of the logits
    targets: Array   # (N,) target ids, ignored ones replaced by 0
    weight: Array    # (N,) 1/M for a counted target, 0 for an ignored one
    shape: tuple     # (..., V) shape of the logits, for dlogits


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean negative log-likelihood of the targets under softmax(logits).

    Math (rows n, counted rows K = {n : t_n != ignore_index}, M = |K|):
        log p_n = logits_n - logsumexp(logits_n)
        loss    = -(1/M) sum_{n in K} log p_n[t_n]
    The mean is over counted targets only, as PyTorch does. With M = 0 the
    loss is 0 and so is its gradient (PyTorch would give NaN).
    Shapes: logits (..., V), targets (...) integers in [0, V) or ignore_index
            -> loss () a 0-d array of the logits' dtype
    Returns: loss, CrossEntropyCache
    """
    t, counted = _check_targets("cross_entropy_forward", logits, targets, ignore_index)
    xp = get_array_module(logits, targets)
    V = logits.shape[-1]
    rows = xp.arange(t.shape[0])
    logits2 = logits.reshape(-1, V)                     # (N, V)
    probs = logits2 - logits2.max(axis=1, keepdims=True)  # (1) shift: exponents <= 0
    target_logit = probs[rows, t]                       # (2) shifted logit of each target
    xp.exp(probs, out=probs)                            # (3)
    sum_exp = probs.sum(axis=1)                         # (4)
    log_p = target_logit - xp.log(sum_exp)              # (5) log p_n[t_n]
    probs /= sum_exp[:, None]                           #     softmax, for the backward
    M = xp.maximum(counted.sum(), 1).astype(logits.dtype)  # avoid 0/0 when all are ignored
    weight = counted.astype(logits.dtype) / M           # (N,) 1/M or 0
    loss = -(log_p * weight).sum()                      # (6) mean over counted targets
    return xp.asarray(loss), CrossEntropyCache(probs, t, weight, logits.shape)


def _check_targets(op, logits, targets, ignore_index):
    """Checks; returns the (N,) target ids (ignored ones replaced by 0) and the counted mask."""
    check_float(op, "logits", logits, min_ndim=1)
    V = logits.shape[-1]
    if not hasattr(targets, "dtype") or targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be an integer array; got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{op}: targets must have shape {tuple(logits.shape[:-1])} to match "
                         f"logits (..., V={V}); got {tuple(targets.shape)}")
    t = targets.reshape(-1)                             # (N,)
    counted = t != ignore_index                         # (N,) bool
    if targets.size:
        bad = counted & ((t < 0) | (t >= V))
        if bool(bad.any()):
            raise ValueError(f"{op}: targets must be in [0, {V}) or ignore_index="
                             f"{ignore_index}; got {int(t[bad][0])}")
    xp = get_array_module(logits, targets)
    return xp.where(counted, t, 0), counted             # any valid row id for ignored targets


def cross_entropy_backward(dloss, cache):
    """Gradient of cross_entropy_forward with respect to the logits.

    Math:  dlogits_n = dloss * w_n * (softmax(logits_n) - onehot(t_n)),
           w_n = 1/M for a counted target and 0 for an ignored one.
    dloss is the upstream gradient of the scalar loss (1.0 when the loss is
    the objective itself).
    Returns: dlogits (..., V)
    """
    probs, t, weight, shape = cache
    xp = get_array_module(probs)
    dlogits = probs.copy()                              # back through (3)-(5): softmax ...
    dlogits[xp.arange(t.shape[0]), t] -= 1.0            # ... minus the one-hot of (2)
    dlogits *= (weight * dloss)[:, None]                # back through (6)
    return dlogits.reshape(shape)


# --- the fast CPU variant: the same steps on blocks of rows, over the threads ----------

BLOCK = 1 << 16     # elements per block: a block of rows stays in a core's L2 cache


def cross_entropy_forward_fast(logits, targets, ignore_index=-100):
    """cross_entropy_forward on blocks of rows over the CPU threads (same steps, equal).

    Steps (1)-(5) run block by block, writing the softmax and log p of each
    row into arrays made once; the mean (6) is the plain op's. Shapes,
    returns and cache as cross_entropy_forward.
    """
    xp = get_array_module(logits, targets)
    if xp is not np or logits.size < 2 * BLOCK:
        return cross_entropy_forward(logits, targets, ignore_index)
    V = logits.shape[-1]
    t, counted = _check_targets("cross_entropy_forward_fast", logits, targets, ignore_index)
    logits2 = logits.reshape(-1, V)                     # (N, V)
    N = logits2.shape[0]
    probs = np.empty((N, V), dtype=logits.dtype)
    log_p = np.empty(N, dtype=logits.dtype)

    def blocks(lo, hi):
        for a, b in for_blocks(lo, hi, max(1, BLOCK // V)):
            p = probs[a:b]
            np.subtract(logits2[a:b], logits2[a:b].max(axis=1, keepdims=True), out=p)  # (1)
            target_logit = p[np.arange(b - a), t[a:b]]  # (2)
            np.exp(p, out=p)                            # (3)
            sum_exp = p.sum(axis=1)                     # (4)
            log_p[a:b] = target_logit - np.log(sum_exp)  # (5)
            p /= sum_exp[:, None]

    parallel_for(N, blocks, max(1, BLOCK // V))
    M = np.maximum(counted.sum(), 1).astype(logits.dtype)
    weight = counted.astype(logits.dtype) / M
    loss = -(log_p * weight).sum()                      # (6)
    return np.asarray(loss), CrossEntropyCache(probs, t, weight, logits.shape)


def cross_entropy_backward_fast(dloss, cache):
    """cross_entropy_backward on blocks of rows over the CPU threads (same steps, equal)."""
    probs, t, weight, shape = cache
    if get_array_module(probs) is not np or probs.size < 2 * BLOCK:
        return cross_entropy_backward(dloss, cache)
    N, V = probs.shape
    dlogits = np.empty_like(probs)
    scale = weight * dloss                              # (N,)

    def blocks(lo, hi):
        for a, b in for_blocks(lo, hi, max(1, BLOCK // V)):
            d = dlogits[a:b]
            d[...] = probs[a:b]                         # back through (3)-(5): softmax ...
            d[np.arange(b - a), t[a:b]] -= 1.0          # ... minus the one-hot of (2)
            d *= scale[a:b, None]                       # back through (6)

    parallel_for(N, blocks, max(1, BLOCK // V))
    return dlogits.reshape(shape)
