"""Cross-entropy over logits, with ignored targets."""

from __future__ import annotations

from typing import Any, NamedTuple

from scratchlm.backend import get_array_module
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
    op = "cross_entropy_forward"
    check_float(op, "logits", logits, min_ndim=1)
    V = logits.shape[-1]
    if not hasattr(targets, "dtype") or targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be an integer array; got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{op}: targets must have shape {tuple(logits.shape[:-1])} to match "
                         f"logits (..., V={V}); got {tuple(targets.shape)}")
    xp = get_array_module(logits, targets)
    t = targets.reshape(-1)                             # (N,)
    counted = t != ignore_index                         # (N,) bool
    if targets.size:
        bad = counted & ((t < 0) | (t >= V))
        if bool(bad.any()):
            raise ValueError(f"{op}: targets must be in [0, {V}) or ignore_index="
                             f"{ignore_index}; got {int(t[bad][0])}")
    t = xp.where(counted, t, 0)                         # any valid row id for ignored targets
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
