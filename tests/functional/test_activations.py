"""gelu (exact erf and tanh forms), relu, tanh: element-wise forward/backward pairs."""

import math
import numpy as np
import pytest
from hypothesis import example, given

from scratchlm.functional import (
    gelu_backward, gelu_forward, relu_backward, relu_forward, tanh_backward, tanh_forward,
)
from strategies import (
    assert_all_float32, assert_gradients, assert_unchanged, elementwise_case, no_float_warnings,
)

APPROXIMATE = ["none", "tanh"]


def away_from_zero(x, margin=0.1):
    """Push every element at least ``margin`` away from 0, keeping its sign (0 goes up)."""
    return np.where(x >= 0, x + margin, x - margin)


ACTIVATIONS = {
    "gelu_none": (lambda x: gelu_forward(x, "none"), gelu_backward, lambda x: x),
    "gelu_tanh": (lambda x: gelu_forward(x, "tanh"), gelu_backward, lambda x: x),
    "relu": (relu_forward, relu_backward, away_from_zero),     # no element at the kink
    "tanh": (tanh_forward, tanh_backward, lambda x: x),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(case=elementwise_case(bound=5.0))
@example(case=(np.array(0.7), 0))                           # 0-d
@example(case=(np.array([-1.3]), 1))                        # one element
@example(case=(np.full((2, 2), 1.25), 2))                   # constant
def test_activation_gradient(name, case):
    forward, backward, prepare = ACTIVATIONS[name]
    x, seed = case
    x = prepare(x)
    x_copy = x.copy()
    y, cache = forward(x)
    dout = np.random.default_rng(seed).standard_normal(np.shape(y))
    dout_copy = dout.copy()
    dx = np.asarray(backward(dout, cache))
    assert_unchanged({"x": x_copy, "dout": dout_copy}, {"x": x, "dout": dout})

    def loss():
        return (forward(x)[0] * dout).sum()

    assert_gradients(loss, {"x": dx}, {"x": x})


@given(elementwise_case(bound=8.0, min_dims=1))
def test_gelu_exact_matches_its_definition(case):
    x, _ = case
    y, _ = gelu_forward(x, "none")
    expected = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.ravel()])
    np.testing.assert_allclose(y.ravel(), expected, rtol=1e-14, atol=1e-15)


@given(elementwise_case(bound=8.0, min_dims=1))
def test_gelu_tanh_matches_its_definition(case):
    x, _ = case
    y, _ = gelu_forward(x, "tanh")
    expected = 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-15)


def test_gelu_forms_are_close_but_different():
    x = np.linspace(-5, 5, 1001)
    exact, _ = gelu_forward(x, "none")
    approx, _ = gelu_forward(x, "tanh")
    diff = np.abs(exact - approx).max()
    assert 1e-5 < diff < 1e-3                           # the tanh form's known error (~5e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", APPROXIMATE)
def test_gelu_saturates_without_warnings(approximate, dtype):
    x = np.array([-60.0, -30.0, 0.0, 30.0, 60.0], dtype=dtype)
    with no_float_warnings():
        y, cache = gelu_forward(x, approximate)
        dx = gelu_backward(np.ones_like(x), cache)
    np.testing.assert_allclose(y, [0, 0, 0, 30, 60], atol=1e-6)
    np.testing.assert_allclose(dx, [0, 0, 0.5, 1, 1], atol=1e-6)


def test_relu_values_and_gradient_at_the_kink():
    x = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0])
    y, cache = relu_forward(x)
    np.testing.assert_array_equal(y, [0, 0, 0, 1e-300, 3.0])
    np.testing.assert_array_equal(relu_backward(np.full(5, 7.0), cache), [0, 0, 0, 7, 7])


@given(elementwise_case(bound=20.0, min_dims=1))
def test_tanh_forward_and_derivative(case):
    x, seed = case
    y, cache = tanh_forward(x)
    np.testing.assert_array_equal(y, np.tanh(x))
    dout = np.random.default_rng(seed).standard_normal(x.shape)
    # 1 - y^2 cancels where |y| is near 1: agreement is absolute there, ~eps * |dout|
    np.testing.assert_allclose(tanh_backward(dout, cache), dout / np.cosh(x) ** 2,
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3, 4)])
def test_activation_float32_in_float32_out(name, shape):
    forward, backward, prepare = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    x = prepare(rng.standard_normal(shape)).astype(np.float32)
    y, cache = forward(x)
    dx = backward(rng.standard_normal(shape).astype(np.float32), cache)
    assert_all_float32(y, cache, dx)
    assert y.dtype == np.float32 and np.shape(y) == shape
    assert dx.dtype == np.float32 and np.shape(dx) == shape


@pytest.mark.parametrize("forward, op", [
    (lambda x: gelu_forward(x, "none"), "gelu_forward"),
    (lambda x: gelu_forward(x, "tanh"), "gelu_forward"),
    (relu_forward, "relu_forward"),
    (tanh_forward, "tanh_forward"),
])
@pytest.mark.parametrize("x, error, what", [
    ([1.0, 2.0], TypeError, "x must be an array; got list"),
    (3.0, TypeError, "x must be an array; got float"),
    (np.arange(3), TypeError, "x must be a floating-point array; got dtype int64"),
])
def test_activation_rejects_bad_input(forward, op, x, error, what):
    with pytest.raises(error, match=f"{op}: {what}"):
        forward(x)


@pytest.mark.parametrize("approximate", ["exact", "erf", None, "TANH"])
def test_gelu_rejects_unknown_form(approximate):
    with pytest.raises(ValueError, match="gelu_forward: approximate must be 'none' or 'tanh'"):
        gelu_forward(np.ones(2), approximate)


@pytest.mark.parametrize("approximate", APPROXIMATE)
def test_gelu_zero_dimensional_input(approximate):
    x = np.array(0.7)
    y, cache = gelu_forward(x, approximate)
    dx = gelu_backward(np.array(2.0), cache)
    ref, ref_cache = gelu_forward(np.array([0.7]), approximate)
    assert float(y) == ref[0]
    assert float(dx) == gelu_backward(np.array([2.0]), ref_cache)[0]
