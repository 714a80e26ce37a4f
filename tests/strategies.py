"""Hypothesis strategies for the tests: dimensions first, then arrays.

Every case draws its sizes first (B, T, H, D, V, ... each a side in 1..6, with
a cap on the number of elements so that an element-wise finite-difference
check stays fast), then float64 arrays of exactly those shapes, so that
related arrays agree (x (B, T, C) with gamma (C,)). Values are bounded, finite
and never subnormal. Where a test needs random numbers beyond the drawn
arrays (an upstream gradient, a dropout mask) it draws a seed, so hypothesis
can replay and shrink the whole case.

The draws are meant to exercise the math, not its degenerate corners: the
axis an op works along (softmax's axis, the classes of cross-entropy,
attention's keys, a linear layer's inputs and outputs) has at least two
entries, LayerNorm's features at least three; an embedding case has at least two ids, one of them
repeated; every element of an array is drawn on its own, so arrays of two or
more elements are seldom constant. The degenerate cases (one feature, one
key, one class, a single id, a 0-d or constant array) are the tests' explicit
``@example``s, or tests of their own. ``benchmarks/strategy_shares.py``
measures how often each strategy still draws a trivial case, and
``tests/test_strategies.py`` keeps those shares low.

The module ends with the gradient assertion that every backward test uses.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose

from scratchlm.gradcheck import numerical_grad

MAX_SIDE = 6          # every drawn side is in 1..MAX_SIDE
BUDGET = 96           # most elements in one drawn array (the finite-difference cost)
RTOL, ATOL = 1e-6, 1e-8   # backward vs central differences, float64
FD_STEP = 1e-6            # the central difference's h
FD_NOISE = 4.0            # its rounding, in units of eps |loss| / h (see assert_gradients)

seeds = st.integers(0, 2**32 - 1)


def floats(bound=3.0):
    """Finite float64 values in [-bound, bound], no NaN, no inf, no subnormals."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                     allow_subnormal=False)


def arrays(shape, bound=3.0):
    """A float64 array of the given shape with elements from ``floats(bound)``, not constant.

    Each element is drawn on its own (no shared fill value). Hypothesis still
    likes to repeat one value everywhere; an array of two or more elements
    that came out constant gets a ramp across [-bound/2, bound/2] added
    (clipped to the bounds), so it never is. Constant arrays are explicit
    examples of the tests that need them.
    """
    return hnp.arrays(np.float64, tuple(shape), elements=floats(bound),
                      fill=st.nothing()).map(lambda a: _not_constant(a, bound))


def _not_constant(a, bound):
    if a.size >= 2 and (a == a.reshape(-1)[0]).all():
        ramp = np.linspace(-0.5 * bound, 0.5 * bound, a.size).reshape(a.shape)
        a = np.clip(a + ramp, -bound, bound)
    return a


def bool_arrays(shape, p_true=0.75):
    """A boolean array, each element True with probability about ``p_true``, drawn on its own."""
    quarters = round(4 * p_true)
    return hnp.arrays(np.bool_, tuple(shape), fill=st.nothing(),
                      elements=st.integers(0, 3).map(lambda i: i < quarters))


def sometimes(p=0.25):
    """True with probability about p (in quarters), for rare branches of a case."""
    return st.integers(0, 3).map(lambda i: i < round(4 * p))


@st.composite
def sides(draw, n, budget=BUDGET, min_side=1):
    """``n`` sides, each in [min_side, MAX_SIDE], whose product is at most ``budget``.

    Every side is drawn in the full range; while the product is over the
    budget the largest side is cut by one, so no side is left with nothing
    because the sides before it used up the budget.
    """
    out = [draw(st.integers(min_side, MAX_SIDE)) for _ in range(n)]
    while int(np.prod(out)) > budget and max(out) > min_side:
        out[out.index(max(out))] -= 1
    return tuple(out)


@st.composite
def shapes(draw, min_dims=0, max_dims=3, budget=BUDGET, min_side=1):
    """A shape of ``min_dims`` to ``max_dims`` sides in min_side..6, at most ``budget`` elements."""
    ndim = draw(st.integers(min_dims, max_dims))
    return draw(sides(ndim, budget, min_side))


@st.composite
def shape_with_axis(draw, min_dims=1, max_dims=3, budget=BUDGET):
    """(shape, axis): 1 to 3 sides, the one at ``axis`` (negative, from the end) at least 2."""
    ndim = draw(st.integers(min_dims, max_dims))
    axis = draw(st.integers(-ndim, -1))
    n = draw(st.integers(2, MAX_SIDE))
    rest = list(draw(sides(ndim - 1, budget // n)))
    rest.insert(ndim + axis, n)
    return tuple(rest), axis


# --- one strategy per op family ------------------------------------------------

@st.composite
def linear_case(draw):
    """x (*lead, C_in), W (C_in, C_out), b (C_out,) or None; lead 0 to 2 sides; C_in, C_out >= 2."""
    C_in, C_out = draw(sides(2, 36, min_side=2))
    lead = draw(shapes(0, 2, budget=max(1, BUDGET // max(C_in, C_out))))
    x = draw(arrays(lead + (C_in,)))
    W = draw(arrays((C_in, C_out)))
    b = draw(st.none() | arrays((C_out,)))
    return x, W, b, draw(seeds)


@st.composite
def embedding_case(draw):
    """ids (*lead) in [0, V), at least two and one of them repeated, W (V, C), V, C >= 2."""
    V, C = draw(sides(2, 36, min_side=2))
    lead = draw(sides(draw(st.integers(1, 2)), 24))
    if int(np.prod(lead)) < 2:                          # at least two ids: room for a repeat
        lead = (2,) + lead[1:]
    ids = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, V - 1), fill=st.nothing()))
    flat = ids.reshape(-1)                              # force a duplicate: the scatter-add case
    i, j = draw(st.lists(st.integers(0, ids.size - 1), min_size=2, max_size=2, unique=True))
    flat[j] = flat[i]
    W = draw(arrays((V, C)))
    return ids, W, draw(seeds)


@st.composite
def layernorm_case(draw):
    """x (*lead, C), gamma (C,), beta (C,); lead has 0 to 2 sides; C >= 3.

    With C = 1, x_hat is 0; with C = 2, x_hat is +-1 whatever x is, and the
    gradient with respect to x is 0 up to terms in eps: both are explicit
    examples of the tests.
    """
    C = draw(st.integers(3, MAX_SIDE))
    lead = draw(shapes(0, 2, budget=BUDGET // C))
    x = draw(arrays(lead + (C,)))
    gamma, beta = draw(arrays((C,))), draw(arrays((C,)))
    return x, gamma, beta, draw(seeds)


@st.composite
def elementwise_case(draw, bound=3.0, min_dims=0):
    """x with 1 to 3 sides and at least two elements, for element-wise ops.

    ``min_dims`` is kept for the callers: a 0-d array (and a single element)
    is an explicit example of the tests, not a draw.
    """
    ndim = draw(st.integers(max(1, min_dims), 3))
    shape = draw(sides(ndim))
    if int(np.prod(shape)) < 2:
        shape = (2,) + shape[1:]
    x = draw(arrays(shape, bound))
    return x, draw(seeds)


@st.composite
def softmax_case(draw, bound=20.0, offset=0.0):
    """x with 1 to 3 sides and an axis of length >= 2; ``offset`` adds a drawn per-slice shift.

    With a large offset the values are large (up to +-1e3) while the
    differences along the axis stay moderate: exp() would overflow without
    the max subtraction, and the result is the same as without the shift.
    The axis is negative or positive (both forms are accepted by the ops).
    """
    shape, axis = draw(shape_with_axis())
    if draw(st.booleans()):
        axis += len(shape)                              # the same axis, counted from the front
    x = draw(arrays(shape, bound))
    if offset:
        shift_shape = list(shape)
        shift_shape[axis] = 1
        x = x + draw(arrays(shift_shape, offset))
    return x, axis, draw(seeds)


@st.composite
def cross_entropy_case(draw, bound=20.0, offset=0.0):
    """logits (*lead, V), V >= 2, targets (*lead) in [0, V) with some set to ignore_index=-100.

    Each target is ignored with probability about 1/4, and one drawn target is
    always counted (every target ignored is a test of its own). ``offset`` as
    in softmax_case.
    """
    V = draw(st.integers(2, MAX_SIDE))
    lead = draw(shapes(0, 2, budget=BUDGET // V))
    logits = draw(arrays(lead + (V,), bound))
    if offset:
        logits = logits + draw(arrays(lead + (1,), offset))
    targets = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, V - 1),
                              fill=st.nothing()))
    ignored = draw(bool_arrays(lead, p_true=0.25))
    ignored.reshape(-1)[draw(st.integers(0, ignored.size - 1))] = False   # one counted, at least
    targets = np.where(ignored, -100, targets)
    return logits, targets, draw(seeds)


MASK_KINDS = ("none", "bool_2d", "bool_4d", "int01_2d", "int01_4d", "additive")


@st.composite
def attention_case(draw, mask_kind="none", causal=None, budget=BUDGET):
    """q (B, H, Tq, D), k and v (B, H, Tk, D), a mask of the given kind, causal or not.

    Tk >= 2 (one key makes the softmax 1 and dq, dk zero: an explicit example
    of the tests). mask kinds: "none"; "bool_2d" / "int01_2d", a (B, Tk)
    key-padding mask; "bool_4d" / "int01_4d", a mask of shape (B or 1, H or 1,
    Tq or 1, Tk); "additive", a float (B or 1, H or 1, Tq, Tk) mask of 0,
    -inf and negative values. A mask keeps each key with probability about
    3/4, and its last row (seen by the last query, which causal attention
    lets see every key) keeps the first two keys. In about a quarter of the
    cases another mask row, where there is one, is cleared (or set to -inf)
    on purpose: a fully masked row. With causal=True, Tq <= Tk (the queries
    are the last Tq positions, as with a KV cache).
    """
    if causal is None:
        causal = draw(st.booleans())
    Tk = draw(st.integers(2, MAX_SIDE))
    Tq = draw(st.integers(1, Tk if causal else MAX_SIDE))
    D = draw(st.integers(1, max(1, min(MAX_SIDE, budget // (2 * max(Tq, Tk))))))
    B, H = draw(sides(2, max(1, budget // (max(Tq, Tk) * D))))
    q = draw(arrays((B, H, Tq, D)))
    k = draw(arrays((B, H, Tk, D)))
    v = draw(arrays((B, H, Tk, D)))
    clear_row = draw(sometimes(0.25))
    mask = None
    if mask_kind in ("bool_2d", "int01_2d", "bool_4d", "int01_4d"):
        if mask_kind.endswith("2d"):
            shape = (B, Tk)
        else:
            shape = (draw(st.sampled_from([B, 1])), draw(st.sampled_from([H, 1])),
                     draw(st.sampled_from([Tq, 1])), Tk)
        mask = draw(bool_arrays(shape))
        mask[_last_row(shape)][:2] = True               # one row sees two keys, at least
    elif mask_kind == "additive":
        shape = (draw(st.sampled_from([B, 1])), draw(st.sampled_from([H, 1])), Tq, Tk)
        values = (st.integers(0, 3).map(lambda i: -np.inf if i == 0 else 0.0)
                  | floats(3.0).map(lambda f: -abs(f)))
        mask = draw(hnp.arrays(np.float64, shape, elements=values, fill=st.nothing()))
        row = mask[_last_row(shape)]
        row[:2] = np.where(np.isneginf(row[:2]), 0.0, row[:2])
    elif mask_kind != "none":
        raise ValueError(f"unknown mask kind {mask_kind!r}")
    if mask is not None and clear_row:                  # a fully masked row, not that one
        rows = list(np.ndindex(*mask.shape[:-1]))[:-1]
        if rows:
            mask[rows[draw(st.integers(0, len(rows) - 1))]] = (
                -np.inf if mask_kind == "additive" else False)
    if mask_kind.startswith("int01"):
        mask = mask.astype(np.int64)
    return q, k, v, mask, causal, draw(seeds)


def fixed_attention_case(B=1, H=1, Tq=1, Tk=1, D=2, mask=None, causal=False, q_scale=1.0,
                         seed=0):
    """An attention case of the given sizes, q, k, v standard normal from ``seed``.

    For the shapes attention_case does not draw (one key; q = 0 with
    ``q_scale=0``, so every row is uniform), as explicit examples of the tests.
    """
    rng = np.random.default_rng(seed)
    q = q_scale * rng.standard_normal((B, H, Tq, D))
    k, v = rng.standard_normal((2, B, H, Tk, D))
    return q, k, v, mask, causal, seed


def _last_row(shape):
    """Index of the last row (all leading indices at their last value) of a mask."""
    return tuple(n - 1 for n in shape[:-1])


# --- the gradient assertion ----------------------------------------------------

def assert_gradients(loss, analytic, arrays_by_name, rtol=RTOL, atol=ATOL, normwise=False):
    """Each analytic gradient matches central differences of the scalar ``loss()``.

    ``loss`` must read the arrays of ``arrays_by_name`` afresh on every call
    (``numerical_grad`` perturbs them in place and restores them). Gradients
    must also have the shape and dtype of their input.

    Element-wise, |analytic - numeric| <= atol' + rtol |numeric| for every
    entry, where atol' is atol or, when larger, the rounding of the central
    difference itself, FD_NOISE eps |loss| / h: a loss of 50 (90 log-probs
    near -20 against a random upstream gradient) is computed to about
    eps |loss|, and no difference over 2h resolves a derivative better than
    that. ``normwise=True`` instead bounds the largest difference by
    atol' + rtol max|numeric| (the criterion of ``scratchlm.gradcheck``), for
    inputs near 1e3, where small entries are below that rounding.
    """
    noise = FD_NOISE * np.finfo(np.float64).eps * abs(float(loss())) / FD_STEP
    for name, x in arrays_by_name.items():
        g = analytic[name]
        assert g.shape == x.shape, f"d{name} has shape {g.shape}, input {x.shape}"
        assert g.dtype == x.dtype, f"d{name} has dtype {g.dtype}, input {x.dtype}"
        numeric = numerical_grad(loss, x, FD_STEP)
        if normwise:
            scale = float(np.max(np.abs(numeric), initial=0.0))
            assert_allclose(g, numeric, rtol=0, atol=max(atol, noise) + rtol * scale,
                            err_msg=f"d{name}")
        else:
            assert_allclose(g, numeric, rtol=rtol, atol=max(atol, noise), err_msg=f"d{name}")


def assert_unchanged(before, after):
    """Inputs are not modified by an op: ``after`` equals the copies in ``before``."""
    for name, copy in before.items():
        assert np.array_equal(copy, after[name], equal_nan=True), f"{name} was modified"


def assert_all_float32(*things):
    """Every floating array in ``things`` (outputs, gradients, caches, nested) is float32.

    Catches a silent float64 temporary kept in a cache as well as in a result.
    """
    for thing in things:
        if isinstance(thing, tuple):
            assert_all_float32(*thing)
        elif getattr(thing, "dtype", None) is not None and thing.dtype.kind == "f":
            assert thing.dtype == np.float32, f"float64 leaked: {thing.dtype} {np.shape(thing)}"


@contextlib.contextmanager
def no_float_warnings():
    """Any warning, or a floating-point overflow, invalid value or division by zero, is an error.

    (Underflow stays allowed: exp() of a masked score underflows to 0 on purpose.)
    """
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        yield
