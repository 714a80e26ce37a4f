"""Intel MKL's matrix product for the fast CPU path, where the ``mkl`` package is installed.

NumPy's wheels carry OpenBLAS. On the Intel CPU measured for the benchmarks
(2 cores, AVX-512), MKL's sgemm runs the linear layers' products 20-30%
faster (about 230 against 180 GFLOP/s at GPT ``small``'s shapes), and it is
the library PyTorch's CPU build uses. ``pip install "scratchlm[mkl]"`` (the
``mkl`` package from PyPI, Intel's own) makes the fast path use it; nothing
else changes, and without it the fast path uses NumPy's ``matmul``.

MKL is loaded here with ``ctypes`` and set up before its first call:

* sequential (``MKL_Set_Threading_Layer``): MKL's own OpenMP threads would
  spin on the cores between calls, taking them from the element-wise work
  on scratchlm's threads; instead ``kernels.cpu.blas.matmul`` cuts a product into
  row (or column) blocks, one single-threaded MKL call per thread;
* 32-bit integers (``MKL_Set_Interface_Layer``, LP64), as passed below;
* reproducible (``MKL_CBWR_Set``): the same bits whatever the arrays'
  alignment in memory, so that a resumed training run repeats exactly.

``SCRATCHLM_BLAS=numpy`` in the environment leaves MKL alone. Set it in a
process that also runs PyTorch's CPU ops and cares about their speed: with
this library loaded beside PyTorch's own MKL, PyTorch's training step at GPT
``small`` ran 30% slower (measured; the benchmarks' PyTorch processes set it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112        # CBLAS's enums (mkl_cblas.h)
_THREADING_SEQUENTIAL, _INTERFACE_LP64 = 1, 0        # mkl_service.h
_CBWR_AUTO, _CBWR_STRICT, _CBWR_SUCCESS = 2, 0x10000, 0

_lib = None        # the loaded library once set up; False when absent or declined
_gemm = {}         # dtype -> cblas_sgemm / cblas_dgemm


def _candidates():
    """Where the ``mkl`` wheel puts libmkl_rt (this environment first), then the system."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        yield from sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")), reverse=True)
        yield from sorted(glob.glob(os.path.join(prefix, "Library", "bin", "mkl_rt*.dll")))
    found = ctypes.util.find_library("mkl_rt")
    if found:
        yield found


def _setup(lib) -> bool:
    """Sequential, LP64, reproducible; False if MKL was already set up otherwise (another
    library in this process loaded it first, with its own threads)."""
    if lib.MKL_Set_Threading_Layer(_THREADING_SEQUENTIAL) != _THREADING_SEQUENTIAL:
        return False
    if lib.MKL_Set_Interface_Layer(_INTERFACE_LP64) != _INTERFACE_LP64:
        return False
    lib.MKL_CBWR_Set(_CBWR_AUTO | _CBWR_STRICT)       # a no-op on CPUs it does not know
    i, p = ctypes.c_int, ctypes.c_void_p
    for dtype, name, scalar in ((np.float32, "cblas_sgemm", ctypes.c_float),
                                (np.float64, "cblas_dgemm", ctypes.c_double)):
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [i, i, i, i, i, i, scalar, p, i, p, i, scalar, p, i]
        _gemm[np.dtype(dtype)] = fn
    return True


def library():
    """The set-up MKL library, or None (not installed, declined by SCRATCHLM_BLAS=numpy,
    or already running with threads of its own)."""
    global _lib
    if _lib is None:
        _lib = False
        if os.environ.get("SCRATCHLM_BLAS", "").lower() != "numpy":
            for path in _candidates():
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    continue
                if _setup(lib):
                    _lib = lib
                break
    return _lib or None


def version() -> str | None:
    """MKL's version string, or None without MKL."""
    lib = library()
    if lib is None:
        return None
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, len(buf))
    return buf.value.decode(errors="replace").strip()


def _layout(x):
    """(transpose flag, leading dimension) of a 2-D operand whose rows or columns are
    contiguous, or None when neither is (the caller then uses NumPy)."""
    rows, cols = x.shape
    s0, s1 = x.strides
    size = x.itemsize
    if (cols == 1 or s1 == size) and (rows == 1 or (s0 % size == 0 and s0 >= cols * size)):
        return _NO_TRANS, s0 // size if rows > 1 else max(1, cols)
    if (rows == 1 or s0 == size) and (cols == 1 or (s1 % size == 0 and s1 >= rows * size)):
        return _TRANS, s1 // size if cols > 1 else max(1, rows)
    return None


def takes(a, b, out) -> bool:
    """Whether gemm can compute ``out[...] = a @ b``: MKL is loaded; a (M, K), b (K, N)
    and out (M, N) are NumPy arrays of one dtype, float32 or float64, none empty; a and
    b have contiguous rows or columns (transposed views included), out contiguous rows,
    and out overlaps neither. Row and column slices of arrays it takes it takes too."""
    if library() is None or out.dtype not in _gemm or a.dtype != out.dtype \
            or b.dtype != out.dtype or a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        return False
    (M, K), N = a.shape, b.shape[1]
    if b.shape[0] != K or out.shape != (M, N) or 0 in (M, N, K) or not out.flags.writeable \
            or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    lc = _layout(out)
    return _layout(a) is not None and _layout(b) is not None and lc is not None \
        and lc[0] == _NO_TRANS


def gemm(a, b, out) -> None:
    """``out[...] = a @ b`` by MKL, single-threaded, on the calling thread; for arrays that
    ``takes`` accepts (checked by the caller: the call is not checked again here)."""
    (M, K), N = a.shape, b.shape[1]
    (ta, lda), (tb, ldb), (_, ldc) = _layout(a), _layout(b), _layout(out)
    _gemm[out.dtype](_ROW_MAJOR, ta, tb, M, N, K, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
                     0.0, out.ctypes.data, ldc)
