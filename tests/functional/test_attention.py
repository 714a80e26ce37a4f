"""attention_forward / attention_backward, masks, head split/merge and the KV cache."""

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scratchlm.functional import (
    KVCache, attention_backward, attention_forward, causal_keep, merge_heads, split_heads,
)
from strategies import (
    MASK_KINDS, MAX_SIDE, arrays, assert_all_float32, assert_gradients, assert_unchanged,
    attention_case, fixed_attention_case, no_float_warnings, seeds, sides,
)


def any_mask_case(causal=None):
    """An attention case with a mask of any kind (none included)."""
    return st.sampled_from(MASK_KINDS).flatmap(lambda kind: attention_case(kind, causal))


def reference_attention(q, k, v, causal=False, mask=None, scale=None):
    """The definition, one query row at a time: softmax over the keys it may see.

    A key is seen when the boolean/integer mask allows it, the causal rule
    allows it and its additive mask value is not -inf; a row that sees no key
    gives zeros.
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    keep = np.ones((B, H, Tq, Tk), dtype=bool)
    add = np.zeros((B, H, Tq, Tk))
    if mask is not None:
        m = mask[:, None, None, :] if mask.ndim == 2 else mask
        if m.dtype.kind == "f":
            add = add + m
        else:
            keep = keep & (m != 0)
    if causal:
        keep = keep & np.tri(Tq, Tk, Tk - Tq, dtype=bool)
    keep = keep & np.isfinite(add)
    out = np.zeros((B, H, Tq, v.shape[3]))
    for b, h, i in np.ndindex(B, H, Tq):
        seen = np.flatnonzero(keep[b, h, i])
        if seen.size:
            s = k[b, h, seen] @ q[b, h, i] * scale + add[b, h, i, seen]
            w = np.exp(s - s.max())
            out[b, h, i] = (w / w.sum()) @ v[b, h, seen]
    return out, keep.any(axis=-1)


# --- gradients -----------------------------------------------------------------

@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@given(data=st.data())
def test_attention_gradients(mask_kind, data):
    q, k, v, mask, causal, seed = data.draw(attention_case(mask_kind))
    scale = data.draw(st.none() | st.floats(0.1, 2.0))
    before = {"q": q.copy(), "k": k.copy(), "v": v.copy()}
    if mask is not None:
        before["mask"] = mask.copy()
    with no_float_warnings():
        out, cache = attention_forward(q, k, v, causal=causal, mask=mask, scale=scale)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dout_copy = dout.copy()
    with no_float_warnings():
        dq, dk, dv = attention_backward(dout, cache)
    assert_unchanged(before, {"q": q, "k": k, "v": v, "mask": mask})
    assert_unchanged({"dout": dout_copy}, {"dout": dout})
    for again, first in zip(attention_backward(dout, cache), (dq, dk, dv)):
        np.testing.assert_array_equal(again, first)     # the cache is not used up
    for g in (out, dq, dk, dv):
        assert np.isfinite(g).all()

    def loss():
        return (attention_forward(q, k, v, causal=causal, mask=mask, scale=scale)[0]
                * dout).sum()

    assert_gradients(loss, {"q": dq, "k": dk, "v": dv}, {"q": q, "k": k, "v": v})


@given(any_mask_case(), st.floats(0.05, 0.9), seeds)
@example(case=fixed_attention_case(B=2, Tq=3, Tk=1), p=0.0, mask_seed=0)          # one key
@example(case=fixed_attention_case(Tq=1, Tk=1, causal=True), p=0.5, mask_seed=1)
@example(case=fixed_attention_case(B=2, Tq=2, Tk=1, mask=np.array([[True], [False]])),
         p=0.0, mask_seed=2)                            # one key, masked in batch row 1
@example(case=fixed_attention_case(H=2, Tq=2, Tk=3, q_scale=0.0), p=0.0, mask_seed=3)  # uniform
def test_attention_gradients_with_dropout_and_a_fixed_seed(case, p, mask_seed):
    q, k, v, mask, causal, seed = case

    def forward(q, k, v):
        return attention_forward(q, k, v, causal=causal, mask=mask, dropout_p=p, rng=mask_seed)

    out, cache = forward(q, k, v)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dq, dk, dv = attention_backward(dout, cache)

    def loss():
        return (forward(q, k, v)[0] * dout).sum()

    assert_gradients(loss, {"q": dq, "k": dk, "v": dv}, {"q": q, "k": k, "v": v})


# --- what the output is --------------------------------------------------------

@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@given(data=st.data())
def test_attention_equals_its_definition(mask_kind, data):
    q, k, v, mask, causal, _ = data.draw(attention_case(mask_kind))
    out, cache = attention_forward(q, k, v, causal=causal, mask=mask)
    expected, row_sees_a_key = reference_attention(q, k, v, causal, mask)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)
    # rows of weights sum to 1, or are all exactly 0 where no key is left
    np.testing.assert_allclose(cache.att.sum(-1)[row_sees_a_key], 1.0, rtol=0, atol=1e-14)
    assert (cache.att[~row_sees_a_key] == 0).all()
    assert (out[~row_sees_a_key] == 0).all()


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@given(data=st.data())
def test_causal_attention_ignores_the_future(mask_kind, data):
    q, k, v, mask, _, seed = data.draw(attention_case(mask_kind, causal=True))
    Tq, Tk = q.shape[2], k.shape[2]
    cut = data.draw(st.integers(Tk - Tq, Tk), label="cut")   # keys at positions >= cut change
    early = cut - (Tk - Tq)                             # queries at positions < cut
    rng = np.random.default_rng(seed)
    k2, v2 = k.copy(), v.copy()
    k2[:, :, cut:] = rng.standard_normal(k2[:, :, cut:].shape)
    v2[:, :, cut:] = rng.standard_normal(v2[:, :, cut:].shape)
    out, cache = attention_forward(q, k, v, causal=True, mask=mask)
    out2, _ = attention_forward(q, k2, v2, causal=True, mask=mask)
    np.testing.assert_array_equal(out2[:, :, :early], out[:, :, :early])
    dout = rng.standard_normal(out.shape)
    dout[:, :, early:] = 0.0                            # the loss reads the early queries only
    _, dk, dv = attention_backward(dout, cache)
    assert (dk[:, :, cut:] == 0).all() and (dv[:, :, cut:] == 0).all()


@given(attention_case("bool_2d"))
def test_masked_keys_change_nothing(case):
    q, k, v, pad, causal, seed = case                   # pad: (B, Tk), True = may attend
    rng = np.random.default_rng(seed)
    k2, v2 = k.copy(), v.copy()
    hidden = ~pad[:, None, :, None] & np.ones(k.shape, dtype=bool)
    k2[hidden] = rng.standard_normal(hidden.sum())
    v2[hidden] = 100 * rng.standard_normal(hidden.sum())
    masks = {
        "bool (B, Tk)": pad,
        "0/1 int (B, Tk)": pad.astype(np.int32),
        "bool (B, 1, 1, Tk)": pad[:, None, None, :],
        "additive -inf (B, 1, 1, Tk)": np.where(pad, 0.0, -np.inf)[:, None, None, :],
    }
    for name, mask in masks.items():
        out, cache = attention_forward(q, k, v, causal=causal, mask=mask)
        out2, _ = attention_forward(q, k2, v2, causal=causal, mask=mask)
        np.testing.assert_array_equal(out2, out, err_msg=name)
        _, dk, dv = attention_backward(rng.standard_normal(out.shape), cache)
        assert (dk[hidden] == 0).all() and (dv[hidden] == 0).all(), name


@given(attention_case("bool_2d", causal=False))
def test_mask_forms_agree(case):
    q, k, v, pad, _, _ = case
    ref, _ = attention_forward(q, k, v, mask=pad)
    B, H, Tq, _ = q.shape
    for mask in (pad.astype(np.int64), pad.astype(np.uint8), pad[:, None, None, :],
                 np.broadcast_to(pad[:, None, None, :], (B, H, Tq, pad.shape[1]))):
        np.testing.assert_array_equal(attention_forward(q, k, v, mask=mask)[0], ref)


def fully_masked_cases():
    """(name, causal, mask, rows): rows is a (B, H, Tq) bool of the rows with no key left."""
    B, H, T = 2, 2, 4
    cases = []
    pad = np.ones((B, T), dtype=bool)
    pad[1] = False                                      # batch row 1 is all padding
    rows = np.zeros((B, H, T), dtype=bool)
    rows[1] = True
    cases += [("bool (B, Tk)", False, pad, rows), ("0/1 int (B, Tk)", False, pad.astype(int), rows),
              ("bool (B, Tk), causal", True, pad, rows)]
    m4 = np.ones((B, H, T, T), dtype=bool)
    m4[0, 1, 2] = False                                 # one query row of one head
    rows4 = np.zeros((B, H, T), dtype=bool)
    rows4[0, 1, 2] = True
    cases += [("bool (B, H, Tq, Tk)", False, m4, rows4),
              ("0/1 int (B, H, Tq, Tk)", False, m4.astype(np.int8), rows4)]
    add = np.zeros((B, 1, T, T))
    add[0, 0, 1] = -np.inf                              # a row of -inf, every head
    add[1, 0, 3, :2] = -np.inf                          # a partly masked row: still seen
    rows_add = np.zeros((B, H, T), dtype=bool)
    rows_add[0, :, 1] = True
    cases.append(("additive -inf row", False, add, rows_add))
    add_c = np.zeros((B, H, T, T))
    add_c[1, 0, 1, :2] = -np.inf                        # query 1 sees keys 0, 1 only: both -inf
    rows_c = np.zeros((B, H, T), dtype=bool)
    rows_c[1, 0, 1] = True
    cases.append(("additive -inf on the visible keys, causal", True, add_c, rows_c))
    start = np.ones((B, T), dtype=bool)
    start[:, 0] = False                                 # query 0 sees key 0 only: masked
    rows_s = np.zeros((B, H, T), dtype=bool)
    rows_s[:, :, 0] = True
    cases.append(("bool first key masked, causal", True, start, rows_s))
    return cases


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("name, causal, mask, rows", fully_masked_cases(),
                         ids=[c[0] for c in fully_masked_cases()])
def test_fully_masked_rows_give_exact_zeros(name, causal, mask, rows, dropout_p, dtype):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 4, 3)).astype(dtype) for _ in range(3))
    if mask.dtype.kind == "f":
        mask = mask.astype(dtype)
    with no_float_warnings():
        out, cache = attention_forward(q, k, v, causal=causal, mask=mask,
                                       dropout_p=dropout_p, rng=5)
        dout = np.zeros_like(out)
        dout[rows] = rng.standard_normal(dout[rows].shape)   # the loss reads masked rows only
        dq, dk, dv = attention_backward(dout, cache)
    assert out.dtype == dtype
    assert (out[rows] == 0).all() and (cache.att[rows] == 0).all()
    assert (dq == 0).all() and (dk == 0).all() and (dv == 0).all()
    assert (out[~rows] != 0).any()                      # the other rows are not zeroed
    for a in (out, dq, dk, dv):
        assert np.isfinite(a).all()


# --- dropout on the weights ----------------------------------------------------

def test_attention_dropout_is_reproducible_and_p0_is_plain():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    plain, plain_cache = attention_forward(q, k, v, causal=True)
    assert plain_cache.att_dropped is plain_cache.att
    a, cache_a = attention_forward(q, k, v, causal=True, dropout_p=0.5, rng=11)
    b, _ = attention_forward(q, k, v, causal=True, dropout_p=0.5, rng=11)
    c, _ = attention_forward(q, k, v, causal=True, dropout_p=0.5, rng=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    keep = cache_a.dropout.keep
    np.testing.assert_allclose(cache_a.att_dropped, cache_a.att * keep / 0.5, rtol=1e-15)
    np.testing.assert_allclose(a, cache_a.att_dropped @ v, rtol=1e-14)
    np.testing.assert_array_equal(cache_a.att, plain_cache.att)   # weights before dropout


# --- causal masks and the KV cache ---------------------------------------------

def test_causal_keep_is_lower_right_aligned():
    np.testing.assert_array_equal(causal_keep(3, 3), np.tril(np.ones((3, 3), dtype=bool)))
    np.testing.assert_array_equal(causal_keep(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(causal_keep(1, 5), np.ones((1, 5), dtype=bool))


@given(attention_case("none", causal=True))
def test_causal_with_fewer_queries_equals_the_last_rows_of_full_causal(case):
    q, k, v, _, _, seed = case
    Tq, Tk = q.shape[2], k.shape[2]
    q_all = np.random.default_rng(seed).standard_normal(q.shape[:2] + (Tk, q.shape[3]))
    q_all[:, :, Tk - Tq:] = q                           # the last Tq queries are q
    full, _ = attention_forward(q_all, k, v, causal=True)
    last, _ = attention_forward(q, k, v, causal=True)
    np.testing.assert_allclose(last, full[:, :, Tk - Tq:], rtol=1e-12, atol=1e-14)


@given(sides(3, budget=36), st.integers(2, MAX_SIDE), st.data())
def test_kv_cache_decoding_equals_full_causal_attention(dims, T, data):
    B, H, D = dims
    q, k, v = (data.draw(arrays((B, H, T, D))) for _ in range(3))
    full, _ = attention_forward(q, k, v, causal=True)
    chunks = data.draw(st.lists(st.integers(1, T), min_size=1, max_size=T))
    cache = KVCache(B, H, T, D, np.float64)
    start = 0
    for n in chunks:
        end = min(T, start + n)
        if start == end:
            break
        k_all, v_all = cache.append(k[:, :, start:end], v[:, :, start:end])
        assert cache.length == end and k_all.shape == (B, H, end, D)
        np.testing.assert_array_equal(k_all, k[:, :, :end])
        np.testing.assert_array_equal(v_all, v[:, :, :end])
        out, _ = attention_forward(q[:, :, start:end], k_all, v_all, causal=True)
        np.testing.assert_allclose(out, full[:, :, start:end], rtol=1e-12, atol=1e-14)
        start = end


def test_kv_cache_rejects_overflow_and_mismatched_shapes():
    cache = KVCache(1, 2, 3, 4, np.float32)
    k = np.zeros((1, 2, 2, 4), np.float32)
    cache.append(k, k)
    with pytest.raises(ValueError, match=r"KVCache.append: 2 cached \+ 2 new positions exceed "
                                         r"the cache length T_max=3"):
        cache.append(k, k)
    assert cache.length == 2
    one = np.zeros((1, 2, 1, 4), np.float32)
    with pytest.raises(ValueError, match=r"KVCache.append: k must have shape \(1, 2, 1, 4\)"):
        cache.append(np.zeros((1, 2, 1, 1), np.float32), one)    # would broadcast silently
    with pytest.raises(ValueError, match=r"KVCache.append: v must have shape \(1, 2, 1, 4\)"):
        cache.append(one, np.zeros((1, 2, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"KVCache.append: k must have 4 dimensions"):
        cache.append(np.zeros((2, 1, 4), np.float32), one)
    with pytest.raises(TypeError, match=r"KVCache.append: arrays must share one dtype"):
        cache.append(one.astype(np.float64), one)
    assert cache.length == 2


# --- heads ---------------------------------------------------------------------

@given(sides(3, budget=72), st.integers(1, 4), seeds)
def test_split_and_merge_heads(dims, H, seed):
    B, T, D = dims
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, H * D))
    heads = split_heads(x, H)
    assert heads.shape == (B, H, T, D) and np.shares_memory(heads, x)   # a view
    for h in range(H):
        np.testing.assert_array_equal(heads[:, h], x[..., h * D:(h + 1) * D])
    np.testing.assert_array_equal(merge_heads(heads), x)
    y = rng.standard_normal((B, H, T, D))
    np.testing.assert_array_equal(split_heads(merge_heads(y), H), y)
    # each is the other's adjoint, so the backward of one is the other
    np.testing.assert_allclose((heads * y).sum(), (x * merge_heads(y)).sum(), rtol=1e-12)


@pytest.mark.parametrize("call, error, message", [
    (lambda: split_heads(np.ones((2, 3, 5)), 2), ValueError,
     r"split_heads: width C=5 must be divisible by n_head=2"),
    (lambda: split_heads(np.ones((3, 4)), 2), ValueError, r"split_heads: x must have 3 dim"),
    (lambda: split_heads(np.ones((2, 3, 4)), 0), ValueError,
     r"split_heads: n_head must be a positive int; got 0"),
    (lambda: split_heads(np.ones((2, 3, 4)), 2.0), ValueError, r"split_heads: n_head must be"),
    (lambda: split_heads([[[1.0, 2.0]]], 1), TypeError, r"split_heads: x must be an array"),
    (lambda: merge_heads(np.ones((2, 3, 4))), ValueError, r"merge_heads: x must have 4 dim"),
])
def test_heads_reject_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --- dtypes and bad input ------------------------------------------------------

@pytest.mark.parametrize("mask_kind", ["none", "bool", "int", "additive"])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_float32_in_float32_out(mask_kind, causal):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 5, 4)).astype(np.float32) for _ in range(2))
    pad = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mask = {"none": None, "bool": pad.astype(bool), "int": pad,
            "additive": np.where(pad, 0.0, -np.inf).astype(np.float32)[:, None, None]}[mask_kind]
    out, cache = attention_forward(q, k, v, causal=causal, mask=mask, dropout_p=0.1, rng=0)
    grads = attention_backward(rng.standard_normal(out.shape).astype(np.float32), cache)
    assert_all_float32(out, cache, grads)
    assert out.dtype == np.float32 and cache.att.dtype == np.float32
    for g, a in zip(grads, (q, k, v)):
        assert g.dtype == np.float32 and g.shape == a.shape


Q = np.ones((2, 3, 4, 5))
KV = np.ones((2, 3, 6, 5))
BAD_INPUTS = [
    (dict(q=np.ones((3, 4, 5)), k=KV, v=KV), ValueError, r"attention_forward: q must have 4 dim"),
    (dict(q=Q, k=np.ones((2, 3, 6, 4)), v=KV), ValueError,
     r"attention_forward: k and v must have shape \(B, H, Tk, D\) = \(2, 3, Tk, 5\)"),
    (dict(q=Q, k=KV, v=np.ones((2, 3, 5, 5))), ValueError,
     r"attention_forward: k and v must have shape .*v \(2, 3, 5, 5\)"),
    (dict(q=Q, k=np.ones((1, 3, 6, 5)), v=np.ones((1, 3, 6, 5))), ValueError,
     r"attention_forward: k and v must have shape"),
    (dict(q=Q.astype(np.float32), k=KV, v=KV), TypeError,
     r"attention_forward: arrays must share one dtype; got q float32, k float64, v float64"),
    (dict(q=Q, k=KV, v=KV.astype(int)), TypeError,
     r"attention_forward: v must be a floating-point array"),
    (dict(q=Q.tolist(), k=KV, v=KV), TypeError, r"attention_forward: q must be an array"),
    (dict(q=np.ones((2, 3, 7, 5)), k=KV, v=KV, causal=True), ValueError,
     r"attention_forward: causal attention needs at least as many keys as queries; "
     r"got Tq=7, Tk=6"),
    (dict(q=Q, k=KV, v=KV, mask=np.ones((2, 4), bool)), ValueError,
     r"attention_forward: a 2-D mask is a key-padding mask of shape \(B, Tk\) = \(2, 6\); "
     r"got \(2, 4\)"),
    (dict(q=Q, k=KV, v=KV, mask=np.ones((6, 2), bool)), ValueError,
     r"attention_forward: a 2-D mask is a key-padding mask"),
    (dict(q=Q, k=KV, v=KV, mask=np.ones((2, 3, 4, 5), bool)), ValueError,
     r"attention_forward: mask of shape \(2, 3, 4, 5\) does not broadcast to "
     r"\(B, H, Tq, Tk\) = \(2, 3, 4, 6\)"),
    (dict(q=Q, k=KV, v=KV, mask=np.ones((3, 1, 1, 6), bool)), ValueError,
     r"attention_forward: mask of shape \(3, 1, 1, 6\) does not broadcast"),
    (dict(q=Q, k=KV, v=KV, mask=np.ones((1, 2, 3, 4, 6), bool)), ValueError,
     r"attention_forward: mask of shape \(1, 2, 3, 4, 6\) does not broadcast"),
    (dict(q=Q, k=KV, v=KV, mask=np.ones((2, 6), complex)), TypeError,
     r"attention_forward: mask must be boolean, integer \(0/1\) or floating; got complex128"),
    (dict(q=Q, k=KV, v=KV, mask=[[1] * 6] * 2), TypeError,
     r"attention_forward: mask must be an array; got list"),
    (dict(q=Q, k=KV, v=KV, dropout_p=1.0, rng=0), ValueError,
     r"attention_forward: dropout_p must be in \[0, 1\); got 1.0"),
    (dict(q=Q, k=KV, v=KV, dropout_p=-0.5, rng=0), ValueError,
     r"attention_forward: dropout_p must be in \[0, 1\)"),
    (dict(q=Q, k=KV, v=KV, dropout_p="0.1", rng=0), TypeError,
     r"attention_forward: dropout_p must be a number"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_INPUTS)
def test_attention_rejects_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        attention_forward(**kwargs)
