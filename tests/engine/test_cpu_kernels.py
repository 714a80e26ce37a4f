"""Every CPU engine kernel equals its textbook op: outputs, caches and gradients.

The fast CPU variants (``*_fast``) run the plain ops' arithmetic in blocks over
threads; the blockwise attention computes the same softmax with an online
maximum. Each is compared with the plain op it stands in for, in float64
(to rounding) and in float32 (dtype kept).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from scratchlm import functional as F
from scratchlm.kernels import cpu as K
from scratchlm.kernels.cpu import activations, attention, layernorm, losses
from scratchlm.kernels.cpu import threads as cpu_threads
from strategies import MASK_KINDS, attention_case, no_float_warnings

RNG = np.random.default_rng(0)


def randn(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of a few thousand elements, so that the modest arrays of these tests run
    through many blocks, a ragged last one and every thread, as large arrays do with
    the default sizes (test_default_block_sizes checks those)."""
    monkeypatch.setattr(activations, "BLOCK", 1 << 12)
    monkeypatch.setattr(layernorm, "BLOCK", 1 << 12)
    monkeypatch.setattr(losses, "BLOCK", 1 << 12)


# --- the thread helper ---------------------------------------------------------

def test_parallel_for_covers_the_range_once_and_raises_errors(threads):
    seen = np.zeros(1000, dtype=int)

    def mark(lo, hi):
        seen[lo:hi] += 1

    cpu_threads.parallel_for(1000, mark, min_size=7)
    assert (seen == 1).all()
    cpu_threads.parallel_for(0, mark)                       # nothing to do
    calls = []
    cpu_threads.parallel_for(10, lambda lo, hi: calls.append((lo, hi)), min_size=100)
    assert calls == [(0, 10)]                           # too small to split

    def fail(lo, hi):
        if lo > 0 or threads == 1:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cpu_threads.parallel_for(1000, fail)


def test_set_num_threads_rejects_nonsense():
    with pytest.raises(ValueError, match="positive int"):
        cpu_threads.set_num_threads(0)


# --- linear ---------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7,), (300, 5), (3, 100, 6), (2, 3, 40, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_fast_equals_plain(threads, shape, bias):
    x, W = randn(*shape), randn(shape[-1], 9)
    b = randn(9) if bias else None
    y, cache = F.linear_forward(x, W, b)
    y_fast, cache_fast = K.linear_forward_fast(x, W, b)
    assert_allclose(y_fast, y, rtol=1e-13, atol=1e-13)
    assert y_fast.shape == y.shape
    dout = randn(*y.shape)
    for need_dW, need_db in [(True, True), (False, True), (True, False)]:
        plain = F.linear_backward(dout, cache, need_dW, need_db)
        fast = K.linear_backward_fast(dout, cache_fast, need_dW, need_db)
        for a, e in zip(fast, plain):
            if e is None:
                assert a is None
            else:
                assert a.shape == e.shape
                assert_allclose(a, e, rtol=1e-13, atol=1e-13)


def test_linear_fast_float32_and_a_transposed_weight(threads):
    x, W = randn(4, 70, 8, dtype=np.float32), randn(11, 8, dtype=np.float32)
    y, cache = F.linear_forward(x, W.T)                 # a tied head's W^T view
    y_fast, cache_fast = K.linear_forward_fast(x, W.T)
    assert y_fast.dtype == np.float32
    assert_allclose(y_fast, y, rtol=1e-5, atol=1e-6)
    dout = randn(*y.shape, dtype=np.float32)
    for a, e in zip(K.linear_backward_fast(dout, cache_fast), F.linear_backward(dout, cache)):
        if e is not None:
            assert a.dtype == np.float32
            assert_allclose(a, e, rtol=1e-5, atol=1e-5)


# --- attention ------------------------------------------------------------------

@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dims", [(2, 3, 70, 70, 8), (1, 2, 40, 120, 4), (3, 1, 1, 9, 6)])
def test_attention_fast_equals_plain(threads, causal, dims):
    B, H, Tq, Tk, D = dims
    q, k, v = randn(B, H, Tq, D), randn(B, H, Tk, D), randn(B, H, Tk, D)
    out, cache = F.attention_forward(q, k, v, causal=causal)
    out_fast, cache_fast = K.attention_forward_fast(q, k, v, causal=causal)
    assert_allclose(out_fast, out, rtol=1e-13, atol=1e-14)
    assert_allclose(cache_fast.att, cache.att, rtol=1e-13, atol=1e-14)
    if Tq * Tk >= attention.PER_HEAD_FROM:             # head by head (else the plain op):
        assert np.shares_memory(F.merge_heads(out_fast), out_fast)   # merging copies nothing
    dout = randn(*out.shape)
    plain = F.attention_backward(dout, cache)
    fast = K.attention_backward_fast(dout, cache_fast)
    for a, e in zip(fast, plain):
        assert_allclose(a, e, rtol=1e-12, atol=1e-13)
    slots = tuple(np.empty_like(g) for g in plain)      # out= takes caller's buffers
    written = K.attention_backward_fast(dout, cache_fast, out=slots)
    assert all(w is s for w, s in zip(written, slots))
    for a, e in zip(slots, plain):
        assert_allclose(a, e, rtol=1e-12, atol=1e-13)


def assert_fast_attention_equals_plain(B, H, Tq, Tk, D, causal):
    """Outputs, weights and the three gradients of the fast op equal the plain op's."""
    q, k, v = randn(B, H, Tq, D), randn(B, H, Tk, D), randn(B, H, Tk, D)
    out, cache = F.attention_forward(q, k, v, causal=causal)
    out_fast, cache_fast = K.attention_forward_fast(q, k, v, causal=causal)
    assert_allclose(out_fast, out, rtol=1e-13, atol=1e-14)
    assert_allclose(cache_fast.att, cache.att, rtol=1e-13, atol=1e-14)
    dout = randn(*out.shape)
    for a, e in zip(K.attention_backward_fast(dout, cache_fast),
                    F.attention_backward(dout, cache)):
        assert_allclose(a, e, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_fast_groups_of_sequences(threads, causal, monkeypatch):
    """All the heads of a block fit, so units take several sequences (a last, smaller
    unit of 1 with B = 5 in units of 2)."""
    B, H, Tq, Tk, D = 5, 2, 40, 40, 4
    monkeypatch.setattr(attention, "ROW_BLOCK", 16)
    monkeypatch.setattr(attention, "GROUP_SCORES", 2 * H * 16 * Tk)
    monkeypatch.setattr(attention, "num_threads", lambda: 2)
    assert [bs.stop - bs.start for bs, _ in attention._head_groups(B, H, Tk)] == [2, 2, 1]
    assert_fast_attention_equals_plain(B, H, Tq, Tk, D, causal)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_fast_row_blocks_and_uneven_head_groups(threads, causal, monkeypatch):
    """Small row blocks (a ragged last one) and groups of 2 heads out of 5 (a last group
    of 1), with more keys than queries: every branch of the blocked loops."""
    B, H, Tq, Tk, D = 2, 5, 50, 77, 4
    monkeypatch.setattr(attention, "ROW_BLOCK", 16)
    monkeypatch.setattr(attention, "GROUP_SCORES", 2 * 16 * Tk)
    assert [(bs.stop - bs.start, hs.stop - hs.start)
            for bs, hs in attention._head_groups(B, H, Tk)] == [(1, 2), (1, 2), (1, 1)] * B
    assert_fast_attention_equals_plain(B, H, Tq, Tk, D, causal)


def test_attention_fast_with_a_mask_or_dropout_is_the_plain_op():
    q, k, v = randn(2, 2, 4, 3), randn(2, 2, 4, 3), randn(2, 2, 4, 3)
    mask = np.array([[1, 1, 0, 1], [1, 1, 1, 1]])
    out, _ = F.attention_forward(q, k, v, mask=mask)
    assert_array_equal(K.attention_forward_fast(q, k, v, mask=mask)[0], out)
    out, cache = F.attention_forward(q, k, v, causal=True, dropout_p=0.3, rng=4)
    out_fast, cache_fast = K.attention_forward_fast(q, k, v, causal=True, dropout_p=0.3, rng=4)
    assert_array_equal(out_fast, out)
    dout = randn(*out.shape)
    for a, e in zip(K.attention_backward_fast(dout, cache_fast),
                    F.attention_backward(dout, cache)):
        assert_array_equal(a, e)


def assert_blockwise_equals_plain(q, k, v, mask, causal, block_size, rtol=1e-11):
    with no_float_warnings():
        out, cache = F.attention_forward(q, k, v, causal=causal, mask=mask)
        out_b, cache_b = K.attention_forward_blockwise(q, k, v, causal=causal, mask=mask,
                                                       block_size=block_size)
        dout = randn(*out.shape, dtype=q.dtype)
        plain = F.attention_backward(dout, cache)
        blockwise = K.attention_backward_blockwise(dout, cache_b)
    tol = dict(rtol=rtol, atol=rtol)
    assert out_b.dtype == q.dtype
    assert_allclose(out_b, out, **tol, err_msg="out")
    for name, a, e in zip("qkv", blockwise, plain):
        assert a.dtype == q.dtype
        assert_allclose(a, e, **tol, err_msg=f"d{name}")
        assert np.isfinite(a).all()


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@given(data=st.data())
def test_blockwise_attention_equals_plain_float64(mask_kind, data):
    q, k, v, mask, causal, _ = data.draw(attention_case(mask_kind))
    block_size = data.draw(st.integers(1, 7))
    assert_blockwise_equals_plain(q, k, v, mask, causal, block_size)


@pytest.mark.parametrize("block_size", [1, 5, 16, 64, 256])
@pytest.mark.parametrize("causal", [True, False])
def test_blockwise_attention_long_rows(threads, block_size, causal):
    q, k, v = randn(2, 3, 50, 8), randn(2, 3, 70, 8), randn(2, 3, 70, 8)
    assert_blockwise_equals_plain(q, k, v, None, causal, block_size)
    pad = np.ones((2, 70), dtype=bool)
    pad[0, :13] = False                                 # left padding
    assert_blockwise_equals_plain(q, k, v, pad, causal, block_size)
    additive = np.where(pad, 0.0, np.finfo(np.float64).min)[:, None, None, :]
    assert_blockwise_equals_plain(q, k, v, additive, causal, block_size)


@pytest.mark.parametrize("block_size", [3, 16])
def test_blockwise_attention_rows_that_see_only_padding(block_size):
    # Left padding under a causal mask: the first queries' kept keys all carry the
    # most negative value, so the plain op makes them uniform over every key.
    q, k, v = randn(2, 2, 30, 4), randn(2, 2, 30, 4), randn(2, 2, 30, 4)
    pad = np.ones((2, 30), dtype=bool)
    pad[0, :9] = False
    additive = np.where(pad, 0.0, np.finfo(np.float64).min)[:, None, None, :]
    assert_blockwise_equals_plain(q, k, v, additive, True, block_size)
    assert_blockwise_equals_plain(q, k, v, additive, False, block_size)


def test_blockwise_attention_float32():
    q, k, v = (randn(2, 2, 40, 8, dtype=np.float32) for _ in range(3))
    assert_blockwise_equals_plain(q, k, v, None, True, 16, rtol=2e-5)


def test_blockwise_attention_fully_masked_rows_give_zeros():
    q, k, v = randn(2, 2, 6, 3), randn(2, 2, 6, 3), randn(2, 2, 6, 3)
    mask = np.ones((2, 6), dtype=bool)
    mask[1] = False                                     # batch row 1 sees nothing
    out, cache = K.attention_forward_blockwise(q, k, v, causal=True, mask=mask, block_size=2)
    assert (out[1] == 0).all() and (out[0] != 0).all()
    dout = np.zeros_like(out)
    dout[1] = 1.0                                       # the loss reads the masked rows only
    for g in K.attention_backward_blockwise(dout, cache):
        assert (g == 0).all()


def test_blockwise_attention_rejects_dropout():
    q = randn(1, 1, 3, 2)
    with pytest.raises(ValueError, match="dropout"):
        K.attention_forward_blockwise(q, q, q, dropout_p=0.1, rng=0)


# --- element-wise ops and embeddings ---------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_fast_equals_plain(threads, approximate, dtype):
    """The exact form in float64 runs the plain code per block (identical); in float32 its
    normal CDF is a fitted formula, and the tanh form factors x out of its cubic,
    sqrt(2/pi) x (1 + 0.044715 x^2): equal to rounding, recomputed in the backward."""
    x = randn(5, 130, 211, dtype=dtype)                 # several blocks, a ragged last one
    x[0, 0, :5] = [0.0, -0.0, 30.0, -30.0, 1e-3]        # saturated and tiny inputs too
    y, cache = F.gelu_forward(x, approximate)
    y_fast, cache_fast = K.gelu_forward_fast(x, approximate)
    dout = randn(*x.shape, dtype=dtype)
    dx, dx_fast = F.gelu_backward(dout, cache), K.gelu_backward_fast(dout, cache_fast)
    if approximate == "none" and dtype == np.float64:
        assert_array_equal(y_fast, y)
        assert_array_equal(dx_fast, dx)
    else:                                               # tanh(u) or Phi(x) by other formulas
        tol = dict(rtol=1e-14, atol=1e-15) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-6)
        assert_allclose(y_fast, y, **tol)
        assert_allclose(dx_fast, dx, **tol)
        assert_array_equal(F.gelu_backward(dout, cache_fast), dx)   # the plain op recomputes
    assert y_fast.dtype == dx_fast.dtype == dtype
    small = randn(3, 4, dtype=dtype)                    # below one block: the plain op
    assert_array_equal(K.gelu_forward_fast(small, approximate)[0],
                       F.gelu_forward(small, approximate)[0])


def test_fast_float32_normal_cdf_is_as_accurate_as_float32_erf():
    # Against float64 on a fine grid: Phi within 3e-7 everywhere; GELU's output and
    # derivative as close to the float64 values, in ulp, as the plain float32 op's.
    from scipy.special import ndtr

    x = np.linspace(-12, 12, 600_001).astype(np.float32)
    phi, gauss, t = (np.empty_like(x) for _ in range(3))
    activations._normal_cdf_block(x, phi, gauss, t)
    x64 = x.astype(np.float64)
    assert np.abs(phi - ndtr(x64)).max() < 3e-7
    assert np.all(np.diff(phi[::50]) >= 0) and phi[0] == 0.0 and phi[-1] == 1.0
    y_ref = x64 * ndtr(x64)
    dydx_ref = ndtr(x64) + x64 * np.exp(-x64 * x64 / 2) / np.sqrt(2 * np.pi)
    y, dydx = np.empty_like(x), np.empty_like(x)
    activations._gelu_exact_block(x, y, gauss, t)
    activations._gelu_exact_backward_block(np.ones_like(x), x, dydx, gauss, t)
    y_plain = F.gelu_forward(x, "none")[0]
    dydx_plain = F.gelu_backward(np.ones_like(x), F.gelu_forward(x, "none")[1])
    central = np.abs(x) < 3
    for fast, plain, ref in ((y, y_plain, y_ref), (dydx, dydx_plain, dydx_ref)):
        ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        err_fast, err_plain = np.abs(fast - ref) / ulp, np.abs(plain - ref) / ulp
        assert err_fast[central].mean() < 1.5 * err_plain[central].mean() + 1
        assert np.abs(fast - ref).max() < 2 * np.abs(plain - ref).max() + 1e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layernorm_fast_equals_plain(threads, dtype):
    x, gamma, beta = randn(3, 300, 129, dtype=dtype), randn(129, dtype=dtype), \
        randn(129, dtype=dtype)
    y, cache = F.layernorm_forward(x, gamma, beta)
    x[0, 0] = 7.0                                       # a constant row: var 0, eps alone
    y, cache = F.layernorm_forward(x, gamma, beta)
    y_fast, cache_fast = K.layernorm_forward_fast(x, gamma, beta)
    # Row means by matrix-vector products: another summation order, equal to rounding
    # (on the constant row, rounding of x - mu times rstd = 1/sqrt(eps) ~ 316).
    close = dict(rtol=1e-12, atol=1e-11) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    assert_allclose(y_fast, y, **close)
    assert_allclose(cache_fast.x_hat, cache.x_hat, **close)
    assert_allclose(cache_fast.rstd, cache.rstd, **close)
    assert y_fast.dtype == cache_fast.x_hat.dtype == cache_fast.rstd.dtype == dtype
    dout = randn(*x.shape, dtype=dtype)
    dx, dgamma, dbeta = F.layernorm_backward(dout, cache)
    dx_f, dgamma_f, dbeta_f = K.layernorm_backward_fast(dout, cache_fast)
    assert_allclose(dx_f, dx, **close)
    assert dx_f.dtype == dtype
    tol = 1e-10 if dtype == np.float64 else 1e-4        # sums grouped by block; the constant row
    assert_allclose(dgamma_f, dgamma, rtol=tol, atol=tol)
    assert_allclose(dbeta_f, dbeta, rtol=tol, atol=tol)
    assert dgamma_f.dtype == dtype


@pytest.mark.parametrize("ids_shape", [(0,), (5,), (30, 40)])
def test_embedding_backward_fast_equals_plain(ids_shape):
    W = randn(13, 6)
    ids = RNG.integers(0, 13, ids_shape)                # many repeated ids
    _, cache = F.embedding_forward(ids, W)
    dout = randn(*ids_shape, 6)
    assert_allclose(K.embedding_backward_fast(dout, cache), F.embedding_backward(dout, cache),
                    rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_fast_is_identical_to_plain(threads, dtype):
    logits = randn(3, 200, 301, dtype=dtype)
    targets = RNG.integers(0, 301, (3, 200))
    targets[0, :50] = -100                              # ignored targets
    loss, cache = F.cross_entropy_forward(logits, targets)
    loss_fast, cache_fast = K.cross_entropy_forward_fast(logits, targets)
    assert loss_fast == loss and loss_fast.dtype == dtype
    assert_array_equal(cache_fast.log_softmax.probs, cache.log_softmax.probs)
    assert_array_equal(K.cross_entropy_backward_fast(0.7, cache_fast),
                       F.cross_entropy_backward(0.7, cache))
    with pytest.raises(ValueError, match="targets must be in"):
        K.cross_entropy_forward_fast(logits, np.full((3, 200), 301))


def test_default_block_sizes(monkeypatch):
    """The fast ops at their default block sizes, on arrays of a few blocks."""
    monkeypatch.undo()                                  # the module's own BLOCKs
    n = 5 * activations.BLOCK // 2
    x = randn(n // 256, 256, dtype=np.float32)
    y, cache = K.gelu_forward_fast(x, "tanh")
    assert cache.x is x and cache.approximate == "tanh"  # only x is kept
    assert_allclose(y, F.gelu_forward(x, "tanh")[0], rtol=2e-6, atol=1e-6)
    C = 384
    x = randn(5 * layernorm.BLOCK // (2 * C), C, dtype=np.float32)
    g, b = randn(C, dtype=np.float32), randn(C, dtype=np.float32)
    assert_allclose(K.layernorm_forward_fast(x, g, b)[0], F.layernorm_forward(x, g, b)[0],
                    rtol=1e-5, atol=1e-5)
    logits = randn(5 * losses.BLOCK // (2 * 300), 300, dtype=np.float32)
    t = RNG.integers(0, 300, logits.shape[0])
    assert K.cross_entropy_forward_fast(logits, t)[0] == F.cross_entropy_forward(logits, t)[0]


# --- every mask kind, at sizes that cross every block boundary --------------------

PAD_MASKS = ("none", "bool_2d", "int01_2d", "bool_4d", "additive_min", "additive_inf")


def padding_mask(kind, side, B, H, Tq, Tk, dtype):
    """A mask of the given kind over keys padded on the given side: sequence 0 two thirds
    padding (so whole query blocks see only padding), sequence 1 all padding (every row
    fully masked) where B > 2, the rest none. additive_min is what GPT builds from an
    attention_mask: padded rows then attend uniformly to all their keys, future ones too."""
    keep = np.ones((B, Tk), dtype=bool)
    if side == "left":
        keep[0, :2 * Tk // 3] = False
    elif side == "right":
        keep[0, Tk // 3:] = False
    if B > 2:
        keep[1] = False
    if kind == "none":
        return None
    if kind == "bool_2d":
        return keep
    if kind == "int01_2d":
        return keep.astype(np.int64)
    if kind == "bool_4d":                               # per query too: some rows see nothing
        per_query = RNG.random((B, 1, Tq, Tk)) < 0.8
        return keep[:, None, None, :] & per_query
    lowest = np.finfo(dtype).min if kind == "additive_min" else -np.inf
    return np.where(keep, 0.0, lowest).astype(dtype)[:, None, None, :]


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Query blocks of 4 rows, head groups of 1-2 heads, every size on the blocked path."""
    monkeypatch.setattr(attention, "ROW_BLOCK", 4)
    monkeypatch.setattr(attention, "GROUP_SCORES", 4 * 40)
    monkeypatch.setattr(attention, "PER_HEAD_FROM", 1)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("kind", PAD_MASKS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dims", [(3, 3, 23, 23, 4), (3, 2, 9, 22, 3), (1, 2, 4, 4, 2)])
def test_fast_attention_equals_textbook_with_every_mask(threads, tiny_blocks, dims, causal,
                                                        kind, side):
    """The fast backward on the forward's cache, with masks, padding on either side and
    rows that see nothing, across many query blocks (and a single one): equal to the
    textbook op. Keys past a block are skipped only where their weights are exactly 0."""
    B, H, Tq, Tk, D = dims
    q, k, v = randn(B, H, Tq, D), randn(B, H, Tk, D), randn(B, H, Tk, D)
    mask = padding_mask(kind, side, B, H, Tq, Tk, np.float64)
    with no_float_warnings():
        out, cache = F.attention_forward(q, k, v, causal=causal, mask=mask)
        out_fast, cache_fast = K.attention_forward_fast(q, k, v, causal=causal, mask=mask)
    assert_allclose(out_fast, out, rtol=1e-13, atol=1e-14)
    assert_allclose(cache_fast.att, cache.att, rtol=1e-13, atol=1e-14)
    dout = randn(*out.shape)
    plain = F.attention_backward(dout, cache)
    for name, a, e in zip("qkv", K.attention_backward_fast(dout, cache_fast), plain):
        assert_allclose(a, e, rtol=1e-12, atol=1e-13, err_msg=f"d{name}")
    if B > 2 and kind not in ("none", "additive_min"):  # a sequence that sees nothing
        assert (out[1] == 0).all() and all((g[1] == 0).all() for g in plain[:1])
    assert_blockwise_equals_plain(q, k, v, mask, causal, block_size=3)


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@given(data=st.data())
def test_fast_attention_equals_textbook_on_drawn_cases(mask_kind, data):
    """Drawn shapes, masks and values, with query blocks of 1-5 rows."""
    q, k, v, mask, causal, _ = data.draw(attention_case(mask_kind))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention, "ROW_BLOCK", data.draw(st.integers(1, 5)))
        mp.setattr(attention, "GROUP_SCORES", data.draw(st.integers(1, 64)))
        mp.setattr(attention, "PER_HEAD_FROM", 1)
        with no_float_warnings():
            out, cache = F.attention_forward(q, k, v, causal=causal, mask=mask)
            out_fast, cache_fast = K.attention_forward_fast(q, k, v, causal=causal, mask=mask)
            dout = randn(*out.shape)
            fast = K.attention_backward_fast(dout, cache_fast)
            plain = F.attention_backward(dout, cache)
    assert_allclose(out_fast, out, rtol=1e-12, atol=1e-13)
    for name, a, e in zip("qkv", fast, plain):
        assert_allclose(a, e, rtol=1e-11, atol=1e-12, err_msg=f"d{name}")
