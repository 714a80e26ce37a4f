"""Data-parallel training speed: 1 and 2 ranks on this machine, and a model for N machines.

For each model size it starts, with ``mpirun``:

    1 rank  x 1 BLAS thread     (reference)
    1 rank  x 2 BLAS threads    (one process using both cores)
    2 ranks x 1 BLAS thread     (data parallel, overlap of all-reduce and backward on)
    2 ranks x 1 BLAS thread     (overlap off: every bucket starts after backward)

and measures training tokens/s (all ranks together; batch B per rank), the
step time, the time a step waits for the gradient all-reduce, and the bytes
all-reduced per step. Then it models N machines like this one, each running
the fastest measured 1-rank step, joined by a network of a stated bandwidth:

    ring all-reduce of S bytes:  t_ar(N) = 2 (N-1)/N * S / bandwidth + 2 (N-1) * buckets * latency
    step(N)   = t_compute + t_ar(N)                 (no overlap: the pessimistic bound)
    step'(N)  = t_compute + max(0, t_ar(N) - t_bwd) (all-reduce hidden behind backward,
                                                     t_bwd = 2/3 of the step: backward
                                                     costs about twice the forward)
    tokens/s  = N * B * T / step(N)

    python benchmarks/bench_distributed.py                   # tiny and small GPT, a table
    python benchmarks/bench_distributed.py --models small --steps 5
    python benchmarks/bench_distributed.py --json            # one JSON object

Needs mpi4py and an mpirun (pip install -e ".[mpi]"). The numbers are only as
quiet as the machine: the load average before and after each run is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# BLAS threads, and the threads of scratchlm's own fast CPU path, per rank.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "SCRATCHLM_NUM_THREADS")
MODELS = {   # vocab, layers, heads, width, context, batch per rank
    "tiny": dict(vocab_size=256, n_layer=2, n_head=2, n_embd=64, n_positions=64, batch=8),
    "small": dict(vocab_size=256, n_layer=6, n_head=6, n_embd=384, n_positions=256, batch=8),
}
CONFIGS = [  # (ranks, threads per rank, overlap)
    (1, 1, True), (1, 2, True), (2, 1, True), (2, 1, False)]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,small", help=f"comma-separated, of {list(MODELS)}")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per run (default: 20 tiny, 4 small)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--bandwidth-gbit", default="10,100",
                   help="network bandwidths of the scaling model, Gbit/s")
    p.add_argument("--latency-us", type=float, default=25.0,
                   help="per-message latency of the scaling model, microseconds")
    p.add_argument("--machines", default="1,2,4,8,16,32,64")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--worker", help=argparse.SUPPRESS)          # MODEL, under mpirun
    p.add_argument("--no-overlap", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


# --- one run, under mpirun ---------------------------------------------------------

def worker(args):
    import numpy as np  # noqa: PLC0415

    from scratchlm.data import CausalLMBatches  # noqa: PLC0415
    from scratchlm.distributed import (  # noqa: PLC0415
        DataParallel, ShardedBatches, init_distributed,
    )
    from scratchlm.models import GPT, GPTConfig  # noqa: PLC0415
    from scratchlm.train import Trainer, TrainingArguments  # noqa: PLC0415

    spec = dict(MODELS[args.worker])
    batch, steps = spec.pop("batch"), args.steps
    dist = init_distributed()
    if dist is None:
        raise SystemExit("--worker runs under mpirun")
    cfg = GPTConfig(**spec, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT(cfg, seed=0, dtype="float32")
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, 200_000)
    train = ShardedBatches(CausalLMBatches(tokens, cfg.n_positions, batch * dist.world_size),
                           dist.rank, dist.world_size)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(out_dir=out, max_steps=10**6, warmup_steps=1,
                                  learning_rate=1e-4, progress=False)
        trainer = Trainer(model, targs, train,
                          parallel=DataParallel(dist, overlap=not args.no_overlap))
        for _ in range(args.warmup):
            trainer.train_step()
        step_s, wait_s = [], []
        for _ in range(steps):
            dist.barrier()
            t0 = time.perf_counter()
            trainer.train_step()
            step_s.append(time.perf_counter() - t0)
            wait_s.append(trainer.parallel.reducer.last_wait_s)
        # The same bytes all-reduced alone (no compute to wait for): what the link gives.
        flat = np.ones(trainer.parallel.reducer.flat.size, dtype=np.float32)
        alone = []
        for _ in range(5):
            dist.barrier()
            t0 = time.perf_counter()
            dist.wait([dist.start_allreduce(flat, "benchmark")], "benchmark")
            alone.append(time.perf_counter() - t0)
    if dist.is_main:
        step = statistics.median(step_s)
        print(json.dumps({
            "model": args.worker, "ranks": dist.world_size,
            "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")),
            "overlap": not args.no_overlap, "parameters": model.num_parameters(),
            "batch_per_rank": batch, "context": cfg.n_positions,
            "step_s": step, "steps_s": step_s, "wait_s": statistics.median(wait_s),
            "tokens_per_s": batch * cfg.n_positions * dist.world_size / step,
            "allreduce_bytes": trainer.parallel.reducer.nbytes, "buckets": len(trainer.parallel.reducer.buckets),
            "allreduce_alone_s": statistics.median(alone)}))


# --- the driver ----------------------------------------------------------------------

def run(model, ranks, threads, overlap, args, mpirun):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MV2_"))}
    env.update({v: str(threads) for v in THREAD_VARS})
    cmd = [mpirun, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
           "--worker", model, "--steps", str(args.steps or (20 if model == "tiny" else 4)),
           "--warmup", str(args.warmup)] + (["--no-overlap"] if not overlap else [])
    load = os.getloadavg()[0]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["load_before"], record["load_after"] = load, os.getloadavg()[0]
    return record


def scaling(one, args):
    """The modelled tokens/s and efficiency of N machines, each running ``one``'s step."""
    rows = []
    t, size, buckets = one["step_s"], one["allreduce_bytes"], one["buckets"]
    tokens = one["batch_per_rank"] * one["context"]
    for gbit in [float(g) for g in args.bandwidth_gbit.split(",")]:
        for n in [int(m) for m in args.machines.split(",")]:
            ar = (2 * (n - 1) / n * size / (gbit * 1e9 / 8)
                  + 2 * (n - 1) * buckets * args.latency_us * 1e-6)
            hidden = t + max(0.0, ar - 2 * t / 3)
            rows.append({"gbit_s": gbit, "machines": n, "allreduce_s": ar,
                         "tokens_per_s": n * tokens / (t + ar),
                         "efficiency": t / (t + ar),
                         "tokens_per_s_overlapped": n * tokens / hidden,
                         "efficiency_overlapped": t / hidden})
    return rows


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if mpirun is None:
        raise SystemExit('no mpirun on PATH: pip install -e ".[mpi]"')
    report = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} CPUs, {platform.system()}",
              "latency_us": args.latency_us, "models": {}}
    for model in args.models.split(","):
        runs = [run(model, r, t, o, args, mpirun) for r, t, o in CONFIGS]
        one = min((r for r in runs if r["ranks"] == 1), key=lambda r: r["step_s"])
        report["models"][model] = {"runs": runs, "machine_run": one,
                                   "scaling": scaling(one, args)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"data-parallel training, {report['machine']}; float32, AdamW; tokens/s counts all "
          "ranks; load = 1-min load average before/after the run")
    for model, entry in report["models"].items():
        runs = entry["runs"]
        r0 = runs[0]
        print(f"\n{model}: {r0['parameters']:,} parameters, context {r0['context']}, batch "
              f"{r0['batch_per_rank']} per rank; all-reduce {r0['allreduce_bytes'] / 1e6:.1f} MB "
              f"per step in {r0['buckets']} bucket(s)")
        print(f"{'ranks x threads':<16} {'overlap':<8} {'step s':>8} {'tokens/s':>10} "
              f"{'vs 1x2':>7} {'wait s':>8} {'alone s':>8} {'load':>10}")
        base = runs[1]["tokens_per_s"]
        for r in runs:
            print(f"{r['ranks']} x {r['threads']:<12} {'on' if r['overlap'] else 'off':<8} "
                  f"{r['step_s']:8.3f} {r['tokens_per_s']:10.0f} "
                  f"{r['tokens_per_s'] / base:7.2f} {r['wait_s']:8.4f} "
                  f"{r['allreduce_alone_s'] if r['ranks'] > 1 else 0:8.4f} "
                  f"{r['load_before']:4.1f}/{r['load_after']:<4.1f}")
        one = entry["machine_run"]
        print(f"model of N machines like this one (each: its fastest single process, 1 rank x "
              f"{one['threads']} thread(s), step {one['step_s']:.3f} s), ring all-reduce, "
              f"latency {args.latency_us:g} us")
        print(f"{'Gbit/s':>6} {'N':>4} {'all-reduce s':>12} {'tokens/s':>10} {'eff.':>6} "
              f"{'overlapped tok/s':>17} {'eff.':>6}")
        for s in entry["scaling"]:
            print(f"{s['gbit_s']:6g} {s['machines']:4d} {s['allreduce_s']:12.4f} "
                  f"{s['tokens_per_s']:10.0f} {s['efficiency']:6.1%} "
                  f"{s['tokens_per_s_overlapped']:17.0f} {s['efficiency_overlapped']:6.1%}")


if __name__ == "__main__":
    main()
