"""Cross-entropy over logits, with ignored targets."""

from __future__ import annotations

from typing import Any, NamedTuple

from scratchlm.backend import get_array_module
from scratchlm.functional._checks import check_float
from scratchlm.functional.softmax import log_softmax_backward, log_softmax_forward

Array = Any


class CrossEntropyCache(NamedTuple):
    log_softmax: Any  # LogSoftmaxCache of the (N, V) logits (its probs: the softmax)
    targets: Array    # (N,) target ids, ignored ones replaced by 0
    weight: Array     # (N,) 1/M for a counted target, 0 for an ignored one
    shape: tuple      # (..., V) shape of the logits, for dlogits


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """Mean negative log-likelihood of the targets under softmax(logits).

    Math (rows n, counted rows K = {n : t_n != ignore_index}, M = |K|):
        log p_n = log_softmax(logits_n)                 (1)
        l_n     = log p_n[t_n]                          (2) the target's log-probability
        loss    = -(1/M) sum_{n in K} l_n               (3)
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
    log_p, log_softmax_cache = log_softmax_forward(logits.reshape(-1, V), axis=-1)  # (1) (N, V)
    l = log_p[rows, t]                                  # (2) (N,)
    M = xp.maximum(counted.sum(), 1).astype(logits.dtype)  # avoid 0/0 when all are ignored
    weight = counted.astype(logits.dtype) / M           # (N,) 1/M or 0
    loss = -(l * weight).sum()                          # (3) mean over counted targets
    return xp.asarray(loss), CrossEntropyCache(log_softmax_cache, t, weight, logits.shape)


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

    Math:  dl_n = -dloss * w_n,   w_n = 1/M for a counted target, 0 for an ignored one
           dlog_p = dl_n at (n, t_n), 0 elsewhere
           dlogits = dlog_p - softmax(logits) * sum_v dlog_p     (log_softmax_backward)
                   = dloss * w_n * (softmax(logits_n) - onehot(t_n))
    dloss is the upstream gradient of the scalar loss (1.0 when the loss is
    the objective itself).
    Returns: dlogits (..., V)
    """
    log_softmax_cache, t, weight, shape = cache
    xp = get_array_module(log_softmax_cache.probs)
    dl = -dloss * weight                                # back through (3)
    dlog_p = xp.zeros_like(log_softmax_cache.probs)     # back through (2): the picked entries
    dlog_p[xp.arange(t.shape[0]), t] = dl
    dlogits = log_softmax_backward(dlog_p, log_softmax_cache)   # back through (1)
    return dlogits.reshape(shape)
