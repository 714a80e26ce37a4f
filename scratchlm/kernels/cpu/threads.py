"""The CPU engine's threads: a pool of scratchlm's own, with the BLAS single-threaded inside.

NumPy runs each call on one core, except the BLAS behind ``@``, which has
threads of its own. The CPU kernels instead cut their work into cache-sized
blocks of rows spread over ``num_threads()`` threads (NumPy releases Python's
lock inside its loops), each BLAS call inside a block single-threaded.
``set_num_threads(n)`` (or ``SCRATCHLM_NUM_THREADS``) sets the thread count,
by default the number of CPUs. The pool starts on the first parallel call,
never at import.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_num_threads = None      # resolved on first use
_pool = None             # ThreadPoolExecutor of num_threads() - 1 workers (the caller is one)
_blas = None             # threadpoolctl's controller of NumPy's BLAS, or False without one
_blas_lock = threading.Lock()


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


def for_blocks(lo: int, hi: int, block: int):
    """Consecutive (start, stop) pairs of at most ``block`` covering [lo, hi)."""
    block = max(1, block)
    return ((i, min(i + block, hi)) for i in range(lo, hi, block))
