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

The fast CPU path. NumPy runs each call on one core, except the BLAS behind
``@``, which has threads of its own. On the CPU the layers can instead use the
fast variants of the ops (``linear_forward_fast`` beside ``linear_forward``,
...): the same math, cut into cache-sized row blocks spread over
``num_threads()`` threads of scratchlm's own (NumPy releases the GIL inside
its loops), with each BLAS call inside a block run single-threaded. The
large matrix products of the linear layers go through ``matmul``: with
Intel's MKL installed (the ``mkl`` extra, ``scratchlm/_mkl.py``), blocks of
rows over those threads, one single-threaded MKL call each; otherwise one
NumPy call on the BLAS's own threads. Each fast variant is tested equal to
its plain op.
OpenBLAS's idle threads spin on a core for a while after each call, taking
it from the element-wise work: ``OPENBLAS_THREAD_TIMEOUT=4`` in the
environment, before NumPy is first imported, sends them to sleep at once
(``import scratchlm`` sets it when NumPy is not yet loaded, and keeps freed
arrays for reuse: ``scratchlm/_runtime.py``).
``set_fast_path(False)`` (or ``SCRATCHLM_FAST_PATH=0``) makes every layer
call the plain ops;
``set_num_threads(n)`` (or ``SCRATCHLM_NUM_THREADS``) sets the thread count,
by default the number of CPUs.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from scratchlm import _mkl

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


# --- the fast CPU path: a flag, a thread pool, single-threaded BLAS inside it ---

_fast_path = os.environ.get("SCRATCHLM_FAST_PATH", "1").lower() not in ("0", "false", "no")
_num_threads = None      # resolved on first use
_pool = None             # ThreadPoolExecutor of num_threads() - 1 workers (the caller is one)
_blas = None             # threadpoolctl's controller of NumPy's BLAS, or False without one
_blas_lock = threading.Lock()


def set_fast_path(on: bool) -> None:
    """Let layers use the fast CPU variants of the ops (True, the default) or the plain ones."""
    global _fast_path
    _fast_path = bool(on)


def fast_path(*arrays) -> bool:
    """Whether the fast CPU variants apply: the flag is on and no array is a CuPy array."""
    return _fast_path and not any(is_cupy_array(a) for a in arrays if a is not None)


def num_threads() -> int:
    """Threads that the fast CPU path spreads its work over (default: the number of CPUs)."""
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("SCRATCHLM_NUM_THREADS")
        _num_threads = int(env) if env else (os.cpu_count() or 1)
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the fast CPU path's thread count (1: everything on the calling thread)."""
    global _num_threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int; got {n!r}")
    _num_threads = n
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None


def _blas_controllers() -> list:
    """threadpoolctl's handles on the BLAS libraries in this process: NumPy's, and any
    other (SciPy's own OpenBLAS, MKL): empty when they cannot be controlled."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415
            _blas = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # threadpoolctl missing, or a BLAS it does not know
            _blas = []
    return _blas


def parallel_for(n: int, fn, min_size: int = 1, blas_inside: bool = True) -> None:
    """Call ``fn(lo, hi)`` over consecutive ranges that cover range(n), on num_threads() threads.

    The calling thread takes the first range; the ranges are as even as
    possible and never shorter than ``min_size`` (so small work stays on
    one thread). ``fn`` must write disjoint parts of its outputs. While the
    ranges run on several threads, the BLAS runs single-threaded: two threads
    of ours each starting BLAS threads would put four busy threads on two
    cores (``blas_inside=False``: fn makes no call to a threaded BLAS, and
    the BLAS is left as it is). Exceptions are raised here.
    """
    global _pool
    parts = max(1, min(num_threads(), n // max(1, min_size)))
    if threading.current_thread().name.startswith("scratchlm"):
        parts = 1                                       # called from a worker: no nesting
    if n <= 0:
        return
    if parts == 1:                                      # one range: on this thread, as is
        fn(0, n)
        return
    with _blas_lock:                                    # every BLAS in the process to 1
        before = [(lib, lib.get_num_threads())
                  for lib in (_blas_controllers() if blas_inside else ())]
        for lib, threads in before:
            if threads != 1:
                lib.set_num_threads(1)
    try:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=num_threads() - 1,
                                       thread_name_prefix="scratchlm")
        bounds = [n * i // parts for i in range(parts + 1)]
        futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, parts)]
        try:
            fn(bounds[0], bounds[1])
        finally:
            for f in futures:
                f.result()
    finally:
        with _blas_lock:
            for lib, threads in before:
                if threads != 1:
                    lib.set_num_threads(threads)


MATMUL_MKL_FROM = 1 << 20       # multiply-adds from which a product goes to MKL, in parts
                                # of at least half as many (below: NumPy's call costs less)


def matmul(a, b, out=None):
    """``a @ b`` of two 2-D arrays for the fast CPU path (equal to NumPy's to rounding).

    With MKL installed (``scratchlm[mkl]``, see ``scratchlm/_mkl.py``) the
    product is cut into blocks of rows of ``a`` (or of columns of ``b``, when
    it has more of them), one single-threaded MKL call per thread of
    ``parallel_for`` (the blocks are fixed by the shapes and the thread
    count, so a product repeats bit for bit). Otherwise, and for anything
    MKL does not take (CuPy arrays, integer dtypes, layouts without
    contiguous rows or columns), it is ``xp.matmul(a, b, out=out)`` with
    the BLAS's own threads.
    ``out``: an optional (M, N) array to write into. Returns the product.
    """
    xp = get_array_module(a, b)
    if xp is not np or a.ndim != 2 or b.ndim != 2 \
            or a.shape[0] * a.shape[1] * b.shape[-1] < MATMUL_MKL_FROM or _mkl.library() is None:
        return xp.matmul(a, b, out=out)
    (M, K), N = a.shape, b.shape[1]
    if out is None:
        out = np.empty((M, N), dtype=np.result_type(a, b))
    if not _mkl.takes(a, b, out):
        return np.matmul(a, b, out=out)
    by_rows = M >= N                                    # cut the longer side
    min_size = max(1, MATMUL_MKL_FROM // (2 * (N if by_rows else M) * K))

    def rows(lo, hi):
        _mkl.gemm(a[lo:hi], b, out[lo:hi])

    def columns(lo, hi):
        _mkl.gemm(a, b[:, lo:hi], out[:, lo:hi])

    parallel_for(M if by_rows else N, rows if by_rows else columns, min_size, blas_inside=False)
    return out


def for_blocks(lo: int, hi: int, block: int):
    """Consecutive (start, stop) pairs of at most ``block`` covering [lo, hi)."""
    block = max(1, block)
    return ((i, min(i + block, hi)) for i in range(lo, hi, block))
