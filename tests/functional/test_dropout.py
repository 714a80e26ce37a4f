"""dropout_forward / dropout_backward: inverted dropout with a reproducible mask."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scratchlm.functional import dropout_backward, dropout_forward
from strategies import (
    assert_all_float32, assert_gradients, assert_unchanged, elementwise_case, seeds,
)

probabilities = st.sampled_from([0.0, 0.1, 0.5, 0.9]) | st.floats(0.0, 0.95)


@given(elementwise_case(), probabilities, seeds)
@example(case=(np.array(0.7), 0), p=0.5, mask_seed=3)        # 0-d
@example(case=(np.full((3,), -2.0), 1), p=0.3, mask_seed=4)  # constant
def test_dropout_gradient_with_a_fixed_seed(case, p, mask_seed):
    x, seed = case
    x_copy = x.copy()
    y, cache = dropout_forward(x, p, rng=mask_seed)
    dout = np.random.default_rng(seed).standard_normal(np.shape(y))
    dx = np.asarray(dropout_backward(dout, cache))
    assert_unchanged({"x": x_copy}, {"x": x})

    def loss():                                         # the same seed: the same mask each call
        return (dropout_forward(x, p, rng=mask_seed)[0] * dout).sum()

    assert_gradients(loss, {"x": dx}, {"x": x})


@given(elementwise_case(min_dims=1), probabilities, seeds)
def test_dropout_keeps_or_zeroes_and_scales(case, p, mask_seed):
    x, _ = case
    y, cache = dropout_forward(x, p, rng=mask_seed)
    if p == 0.0:
        assert cache.keep is None
        np.testing.assert_array_equal(y, x)
        return
    keep = cache.keep
    assert keep.dtype == np.bool_ and keep.shape == x.shape
    np.testing.assert_array_equal(y[~keep], 0.0)
    np.testing.assert_allclose(y[keep], x[keep] / (1.0 - p), rtol=1e-15, atol=0)
    dout = np.ones_like(x)
    np.testing.assert_allclose(dropout_backward(dout, cache), keep / (1.0 - p), rtol=1e-15)


def test_dropout_is_reproducible_with_a_seed_or_generator():
    x = np.ones((50, 40))
    y1, _ = dropout_forward(x, 0.5, rng=123)
    y2, _ = dropout_forward(x, 0.5, rng=123)
    y3, _ = dropout_forward(x, 0.5, rng=124)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    g1, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(7))
    g2, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(g1, g2)
    gen = np.random.default_rng(7)                      # a Generator advances between calls
    a, _ = dropout_forward(x, 0.5, rng=gen)
    b, _ = dropout_forward(x, 0.5, rng=gen)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keep_rate_and_mean(p, dtype):
    n = 100_000
    x = np.ones(n, dtype=dtype)
    y, cache = dropout_forward(x, p, rng=2024)
    assert y.dtype == dtype
    kept = cache.keep.mean()
    sigma = np.sqrt(p * (1 - p) / n)                    # binomial standard deviation of the rate
    assert abs(kept - (1 - p)) < 5 * sigma
    # inverted dropout keeps the expectation: mean(y) = kept / (1 - p) ~ 1
    assert abs(y.mean(dtype=np.float64) - 1.0) < 5 * sigma / (1 - p)


@pytest.mark.parametrize("p, training", [(0.0, True), (0.0, False), (0.5, False), (0.99, False)])
def test_dropout_is_the_identity_at_p0_or_in_eval(p, training):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    y, cache = dropout_forward(x, p, rng=None, training=training)   # no rng needed
    np.testing.assert_array_equal(y, x)
    assert y.dtype == np.float32
    dout = np.full_like(x, 2.5)
    np.testing.assert_array_equal(dropout_backward(dout, cache), dout)


def test_dropout_float32_in_float32_out():
    x = np.ones((4, 5), dtype=np.float32)
    y, cache = dropout_forward(x, 0.3, rng=0)
    dx = dropout_backward(np.ones_like(y), cache)
    assert_all_float32(y, cache, dx)
    assert y.dtype == np.float32 and dx.dtype == np.float32 and dx.shape == x.shape


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match=r"dropout_forward: p must be in \[0, 1\); got"):
        dropout_forward(np.ones(3), p, rng=0)


@pytest.mark.parametrize("p", ["0.5", None, True, [0.5]])
def test_dropout_rejects_p_that_is_not_a_number(p):
    with pytest.raises(TypeError, match=r"dropout_forward: p must be a number in \[0, 1\)"):
        dropout_forward(np.ones(3), p, rng=0)


@pytest.mark.parametrize("x, kwargs, error, message", [
    (np.ones(3), {"p": 0.5}, ValueError, r"dropout_forward: p > 0 needs rng="),
    (np.ones(3), {"p": 0.5, "rng": "seed"}, TypeError,
     r"dropout_forward: rng must be a random Generator or an int seed; got str"),
    (np.ones(3), {"p": 0.5, "rng": 1.5}, TypeError, r"dropout_forward: rng must be"),
    ([1.0, 2.0], {"p": 0.5, "rng": 0}, TypeError, r"dropout_forward: x must be an array; got list"),
    (np.ones(3, dtype=int), {"p": 0.5, "rng": 0}, TypeError,
     r"dropout_forward: x must be a floating-point array"),
])
def test_dropout_rejects_bad_input(x, kwargs, error, message):
    with pytest.raises(error, match=message):
        dropout_forward(x, **kwargs)
