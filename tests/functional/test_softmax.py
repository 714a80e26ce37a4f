"""softmax and log_softmax along an axis: forward/backward pairs, stable at large values."""

import numpy as np
import pytest
from hypothesis import example, given

from scratchlm.functional import (
    log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward,
)
from strategies import (
    assert_all_float32, assert_gradients, assert_unchanged, no_float_warnings, softmax_case,
)

PAIRS = {"softmax": (softmax_forward, softmax_backward),
         "log_softmax": (log_softmax_forward, log_softmax_backward)}


def check_pair_gradient(name, x, axis, seed, normwise=False):
    forward, backward = PAIRS[name]
    x_copy = x.copy()
    with no_float_warnings():
        out, cache = forward(x, axis)
    assert np.isfinite(out).all()
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dout_copy = dout.copy()
    dx = backward(dout, cache)
    assert_unchanged({"x": x_copy, "dout": dout_copy}, {"x": x, "dout": dout})
    np.testing.assert_array_equal(backward(dout, cache), dx)   # the cache is not used up

    def loss():
        return (forward(x, axis)[0] * dout).sum()

    assert_gradients(loss, {"x": dx}, {"x": x}, normwise=normwise)


@pytest.mark.parametrize("name", PAIRS)
@given(case=softmax_case(bound=20.0))
@example(case=(np.array([[1.5], [-3.0]]), -1, 0))           # an axis of length 1
@example(case=(np.array([0.25]), 0, 1))                      # one entry
@example(case=(np.full((2, 3), 4.0), 1, 2))                  # constant rows: uniform
def test_gradient(name, case):
    check_pair_gradient(name, *case)


@pytest.mark.parametrize("name", PAIRS)
@given(case=softmax_case(bound=20.0, offset=1e3))
def test_gradient_with_large_shifts(name, case):
    # values up to +-1e3 along with moderate differences: exp(x) alone would overflow
    check_pair_gradient(name, *case, normwise=True)


@pytest.mark.parametrize("name", PAIRS)
@given(case=softmax_case(bound=1e3))
def test_gradient_with_large_spread(name, case):
    # differences up to 2e3 along the axis: most probabilities underflow to exactly 0
    check_pair_gradient(name, *case, normwise=True)


@given(softmax_case(bound=1e3))
@example(case=(np.array([[1.5], [-3.0]]), -1, 0))
def test_softmax_rows_sum_to_one(case):
    x, axis, _ = case
    probs, _ = softmax_forward(x, axis)
    assert (probs >= 0).all() and (probs <= 1).all()
    np.testing.assert_allclose(probs.sum(axis=axis), 1.0, rtol=0, atol=1e-14)


@given(softmax_case(bound=20.0, offset=1e3))
def test_softmax_and_log_softmax_ignore_a_shift_along_the_axis(case):
    x, axis, _ = case
    shifted = x - x.mean(axis=axis, keepdims=True)      # a different shift, same result
    np.testing.assert_allclose(softmax_forward(x, axis)[0], softmax_forward(shifted, axis)[0],
                               rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(log_softmax_forward(x, axis)[0],
                               log_softmax_forward(shifted, axis)[0], rtol=1e-10, atol=1e-10)


@given(softmax_case(bound=1e3))
def test_log_softmax_is_the_log_of_softmax(case):
    x, axis, _ = case
    log_probs, _ = log_softmax_forward(x, axis)
    probs, _ = softmax_forward(x, axis)
    assert np.isfinite(log_probs).all() and (log_probs <= 0).all()
    np.testing.assert_allclose(np.exp(log_probs), probs, rtol=1e-12, atol=1e-300)
    visible = probs > 1e-200                            # where log(probs) has not underflowed
    np.testing.assert_allclose(log_probs[visible], np.log(probs[visible]), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("name", PAIRS)
def test_large_float32_logits_stay_finite(name):
    forward, backward = PAIRS[name]
    x = np.array([[1e3, -1e3, 999.0], [1e30, 1e30, -1e30]], dtype=np.float32)
    with no_float_warnings():
        out, cache = forward(x)
        dx = backward(np.ones_like(x), cache)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    probs = np.exp(out) if name == "log_softmax" else out
    np.testing.assert_allclose(probs, [[1 / (1 + np.exp(-1)), 0, 1 / (1 + np.e)],
                                       [0.5, 0.5, 0]], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_float32_in_float32_out(name, axis):
    forward, backward = PAIRS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    out, cache = forward(x, axis)
    dx = backward(rng.standard_normal(x.shape).astype(np.float32), cache)
    assert_all_float32(out, cache, dx)
    assert out.dtype == np.float32 and dx.dtype == np.float32 and dx.shape == x.shape


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("x, axis, error, what", [
    (np.ones(()), -1, ValueError, r"x must have at least 1 dimensions; got shape \(\)"),
    (np.ones((2, 3)), 2, ValueError, r"axis must be an int in \[-2, 2\) .*; got 2"),
    (np.ones((2, 3)), -3, ValueError, r"axis must be an int in \[-2, 2\)"),
    (np.ones((2, 3)), 0.0, ValueError, r"axis must be an int"),
    (np.ones((2, 3), dtype=np.int64), -1, TypeError, r"x must be a floating-point array"),
    ([0.5, 0.5], -1, TypeError, r"x must be an array; got list"),
])
def test_rejects_bad_input(name, x, axis, error, what):
    forward, _ = PAIRS[name]
    with pytest.raises(error, match=f"{name}_forward: {what}"):
        forward(x, axis)
