"""embedding_forward / embedding_backward: row lookup and its scatter-add."""

import numpy as np
import pytest
from hypothesis import example, given

from scratchlm.functional import embedding_backward, embedding_forward
from strategies import assert_all_float32, assert_gradients, assert_unchanged, embedding_case


@given(embedding_case())
@example(case=(np.array(2), np.arange(12.0).reshape(4, 3) / 7, 0))       # one id, 0-d
@example(case=(np.array([0]), np.array([[1.5, -0.5]]), 1))              # V = 1, one id
@example(case=(np.array([[2, 0, 1]]), np.arange(6.0).reshape(3, 2), 2))  # no repeated id
def test_embedding_gradient(case):
    ids, W, seed = case
    rng = np.random.default_rng(seed)
    before = {"ids": ids.copy(), "W": W.copy()}
    out, cache = embedding_forward(ids, W)
    dout = rng.standard_normal(out.shape)
    dW = embedding_backward(dout, cache)
    assert_unchanged(before, {"ids": ids, "W": W})

    def loss():
        return (embedding_forward(ids, W)[0] * dout).sum()

    assert_gradients(loss, {"W": dW}, {"W": W})


@given(embedding_case())
@example(case=(np.array(2), np.arange(12.0).reshape(4, 3) / 7, 0))
@example(case=(np.array([[2, 0, 1]]), np.arange(6.0).reshape(3, 2), 2))
def test_embedding_backward_with_duplicates_equals_dense_one_hot(case):
    ids, W, seed = case
    V, C = W.shape
    one_hot = np.eye(V)[ids.reshape(-1)]                # (N, V)
    out, cache = embedding_forward(ids, W)
    np.testing.assert_array_equal(out.reshape(-1, C), one_hot @ W)   # one row per id, exactly
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dW = embedding_backward(dout, cache)
    np.testing.assert_allclose(dW, one_hot.T @ dout.reshape(-1, C), rtol=1e-12, atol=1e-12)


def test_embedding_repeated_id_adds_every_row():
    W = np.zeros((4, 2))
    ids = np.array([[1, 1], [1, 3]])
    _, cache = embedding_forward(ids, W)
    dout = np.array([[[1.0, 2.0], [10.0, 20.0]], [[100.0, 200.0], [5.0, 6.0]]])
    dW = embedding_backward(dout, cache)
    np.testing.assert_array_equal(dW, [[0, 0], [111, 222], [0, 0], [5, 6]])


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64, np.uint8])
def test_embedding_float32_table_and_any_integer_ids(id_dtype):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 3)).astype(np.float32)
    ids = np.array([[0, 4, 4]], dtype=id_dtype)
    out, cache = embedding_forward(ids, W)
    dW = embedding_backward(rng.standard_normal(out.shape).astype(np.float32), cache)
    assert_all_float32(out, dW)
    assert out.dtype == np.float32 and out.shape == (1, 3, 3)
    assert dW.dtype == np.float32 and dW.shape == W.shape
    np.testing.assert_array_equal(out[0], W[[0, 4, 4]])


def test_embedding_output_is_a_copy():
    W = np.arange(6.0).reshape(3, 2)
    out, _ = embedding_forward(np.array([2]), W)
    out[...] = -1.0
    np.testing.assert_array_equal(W, np.arange(6.0).reshape(3, 2))


BAD_INPUTS = [
    (np.array([0, 5]), np.ones((5, 2)), ValueError,
     r"embedding_forward: ids must be in \[0, 5\); got max id 5"),
    (np.array([[-1, 2]]), np.ones((5, 2)), ValueError,
     r"embedding_forward: ids must be in \[0, 5\); got min id -1"),
    (np.array([0.0, 1.0]), np.ones((5, 2)), TypeError,
     r"embedding_forward: ids must be an integer array; got float64"),
    (np.array([True, False]), np.ones((5, 2)), TypeError,
     r"embedding_forward: ids must be an integer array; got bool"),
    ([0, 1], np.ones((5, 2)), TypeError,
     r"embedding_forward: ids must be an integer array; got list"),
    (np.array([0, 1]), np.ones(5), ValueError, r"embedding_forward: W must have 2 dim"),
    (np.array([0, 1]), np.ones((5, 2), dtype=np.int64), TypeError,
     r"embedding_forward: W must be a floating-point array"),
    (np.array([0, 1]), None, TypeError, r"embedding_forward: W must be an array; got NoneType"),
]


@pytest.mark.parametrize("ids, W, error, message", BAD_INPUTS)
def test_embedding_rejects_bad_input(ids, W, error, message):
    with pytest.raises(error, match=message):
        embedding_forward(ids, W)
