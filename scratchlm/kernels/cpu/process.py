"""Process settings that make NumPy's CPU work faster, for an application to apply.

Two costs outside NumPy's own code, both measured on a training step:

* OpenBLAS's idle threads spin on a core for about 0.1 s after each matrix
  product, taking it from the element-wise work that follows.
  ``OPENBLAS_THREAD_TIMEOUT=4`` sends them to sleep at once. OpenBLAS reads
  it when it loads, with NumPy, so it is set here only if NumPy is not yet
  imported, and never over a value already in the environment.
* glibc hands out arrays above 128 KiB as fresh memory maps and returns them
  to the system when freed; the next array of that size then page-faults on
  every 4 KiB page it touches (tens of thousands of faults per training step,
  in the kernel, one thread at a time). Raising the allocator's mmap and trim
  thresholds (``mallopt``) keeps freed arrays in the process for reuse.
  Linux with glibc only; elsewhere nothing changes.

``tune_process()`` applies both. Importing scratchlm applies neither: they
change the whole process (a PyTorch in the same notebook too), so they are an
application's choice; the ``scratchlm`` command makes it at start-up, before
NumPy loads. ``SCRATCHLM_TUNE_RUNTIME=0`` in the environment turns both off.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 << 20       # glibc's largest: arrays up to 32 MiB come from the heap
TRIM_THRESHOLD = 512 << 20      # free memory kept for reuse before any is given back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt's parameter numbers (malloc.h)

applied: dict = {}              # what was changed, for the curious and the tests


def tune_process() -> dict:
    """Apply both settings once (see the module docstring); returns what was applied."""
    if applied or os.environ.get("SCRATCHLM_TUNE_RUNTIME", "1").lower() in ("0", "false", "no"):
        return applied
    if "numpy" not in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
        applied["OPENBLAS_THREAD_TIMEOUT"] = "4"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                  and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        except (OSError, AttributeError):   # not glibc (musl has no mallopt)
            ok = False
        if ok:
            applied["mallopt"] = {"mmap_threshold": MMAP_THRESHOLD,
                                  "trim_threshold": TRIM_THRESHOLD}
    return applied
