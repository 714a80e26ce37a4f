"""The array backend: NumPy on the CPU or CuPy on the GPU, with one code path.

Two rules make one function serve both backends:

* Functional ops never ask which backend is active. They take the array
  module from their inputs: ``xp = get_array_module(x, W)``. Methods
  (``x.sum()``, ``x @ W``, ``x.reshape``) need no ``xp``; free functions
  (``xp.exp``, ``xp.where``) do.
* ``set_backend`` decides only where *new* arrays are made: parameter
  initialisation, batches, checkpoint loading. ``xp()`` returns that module.

CuPy (and its NCCL bindings, for distributed.py) is imported here and nowhere else,
lazily, the first time it is asked for.
The few functions that NumPy lacks come from the matching place per backend:
``erf`` (``scipy.special`` / ``cupyx.scipy.special``) and ``scatter_add``
(``np.add.at`` / ``cupyx.scatter_add``).

The faster CPU and GPU variants of the ops live in the engine, ``scratchlm/kernels``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy")

_cupy = None  # the cupy module once imported
_backend = None  # name of the active backend, resolved on first use


def _import_cupy():
    """Import CuPy and check that a GPU is visible; clear errors otherwise."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy  # noqa: PLC0415 - the one lazy import of cupy
    except ImportError as exc:
        raise RuntimeError(
            "backend 'cupy' requested but CuPy is not installed; "
            "install it with: pip install -e '.[gpu]' (or the cupy-cudaXXx wheel "
            f"matching your CUDA); import failed with: {exc}"
        ) from exc
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise RuntimeError(
            f"backend 'cupy' requested but no GPU is usable: {exc}"
        ) from exc
    if n_devices < 1:
        raise RuntimeError("backend 'cupy' requested but no GPU is visible")
    _cupy = cupy
    return cupy


def cupy_nccl():
    """CuPy's NCCL bindings, ``cupy.cuda.nccl`` (a submodule ``import cupy`` leaves unloaded).

    Raises ImportError where CuPy was built without them; their ``available``
    is False where the NCCL library itself could not be loaded.
    """
    _import_cupy()
    import cupy.cuda.nccl as nccl  # noqa: PLC0415 - with cupy, the lazy imports live here
    return nccl


def _check_name(name: str, where: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"{where}: backend must be one of {BACKENDS}; got {name!r}")
    return name.lower()


def set_backend(name: str) -> None:
    """Choose where new arrays are made: ``"numpy"`` (CPU) or ``"cupy"`` (GPU)."""
    global _backend
    name = _check_name(name, "set_backend")
    if name == "cupy":
        _import_cupy()
    _backend = name


def get_backend() -> str:
    """The active backend's name; the default comes from ``SCRATCHLM_BACKEND``."""
    global _backend
    if _backend is None:
        name = _check_name(os.environ.get("SCRATCHLM_BACKEND", "numpy"),
                           "SCRATCHLM_BACKEND")
        if name == "cupy":
            _import_cupy()
        _backend = name
    return _backend


def xp(name: str | None = None):
    """The array module of the named backend (default: the active one)."""
    name = get_backend() if name is None else _check_name(name, "xp")
    return _import_cupy() if name == "cupy" else np


def is_cupy_array(a: Any) -> bool:
    # Without importing cupy: a cupy array's type lives in the cupy package.
    return type(a).__module__.split(".")[0] == "cupy"


def get_array_module(*arrays):
    """The array module (numpy or cupy) that the given arrays belong to.

    Non-array arguments (None, Python scalars) are ignored. Mixing NumPy and
    CuPy arrays is an error: ops never copy between host and device behind
    the caller's back.
    """
    kinds = {"cupy" if is_cupy_array(a) else "numpy"
             for a in arrays if a is not None and hasattr(a, "shape")}
    if len(kinds) > 1:
        described = ", ".join(
            f"{'cupy' if is_cupy_array(a) else 'numpy'} {tuple(a.shape)}"
            for a in arrays if a is not None and hasattr(a, "shape"))
        raise TypeError(
            "get_array_module: got numpy and cupy arrays together "
            f"({described}); move inputs with model.to() or scratchlm.to_numpy() first")
    if kinds == {"cupy"}:
        return _import_cupy()
    return np


def to_numpy(a):
    """Bring an array (or a nested tuple/list/dict of arrays) back to NumPy."""
    if isinstance(a, dict):
        return {k: to_numpy(v) for k, v in a.items()}
    if isinstance(a, tuple) and hasattr(a, "_fields"):  # a NamedTuple (an op's cache)
        return type(a)(*(to_numpy(v) for v in a))
    if isinstance(a, (list, tuple)):
        return type(a)(to_numpy(v) for v in a)
    if is_cupy_array(a):
        return a.get()
    return a


def to_backend(a, name: str | None = None):
    """Move a NumPy or CuPy array to the named backend (default: the active one)."""
    name = get_backend() if name is None else _check_name(name, "to_backend")
    if a is None:
        return None
    if name == "cupy":
        return _import_cupy().asarray(a)
    return to_numpy(a) if is_cupy_array(a) else np.asarray(a)


def erf(x):
    """The error function, element-wise, on the backend of ``x``.

    SciPy's and CuPy's erf are accurate to a few ulps, so BERT's exact GELU
    matches ``torch.erf`` to rounding in float64.
    """
    if is_cupy_array(x):
        from cupyx.scipy.special import erf as cupy_erf  # noqa: PLC0415
        return cupy_erf(x)
    from scipy.special import erf as scipy_erf  # noqa: PLC0415
    return scipy_erf(x)


SCATTER_CHUNK = 4096  # rows of values summed per matrix product in scatter_add_in_order


def scatter_add(a, indices, values) -> None:
    """In place: ``a[indices[i]] += values[i]`` with repeated indices adding up.

    ``a[idx] += v`` would keep only one of the values for a repeated index;
    ``np.add.at`` accumulates every one. On the GPU, ``scatter_add_in_order``
    does it (CuPy's ``add.at`` adds atomically, in an order that changes from
    run to run).
    """
    if is_cupy_array(a):
        scatter_add_in_order(a, indices, values)
    else:
        np.add.at(a, indices, values)


def scatter_add_in_order(a, indices, values, chunk: int | None = None) -> None:
    """``a[indices[i]] += values[i]`` (repeats adding up) with every sum in a fixed order.

    CuPy's ``add.at`` adds with atomic operations, whose order varies from
    run to run: floating-point sums then differ in their last bits, and a
    training run can be neither repeated nor resumed exactly. Here, for each
    chunk of K values in turn (K = SCATTER_CHUNK unless ``chunk`` says), the
    distinct indices are found (a sort) and each one's values summed by a
    matrix product with a 0/1 matrix, ``onehot (U, K) @ values (K, C)``:
    products by 1 and 0 are exact, and a matrix product is deterministic.
    The sums of the chunks land in ``a`` by plain indexing, which is safe
    because the indices of one chunk are distinct. Any backend; on NumPy it
    is what the tests compare with ``np.add.at``.
    """
    xp = get_array_module(a, values)
    idx = xp.asarray(indices).reshape(-1)
    if idx.size == 0:
        return
    rows = xp.asarray(values, dtype=a.dtype).reshape(idx.size, -1)     # (N, C)
    idx = xp.where(idx < 0, idx + a.shape[0], idx)      # -1 and V-1 are the same row
    step = chunk or SCATTER_CHUNK
    for lo in range(0, idx.size, step):
        distinct, which = xp.unique(idx[lo:lo + step], return_inverse=True)
        onehot = (xp.arange(distinct.size)[:, None] == which.reshape(1, -1)).astype(rows.dtype)
        sums = onehot @ rows[lo:lo + step]              # (U, C): each index's values summed
        a[distinct] += sums.reshape(distinct.shape + a.shape[1:])


def default_rng(seed=None, name: str | None = None):
    """A random Generator on the named backend (default: the active one)."""
    return xp(name).random.default_rng(seed)
