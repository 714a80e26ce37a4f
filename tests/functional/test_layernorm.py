"""layernorm_forward / layernorm_backward: normalize the last axis, scale, shift."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scratchlm.functional import layernorm_backward, layernorm_forward
from strategies import assert_all_float32, assert_gradients, assert_unchanged, layernorm_case


@given(layernorm_case(), st.sampled_from([1e-5, 1e-12]))
@example(case=(np.array([[0.5], [-2.0], [3.0]]), np.array([1.5]), np.array([-0.5]), 0),
         eps=1e-5)                                      # one feature: y = beta
@example(case=(np.array([1.0, -1.0]), np.array([2.0, 0.5]), np.array([0.0, 1.0]), 1),
         eps=1e-12)                                     # two features: x_hat = +-1
def test_layernorm_gradients(case, eps):
    x, gamma, beta, seed = case
    rng = np.random.default_rng(seed)
    x = x + rng.standard_normal(x.shape)                # no constant rows (degenerate point)
    before = {"x": x.copy(), "gamma": gamma.copy(), "beta": beta.copy()}
    y, cache = layernorm_forward(x, gamma, beta, eps)
    dout = rng.standard_normal(y.shape)
    dout_copy = dout.copy()
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    assert_unchanged(before, {"x": x, "gamma": gamma, "beta": beta})
    assert_unchanged({"dout": dout_copy}, {"dout": dout})
    for again, first in zip(layernorm_backward(dout, cache), (dx, dgamma, dbeta)):
        np.testing.assert_array_equal(again, first)     # the cache is not used up

    def loss():
        return (layernorm_forward(x, gamma, beta, eps)[0] * dout).sum()

    assert_gradients(loss, {"x": dx, "gamma": dgamma, "beta": dbeta},
                     {"x": x, "gamma": gamma, "beta": beta})


@given(layernorm_case())
def test_layernorm_rows_have_zero_mean_and_unit_variance(case):
    x, _, _, seed = case
    x = x + np.random.default_rng(seed).standard_normal(x.shape)
    C = x.shape[-1]
    eps = 1e-5
    y, _ = layernorm_forward(x, np.ones(C), np.zeros(C), eps)
    var = x.var(axis=-1)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    # unit variance up to eps: var(y) = var(x) / (var(x) + eps) exactly in real arithmetic
    np.testing.assert_allclose(y.var(axis=-1), var / (var + eps), rtol=1e-10, atol=1e-12)
    rows_away_from_zero = var > 0.1
    np.testing.assert_allclose(y.var(axis=-1)[rows_away_from_zero], 1.0, atol=1e-4)


def test_layernorm_scale_and_shift_apply_per_feature():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    y, _ = layernorm_forward(x, gamma, beta)
    x_hat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, gamma * x_hat + beta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("C", [1, 4])
def test_layernorm_constant_rows_give_beta_and_finite_gradients(C):
    x = np.full((2, C), 3.0)
    beta = np.arange(C, dtype=float)
    y, cache = layernorm_forward(x, np.ones(C), beta)
    np.testing.assert_array_equal(y, np.broadcast_to(beta, (2, C)))
    dx, dgamma, dbeta = layernorm_backward(np.ones((2, C)), cache)
    assert np.isfinite(dx).all() and np.isfinite(dgamma).all()
    np.testing.assert_array_equal(dbeta, np.full(C, 2.0))


def test_layernorm_float32_in_float32_out():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    gamma, beta = np.ones(8, np.float32), np.zeros(8, np.float32)
    y, cache = layernorm_forward(x, gamma, beta)
    grads = layernorm_backward(rng.standard_normal(y.shape).astype(np.float32), cache)
    assert_all_float32(y, cache, grads)
    assert y.dtype == np.float32
    for g, a in zip(grads, (x, gamma, beta)):
        assert g.dtype == np.float32 and g.shape == a.shape


BAD_INPUTS = [
    (np.ones(()), np.ones(1), np.ones(1), ValueError, r"layernorm_forward: x must have at least 1"),
    (np.ones((2, 4)), np.ones(3), np.ones(4), ValueError,
     r"layernorm_forward: gamma must have shape \(4,\) to match x \(\.\.\., 4\); got \(3,\)"),
    (np.ones((2, 4)), np.ones(4), np.ones((1, 4)), ValueError,
     r"layernorm_forward: beta must have shape \(4,\)"),
    (np.ones((2, 4), dtype=np.int32), np.ones(4), np.ones(4), TypeError,
     r"layernorm_forward: x must be a floating-point array"),
    (np.ones((2, 4)), [1.0] * 4, np.ones(4), TypeError,
     r"layernorm_forward: gamma must be an array; got list"),
    (np.ones((2, 4)), np.ones(4, np.float32), np.ones(4), TypeError,
     r"layernorm_forward: arrays must share one dtype.*gamma float32"),
]


@pytest.mark.parametrize("x, gamma, beta, error, message", BAD_INPUTS)
def test_layernorm_rejects_bad_input(x, gamma, beta, error, message):
    with pytest.raises(error, match=message):
        layernorm_forward(x, gamma, beta)
