"""A Marian training step: scratchlm against PyTorch (transformers' MarianMTModel).

    python benchmarks/bench_marian.py                       # the default sizes, 2 threads
    python benchmarks/bench_marian.py --threads 4 --rounds 3 --steps 5
    python benchmarks/bench_marian.py --configs demo --json out.json

One training step = forward over a padded batch of source and target
sentences, the cross-entropy loss, the backward, and an AdamW update. Each
measurement runs in its own process with the thread count set before NumPy
or PyTorch loads; the frameworks alternate, round by round, so drift on a
shared machine touches both. scratchlm runs under its two kernel tables,
"fast" (the engine) and "textbook" (the functional core as written);
PyTorch runs transformers' MarianMTModel in eager mode with its default
attention (``sdpa``) and ``torch.optim.AdamW`` (foreach), in float32, the
same sizes and the same batch. Reported: the median milliseconds per step
over the timed steps of every round, and target tokens per second.

Nothing here asserts a speed: a benchmark measures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# (vocab, d_model, layers per stack, heads, ffn width, batch, source len, target len)
CONFIGS = {
    "demo": dict(vocab=8000, d_model=256, layers=3, heads=4, ffn=1024, batch=32, S=32, T=32),
    "base": dict(vocab=32000, d_model=512, layers=6, heads=8, ffn=2048, batch=16, S=48, T=48),
}
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "SCRATCHLM_NUM_THREADS")


def hf_fields(c):
    return dict(vocab_size=c["vocab"], d_model=c["d_model"], encoder_layers=c["layers"],
                decoder_layers=c["layers"], encoder_attention_heads=c["heads"],
                decoder_attention_heads=c["heads"], encoder_ffn_dim=c["ffn"],
                decoder_ffn_dim=c["ffn"], max_position_embeddings=512,
                pad_token_id=c["vocab"] - 1, decoder_start_token_id=c["vocab"] - 1,
                eos_token_id=0, dropout=0.1, activation_function="swish",
                scale_embedding=True)


def batch(c, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    B, S, T, V = c["batch"], c["S"], c["T"], c["vocab"]
    src = rng.integers(1, V - 1, (B, S))
    src_len = rng.integers(S // 2, S + 1, B)
    mask = (np.arange(S)[None, :] < src_len[:, None]).astype(np.int64)
    src[mask == 0] = V - 1
    labels = rng.integers(0, V - 1, (B, T))
    tgt_len = rng.integers(T // 2, T + 1, B)
    labels[np.arange(T)[None, :] >= tgt_len[:, None]] = -100
    return src, mask, labels


def worker(spec):
    c, steps, warmup = CONFIGS[spec["config"]], spec["steps"], spec["warmup"]
    src, mask, labels = batch(c)
    if spec["framework"] == "torch":
        import torch
        import transformers
        torch.set_num_threads(spec["threads"])
        torch.manual_seed(0)
        model = transformers.MarianMTModel(transformers.MarianConfig(**hf_fields(c))).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        inputs = dict(input_ids=torch.from_numpy(src), attention_mask=torch.from_numpy(mask),
                      labels=torch.from_numpy(labels))

        def step():
            opt.zero_grad(set_to_none=True)
            model(**inputs).loss.backward()
            opt.step()
        version = f"torch {torch.__version__}, transformers {transformers.__version__}"
    else:
        from scratchlm.kernels.cpu import tune_process
        tune_process()
        import scratchlm
        from scratchlm.models import MarianConfig, MarianMTModel
        from scratchlm.optim import AdamW
        scratchlm.use_kernels(spec["framework"].split(":")[1])
        model = MarianMTModel(MarianConfig(**hf_fields(c)), seed=0).train()
        opt = AdamW(model.named_parameters(), lr=1e-4, weight_decay=0.01)

        def step():
            opt.zero_grad()
            model(src, mask, labels=labels)
            model.backward()
            opt.step()
        version = f"scratchlm {scratchlm.__version__}"
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return dict(times=times, version=version)


def spawn(spec):
    env = dict(os.environ, **{v: str(spec["threads"]) for v in THREAD_VARS},
               OPENBLAS_THREAD_TIMEOUT="4")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "result.json")
        subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec), out],
                       check=True, env=env)
        with open(out) as f:
            return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["demo"], choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-textbook", action="store_true", help="skip the textbook kernels")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        result = worker(json.loads(args.worker[0]))
        with open(args.worker[1], "w") as f:
            json.dump(result, f)
        return 0
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        frameworks = ["torch"]
    except ImportError:
        frameworks = []
        print("PyTorch / transformers not installed: scratchlm only")
    frameworks = ["scratchlm:fast"] + ([] if args.no_textbook else ["scratchlm:textbook"]) \
        + frameworks
    report = {}
    for name in args.configs:
        c = CONFIGS[name]
        times = {fw: [] for fw in frameworks}
        versions = {}
        for _ in range(args.rounds):
            for fw in frameworks:
                r = spawn(dict(config=name, framework=fw, threads=args.threads,
                               steps=args.steps, warmup=args.warmup))
                times[fw] += r["times"]
                versions[fw] = r["version"]
        tokens = int((batch(c)[2] != -100).sum())
        print(f"\nMarian '{name}': {c} ({tokens} target tokens per step), "
              f"{args.threads} threads, {args.rounds} rounds x {args.steps} steps")
        print(f"{'framework':<22}{'ms/step (median)':>18}{'min':>10}{'max':>10}{'tok/s':>10}")
        report[name] = {}
        for fw in frameworks:
            med = statistics.median(times[fw])
            report[name][fw] = dict(median_s=med, min_s=min(times[fw]), max_s=max(times[fw]),
                                    tokens_per_s=tokens / med, version=versions[fw])
            print(f"{fw:<22}{1e3 * med:>18.1f}{1e3 * min(times[fw]):>10.1f}"
                  f"{1e3 * max(times[fw]):>10.1f}{tokens / med:>10.0f}")
        if "torch" in times:
            ref = statistics.median(times["torch"])
            for fw in frameworks[:-1]:
                print(f"  {fw} / torch time ratio: {statistics.median(times[fw]) / ref:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
