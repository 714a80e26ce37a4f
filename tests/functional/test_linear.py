"""linear_forward / linear_backward: y = x @ W + b, W stored (C_in, C_out)."""

import numpy as np
import pytest
from hypothesis import example, given

from scratchlm.functional import linear_backward, linear_forward
from strategies import assert_all_float32, assert_gradients, assert_unchanged, linear_case


@given(linear_case())
@example(case=(np.array([[0.7], [-1.2]]), np.array([[1.5]]), np.array([0.3]), 0))  # C_in=C_out=1
@example(case=(np.full((2, 3), 2.0), np.arange(6.0).reshape(3, 2) - 2.5, None, 1))  # constant x
@example(case=(np.array([0.5, -1.0]), np.array([[2.0], [-0.5]]), np.array([1.0]), 2))  # no lead
def test_linear_gradients(case):
    x, W, b, seed = case
    rng = np.random.default_rng(seed)
    before = {"x": x.copy(), "W": W.copy(), "b": None if b is None else b.copy()}
    y, cache = linear_forward(x, W, b)
    dout = rng.standard_normal(y.shape)
    dout_copy = dout.copy()
    dx, dW, db = linear_backward(dout, cache)
    assert_unchanged({k: v for k, v in before.items() if v is not None},
                     {"x": x, "W": W, "b": b})
    assert_unchanged({"dout": dout_copy}, {"dout": dout})
    assert (db is None) == (b is None)

    def loss():
        return (linear_forward(x, W, b)[0] * dout).sum()

    inputs = {"x": x, "W": W} if b is None else {"x": x, "W": W, "b": b}
    # Norm-wise: with many inputs of a few units the loss reaches hundreds, and its
    # rounding, eps |loss| / h ~ 5e-8, is above the element-wise bound of small entries.
    assert_gradients(loss, {"x": dx, "W": dW, "b": db}, inputs, normwise=True)


@given(linear_case())
def test_linear_forward_is_the_affine_map(case):
    x, W, b, _ = case
    y, _ = linear_forward(x, W, b)
    expected = np.einsum("...i,ij->...j", x, W) + (0.0 if b is None else b)
    assert y.shape == x.shape[:-1] + (W.shape[1],)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_float32_in_float32_out(bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    W = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32) if bias else None
    y, cache = linear_forward(x, W, b)
    grads = linear_backward(rng.standard_normal(y.shape).astype(np.float32), cache)
    assert_all_float32(y, cache, grads)
    assert y.dtype == np.float32
    for g, a in zip(grads, (x, W, b)):
        if a is not None:
            assert g.dtype == np.float32 and g.shape == a.shape


def test_linear_bias_is_optional_and_gradient_sums_rows():
    x = np.arange(6.0).reshape(3, 2)
    W = np.eye(2)
    y, cache = linear_forward(x, W, np.array([1.0, -1.0]))
    np.testing.assert_array_equal(y, x + [1.0, -1.0])
    _, _, db = linear_backward(np.ones((3, 2)), cache)
    np.testing.assert_array_equal(db, [3.0, 3.0])


F64 = np.float64
BAD_INPUTS = [
    # (x, W, b, error, message)
    (np.ones((2, 3)), np.ones(3), None, ValueError, r"linear_forward: W must have 2 dim"),
    (np.ones((2, 3)), np.ones((4, 5)), None, ValueError,
     r"linear_forward: W must have shape \(3, C_out\).*got \(4, 5\).*transposed"),
    (np.ones(()), np.ones((1, 5)), None, ValueError, r"linear_forward: x must have at least 1"),
    (np.ones((2, 3)), np.ones((3, 5)), np.ones(4), ValueError,
     r"linear_forward: b must have shape \(5,\).*got \(4,\)"),
    (np.ones((2, 3)), np.ones((3, 5)), np.ones((1, 5)), ValueError,
     r"linear_forward: b must have shape \(5,\)"),
    (np.ones((2, 3), dtype=int), np.ones((3, 5)), None, TypeError,
     r"linear_forward: x must be a floating-point array; got dtype int"),
    ([[1.0, 2.0, 3.0]], np.ones((3, 5)), None, TypeError,
     r"linear_forward: x must be an array; got list"),
    (np.ones((2, 3)), "W", None, TypeError, r"linear_forward: W must be an array; got str"),
    (np.ones((2, 3), dtype=np.float32), np.ones((3, 5)), None, TypeError,
     r"linear_forward: arrays must share one dtype; got x float32, W float64"),
    (np.ones((2, 3)), np.ones((3, 5)), np.ones(5, dtype=np.float32), TypeError,
     r"linear_forward: arrays must share one dtype.*b float32"),
]


@pytest.mark.parametrize("x, W, b, error, message", BAD_INPUTS)
def test_linear_rejects_bad_input(x, W, b, error, message):
    with pytest.raises(error, match=message):
        linear_forward(x, W, b)
