"""The distillation losses: soft_cross_entropy, cosine_embedding and mse.

Each backward is checked against central differences of its own forward in
float64 (with a random upstream gradient), each forward against its
definition written out in plain Python, and all three, forward and
gradients, against PyTorch's losses (marker ``reference``; skipped without
torch) to 1e-12:

    soft_cross_entropy  KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)) * T^2
    cosine_embedding    CosineEmbeddingLoss()(a, b, ones)
    mse                 MSELoss()(a * m, b * m)
"""

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scratchlm.functional import (
    cosine_embedding_backward, cosine_embedding_forward, mse_backward, mse_forward,
    soft_cross_entropy_backward, soft_cross_entropy_forward,
)
from strategies import (
    MAX_SIDE, arrays, assert_all_float32, assert_gradients, assert_unchanged, bool_arrays,
    no_float_warnings, seeds, shapes, sometimes,
)

# --- cases: sizes first, then arrays of those sizes --------------------------------------

TEMPERATURES = st.sampled_from([1.0, 2.0, 0.5]) | st.floats(0.25, 8.0)


@st.composite
def row_mask(draw, lead):
    """None, or a boolean (lead) mask with one row counted at least (all masked: an example)."""
    if not draw(sometimes(0.5)):
        return None
    mask = draw(bool_arrays(lead))
    mask.reshape(-1)[draw(st.integers(0, max(mask.size - 1, 0)))] = True
    return mask


@st.composite
def pair_case(draw, bound=3.0, min_last=2):
    """a, b (*lead, C) with C >= min_last, lead 0 to 2 sides, and a row mask or None."""
    C = draw(st.integers(min_last, MAX_SIDE))
    lead = draw(shapes(0, 2, budget=96 // C))
    a, b = draw(arrays(lead + (C,), bound)), draw(arrays(lead + (C,), bound))
    return a, b, draw(row_mask(lead)), draw(seeds)


@st.composite
def soft_case(draw, bound=10.0):
    s, t, mask, seed = draw(pair_case(bound))
    return s, t, draw(TEMPERATURES), mask, seed


@st.composite
def mse_case(draw):
    """a, b of 1 to 4 sides; a mask broadcastable to them (some sides 1) or None."""
    shape = draw(shapes(1, 4, budget=96))
    a, b = draw(arrays(shape)), draw(arrays(shape))
    mask = None
    if draw(st.booleans()):
        mshape = tuple(n if draw(st.booleans()) else 1 for n in shape)
        mshape = mshape[draw(st.integers(0, len(mshape) - 1)):]   # maybe fewer axes
        mask = draw(bool_arrays(mshape))
        if draw(st.booleans()):
            mask = mask.astype(np.int64)                # 0/1 integers read the same
    return a, b, mask, draw(seeds)


# --- definitions, one row at a time in plain floats ----------------------------------------

def _rows(x):
    return x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)


def _counted(mask, n):
    return [True] * n if mask is None else [bool(m) for m in np.asarray(mask).reshape(-1)]


def soft_reference(s, t, T, mask=None):
    terms = []
    for srow, trow, keep in zip(_rows(s), _rows(t), _counted(mask, _rows(s).shape[0])):
        if not keep:
            continue
        zs, zt = [v / T for v in srow], [v / T for v in trow]
        ms, mt = max(zs), max(zt)
        lse_s = ms + math.log(sum(math.exp(v - ms) for v in zs))
        lse_t = mt + math.log(sum(math.exp(v - mt) for v in zt))
        kl = sum(math.exp(b - lse_t) * ((b - lse_t) - (a - lse_s)) for a, b in zip(zs, zt))
        terms.append(kl)
    return T * T * sum(terms) / len(terms) if terms else 0.0


def cosine_reference(a, b, mask=None, eps=1e-12):
    terms = []
    for arow, brow, keep in zip(_rows(a), _rows(b), _counted(mask, _rows(a).shape[0])):
        if keep:
            dot = sum(x * y for x, y in zip(arow, brow))
            na, nb = sum(x * x for x in arow) + eps, sum(y * y for y in brow) + eps
            terms.append(1.0 - dot / math.sqrt(na * nb))
    return sum(terms) / len(terms) if terms else 0.0


def mse_reference(a, b, mask=None):
    m = np.ones(a.shape) if mask is None else np.broadcast_to(np.asarray(mask) != 0, a.shape)
    total = sum(((x - y) * k) ** 2 for x, y, k in zip(a.reshape(-1), b.reshape(-1),
                                                      m.reshape(-1)))
    return total / a.size


# --- soft cross-entropy ---------------------------------------------------------------

def check_soft(s, t, T, mask, seed, normwise=False):
    before = {"s": s.copy(), "t": t.copy()}
    with no_float_warnings():
        value, cache = soft_cross_entropy_forward(s, t, T, mask)
    assert value.shape == () and value.dtype == s.dtype and np.isfinite(value)
    dloss = np.random.default_rng(seed).standard_normal()   # a random upstream gradient
    ds = soft_cross_entropy_backward(dloss, cache)
    assert_unchanged(before, {"s": s, "t": t})
    np.testing.assert_array_equal(soft_cross_entropy_backward(dloss, cache), ds)  # cache intact

    def loss():
        return soft_cross_entropy_forward(s, t, T, mask)[0] * dloss

    assert_gradients(loss, {"s": ds}, {"s": s}, normwise=normwise)


@given(soft_case())
@example(case=(np.array([[2.0, -1.0, 0.5]]), np.array([[0.1, 0.2, -3.0]]), 2.0,
               np.array([False]), 0))                                       # every row masked
@example(case=(np.array([0.5, -1.0, 2.0]), np.array([1.0, 1.0, 1.0]), 1.0, None, 1))  # one row
@example(case=(np.array([[1.0], [2.0]]), np.array([[3.0], [-1.0]]), 2.0, None, 2))    # one class
def test_soft_cross_entropy_gradient(case):
    check_soft(*case)


@given(soft_case(bound=300.0))
def test_soft_cross_entropy_gradient_with_large_spread(case):
    check_soft(*case, normwise=True)                    # see assert_gradients for why normwise


@given(soft_case())
def test_soft_cross_entropy_equals_its_definition(case):
    s, t, T, mask, _ = case
    value, _ = soft_cross_entropy_forward(s, t, T, mask)
    np.testing.assert_allclose(float(value), soft_reference(s, t, T, mask), rtol=1e-12,
                               atol=1e-12)


@given(pair_case(bound=10.0), TEMPERATURES)
def test_soft_cross_entropy_is_zero_at_the_teacher(case, T):
    # the student that copies the teacher's logits (or shifts them per row) has KL 0 and
    # no gradient: softmax ignores a per-row shift
    s, _, mask, seed = case
    shift = np.random.default_rng(seed).standard_normal(s.shape[:-1] + (1,))
    value, cache = soft_cross_entropy_forward(s + shift, s, T, mask)
    assert abs(float(value)) < 1e-12
    np.testing.assert_allclose(soft_cross_entropy_backward(1.0, cache), 0.0, atol=1e-14)


def test_soft_cross_entropy_gradient_is_t_over_m_times_q_minus_p():
    # the closed form of the docstring, on a masked batch
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    mask = np.array([[True, False, True], [True, True, False]])
    T = 3.0
    _, cache = soft_cross_entropy_forward(s, t, T, mask)
    q = np.exp(s / T) / np.exp(s / T).sum(-1, keepdims=True)
    p = np.exp(t / T) / np.exp(t / T).sum(-1, keepdims=True)
    expected = T / mask.sum() * (q - p) * mask[..., None]
    np.testing.assert_allclose(soft_cross_entropy_backward(1.0, cache), expected, atol=1e-15)


def test_soft_cross_entropy_keeps_float32():
    rng = np.random.default_rng(1)
    s, t = (rng.standard_normal((2, 4, 7), dtype=np.float32) for _ in range(2))
    value, cache = soft_cross_entropy_forward(s, t, 2.0, np.ones((2, 4), dtype=bool))
    assert_all_float32(value, cache.p, cache.weight, cache.log_softmax.probs,
                       soft_cross_entropy_backward(1.0, cache))


def test_soft_cross_entropy_errors():
    s, t = np.zeros((2, 3)), np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"soft_cross_entropy_forward: teacher_logits must have "
                                         r"the shape of student_logits \(2, 3\); got \(2, 4\)"):
        soft_cross_entropy_forward(s, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="share one dtype"):
        soft_cross_entropy_forward(s, t.astype(np.float32))
    for bad in (0.0, -1.0, float("inf"), float("nan"), "2", True):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            soft_cross_entropy_forward(s, t, bad)
    with pytest.raises(ValueError, match=r"mask must have shape \(2,\)"):
        soft_cross_entropy_forward(s, t, 1.0, np.ones((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="mask must be a boolean or 0/1 integer array"):
        soft_cross_entropy_forward(s, t, 1.0, np.ones(2))


# --- cosine embedding -----------------------------------------------------------------

def check_cosine(a, b, mask, seed):
    before = {"a": a.copy(), "b": b.copy()}
    with no_float_warnings():
        value, cache = cosine_embedding_forward(a, b, mask)
    assert value.shape == () and value.dtype == a.dtype
    dloss = np.random.default_rng(seed).standard_normal()
    da, db = cosine_embedding_backward(dloss, cache)
    assert_unchanged(before, {"a": a, "b": b})

    def loss():
        return cosine_embedding_forward(a, b, mask)[0] * dloss

    assert_gradients(loss, {"a": da, "b": db}, {"a": a, "b": b})


def _no_small_rows(a, b):
    """Rows of norm >= 0.1: near a zero row, cos turns on a scale of eps and h."""
    for x in (a, b):
        rows = _rows(x)
        small = np.linalg.norm(rows, axis=-1) < 0.1
        rows[small] += 0.5
    return a, b


@given(pair_case())
@example(case=(np.array([[1.0, 2.0], [3.0, -1.0]]), np.array([[2.0, 4.0], [-3.0, 1.0]]),
               None, 0))                                 # parallel and opposite rows
@example(case=(np.array([[1.0, 2.0]]), np.array([[0.5, 1.0]]), np.array([False]), 1))
@example(case=(np.array([[2.0], [-1.0]]), np.array([[1.0], [1.0]]), None, 2))  # C = 1
def test_cosine_embedding_gradient(case):
    a, b, mask, seed = case
    a, b = _no_small_rows(a.copy(), b.copy())
    check_cosine(a, b, mask, seed)


@given(pair_case())
def test_cosine_embedding_equals_its_definition(case):
    a, b, mask, _ = case
    value, _ = cosine_embedding_forward(a, b, mask)
    np.testing.assert_allclose(float(value), cosine_reference(a, b, mask), rtol=1e-12,
                               atol=1e-12)


@given(pair_case(), st.floats(0.1, 10.0))
def test_cosine_embedding_ignores_scale(case, c):
    # a direction loss: scaling a row changes nothing, and the gradient is orthogonal to a
    # (exactly so with eps = 0; eps moves both by its share of |a|^2)
    a, b, mask, _ = case
    a, b = _no_small_rows(a.copy(), b.copy())
    v1, cache = cosine_embedding_forward(a, b, mask, eps=0.0)
    v2, _ = cosine_embedding_forward(c * a, b, mask, eps=0.0)
    np.testing.assert_allclose(float(v1), float(v2), atol=1e-14)
    da, _ = cosine_embedding_backward(1.0, cache)
    np.testing.assert_allclose((da * a).sum(-1), 0.0, atol=1e-14)


def test_cosine_embedding_zero_row_is_not_nan():
    with no_float_warnings():
        value, cache = cosine_embedding_forward(np.zeros((1, 3)), np.ones((1, 3)))
        da, db = cosine_embedding_backward(1.0, cache)
    assert float(value) == 1.0 and np.isfinite(da).all() and np.isfinite(db).all()


def test_cosine_embedding_keeps_float32():
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((3, 5, 4), dtype=np.float32) for _ in range(2))
    value, cache = cosine_embedding_forward(a, b, np.ones((3, 5), dtype=np.int64))
    assert_all_float32(value, tuple(x for x in cache if hasattr(x, "dtype")),
                       cosine_embedding_backward(1.0, cache))


def test_cosine_embedding_errors():
    with pytest.raises(ValueError, match=r"cosine_embedding_forward: b must have the shape "
                                         r"of a \(2, 3\); got \(3, 2\)"):
        cosine_embedding_forward(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="cosine_embedding_forward: a must be a floating"):
        cosine_embedding_forward(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3)))


# --- mean squared error ---------------------------------------------------------------

def check_mse(a, b, mask, seed):
    before = {"a": a.copy(), "b": b.copy()}
    with no_float_warnings():
        value, cache = mse_forward(a, b, mask)
    assert value.shape == () and value.dtype == a.dtype
    dloss = np.random.default_rng(seed).standard_normal()
    da, db = mse_backward(dloss, cache)
    assert_unchanged(before, {"a": a, "b": b})

    def loss():
        return mse_forward(a, b, mask)[0] * dloss

    assert_gradients(loss, {"a": da, "b": db}, {"a": a, "b": b})


@given(mse_case())
@example(case=(np.array([1.0, 2.0]), np.array([0.0, 5.0]), np.array([False]), 0))  # all masked
@example(case=(np.array([[1.0, 2.0]]), np.array([[0.0, 5.0]]), np.array(True), 1))  # 0-d mask
def test_mse_gradient(case):
    check_mse(*case)


@given(mse_case())
def test_mse_equals_its_definition(case):
    a, b, mask, _ = case
    value, _ = mse_forward(a, b, mask)
    np.testing.assert_allclose(float(value), mse_reference(a, b, mask), rtol=1e-12, atol=1e-15)


def test_mse_zeroes_masked_entries_of_attention_maps():
    # TinyBERT's attention loss: padded keys of (B, H, T, T) maps, a (B, 1, 1, T) mask;
    # what the masked entries hold does not matter, and the mean is over every entry
    rng = np.random.default_rng(3)
    a, b = rng.random((2, 2, 3, 3)), rng.random((2, 2, 3, 3))
    keys = np.array([[1, 1, 0], [1, 1, 1]])[:, None, None, :]
    a2 = np.where(keys == 0, 1e3, a)
    v1, _ = mse_forward(a, b, keys)
    v2, c2 = mse_forward(a2, b, keys)
    assert float(v1) == float(v2)
    np.testing.assert_allclose(float(v1), (((a - b) * keys) ** 2).mean(), rtol=1e-14)
    da, _ = mse_backward(1.0, c2)
    assert (da[..., 2][:1] == 0).all()


def test_mse_errors():
    with pytest.raises(ValueError, match=r"mse_forward: mask of shape \(3,\) does not "
                                         r"broadcast to the inputs' shape \(2, 4\)"):
        mse_forward(np.zeros((2, 4)), np.zeros((2, 4)), np.ones(3, dtype=bool))
    with pytest.raises(TypeError, match="mse_forward: mask must be a boolean"):
        mse_forward(np.zeros((2, 4)), np.zeros((2, 4)), np.ones((2, 4)))
    with pytest.raises(TypeError, match="share one dtype"):
        mse_forward(np.zeros(3), np.zeros(3, dtype=np.float32))


def test_mse_keeps_float32():
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((2, 3, 4), dtype=np.float32) for _ in range(2))
    value, cache = mse_forward(a, b, np.array([True, False, True, True]))
    assert_all_float32(value, cache.diff, mse_backward(1.0, cache))


# --- PyTorch, float64, to 1e-12 ----------------------------------------------------------

TOL = 1e-12


def _torch():
    return pytest.importorskip("torch")


def _leaf(torch, x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


@pytest.mark.reference
@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("masked", [False, True])
def test_soft_cross_entropy_matches_torch(T, masked):
    torch = _torch()
    rng = np.random.default_rng(int(T * 10) + masked)
    s, t = 3 * rng.standard_normal((4, 6, 11)), 3 * rng.standard_normal((4, 6, 11))
    mask = rng.random((4, 6)) < 0.6 if masked else None
    value, cache = soft_cross_entropy_forward(s, t, T, mask)
    ds = soft_cross_entropy_backward(1.0, cache)
    rows = np.ones((4, 6), dtype=bool) if mask is None else mask
    st_, tt = _leaf(torch, s), torch.tensor(t)
    sel = torch.tensor(rows)
    # DistilBERT: select the counted rows, then batchmean KL of the softened distributions
    kl = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(st_[sel] / T, dim=-1), torch.softmax(tt[sel] / T, dim=-1)) * T ** 2
    kl.backward()
    assert abs(float(value) - kl.item()) < TOL
    np.testing.assert_allclose(ds, st_.grad.numpy(), rtol=0, atol=TOL)


@pytest.mark.reference
@pytest.mark.parametrize("masked", [False, True])
def test_cosine_embedding_matches_torch(masked):
    torch = _torch()
    rng = np.random.default_rng(5 + masked)
    a, b = rng.standard_normal((3, 7, 8)), rng.standard_normal((3, 7, 8))
    mask = rng.random((3, 7)) < 0.6 if masked else None
    value, cache = cosine_embedding_forward(a, b, mask)
    da, db = cosine_embedding_backward(1.0, cache)
    rows = np.ones((3, 7), dtype=bool) if mask is None else mask
    at, bt = _leaf(torch, a), _leaf(torch, b)
    sel = torch.tensor(rows)
    x1, x2 = at[sel], bt[sel]
    loss = torch.nn.CosineEmbeddingLoss()(x1, x2, torch.ones(x1.shape[0], dtype=torch.float64))
    loss.backward()
    assert abs(float(value) - loss.item()) < TOL
    np.testing.assert_allclose(da, at.grad.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=0, atol=TOL)


@pytest.mark.reference
@pytest.mark.parametrize("mask_shape", [None, (2, 1, 1, 5), (5,)])
def test_mse_matches_torch(mask_shape):
    torch = _torch()
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 5, 5))
    mask = None if mask_shape is None else rng.random(mask_shape) < 0.7
    value, cache = mse_forward(a, b, mask)
    da, db = mse_backward(1.0, cache)
    at, bt = _leaf(torch, a), _leaf(torch, b)
    m = torch.ones(()) if mask is None else torch.tensor(mask, dtype=torch.float64)
    loss = torch.nn.MSELoss()(at * m, bt * m)           # TinyBERT: zeroed, then the mean
    loss.backward()
    assert abs(float(value) - loss.item()) < TOL
    np.testing.assert_allclose(da, at.grad.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=0, atol=TOL)
