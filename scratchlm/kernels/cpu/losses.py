"""Cross-entropy for the CPU engine: the same steps on blocks of rows, over the threads."""

from __future__ import annotations

import numpy as np

from scratchlm.backend import get_array_module
from scratchlm.functional.losses import (
    CrossEntropyCache, _check_targets, cross_entropy_backward, cross_entropy_forward,
)
from scratchlm.functional.softmax import LogSoftmaxCache
from scratchlm.kernels.cpu.threads import for_blocks, parallel_for

BLOCK = 1 << 16     # elements per block: a block of rows stays in a core's L2 cache


def cross_entropy_forward_fast(logits, targets, ignore_index=-100):
    """cross_entropy_forward on blocks of rows over the CPU threads (same steps, equal).

    Steps (1)-(2) run block by block, in the log-softmax's own order (shift by
    the row maximum, exponentials, their sum), writing each row's softmax and
    its target's log-probability into arrays made once; the mean (3) is the
    plain op's. Shapes, returns and cache as cross_entropy_forward.
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
            target_logit = p[np.arange(b - a), t[a:b]]  # (2) its shifted logit ...
            np.exp(p, out=p)                            # (1) softmax
            sum_exp = p.sum(axis=1)
            log_p[a:b] = target_logit - np.log(sum_exp)  # (2) ... minus log sum exp
            p /= sum_exp[:, None]

    parallel_for(N, blocks, max(1, BLOCK // V))
    M = np.maximum(counted.sum(), 1).astype(logits.dtype)
    weight = counted.astype(logits.dtype) / M
    loss = -(log_p * weight).sum()                      # (3)
    return np.asarray(loss), CrossEntropyCache(LogSoftmaxCache(probs, -1), t, weight,
                                               logits.shape)


def cross_entropy_backward_fast(dloss, cache):
    """cross_entropy_backward on blocks of rows over the CPU threads (same steps, equal)."""
    log_softmax_cache, t, weight, shape = cache
    probs = log_softmax_cache.probs
    if get_array_module(probs) is not np or probs.size < 2 * BLOCK:
        return cross_entropy_backward(dloss, cache)
    N, V = probs.shape
    dlogits = np.empty_like(probs)
    scale = weight * dloss                              # (N,)

    def blocks(lo, hi):
        for a, b in for_blocks(lo, hi, max(1, BLOCK // V)):
            d = dlogits[a:b]
            np.multiply(probs[a:b], scale[a:b, None], out=d)   # back through (3), (1):
            d[np.arange(b - a), t[a:b]] -= scale[a:b]   # softmax minus the one-hot of (2),
                                                        # in log_softmax_backward's order

    parallel_for(N, blocks, max(1, BLOCK // V))
    return dlogits.reshape(shape)
