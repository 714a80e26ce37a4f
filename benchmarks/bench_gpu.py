"""scratchlm on the GPU (cupy backend) side by side with PyTorch on the same GPU.

    python benchmarks/bench_gpu.py [--configs tiny,small,gpt2ish,gpt2] [--rounds 2]
                                   [--json results.json]

For each GPT configuration: tokens/s of a training step (forward, loss,
backward, AdamW), of the forward pass, and of greedy generation with the KV
cache (256 new tokens at batch 1); the peak GPU memory of the training step;
and the same for an equivalent PyTorch model (same weights, fused QKV, tied
head, tanh GELU, ``scaled_dot_product_attention``, fused AdamW) in eager mode.
Both run in float32 with full-precision matrix products (no TF32; CuPy and
PyTorch both default to that). The two alternate within the process, round
by round; medians are reported. Every timed region ends with a device
synchronisation. MFU divides the model's matmul FLOPs per second by CuPy's
float32 matrix product peak measured here (an 8192^3 product).

Peak memory: for scratchlm, the most bytes CuPy's memory pool had handed out
during the step (an allocator hook); for PyTorch, ``max_memory_allocated``.
Both count the parameters, gradients and optimizer moments, which exist
before the step too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from scratchlm import backend
from scratchlm.bench import flops_per_token
from scratchlm.bench.torch_reference import TORCH_NAMES, torch_gpt_class, torch_greedy_cached
from scratchlm.generate import generate
from scratchlm.models import GPT, GPTConfig
from scratchlm.optim import AdamW

CONFIGS = {
    "tiny": dict(vocab_size=256, n_layer=4, n_head=4, n_embd=128, context=128, batch=16),
    "small": dict(vocab_size=256, n_layer=6, n_head=6, n_embd=384, context=256, batch=8),
    "gpt2ish": dict(vocab_size=8192, n_layer=4, n_head=12, n_embd=768, context=256, batch=4),
    # GPT-2 small itself (124 M parameters) at its full context.
    "gpt2": dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, context=1024, batch=8),
}
PROMPT_LEN, NEW_TOKENS = 16, 256
TORCH_DEVICE = "cuda"


def n_positions(c):
    return max(c["context"], PROMPT_LEN + NEW_TOKENS)


class PoolPeak:
    """The most bytes CuPy's default memory pool has handed out since ``reset``."""

    def __init__(self, cp):
        self.cp, self.pool, self.peak = cp, cp.get_default_memory_pool(), 0
        cp.cuda.set_allocator(self._malloc)

    def _malloc(self, size):
        mem = self.pool.malloc(size)
        self.peak = max(self.peak, self.pool.used_bytes())
        return mem

    def reset(self):
        self.peak = self.pool.used_bytes()


def timed(fn, sync, warmup, steps):
    for _ in range(warmup):
        fn()
    sync()
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - t0)
    return seconds


def sgemm_peak(cp, n=8192, repeats=10):
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    b = cp.random.standard_normal((n, n), dtype=cp.float32)
    out = cp.empty((n, n), dtype=cp.float32)
    sync = cp.cuda.Device().synchronize
    best = min(timed(lambda: cp.matmul(a, b, out=out), sync, 2, repeats))
    return 2 * n ** 3 / best / 1e9


def gpu_training(c, attention="auto"):
    """scratchlm's GPT of config c on the GPU in training mode, a batch on the GPU, and one
    training step (forward, loss, backward, flat AdamW), run once: (model, ids, train_step)."""
    cfg = GPTConfig(vocab_size=c["vocab_size"], n_positions=n_positions(c), n_embd=c["n_embd"],
                    n_layer=c["n_layer"], n_head=c["n_head"], resid_pdrop=0.0,
                    embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT(cfg, seed=0).to("cupy").train().set_attention(attention)
    ids = backend.to_backend(np.random.default_rng(0).integers(
        0, c["vocab_size"], (c["batch"], c["context"])), "cupy")
    opt = AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, flat=True)

    def train_step():
        opt.zero_grad()
        model(ids, labels=ids)
        model.backward()
        opt.step()

    train_step()
    return model, ids, train_step


def scratchlm_side(c, steps, pool):
    cp = backend.xp("cupy")
    sync = cp.cuda.Device().synchronize
    model, ids, train_step = gpu_training(c)
    sync()
    pool.reset()
    out = {"train": timed(train_step, sync, 2, steps), "peak_mb": pool.peak / 2 ** 20}
    train_step = None                       # frees the moments before the forward pass
    model.eval()
    out["forward"] = timed(lambda: model(ids), sync, 1, steps)
    prompt = np.random.default_rng(1).integers(0, c["vocab_size"], (1, PROMPT_LEN))
    out["generate_cached"] = timed(lambda: generate(model, prompt, NEW_TOKENS, do_sample=False),
                                   sync, 1, 2)
    out["tokens"] = backend.to_numpy(generate(model, prompt, 8, do_sample=False))[0].tolist()
    model = None
    cp.get_default_memory_pool().free_all_blocks()
    return out


def torch_side(c, steps):
    import torch  # noqa: PLC0415
    import torch.nn.functional as TF  # noqa: PLC0415

    dev = torch.device(TORCH_DEVICE)
    sync = torch.cuda.synchronize
    cfg = GPTConfig(vocab_size=c["vocab_size"], n_positions=n_positions(c), n_embd=c["n_embd"],
                    n_layer=c["n_layer"], n_head=c["n_head"])
    state = {}
    for name, array in GPT(cfg, seed=0).state_dict().items():     # the same weights
        for a, b in TORCH_NAMES.items():
            name = name.replace(a, b)
        state[name] = torch.from_numpy(backend.to_numpy(array).copy())
    model = torch_gpt_class()({**c, "n_positions": n_positions(c)}, "sdpa")
    model.load_state_dict(state)
    model.to(dev).train()
    ids = torch.from_numpy(np.random.default_rng(0).integers(
        0, c["vocab_size"], (c["batch"], c["context"]))).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    V = c["vocab_size"]

    def train_step():
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        TF.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1)).backward()
        opt.step()

    train_step()
    sync()
    torch.cuda.reset_peak_memory_stats()
    out = {"train": timed(train_step, sync, 2, steps),
           "peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20}
    train_step = opt = None
    for p in model.parameters():
        p.grad = None
    model.eval()
    prompt = torch.from_numpy(np.random.default_rng(1).integers(
        0, c["vocab_size"], (1, PROMPT_LEN))).to(dev)

    def cached(n=NEW_TOKENS):
        return torch_greedy_cached(torch, model, prompt, c, n)

    with torch.inference_mode():
        out["forward"] = timed(lambda: model(ids), sync, 1, steps)
        out["generate_cached"] = timed(cached, sync, 1, 2)
        out["tokens"] = cached(8)[0].tolist()
    model = None
    torch.cuda.empty_cache()
    return out


def profile(c, steps=3, attention="auto"):
    """Milliseconds per training step of each functional op on the GPU, largest first.

    Every ``*_forward`` / ``*_backward`` of ``scratchlm.functional`` and
    ``AdamW.step`` is wrapped with a device synchronisation before and after,
    so each op is charged its own kernels (and launches); ``(other)`` is the
    rest of the step.
    """
    from scratchlm import functional as F  # noqa: PLC0415

    cp = backend.xp("cupy")
    sync = cp.cuda.Device().synchronize
    totals = {}

    def wrap(name, fn):
        def timed_op(*args, **kwargs):
            sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
        return timed_op

    _, _, train_step = gpu_training(c, attention)
    names = [n for n in dir(F) if n.endswith(("_forward", "_backward"))
             and callable(getattr(F, n))]
    originals = {n: getattr(F, n) for n in names}
    step_orig = AdamW.step
    try:
        for n in names:
            setattr(F, n, wrap(n, originals[n]))
        AdamW.step = wrap("AdamW.step", step_orig)
        total = sum(timed(train_step, sync, 0, steps))
    finally:
        for n in names:
            setattr(F, n, originals[n])
        AdamW.step = step_orig
    ops = {n: t / steps * 1e3 for n, t in totals.items()}
    ops["(other)"] = total / steps * 1e3 - sum(ops.values())
    return total / steps * 1e3, dict(sorted(ops.items(), key=lambda kv: -kv[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="tiny,small,gpt2ish,gpt2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", help="write the full results here")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--profile", metavar="CONFIG", help="only: ms per op of a training step")
    ap.add_argument("--attention", default="auto", choices=["auto", "plain", "blockwise"],
                    help="the attention path of --profile")
    args = ap.parse_args(argv)
    backend.set_backend("cupy")
    cp = backend.xp("cupy")
    if args.profile:
        step_ms, ops = profile(CONFIGS[args.profile], attention=args.attention)
        print(f"GPT {args.profile} on the GPU, attention {args.attention}: {step_ms:.1f} ms "
              "per training step (each op between device synchronisations)")
        for name, ms in ops.items():
            if ms >= 0.05 * step_ms / 100:
                print(f"  {name:<34} {ms:8.2f} ms {100 * ms / step_ms:5.1f}%")
        return 0
    pool = PoolPeak(cp)
    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch  # noqa: PLC0415
            use_torch = torch.cuda.is_available()
        except ImportError:
            use_torch = False
    peak = sgemm_peak(cp)
    report = {"gpu": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
              "cupy": cp.__version__, "sgemm_gflops": peak, "configs": {}}
    if use_torch:
        report["torch"] = torch.__version__
        report["torch_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    print(f"{report['gpu']}, CuPy {cp.__version__}, float32 matmul peak {peak / 1e3:.1f} TFLOP/s"
          + (f", torch {report['torch']}" if use_torch else ""), flush=True)
    for name in args.configs.split(","):
        c = CONFIGS[name]
        runs = {"scratchlm": [], "torch": []}
        for _ in range(args.rounds):
            runs["scratchlm"].append(scratchlm_side(c, args.steps, pool))
            if use_torch:
                runs["torch"].append(torch_side(c, args.steps))
        tokens = {"train": c["batch"] * c["context"], "forward": c["batch"] * c["context"],
                  "generate_cached": NEW_TOKENS}
        result = {}
        for fw, rs in runs.items():
            if not rs:
                continue
            r = {task: statistics.median(n / s for run in rs for s in run[task])
                 for task, n in tokens.items()}
            r["peak_mb"] = max(run["peak_mb"] for run in rs)
            r["tokens"] = rs[0]["tokens"]
            r["mfu_train"] = r["train"] * flops_per_token(c, c["context"], True) / 1e9 / peak
            r["mfu_forward"] = r["forward"] * flops_per_token(c, c["context"], False) / 1e9 / peak
            result[fw] = r
        report["configs"][name] = result
        for task in ("train", "forward", "generate_cached"):
            ours = result["scratchlm"][task]
            line = f"{name:8s} {task:16s} scratchlm {ours:12,.0f} tok/s"
            if "torch" in result:
                theirs = result["torch"][task]
                line += f"   torch {theirs:12,.0f} tok/s   ratio {ours / theirs:5.2f}x"
            if task != "generate_cached":
                line += f"   MFU {result['scratchlm']['mfu_' + task]:.0%}"
                if "torch" in result:
                    line += f" / {result['torch']['mfu_' + task]:.0%}"
            print(line, flush=True)
        mem = f"{name:8s} peak memory      scratchlm {result['scratchlm']['peak_mb']:9,.0f} MB"
        if "torch" in result:
            mem += (f"   torch {result['torch']['peak_mb']:9,.0f} MB   ratio "
                    f"{result['scratchlm']['peak_mb'] / result['torch']['peak_mb']:.2f}"
                    f"   greedy tokens equal: "
                    f"{result['scratchlm']['tokens'] == result['torch']['tokens']}")
        print(mem, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
