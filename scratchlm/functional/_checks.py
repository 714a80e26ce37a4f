"""Input checks for the functional ops: cheap, and loud in a useful way.

Each check raises ``ValueError`` (values, shapes) or ``TypeError`` (kinds of
object) with the op, the argument, what was expected and what was got, so a
bad call fails at the boundary and not deep inside NumPy. They look at shapes
and dtypes only (no pass over the data), except ``check_ids``, which must look
at the values: CuPy wraps out-of-range indices where NumPy raises.
"""

from __future__ import annotations

import numpy as np


def check_float(op: str, name: str, a, ndim: int | tuple[int, ...] | None = None,
                min_ndim: int | None = None):
    """``a`` is a floating-point array (of the given rank)."""
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{op}: {name} must be an array; got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point array; got dtype {a.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{op}: {name} must have {want} dimensions; "
                             f"got shape {tuple(a.shape)}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{op}: {name} must have at least {min_ndim} dimensions; "
                         f"got shape {tuple(a.shape)}")
    return a


def check_shape(op: str, name: str, a, shape: tuple, hint: str = ""):
    """``a.shape == shape``; ``hint`` says what the shape must match."""
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}{hint}; "
                         f"got {tuple(a.shape)}")
    return a


def check_same_dtype(op: str, **arrays):
    """All named arrays (None skipped) share one dtype: no silent up/down-casts."""
    named = {k: a for k, a in arrays.items() if a is not None}
    dtypes = {a.dtype for a in named.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{k} {a.dtype}" for k, a in named.items())
        raise TypeError(f"{op}: arrays must share one dtype; got {listing} "
                        "(cast with .astype() first)")


def check_ids(op: str, name: str, ids, high: int):
    """``ids`` is an integer array with every value in [0, high)."""
    if not hasattr(ids, "dtype") or ids.dtype.kind not in "iu":
        got = getattr(ids, "dtype", type(ids).__name__)
        raise TypeError(f"{op}: {name} must be an integer array; got {got}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= high:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: {name} must be in [0, {high}); got "
                             f"{'min' if lo < 0 else 'max'} id {bad}")
    return ids


def check_probability(op: str, name: str, p, allow_one: bool = False):
    """``p`` is a number in [0, 1) (or [0, 1])."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a number in [0, 1); got {type(p).__name__}")
    upper_ok = p <= 1 if allow_one else p < 1
    if not (0 <= p and upper_ok):
        raise ValueError(f"{op}: {name} must be in [0, 1{']' if allow_one else ')'}; got {p}")
    return float(p)
