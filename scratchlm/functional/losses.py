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


# --- distillation losses ---------------------------------------------------------

def _check_pair(op, a_name, a, b_name, b):
    """Two floating arrays of one shape and dtype, with at least one axis."""
    check_float(op, a_name, a, min_ndim=1)
    check_float(op, b_name, b, min_ndim=1)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{op}: {b_name} must have the shape of {a_name} {tuple(a.shape)}; "
                         f"got {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {a_name} and {b_name} must share one dtype; got {a.dtype} "
                        f"and {b.dtype} (cast with .astype() first)")


def _row_weights(op, mask, shape, dtype, xp):
    """(N, 1) weights of the rows of an (..., C) array: 1/M for a counted row, 0 for a
    masked one, M the number counted (at least 1, so that no row counted gives 0, not 0/0)."""
    rows = tuple(shape[:-1])
    if mask is None:
        counted = xp.ones(rows, dtype=bool)
    else:
        if not hasattr(mask, "dtype") or mask.dtype.kind not in "biu":
            raise TypeError(f"{op}: mask must be a boolean or 0/1 integer array; got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        if tuple(mask.shape) != rows:
            raise ValueError(f"{op}: mask must have shape {rows} (one entry per row of the "
                             f"(..., {shape[-1]}) inputs); got {tuple(mask.shape)}")
        counted = mask != 0
    counted = counted.reshape(-1, 1)                    # (N, 1)
    M = xp.maximum(counted.sum(), 1).astype(dtype)
    return counted.astype(dtype) / M


class SoftCrossEntropyCache(NamedTuple):
    log_softmax: Any   # LogSoftmaxCache of the (N, V) softened student logits s/T (probs: q)
    p: Array           # (N, V) the teacher's softened probabilities softmax(t/T)
    weight: Array      # (N, 1) T^2/M for a counted row, 0 for a masked one
    temperature: float
    shape: tuple       # (..., V) shape of the student logits, for the gradient


def soft_cross_entropy_forward(student_logits, teacher_logits, temperature=1.0, mask=None):
    """Distillation's soft-target loss: T^2 KL(softmax(t/T) || softmax(s/T)), mean over rows.

    Math (rows n: student logits s_n, teacher logits t_n, temperature T;
    counted rows K = {n : mask_n}, M = |K|):
        log q_n = log_softmax(s_n / T)                          (1) the student, softened
        log p_n = log_softmax(t_n / T),   p_n = exp(log p_n)    (2) the teacher's soft targets
        kl_n    = sum_v p_nv (log p_nv - log q_nv)              (3)
        loss    = (T^2 / M) sum_{n in K} kl_n                   (4)
    Softening (T > 1) shows the student how the teacher ranks the wrong
    answers too. The gradient of KL at temperature T is (q - p) / T, and q - p
    itself shrinks like 1/T, so the factor T^2 keeps the term's size
    independent of T (Hinton et al. 2015; DistilBERT's loss_ce). This is
    PyTorch's ``KLDivLoss(reduction="batchmean")(log q, p) * T**2`` on the
    counted rows. With M = 0 the loss is 0 and so is its gradient.
    Shapes: student_logits (..., V), teacher_logits (..., V), mask (...) bool
            or 0/1 -> loss () a 0-d array of the logits' dtype
    Returns: loss, SoftCrossEntropyCache
    """
    op = "soft_cross_entropy_forward"
    _check_pair(op, "student_logits", student_logits, "teacher_logits", teacher_logits)
    T = float(temperature) if hasattr(temperature, "__float__") else float("nan")  # no str
    if isinstance(temperature, bool) or not 0 < T < float("inf"):
        raise ValueError(f"{op}: temperature must be a finite number > 0; got {temperature!r}")
    xp = get_array_module(student_logits, teacher_logits)
    V = student_logits.shape[-1]
    s = student_logits.reshape(-1, V)                   # (N, V)
    t = teacher_logits.reshape(-1, V)
    weight = _row_weights(op, mask, student_logits.shape, s.dtype, xp) * (T * T)  # (N, 1)
    log_q, student_cache = log_softmax_forward(s / T, axis=-1)   # (1)
    log_p, teacher_cache = log_softmax_forward(t / T, axis=-1)   # (2)
    p = teacher_cache.probs                             #     softmax(t/T), computed there
    kl = (p * (log_p - log_q)).sum(axis=-1, keepdims=True)       # (3) (N, 1)
    loss = (kl * weight).sum()                          # (4)
    return xp.asarray(loss), SoftCrossEntropyCache(student_cache, p, weight, T,
                                                   student_logits.shape)


def soft_cross_entropy_backward(dloss, cache):
    """Gradient of soft_cross_entropy_forward with respect to the student logits.

    Math:  dkl_n   = dloss * w_n,   w_n = T^2/M counted, 0 masked
           dlog q_n = -dkl_n * p_n                       (only log q depends on s)
           dz_n    = dlog q_n - q_n sum_v dlog q_nv = dkl_n (q_n - p_n)   (log_softmax_backward)
           ds_n    = dz_n / T                            (z = s / T)
    so ds_n = dloss * w_n (q_n - p_n) / T = dloss * (T/M) (q_n - p_n) for a counted row.
    The teacher's logits are a target, as cross-entropy's labels are: the
    teacher is frozen, and no gradient is returned for them.
    Returns: dstudent_logits (..., V)
    """
    student_cache, p, weight, T, shape = cache
    dkl = dloss * weight                                # back through (4): (N, 1)
    dlog_q = -dkl * p                                   # back through (3): the log q term
    dz = log_softmax_backward(dlog_q, student_cache)    # back through (1): the log-softmax ...
    ds = dz / T                                         # ... of s / T
    return ds.reshape(shape)


class CosineEmbeddingCache(NamedTuple):
    a: Array        # (N, C) the first input, rows flattened
    b: Array        # (N, C) the second
    dot: Array      # (N, 1) a . b
    na: Array       # (N, 1) |a|^2 + eps
    nb: Array       # (N, 1) |b|^2 + eps
    denom: Array    # (N, 1) sqrt(na nb)
    weight: Array   # (N, 1) 1/M for a counted row, 0 for a masked one
    shape: tuple    # (..., C) shape of the inputs, for the gradients


def cosine_embedding_forward(a, b, mask=None, eps=1e-12):
    """The mean over counted rows of 1 - cos(a_n, b_n): the direction of b, taught to a.

    Math (rows n; counted rows K = {n : mask_n}, M = |K|):
        dot_n   = sum_c a_nc b_nc                              (1)
        na_n    = sum_c a_nc^2 + eps,   nb_n = sum_c b_nc^2 + eps    (2)
        denom_n = sqrt(na_n nb_n)                              (3)
        cos_n   = dot_n / denom_n                              (4)
        loss    = (1/M) sum_{n in K} (1 - cos_n)               (5)
    eps is PyTorch's: a zero row has cos = 0, not 0/0. This is
    ``CosineEmbeddingLoss()(a, b, ones)`` on the counted rows (DistilBERT's
    loss_cos between the student's and the teacher's hidden states). With
    M = 0 the loss is 0 and so are the gradients.
    Shapes: a (..., C), b (..., C), mask (...) bool or 0/1 -> loss ()
    Returns: loss, CosineEmbeddingCache
    """
    op = "cosine_embedding_forward"
    _check_pair(op, "a", a, "b", b)
    xp = get_array_module(a, b)
    C = a.shape[-1]
    weight = _row_weights(op, mask, a.shape, a.dtype, xp)   # (N, 1)
    a2, b2 = a.reshape(-1, C), b.reshape(-1, C)         # (N, C)
    dot = (a2 * b2).sum(axis=-1, keepdims=True)         # (1) (N, 1)
    na = (a2 * a2).sum(axis=-1, keepdims=True) + eps    # (2)
    nb = (b2 * b2).sum(axis=-1, keepdims=True) + eps
    denom = xp.sqrt(na * nb)                            # (3)
    cos = dot / denom                                   # (4)
    loss = ((1.0 - cos) * weight).sum()                 # (5)
    return xp.asarray(loss), CosineEmbeddingCache(a2, b2, dot, na, nb, denom, weight, a.shape)


def cosine_embedding_backward(dloss, cache):
    """Gradients of cosine_embedding_forward with respect to a and b.

    Math, row by row (cos = dot / sqrt(na nb)):
        dcos   = -dloss * w                     w = 1/M counted, 0 masked
        ddot   = dcos / denom,   ddenom = -dcos * dot / denom^2
        dna    = ddenom * nb / (2 denom),   dnb = ddenom * na / (2 denom)
        da     = ddot * b + 2 dna * a,      db = ddot * a + 2 dnb * b
    which is da = dcos (b / denom - cos a / na), the familiar closed form.
    Returns: da (..., C), db (..., C)
    """
    a, b, dot, na, nb, denom, weight, shape = cache
    dcos = -dloss * weight                              # back through (5)
    ddot = dcos / denom                                 # back through (4): the numerator ...
    ddenom = -dcos * dot / (denom * denom)              # ... and the denominator
    dna = ddenom * nb / (2.0 * denom)                   # back through (3): sqrt' = 1 / (2 sqrt)
    dnb = ddenom * na / (2.0 * denom)
    da = ddot * b + 2.0 * dna * a                       # back through (1), (2): a's uses add
    db = ddot * a + 2.0 * dnb * b                       # the same for b
    return da.reshape(shape), db.reshape(shape)


class MSECache(NamedTuple):
    diff: Array        # (...) a' - b', zero at masked entries
    keep: Array        # mask as bool, broadcastable to the inputs; None: every entry kept
    n: int             # the number of entries the mean divides by


def mse_forward(a, b, mask=None):
    """Mean squared error, masked entries zeroed first (TinyBERT's attention-score loss).

    Math (m_i = 1 where the mask keeps entry i, 0 where not; n = every entry):
        a' = m * a,   b' = m * b          (1) masked entries zeroed in both
        diff = a' - b'                    (2)
        loss = (1/n) sum_i diff_i^2       (3)
    The mean is over every entry, the zeroed ones too, as
    ``MSELoss()(a * m, b * m)`` is: TinyBERT zeroes the attention scores of
    padded keys in student and teacher, then takes MSELoss. Used on hidden
    states, attention maps or logits.
    Shapes: a (...), b (...), mask bool or 0/1 broadcastable to a's shape
            (e.g. (B, 1, 1, T) for padded keys of (B, H, T, T) attention)
            -> loss ()
    Returns: loss, MSECache
    """
    op = "mse_forward"
    _check_pair(op, "a", a, "b", b)
    xp = get_array_module(a, b)
    keep = None
    if mask is not None:
        if not hasattr(mask, "dtype") or mask.dtype.kind not in "biu":
            raise TypeError(f"{op}: mask must be a boolean or 0/1 integer array; got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        fits = mask.ndim <= a.ndim and all(
            m in (1, n) for m, n in zip(mask.shape[::-1], a.shape[::-1]))
        if not fits:
            raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to "
                             f"the inputs' shape {tuple(a.shape)}")
        keep = mask != 0
    if keep is None:
        diff = a - b                                    # (1), (2): nothing masked
    else:
        diff = xp.where(keep, a, 0.0) - xp.where(keep, b, 0.0)   # (1), (2)
    n = max(int(a.size), 1)
    loss = (diff * diff).sum() / n                      # (3)
    return xp.asarray(loss, dtype=a.dtype), MSECache(diff, keep, n)


def mse_backward(dloss, cache):
    """Gradients of mse_forward with respect to a and b.

    Math:  ddiff = dloss * 2 diff / n
           da = m * ddiff,   db = -m * ddiff
    (diff is already 0 at masked entries; the mask is applied again to mirror
    step (1), so that a reader sees where each factor comes from.)
    Returns: da (...), db (...)
    """
    diff, keep, n = cache
    xp = get_array_module(diff)
    ddiff = diff * (2.0 * dloss / n)                    # back through (3)
    da, db = ddiff, -ddiff                              # back through (2)
    if keep is not None:                                # back through (1): masked entries
        da = xp.where(keep, da, 0.0)                    # were constants
        db = xp.where(keep, db, 0.0)
    return da, db
