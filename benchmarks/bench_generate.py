"""Generation speed with and without the KV cache.

Without the cache every new token costs a forward over the whole sequence so
far (O(T C^2 + T^2 C) per token); with it, a forward over one token whose
query attends to the cached keys and values (O(C^2 + T C) per token).
A last row times beam search (num_beams rows per prompt through the model's
forward with the KV cache, whose rows follow their beams after each step).

    python benchmarks/bench_generate.py               # a table
    python benchmarks/bench_generate.py --json        # one JSON object
    python benchmarks/bench_generate.py --threads 1   # one BLAS thread

On a busy machine, BLAS threads that wait on each other can dominate small
matrix products; --threads fixes their number (set before NumPy loads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=256, help="tokens generated per run")
    p.add_argument("--prompt-len", type=int, default=16, help="prompt length")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="runs per setting; the median is shown")
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--n-positions", type=int, default=512)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads (sets OMP/OPENBLAS/MKL_NUM_THREADS); default: as set")
    p.add_argument("--sample", action="store_true",
                   help="sample (seed 0, top_k 50) instead of greedy decoding")
    p.add_argument("--num-beams", type=int, default=4,
                   help="beams for the beam-search row (<= 1: no such row)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args()


def time_generate(model, prompt, args, use_cache, num_beams=1):
    import scratchlm  # noqa: PLC0415
    from scratchlm.generate import generate  # noqa: PLC0415

    kw = dict(do_sample=True, seed=0, top_k=50) if args.sample else dict(do_sample=False)
    if num_beams > 1:                                   # beam search does not sample
        kw = dict(do_sample=False, num_beams=num_beams)
    seconds, out = [], None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        out = generate(model, prompt, args.new_tokens, use_cache=use_cache, **kw)
        scratchlm.to_numpy(out)                         # waits for the device too
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), seconds, scratchlm.to_numpy(out)


def main():
    args = parse_args()
    if args.threads is not None:                        # before NumPy starts its BLAS
        for var in THREAD_VARS:
            os.environ[var] = str(args.threads)
    import numpy as np  # noqa: PLC0415
    import scratchlm  # noqa: PLC0415
    from scratchlm.models import GPT, GPTConfig  # noqa: PLC0415

    scratchlm.set_backend(args.backend)
    cfg = GPTConfig(vocab_size=args.vocab_size, n_positions=args.n_positions,
                    n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT(cfg, seed=0, dtype=args.dtype).eval()
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size,
                                               size=(args.batch, args.prompt_len))
    results = {}
    for name, use_cache in (("cached", True), ("uncached", False)):
        median, runs, out = time_generate(model, prompt, args, use_cache)
        results[name] = dict(seconds=median, runs=runs, tokens=out,
                             tokens_per_s=args.batch * args.new_tokens / median)
    same = bool(np.array_equal(results["cached"].pop("tokens"),
                               results["uncached"].pop("tokens")))
    speedup = results["cached"]["tokens_per_s"] / results["uncached"]["tokens_per_s"]
    if args.num_beams > 1:                              # no eos: every beam runs to the end
        median, runs, _ = time_generate(model, prompt, args, True, args.num_beams)
        results[f"beams {args.num_beams}"] = dict(
            seconds=median, runs=runs, tokens_per_s=args.batch * args.new_tokens / median)
    report = dict(
        model=dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                   vocab_size=cfg.vocab_size, n_positions=cfg.n_positions,
                   dtype=args.dtype, parameters=model.num_parameters()),
        batch=args.batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
        runs=args.runs, decoding="sample top_k=50" if args.sample else "greedy",
        backend=args.backend, numpy=np.__version__, machine=platform.processor() or
        platform.machine(), cpus=os.cpu_count(),
        blas_threads={v: os.environ.get(v) for v in THREAD_VARS},
        results=results, speedup=speedup, same_tokens=same)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    m = report["model"]
    print(f"GPT {m['n_layer']} layers, {m['n_head']} heads, width {m['n_embd']}, vocab "
          f"{m['vocab_size']}, context {m['n_positions']}, {m['dtype']}, "
          f"{m['parameters'] / 1e6:.1f}M parameters, backend {args.backend}")
    print(f"batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"{report['decoding']}, median of {args.runs} runs, BLAS threads "
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    print(f"{'':<10} {'seconds':>9} {'tokens/s':>10}")
    for name, r in results.items():
        print(f"{name:<10} {r['seconds']:9.3f} {r['tokens_per_s']:10.1f}")
    print(f"speed-up with the KV cache: {speedup:.1f}x; same tokens: {same}")


if __name__ == "__main__":
    main()
