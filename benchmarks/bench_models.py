"""scratchlm against PyTorch: training, forward and generation throughput, MFU, memory.

    python benchmarks/bench_models.py                       # every config, a table
    python benchmarks/bench_models.py --configs small --json out.json
    python benchmarks/bench_models.py --profile small       # ms per op in a training step
    python benchmarks/bench_models.py --memory              # peak memory against context

The same as ``scratchlm bench``; see ``scratchlm/bench/`` for what is
measured and how. Each measurement runs in a fresh process with the thread
count set before NumPy loads; scratchlm and PyTorch alternate, round by round.
"""

from __future__ import annotations

import os
import sys

# Read by OpenBLAS when NumPy loads: idle BLAS threads sleep instead of spinning.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from scratchlm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
