"""Matrix products for the CPU engine: Intel MKL's sgemm over scratchlm's threads, or NumPy's.

The large products of the linear layers go through ``matmul``: with Intel's
MKL installed (the ``mkl`` extra, ``kernels/cpu/mkl.py``), blocks of rows over
the engine's threads, one single-threaded MKL call each; otherwise one NumPy
call on the BLAS's own threads.
"""

from __future__ import annotations

import numpy as np

from scratchlm.backend import get_array_module
from scratchlm.kernels.cpu import mkl as _mkl
from scratchlm.kernels.cpu.threads import parallel_for

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
