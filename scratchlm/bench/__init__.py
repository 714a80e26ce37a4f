"""Benchmarks: scratchlm's GPT and BERT side by side with PyTorch, on the CPU.

For each named configuration, one measurement process per framework and
round (so that the peak memory of each is its own, and the two alternate on
a machine that may be busy with other work):

    train       tokens/s of one training step: forward, loss, backward, AdamW
    forward     tokens/s of the forward pass alone (eval mode, no caches)
    generate    tokens/s of greedy decoding, 256 new tokens at batch 1, with
                and without the KV cache
    memory      peak resident memory of the process during training, above
                what it held after its imports

PyTorch (when installed) runs an equivalent GPT-2 written here in a few
lines (fused QKV, tied head, tanh GELU, the same weights), in eager mode, on
the same number of threads, once with its fused attention
(``scaled_dot_product_attention``) and once with the explicit softmax
attention; the ratio is taken against the faster of the two. Its optimizer is
``torch.optim.AdamW`` with ``fused=True`` where the CPU build has it.

MFU (model FLOPs utilisation) divides the model's matmul FLOPs per second by
the sgemm peak measured in the same run (a 2048^3 float32 matrix product, the
best of several, through NumPy and through the engine's ``matmul``: MKL's, where
the ``mkl`` extra is installed; the report names the BLAS in use). A shared
host's speed drifts within a run, so each measurement process also measures
that peak just before its own steps, and MFU* divides by it (the median over
the timed steps). Model FLOPs count every matrix product of the
dense formulation, the attention included, as PaLM's ``6N + 12 L H D T`` per
token does for training (2N + 4 L C T for a forward pass). Nothing here
asserts a speed: benchmarks measure.

The PyTorch reference models live in ``scratchlm/bench/torch_reference.py``,
imported (with torch and transformers) only inside the measurement processes
that ask for them; ``import scratchlm.bench`` needs NumPy alone. Each
measurement process is ``python -m scratchlm.bench SPEC RESULT``
(``scratchlm/bench/__main__.py``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# Named GPT configurations: (vocab, layers, heads, width, context, batch). The
# position table holds 512 rows, so that 16 prompt + 256 generated tokens fit.
CONFIGS = {
    "tiny": dict(vocab_size=256, n_layer=4, n_head=4, n_embd=128, context=128, batch=16),
    "small": dict(vocab_size=256, n_layer=6, n_head=6, n_embd=384, context=256, batch=8),
    "gpt2ish": dict(vocab_size=8192, n_layer=4, n_head=12, n_embd=768, context=256, batch=4),
}
# A BERT-base-shaped encoder: 12 layers, 12 heads, width 768, 128 tokens, batch 8.
BERT_BASE = dict(vocab_size=30522, n_layer=12, n_head=12, n_embd=768, context=128, batch=8)
N_POSITIONS = 512
PROMPT_LEN = 16
NEW_TOKENS = 256
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "SCRATCHLM_NUM_THREADS")


# --- model FLOPs -----------------------------------------------------------------

def matmul_params(c: dict, head: bool = True) -> int:
    """Weights that enter a matrix product per token: L (12 C^2) in the blocks, + V C in
    the head (GPT's tied LM head; the BERT encoder measured here has none)."""
    C = c["n_embd"]
    return c["n_layer"] * 12 * C * C + (c["vocab_size"] * C if head else 0)


def flops_per_token(c: dict, T: int, training: bool, head: bool = True) -> float:
    """Forward: 2 N_mm + 4 L C T (q k^T and att v, dense); training: three times that."""
    fwd = 2 * matmul_params(c, head) + 4 * c["n_layer"] * c["n_embd"] * T
    return 3 * fwd if training else fwd


# --- process measurements ---------------------------------------------------------

def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_kb() -> int:
    import resource  # noqa: PLC0415
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _trim() -> None:
    """Hand freed heap memory back to the OS, so the baseline is what is really held."""
    import gc  # noqa: PLC0415
    gc.collect()
    try:
        import ctypes  # noqa: PLC0415
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _timed(fn, warmup: int, steps: int) -> list:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return seconds


def sgemm_peak(n: int = 2048, repeats: int = 8) -> float:
    """The best GFLOP/s of a float32 product of two n x n matrices.

    Measured three ways, the best kept: NumPy's one call on the BLAS's own
    threads; the rows split over the fast path's threads, each calling a
    single-threaded NumPy BLAS; and ``kernels.cpu.matmul``, the product that the
    fast path's linear layers use (MKL's where it is installed).
    """
    import numpy as np  # noqa: PLC0415

    from scratchlm.kernels.cpu import matmul, parallel_for  # noqa: PLC0415
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    own = _timed(lambda: np.matmul(a, b, out=out), 2, repeats)

    def rows(lo, hi):
        np.matmul(a[lo:hi], b, out=out[lo:hi])

    split = _timed(lambda: parallel_for(n, rows, 64), 2, repeats)
    fast = _timed(lambda: matmul(a, b, out=out), 2, repeats)
    return 2 * n ** 3 / min(own + split + fast) / 1e9


# --- the scratchlm side -------------------------------------------------------------

def _gpt_config(c: dict):
    from scratchlm.models import GPTConfig  # noqa: PLC0415
    return GPTConfig(vocab_size=c["vocab_size"], n_positions=N_POSITIONS, n_embd=c["n_embd"],
                     n_layer=c["n_layer"], n_head=c["n_head"], resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)


def _bert_config(c: dict):
    from scratchlm.models import BertConfig  # noqa: PLC0415
    return BertConfig(vocab_size=c["vocab_size"], hidden_size=c["n_embd"],
                      num_hidden_layers=c["n_layer"], num_attention_heads=c["n_head"],
                      intermediate_size=4 * c["n_embd"], hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def _adamw(params, weight_decay):
    """AdamW over flat buffers (one update for all parameters), where this version has it."""
    from scratchlm.optim import AdamW  # noqa: PLC0415
    try:
        return AdamW(params, lr=1e-4, weight_decay=weight_decay, flat=True)
    except TypeError:
        return AdamW(params, lr=1e-4, weight_decay=weight_decay)


def _batch(c: dict, seed: int = 0):
    import numpy as np  # noqa: PLC0415
    return np.random.default_rng(seed).integers(0, c["vocab_size"], (c["batch"], c["context"]))


def _gpt_training(c: dict):
    """scratchlm's GPT of config ``c`` in training mode, a batch, and one training step
    (forward, loss, backward, flat AdamW) as a function: ``(model, ids, train_step)``."""
    from scratchlm.models import GPT  # noqa: PLC0415

    ids = _batch(c)
    model = GPT(_gpt_config(c), seed=0).train()
    opt = _adamw(model.parameters(), 0.1)

    def train_step():
        opt.zero_grad()
        model(ids, labels=ids)
        model.backward()
        opt.step()

    return model, ids, train_step


def _scratchlm_gpt(c: dict, spec: dict) -> dict:
    import numpy as np  # noqa: PLC0415

    from scratchlm.generate import generate  # noqa: PLC0415

    base = _rss_kb()
    model, ids, train_step = _gpt_training(c)
    out = {"train": _timed(train_step, spec["warmup"], spec["steps"])}
    out["peak_mb"] = (_peak_kb() - base) / 1024
    train_step = None                                   # frees the moments before the forward pass
    model.eval()
    out["forward"] = _timed(lambda: model(ids), 1, spec["steps"])
    if spec.get("generate"):
        prompt = _batch(c, 1)[:1, :PROMPT_LEN]
        for name, cache in (("generate_cached", True), ("generate_uncached", False)):
            out[name] = _timed(lambda cache=cache: generate(
                model, prompt, NEW_TOKENS, do_sample=False, use_cache=cache), 0,
                spec["gen_runs"])
        out["tokens_sample"] = np.asarray(generate(model, prompt, 8, do_sample=False))[0].tolist()
    return out


def _scratchlm_bert(c: dict, spec: dict) -> dict:
    import numpy as np  # noqa: PLC0415

    from scratchlm.models import BertModel  # noqa: PLC0415

    ids = _batch(c)
    g = np.random.default_rng(2).standard_normal(
        (c["batch"], c["context"], c["n_embd"])).astype(np.float32)
    base = _rss_kb()
    model = BertModel(_bert_config(c), seed=0).train()
    opt = _adamw(model.parameters(), 0.01)

    def train_step():
        opt.zero_grad()
        model(ids)
        model.backward(d_last_hidden_state=g)
        opt.step()

    out = {"train": _timed(train_step, spec["warmup"], spec["steps"])}
    out["peak_mb"] = (_peak_kb() - base) / 1024
    model.eval()
    out["forward"] = _timed(lambda: model(ids), 1, spec["steps"])
    return out


def run_worker(spec: dict) -> dict:
    """One measurement process: ``spec`` names the framework, model and repetitions."""
    c = BERT_BASE if spec["config"] == "bert-base" else CONFIGS[spec["config"]]
    t0 = time.perf_counter()
    if spec["framework"] == "peak":
        out = {"sgemm_gflops": sgemm_peak()}
    else:
        peak = sgemm_peak(repeats=4)        # this process's own, just before it measures
        if spec["framework"] == "scratchlm":
            out = (_scratchlm_bert if spec["config"] == "bert-base" else _scratchlm_gpt)(c, spec)
        else:
            from scratchlm.bench import torch_reference  # noqa: PLC0415  (imports torch)
            measure = (torch_reference.measure_bert if spec["config"] == "bert-base"
                       else torch_reference.measure_gpt)
            out = measure(c, spec)
        out["sgemm_gflops"] = peak
    out["wall_s"] = time.perf_counter() - t0
    return out


def _spawn(spec: dict, threads: int, env_extra: dict | None = None) -> dict:
    """Run one measurement (run_worker) in a fresh process; ``env_extra``: variables set
    for it on top of this process's environment and the thread counts."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    # Idle OpenBLAS threads go to sleep at once instead of spinning on a core
    # between calls (read when NumPy loads, so it is set for the child here).
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if spec["framework"] == "torch":
        # Never MKL's library beside PyTorch's own MKL: with it loaded (by sgemm_peak's
        # kernels.cpu.matmul), PyTorch's training step at GPT small ran 30% slower.
        env["SCRATCHLM_BLAS"] = "numpy"
    env.update(env_extra or {})
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")   # the worker's answer comes back here
        proc = subprocess.run([sys.executable, "-m", "scratchlm.bench", json.dumps(spec), result],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not os.path.exists(result):
            raise RuntimeError(f"benchmark process {spec['framework']} {spec['config']} "
                               f"failed:\n{proc.stderr[-3000:]}")
        with open(result) as f:
            return json.load(f)


# --- the side-by-side run --------------------------------------------------------------

def _summary(seconds: list, tokens: int) -> dict:
    rates = sorted(tokens / s for s in seconds)
    return {"tokens_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1],
            "n": len(rates)}


def run_benchmark(configs=("tiny", "small", "gpt2ish"), *, bert=True, rounds=3, steps=3,
                  warmup=2, gen_runs=1, generate=True, threads=None, with_torch=True,
                  on_progress=None, raw_path=None) -> dict:
    """Measure every config, alternating scratchlm and PyTorch processes round by round.

    Returns a JSON-ready report: per config and framework, the median tokens/s
    with min and max over all timed repetitions, peak memory, MFU, and the
    ratios scratchlm / PyTorch (against PyTorch's faster attention); under
    "raw", every process's own timings. ``raw_path``: a file that holds the
    measurements so far, rewritten after each process.
    """
    threads = threads or os.cpu_count() or 1
    if with_torch:
        try:
            import importlib.util  # noqa: PLC0415
            with_torch = importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):
            with_torch = False
    frameworks = ["scratchlm"] + (["torch-sdpa", "torch-math"] if with_torch else [])
    names = list(configs) + (["bert-base"] if bert else [])
    raw = {name: {fw: [] for fw in frameworks} for name in names}
    peaks = []
    for r in range(rounds):
        peaks.append(_spawn({"framework": "peak", "config": "tiny"}, threads)["sgemm_gflops"])
        for name in names:
            for fw in frameworks:
                spec = {"framework": "scratchlm" if fw == "scratchlm" else "torch",
                        "attention": fw.split("-")[-1], "config": name, "steps": steps,
                        "warmup": warmup, "gen_runs": gen_runs, "threads": threads,
                        "generate": generate and name != "bert-base" and fw != "torch-math"}
                if on_progress:
                    on_progress(f"round {r + 1}/{rounds}: {name} {fw}")
                raw[name][fw].append(_spawn(spec, threads))
                if raw_path:                            # a long run keeps what it measured
                    with open(raw_path, "w") as f:
                        json.dump({"sgemm_peaks": peaks, "raw": raw}, f)
    peak = max(peaks)       # each round's best, then the best: a busy machine only lowers it
    report = {"machine": _machine(threads), "threads": threads, "rounds": rounds,
              "steps_per_round": steps, "sgemm_peak_gflops": peak,
              "sgemm_peak_runs": peaks, "configs": {}, "raw": raw}
    for name in names:
        c = BERT_BASE if name == "bert-base" else CONFIGS[name]
        tokens = c["batch"] * c["context"]
        entry = {"config": c, "frameworks": {}}
        for fw, runs in raw[name].items():
            res = {}
            for task, training in (("train", True), ("forward", False)):
                s = _summary([x for run in runs for x in run[task]], tokens)
                flops = flops_per_token(c, c["context"], training, head=name != "bert-base")
                s["mfu"] = s["tokens_per_s"] * flops / (peak * 1e9)
                # Against each process's own sgemm peak, measured just before its steps: on
                # a host whose speed drifts, this compares like with like.
                own = sorted(tokens / x * flops / (run["sgemm_gflops"] * 1e9)
                             for run in runs if "sgemm_gflops" in run for x in run[task])
                if own:
                    s["mfu_own_peak"] = statistics.median(own)
                res[task] = s
            for task in ("generate_cached", "generate_uncached"):
                if task in runs[0]:
                    res[task] = _summary([x for run in runs for x in run[task]], NEW_TOKENS)
            res["peak_mb"] = statistics.median(run["peak_mb"] for run in runs)
            if "optimizer" in runs[0]:
                res["optimizer"] = runs[0]["optimizer"]
            if "tokens_sample" in runs[0]:
                res["tokens_sample"] = runs[0]["tokens_sample"]
            entry["frameworks"][fw] = res
        if with_torch:
            ours, ratios = entry["frameworks"]["scratchlm"], {}
            for task in ("train", "forward", "generate_cached", "generate_uncached"):
                theirs = [(entry["frameworks"][fw][task]["tokens_per_s"], fw)
                          for fw in frameworks[1:] if task in entry["frameworks"][fw]]
                if task in ours and theirs:
                    best = max(theirs)
                    ratios[task] = {"ratio": ours[task]["tokens_per_s"] / best[0],
                                    "against": best[1]}
            ratios["peak_memory"] = {"ratio": ours["peak_mb"] / min(
                entry["frameworks"][fw]["peak_mb"] for fw in frameworks[1:])}
            entry["ratios"] = ratios
        report["configs"][name] = entry
    return report


def _machine(threads: int) -> dict:
    import numpy as np  # noqa: PLC0415
    info = {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "python": platform.python_version()}
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            info["blas"] = {k: blas[0].get(k) for k in ("internal_api", "version",
                                                         "architecture")}
    except ImportError:
        pass
    from scratchlm.kernels.cpu import mkl  # noqa: PLC0415
    info["mkl"] = mkl.version()        # the linear layers' products, where installed
    try:
        import torch  # noqa: PLC0415
        info["torch"] = torch.__version__
    except ImportError:
        pass
    info["env"] = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                  "OPENBLAS_THREAD_TIMEOUT") if k in os.environ}
    return info


def format_report(report: dict) -> str:
    """The report as a readable table."""
    blas = report.get("machine", {}).get("mkl") or "NumPy's BLAS"
    lines = [f"linear layers' products: {blas}",
             f"threads {report['threads']}, {report['rounds']} rounds x "
             f"{report['steps_per_round']} steps per framework, alternating; sgemm peak "
             f"{report['sgemm_peak_gflops']:.0f} GFLOP/s, the best of each round's best ("
             + ", ".join(f"{p:.0f}" for p in report["sgemm_peak_runs"]) + ")",
             "tokens/s: median [min-max]; MFU against that sgemm peak, MFU* against each "
             "process's own, measured just before its steps; ratio = scratchlm / PyTorch's "
             "faster attention path", ""]
    head = f"{'config':<10} {'task':<18} {'framework':<11} {'tokens/s':>9} {'[min-max]':>17} " \
           f"{'MFU':>5} {'MFU*':>5} {'peak MB':>8} {'ratio':>6}"
    lines += [head, "-" * len(head)]
    for name, entry in report["configs"].items():
        ratios = entry.get("ratios", {})
        for task in ("train", "forward", "generate_cached", "generate_uncached"):
            first = True
            for fw, res in entry["frameworks"].items():
                if task not in res:
                    continue
                s = res[task]
                mfu = f"{100 * s['mfu']:4.0f}%" if "mfu" in s else ""
                own = f"{100 * s['mfu_own_peak']:4.0f}%" if "mfu_own_peak" in s else ""
                peak = f"{res['peak_mb']:8.0f}" if task == "train" else ""
                ratio = ""
                if fw == "scratchlm" and task in ratios:
                    ratio = f"{ratios[task]['ratio']:5.2f}x"
                spread = "[{:.0f}-{:.0f}]".format(s["min"], s["max"])
                lines.append(f"{name if first else '':<10} {task if first else '':<18} {fw:<11} "
                             f"{s['tokens_per_s']:9.0f} {spread:>17} {mfu:>5} {own:>5} "
                             f"{peak:>8} {ratio:>6}")
                first = False
        if "peak_memory" in ratios:
            lines.append(f"{'':<10} peak memory ratio scratchlm / PyTorch: "
                         f"{ratios['peak_memory']['ratio']:.2f}")
        lines.append("")
    return "\n".join(lines)


# --- where the time goes: milliseconds per op in a training step -------------------------

def profile_step(config: str = "small", steps: int = 3, warmup: int = 1,
                 fast: bool | None = None) -> dict:
    """Time every op, the optimizer and zero_grad during GPT training steps.

    Wraps each entry of the kernel table in force (the layers call their ops
    through it), the one-form ops of ``scratchlm.functional`` that layers call
    directly (dropout, relu, tanh), and ``AdamW.step``; runs ``steps`` steps,
    and returns milliseconds per step per op, largest first, with ``(other)``
    the Python between them. ``fast``: True for the "fast" kernels, False for
    the textbook ops, None for the mode in force.
    """
    import numpy as np  # noqa: PLC0415

    from scratchlm import functional as F  # noqa: PLC0415
    from scratchlm.kernels import get_kernels, tables, use_kernels  # noqa: PLC0415
    from scratchlm.optim import AdamW  # noqa: PLC0415

    c = CONFIGS[config]
    before = get_kernels()
    if fast is not None:
        use_kernels("fast" if fast else "textbook")
    totals: dict = {}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
        return timed

    K = tables.table(np.empty(0))                       # the CPU table in force
    key = next(k for k, v in tables._tables.items() if v is K)
    timed_table = K._replace(**{f: wrap(f, getattr(K, f)) for f in K._fields
                                if f not in ("name", "gpt_decoder") and callable(getattr(K, f))})
    one_form = {n: getattr(F, n) for n in ("dropout_forward", "dropout_backward", "relu_forward",
                                           "relu_backward", "tanh_forward", "tanh_backward")}
    step_orig, zero_orig = AdamW.step, AdamW.zero_grad
    try:
        _, _, train_step = _gpt_training(c)
        for _ in range(warmup):
            train_step()
        tables._tables[key] = timed_table
        for n, fn in one_form.items():
            setattr(F, n, wrap(n, fn))
        AdamW.step = wrap("AdamW.step", step_orig)
        AdamW.zero_grad = wrap("AdamW.zero_grad", zero_orig)
        seconds = _timed(train_step, 0, steps)
    finally:
        tables._tables[key] = K
        for n, fn in one_form.items():
            setattr(F, n, fn)
        AdamW.step, AdamW.zero_grad = step_orig, zero_orig
        use_kernels(before)
    total = sum(seconds) / steps * 1e3
    ops = {n: t / steps * 1e3 for n, t in totals.items()}
    ops["(other)"] = total - sum(ops.values())
    ops = dict(sorted(ops.items(), key=lambda kv: -kv[1]))
    fast = before == "fast" if fast is None else fast
    return {"config": config, "fast_path": bool(fast),
            "step_ms": total, "step_ms_runs": [s * 1e3 for s in seconds],
            "tokens_per_s": c["batch"] * c["context"] / float(np.median(seconds)), "ops_ms": ops}


def format_profile(prof: dict) -> str:
    lines = [f"GPT {prof['config']}, fast path {'on' if prof['fast_path'] else 'off'}: "
             f"{prof['step_ms']:.0f} ms per training step ({prof['tokens_per_s']:.0f} tokens/s)",
             f"{'op':<34} {'ms/step':>9} {'share':>6}"]
    for name, ms in prof["ops_ms"].items():
        lines.append(f"{name:<34} {ms:9.1f} {100 * ms / prof['step_ms']:5.1f}%")
    return "\n".join(lines)


# --- memory against context length ----------------------------------------------------------

def memory_point(T: int, attention: str, config: str = "small", batch: int = 1) -> dict:
    """Peak traced array memory (tracemalloc) of one GPT training step at context T."""
    import tracemalloc  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from scratchlm.models import GPT, GPTConfig  # noqa: PLC0415

    c = CONFIGS[config]
    cfg = GPTConfig(vocab_size=c["vocab_size"], n_positions=T, n_embd=c["n_embd"],
                    n_layer=c["n_layer"], n_head=c["n_head"], resid_pdrop=0.0,
                    embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT(cfg, seed=0).train()
    model.set_attention(attention)
    ids = np.random.default_rng(0).integers(0, c["vocab_size"], (batch, T))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = model(ids, labels=ids)
    model.backward()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return {"T": T, "attention": attention, "peak_mb": peak / 2 ** 20, "seconds": seconds,
            "loss": float(out.loss)}


def memory_vs_context(lengths=(256, 512, 1024, 2048, 4096), config: str = "small",
                      threads: int | None = None) -> list:
    """memory_point for both attention paths at each length, each in a fresh process."""
    rows = []
    for T in lengths:
        row = {"T": T}
        for attention in ("plain", "blockwise"):
            r = _spawn({"framework": "memory", "config": config, "T": T,
                        "attention": attention}, threads or os.cpu_count() or 1)
            row[attention] = r
        rows.append(row)
    return rows


def format_memory(rows: list, config: str = "small") -> str:
    c = CONFIGS[config]
    lines = [f"GPT {config} ({c['n_layer']} layers, {c['n_head']} heads, width {c['n_embd']}), "
             "batch 1, one training step (forward + backward): peak array memory",
             f"{'T':>6} {'plain MB':>10} {'blockwise MB':>13} {'plain s':>8} {'blockwise s':>12}"
             f" {'same loss':>10}"]
    for row in rows:
        p, b = row["plain"], row["blockwise"]
        lines.append(f"{row['T']:>6} {p['peak_mb']:10.0f} {b['peak_mb']:13.0f} "
                     f"{p['seconds']:8.2f} {b['seconds']:12.2f} "
                     f"{str(abs(p['loss'] - b['loss']) < 1e-4):>10}")
    return "\n".join(lines)
