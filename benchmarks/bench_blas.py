"""The fast path with MKL's products against the same with NumPy's BLAS.

    python benchmarks/bench_blas.py                          # every config, 3 rounds
    python benchmarks/bench_blas.py --configs small --rounds 5 --json out.json

For each config and round, two fresh measurement processes of scratchlm's
training step and forward pass (the workers of ``scratchlm bench``), one
with ``SCRATCHLM_BLAS=numpy`` (the linear layers' products by NumPy's
OpenBLAS on its own threads) and one with MKL (``kernels.cpu.matmul``: blocks
of rows over scratchlm's threads, one sequential MKL call each), in
alternating order, so that a host whose speed drifts treats both alike.
Prints medians [min-max] of tokens/s and the ratio MKL / NumPy. Needs the
``mkl`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from scratchlm import bench
from scratchlm.kernels.cpu import mkl as _mkl


def measure(config: str, blas: str, threads: int, steps: int) -> dict:
    """One scratchlm measurement process of ``config`` with SCRATCHLM_BLAS=``blas``."""
    spec = {"framework": "scratchlm", "attention": "sdpa", "config": config, "steps": steps,
            "warmup": 2, "gen_runs": 1, "threads": threads, "generate": False}
    return bench._spawn(spec, threads, {"SCRATCHLM_BLAS": blas})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "small", "gpt2ish", "bert-base"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if _mkl.version() is None:
        print("MKL is not installed (pip install 'scratchlm[mkl]'), or SCRATCHLM_BLAS says "
              "numpy: nothing to compare", file=sys.stderr)
        return 2
    raw = {c: {"numpy": [], "mkl": []} for c in args.configs}
    for r in range(args.rounds):
        for config in args.configs:
            order = ("numpy", "mkl") if r % 2 == 0 else ("mkl", "numpy")
            for blas in order:
                print(f"  round {r + 1}/{args.rounds}: {config} {blas}", file=sys.stderr)
                raw[config][blas].append(measure(config, blas, args.threads, args.steps))
    report = {"mkl": _mkl.version(), "threads": args.threads, "rounds": args.rounds,
              "configs": {}, "raw": raw}
    print(f"\nthreads {args.threads}; {report['mkl']}")
    print(f"{'config':<10} {'task':<8} {'NumPy BLAS tok/s':>22} {'MKL tok/s':>22} {'ratio':>6}")
    for config, runs in raw.items():
        c = bench.BERT_BASE if config == "bert-base" else bench.CONFIGS[config]
        tokens = c["batch"] * c["context"]
        entry = report["configs"][config] = {}
        for task in ("train", "forward"):
            s = {blas: bench._summary([x for run in runs[blas] for x in run[task]], tokens)
                 for blas in ("numpy", "mkl")}
            ratio = s["mkl"]["tokens_per_s"] / s["numpy"]["tokens_per_s"]
            entry[task] = {**s, "ratio": ratio,
                           "sgemm_gflops": {b: statistics.median(run["sgemm_gflops"]
                                                                  for run in runs[b])
                                            for b in ("numpy", "mkl")}}
            cells = ["{:.0f} [{:.0f}-{:.0f}]".format(s[b]["tokens_per_s"], s[b]["min"],
                                                     s[b]["max"]) for b in ("numpy", "mkl")]
            print(f"{config:<10} {task:<8} {cells[0]:>22} {cells[1]:>22} {ratio:5.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
