"""cross_entropy_forward / cross_entropy_backward: mean NLL over counted targets."""

import numpy as np
import pytest
from hypothesis import example, given

from scratchlm.functional import (
    cross_entropy_backward, cross_entropy_forward, log_softmax_backward, log_softmax_forward,
)
from strategies import (
    assert_all_float32, assert_gradients, assert_unchanged, cross_entropy_case,
    no_float_warnings,
)


def reference_loss(logits, targets, ignore_index=-100):
    """The definition, one row at a time in plain Python floats (log-sum-exp shifted)."""
    V = logits.shape[-1]
    rows, ts = logits.reshape(-1, V), targets.reshape(-1)
    terms = []
    for row, t in zip(rows, ts):
        if t == ignore_index:
            continue
        m = max(row)
        terms.append(-(row[t] - m - np.log(sum(np.exp(r - m) for r in row))))
    return sum(terms) / len(terms) if terms else 0.0


def check_gradient(logits, targets, seed, normwise=False):
    before = {"logits": logits.copy(), "targets": targets.copy()}
    with no_float_warnings():
        loss_value, cache = cross_entropy_forward(logits, targets)
    assert np.isfinite(loss_value)
    dloss = np.random.default_rng(seed).standard_normal()   # a random upstream gradient
    dlogits = cross_entropy_backward(dloss, cache)
    assert_unchanged(before, {"logits": logits, "targets": targets})
    np.testing.assert_array_equal(cross_entropy_backward(dloss, cache), dlogits)  # cache intact

    def loss():
        return cross_entropy_forward(logits, targets)[0] * dloss

    assert_gradients(loss, {"logits": dlogits}, {"logits": logits}, normwise=normwise)


@given(cross_entropy_case(bound=20.0))
@example(case=(np.array([[2.0], [-1.0]]), np.array([0, 0]), 0))         # one class
@example(case=(np.array([[2.0, 1.0], [0.5, -1.0]]), np.array([-100, -100]), 1))  # all ignored
@example(case=(np.zeros((2, 3)), np.array([2, 0]), 2))                  # constant logits
@example(case=(np.array([0.5, -1.0, 2.0]), np.array(1), 3))             # one row, 0-d target
def test_cross_entropy_gradient(case):
    check_gradient(*case)


@given(cross_entropy_case(bound=20.0, offset=1e3))
def test_cross_entropy_gradient_with_large_shifts(case):
    check_gradient(*case, normwise=True)


@given(cross_entropy_case(bound=1e3))
def test_cross_entropy_gradient_with_large_spread(case):
    # the loss can be ~1e3 here; see assert_gradients for why normwise
    check_gradient(*case, normwise=True)


@given(cross_entropy_case(bound=1e3))
@example(case=(np.array([[2.0], [-1.0]]), np.array([0, -100]), 0))
def test_cross_entropy_equals_its_definition(case):
    logits, targets, _ = case
    loss, _ = cross_entropy_forward(logits, targets)
    assert loss.shape == () and loss.dtype == logits.dtype
    expected = reference_loss(logits, targets)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12, atol=1e-12)


@given(cross_entropy_case(bound=20.0))
def test_cross_entropy_equals_log_softmax_then_nll(case):
    # the fused op against the unfused pair, forward and backward
    logits, targets, seed = case
    V = logits.shape[-1]
    counted = targets != -100
    M = max(int(counted.sum()), 1)
    log_probs, ls_cache = log_softmax_forward(logits)
    picked = np.take_along_axis(log_probs, np.where(counted, targets, 0)[..., None], -1)[..., 0]
    nll = -(picked * counted).sum() / M
    loss, cache = cross_entropy_forward(logits, targets)
    np.testing.assert_allclose(float(loss), nll, rtol=1e-12, atol=1e-12)
    dloss = np.random.default_rng(seed).standard_normal()
    dlog_probs = -dloss * counted[..., None] * np.eye(V)[np.where(counted, targets, 0)] / M
    np.testing.assert_allclose(cross_entropy_backward(dloss, cache),
                               log_softmax_backward(dlog_probs, ls_cache),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4,), (2, 3)])
def test_cross_entropy_all_ignored_gives_zero_loss_and_gradient(shape, dtype):
    logits = np.random.default_rng(0).standard_normal(shape + (5,)).astype(dtype)
    targets = np.full(shape, -100)
    with no_float_warnings():
        loss, cache = cross_entropy_forward(logits, targets)
        dlogits = cross_entropy_backward(1.0, cache)
    assert float(loss) == 0.0 and loss.dtype == dtype
    assert dlogits.dtype == dtype and dlogits.shape == logits.shape
    np.testing.assert_array_equal(dlogits, 0.0)


def test_cross_entropy_ignored_rows_get_no_gradient_and_do_not_count():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 4, 6))
    targets = np.array([[1, -100, 3, -100], [0, 5, -100, 2]])
    loss, cache = cross_entropy_forward(logits, targets)
    dlogits = cross_entropy_backward(1.0, cache)
    np.testing.assert_array_equal(dlogits[targets == -100], 0.0)
    kept = targets != -100
    only_kept, _ = cross_entropy_forward(logits[kept], targets[kept])
    np.testing.assert_allclose(float(loss), float(only_kept), rtol=1e-14)   # mean over 5, not 8
    np.testing.assert_allclose(dlogits.sum(axis=-1), 0.0, atol=1e-15)       # softmax - one-hot


def test_cross_entropy_custom_ignore_index():
    logits = np.random.default_rng(2).standard_normal((5, 3))
    targets = np.array([0, 2, 1, 2, 1])
    loss, cache = cross_entropy_forward(logits, targets, ignore_index=2)
    expected = reference_loss(logits, targets, ignore_index=2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-13)
    np.testing.assert_array_equal(cross_entropy_backward(1.0, cache)[targets == 2], 0.0)
    minus_one = np.array([0, -1, 1, -1, 1])
    loss1, _ = cross_entropy_forward(logits, minus_one, ignore_index=-1)
    np.testing.assert_allclose(float(loss1), reference_loss(logits, minus_one, -1), rtol=1e-13)


def test_cross_entropy_float32_in_float32_out():
    rng = np.random.default_rng(0)
    logits = (100 * rng.standard_normal((2, 3, 7))).astype(np.float32)
    targets = rng.integers(0, 7, (2, 3))
    loss, cache = cross_entropy_forward(logits, targets)
    for dloss in (1.0, np.float32(0.5), np.float64(0.5), np.array(2.0)):
        dlogits = cross_entropy_backward(dloss, cache)
        assert_all_float32(loss, cache, dlogits)
        assert dlogits.dtype == np.float32 and dlogits.shape == logits.shape
    assert loss.dtype == np.float32 and loss.shape == ()


def test_cross_entropy_loss_is_a_zero_d_array():
    loss, _ = cross_entropy_forward(np.zeros((3, 4)), np.array([0, 1, 2]))
    assert isinstance(loss, np.ndarray) and loss.shape == ()
    np.testing.assert_allclose(float(loss), np.log(4.0), rtol=1e-15)


BAD_INPUTS = [
    (np.ones((2, 3)), np.array([0, 3]), ValueError,
     r"cross_entropy_forward: targets must be in \[0, 3\) or ignore_index=-100; got 3"),
    (np.ones((2, 3)), np.array([-1, 0]), ValueError,
     r"cross_entropy_forward: targets must be in \[0, 3\) or ignore_index=-100; got -1"),
    (np.ones((2, 3)), np.array([0.0, 1.0]), TypeError,
     r"cross_entropy_forward: targets must be an integer array; got float64"),
    (np.ones((2, 3)), [0, 1], TypeError,
     r"cross_entropy_forward: targets must be an integer array; got list"),
    (np.ones((2, 3)), np.array([0, 1, 2]), ValueError,
     r"cross_entropy_forward: targets must have shape \(2,\) to match logits \(\.\.\., V=3\); "
     r"got \(3,\)"),
    (np.ones((2, 3)), np.array([[0], [1]]), ValueError, r"cross_entropy_forward: targets must "
     r"have shape \(2,\)"),
    (np.ones(()), np.array(0), ValueError, r"cross_entropy_forward: logits must have at least 1"),
    (np.ones((2, 3), dtype=int), np.array([0, 1]), TypeError,
     r"cross_entropy_forward: logits must be a floating-point array"),
    ("logits", np.array([0, 1]), TypeError, r"cross_entropy_forward: logits must be an array"),
]


@pytest.mark.parametrize("logits, targets, error, message", BAD_INPUTS)
def test_cross_entropy_rejects_bad_input(logits, targets, error, message):
    with pytest.raises(error, match=message):
        cross_entropy_forward(logits, targets)
