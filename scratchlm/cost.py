"""What a model costs: its parameters, FLOPs, memory, and a measured training step.

    scratchlm cost --model DIR [--batch-size B --block-size T]
    scratchlm cost --arch gpt [--n-layer L --n-head H --n-embd C ...]    (default GPT-2 124M)
    scratchlm cost --arch bert [...]                                      (default BERT-base)

Parameters, counted from the config and split as Kaplan et al. split them:
the embedding tables (token, position, token type) and the rest (blocks,
LayerNorms, pooler, heads; a head tied to the token embedding adds nothing).

FLOPs, 2 per multiply-add of every matrix product a forward performs, per
token at context length T:

    forward        = 2 N_mm + 4 L C T
    N_mm           = L (4 C^2 + 2 C F) + the head's weights per token
    training step  = 3 x forward

N_mm counts the weights each token is multiplied by: per block the fused
q, k, v projection (3 C^2), the output projection (C^2) and the feed-forward
(2 C F); then the head (V C for a language-model head; a pooler or a sentence
classifier once per sequence, so divided by T). 4 L C T is attention: q k^T
and att v, each T x C multiply-adds per token and layer; every score is
counted, the causal half too, since the code computes them all (the dense
formulation, as PaLM counts MFU). A training step is three forwards: the
backward of each product computes the gradient of its input and of its
weight, each as costly as the product, and attention's backward has four
products for the forward's two. ``count_flops`` counts the products the code
runs, from the shapes of each call to the kernel table, and the tests check
that the formula equals it.

Memory, in bytes of the model's dtype (s = 4 for float32):

    weights          P s
    gradients        P s
    AdamW's moments  2 P s        (exp_avg and exp_avg_sq; flat AdamW adds nothing)
    activations      what the forward keeps for the backward (the caches):
                     per layer s (8 N C + 2 N + 2 N F + A) with N = B T tokens and
                     A = B H T^2 attention weights, plus dropout's masks and the
                     head's caches (see ``activation_bytes``)
    logits           the output, alive until the backward is done

``cached_bytes`` walks a model's caches after a training forward and adds up
the arrays they hold; the tests check that ``activation_bytes`` equals it.

A measured step (``measure``): a training step of a model of this config with
random weights on this backend (forward, loss, backward, AdamW), its median
time, the FLOP/s it implies and the MFU against the sgemm peak
(``scratchlm.bench.sgemm_peak``), and the caches and peak array memory
(tracemalloc) it actually used.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

ARCHITECTURES = ("GPT2LMHeadModel", "BertModel", "BertForPreTraining", "BertForMaskedLM",
                 "BertForNextSentencePrediction", "BertForSequenceClassification",
                 "BertForTokenClassification", "BertForQuestionAnswering")
CLASS_OF = {"GPT2LMHeadModel": "GPT"}                   # architecture -> scratchlm class name


def _model_class(architecture):
    from scratchlm import models  # noqa: PLC0415
    return getattr(models, CLASS_OF.get(architecture, architecture))


def read_model_config(directory):
    """(architecture, config) of a Hugging Face model directory (config.json only)."""
    from scratchlm.models import BertConfig, GPTConfig  # noqa: PLC0415

    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cost: no config.json in {directory}")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    archs = d.get("architectures") or []
    arch = next((a for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        kind = d.get("model_type")
        arch = {"gpt2": "GPT2LMHeadModel", "bert": "BertModel"}.get(kind)
        if arch is None:
            raise ValueError(f"cost: {path} describes architectures {archs} "
                             f"(model_type {kind!r}); expected one of {ARCHITECTURES}")
    config_class = GPTConfig if arch == "GPT2LMHeadModel" else BertConfig
    return arch, config_class.from_dict({k: v for k, v in d.items() if k != "architectures"})


def config_from_flags(arch="gpt", n_layer=None, n_head=None, n_embd=None, vocab_size=None,
                      n_positions=None, n_inner=None, dropout=None):
    """(architecture, config): GPT-2 124M (arch "gpt") or BERT-base ("bert"), with the
    sizes given replacing theirs. BERT is the encoder with its pooler (BertModel).
    ``dropout``: every dropout probability (default theirs, 0.1), which the
    activations' memory depends on (dropout keeps its masks)."""
    from scratchlm.models import BertConfig, GPTConfig  # noqa: PLC0415

    given = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "vocab_size": vocab_size,
             "n_positions": n_positions, "n_inner": n_inner}
    if arch == "gpt":
        kw = {k: v for k, v in given.items() if v is not None}
        if dropout is not None:
            kw.update(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
        return "GPT2LMHeadModel", GPTConfig(**kw)
    if arch == "bert":
        names = {"n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
                 "n_embd": "hidden_size", "vocab_size": "vocab_size",
                 "n_positions": "max_position_embeddings", "n_inner": "intermediate_size"}
        kw = {names[k]: v for k, v in given.items() if v is not None}
        if n_embd is not None and n_inner is None:
            kw["intermediate_size"] = 4 * n_embd
        if dropout is not None:
            kw.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        return "BertModel", BertConfig(**kw)
    raise ValueError(f"cost: arch must be 'gpt' or 'bert'; got {arch!r}")


def _shape(arch, cfg):
    """(L, H, C, F, V, positions, token types) of a config."""
    if arch == "GPT2LMHeadModel":
        return (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.inner_dim, cfg.vocab_size,
                cfg.n_positions, 0)
    return (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size,
            cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings,
            cfg.type_vocab_size)


def _has_pooler(arch):
    return arch in ("BertModel", "BertForPreTraining", "BertForNextSentencePrediction",
                    "BertForSequenceClassification")


def _heads(arch):
    """The heads of an architecture: a subset of lm, mlm, nsp, seq, token, qa."""
    return {"GPT2LMHeadModel": {"lm"}, "BertModel": set(), "BertForPreTraining": {"mlm", "nsp"},
            "BertForMaskedLM": {"mlm"}, "BertForNextSentencePrediction": {"nsp"},
            "BertForSequenceClassification": {"seq"}, "BertForTokenClassification": {"token"},
            "BertForQuestionAnswering": {"qa"}}[arch]


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

def parameter_counts(arch, cfg) -> dict:
    """Parameters by part: ``embeddings`` (the tables), ``rest``, ``total``, and the parts.

    Per block: LayerNorms 2 x 2C, q k v 3C^2 + 3C, output C^2 + C, feed-forward
    2 C F + F + C (12 C^2 + 13 C with F = 4C).
    """
    L, H, C, F, V, P, types = _shape(arch, cfg)
    parts = {"token embedding": V * C, "position embedding": P * C}
    if types:
        parts["token type embedding"] = types * C
    parts["blocks"] = L * (4 * C * C + 2 * C * F + 9 * C + F)
    if arch == "GPT2LMHeadModel":
        parts["final LayerNorm"] = 2 * C
    else:
        parts["embedding LayerNorm"] = 2 * C
    if _has_pooler(arch):
        parts["pooler"] = C * C + C
    heads, K = _heads(arch), getattr(cfg, "num_labels", 0)
    if "mlm" in heads:
        parts["masked-LM head (decoder tied)"] = C * C + C + 2 * C + V
    if "nsp" in heads:
        parts["next-sentence head"] = 2 * C + 2
    if "seq" in heads or "token" in heads:
        parts["classifier"] = C * K + K
    if "qa" in heads:
        parts["span head"] = 2 * C + 2
    embeddings = sum(v for k, v in parts.items() if k.endswith("embedding"))
    total = sum(parts.values())
    return {"total": total, "embeddings": embeddings, "rest": total - embeddings,
            "per_block": (4 * C * C + 2 * C * F + 9 * C + F), "parts": parts}


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------

def flops(arch, cfg, batch_size, block_size) -> dict:
    """Matrix-product FLOPs of a forward and a training step (see the module docstring).

    Returns: n_mm (weights per token, float), forward / train per token and per
    step, and ``formula``: the terms as text with their values.
    """
    L, H, C, F, V, P, types = _shape(arch, cfg)
    B, T = batch_size, block_size
    K = getattr(cfg, "num_labels", 0)
    heads = _heads(arch)
    per_token = [("L (4 C^2 + 2 C F)", L * (4 * C * C + 2 * C * F))]   # weights x each token
    per_sequence = []                                   # weights x one position per sequence
    if "lm" in heads:
        per_token.append(("V C", V * C))
    if "mlm" in heads:
        per_token.append(("C^2 + V C", C * C + V * C))
    if "token" in heads:
        per_token.append(("K C", K * C))
    if "qa" in heads:
        per_token.append(("2 C", 2 * C))
    if _has_pooler(arch):
        per_sequence.append(("C^2", C * C))
    if "nsp" in heads:
        per_sequence.append(("2 C", 2 * C))
    if "seq" in heads:
        per_sequence.append(("K C", K * C))
    mm_step = sum(v for _, v in per_token) * B * T + sum(v for _, v in per_sequence) * B
    attention_step = 2 * L * C * T * B * T              # q k^T and att v: T C each, per token
    forward_step = 2 * (mm_step + attention_step)
    n_mm = mm_step / (B * T)
    text = " + ".join([s for s, _ in per_token]
                      + ([f"({' + '.join(s for s, _ in per_sequence)}) / T"] if per_sequence
                         else []))
    return {"n_mm": n_mm, "n_mm_formula": text,
            "attention_per_token": 4 * L * C * T,
            "forward_per_token": forward_step / (B * T),
            "train_per_token": 3 * forward_step / (B * T),
            "forward_per_step": forward_step, "train_per_step": 3 * forward_step,
            "tokens_per_step": B * T}


def count_flops(model, batch_size=2, block_size=8, seed=0) -> dict:
    """The matrix-product FLOPs a training step of ``model`` actually performs, counted.

    Each entry of the kernel table that multiplies matrices (linear_forward,
    linear_backward, attention_forward, attention_backward) is wrapped, and
    every call adds 2 x the multiply-adds its shapes imply: x (N, C_in) W
    (C_in, C_out) is N C_in C_out; its backward has dx and, unless the weight
    is frozen, dW, as many each; attention is q k^T and att v, B H Tq Tk D
    each, and its backward four such products. Runs under the textbook ops
    (the dense formulation). Returns {"forward", "backward", "train"} FLOPs.
    """
    from scratchlm.kernels import get_kernels, tables, use_kernels  # noqa: PLC0415

    counts = {"forward": 0, "backward": 0}
    phase = ["forward"]

    def add(n):
        counts[phase[0]] += 2 * int(n)

    def linear_forward(x, W, b=None):
        add(x.size // W.shape[0] * W.shape[0] * W.shape[1])
        return K.linear_forward(x, W, b)

    def linear_backward(dout, cache, need_dW=True, need_db=True):
        C_in, C_out = cache.W.shape
        add(dout.size // C_out * C_in * C_out * (2 if need_dW else 1))
        return K.linear_backward(dout, cache, need_dW=need_dW, need_db=need_db)

    def attention_forward(q, k, v, *args, **kwargs):
        B, H, Tq, D = q.shape
        add(2 * B * H * Tq * k.shape[2] * D)
        return K.attention_forward(q, k, v, *args, **kwargs)

    def attention_backward(dout, cache, datt=None, out=None):
        B, H, Tq, D = cache.q.shape
        add(4 * B * H * Tq * cache.k.shape[2] * D)
        return K.attention_backward(dout, cache, datt, out)

    before = get_kernels()
    use_kernels("textbook")
    K = tables.table(np.empty(0))
    key = next(k for k, v in tables._tables.items() if v is K)
    tables._tables[key] = K._replace(linear_forward=linear_forward,
                                     linear_backward=linear_backward,
                                     attention_forward=attention_forward,
                                     attention_backward=attention_backward)
    try:
        forward, backward = _training_call(model, batch_size, block_size, seed)
        model.train()
        forward()
        phase[0] = "backward"
        backward()
    finally:
        tables._tables[key] = K
        use_kernels(before)
        model.zero_grad()
    counts["train"] = counts["forward"] + counts["backward"]
    return counts


def _training_call(model, B, T, seed=0):
    """(forward, backward) closures of one training step of ``model`` on random data."""
    from scratchlm.models import (  # noqa: PLC0415
        BertForNextSentencePrediction,
        BertForPreTraining,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    rng = np.random.default_rng(seed)
    V = model.config.vocab_size
    ids = rng.integers(0, V, (B, T))
    if isinstance(model, BertModel):
        C = model.config.hidden_size
        xp = model.xp
        g = xp.asarray(rng.standard_normal((B, T, C)).astype(model.dtype))
        gp = None if model.pooler is None else \
            xp.asarray(rng.standard_normal((B, C)).astype(model.dtype))
        return (lambda: model(ids),
                lambda: model.backward(d_last_hidden_state=g, d_pooler_output=gp))
    kw = {"labels": ids}                                # GPT and BertForMaskedLM: the ids
    if isinstance(model, BertForSequenceClassification):
        kw = {"labels": rng.integers(0, model.config.num_labels, B)}
    elif isinstance(model, BertForNextSentencePrediction):
        kw = {"labels": rng.integers(0, 2, B)}
    elif isinstance(model, BertForTokenClassification):
        kw = {"labels": rng.integers(0, model.config.num_labels, (B, T))}
    elif isinstance(model, BertForQuestionAnswering):
        kw = {"start_positions": rng.integers(0, T, B), "end_positions": rng.integers(0, T, B)}
    elif isinstance(model, BertForPreTraining):
        kw["next_sentence_label"] = rng.integers(0, 2, B)
    return (lambda: model(ids, **kw)), (lambda: model.backward())


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

def _dropouts(arch, cfg):
    """(embeddings, attention weights, residual, classifier) dropout probabilities."""
    if arch == "GPT2LMHeadModel":
        return cfg.embd_pdrop, cfg.attn_pdrop, cfg.resid_pdrop, 0.0
    cls_p = cfg.classifier_dropout if cfg.classifier_dropout is not None \
        else cfg.hidden_dropout_prob
    return cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob, \
        cfg.hidden_dropout_prob, cls_p


def activation_bytes(arch, cfg, batch_size, block_size, dtype="float32",
                     attention_mask=False) -> dict:
    """Bytes of what a training forward keeps for its backward, by part; and the logits.

    Per block (N = B T tokens, A = B H T^2 attention weights, s bytes a float):
        s (2 (N C + N))   the two LayerNorms' x_hat (N C) and 1/std (N)
        s (2 N C)         the inputs of the q k v projection and the first feed-forward layer
        s (3 N C + N C)   q, k, v (one fused array), and the heads merged before the projection
        s (2 N F)         the feed-forward's hidden layer before and after GELU
        s A               the attention weights
    = s (8 N C + 2 N + 2 N F + A); with dropout on the attention weights, A
    more floats (the dropped weights) and A bytes of mask; with residual
    dropout, 2 N C bytes of masks; with a padding mask, A more floats (rows
    that see no key are zeroed) and B H T bytes. Outside the blocks: the
    embeddings' LayerNorm (BERT) or the final one (GPT), the head's inputs,
    the cross-entropy's softmax (N V floats for a language-model head).
    ``attention_mask``: whether the batch carries one (BERT's padding).
    Returns {"per_block", "blocks", "rest", "total", "logits"} in bytes.
    """
    L, H, C, F, V, P, types = _shape(arch, cfg)
    B, T = batch_size, block_size
    s = np.dtype(dtype).itemsize
    N, A = B * T, B * H * T * T
    p_emb, p_att, p_res, p_cls = _dropouts(arch, cfg)
    masked = bool(attention_mask)
    floats = 8 * N * C + 2 * N + 2 * N * F + A * (1 + (p_att > 0) + masked)
    bools = (p_att > 0) * A + (p_res > 0) * 2 * N * C + masked * B * H * T
    per_block = s * floats + bools
    heads, K = _heads(arch), getattr(cfg, "num_labels", 0)
    rest_f, rest_b = N * C + N, (p_emb > 0) * N * C      # a LayerNorm; the embeddings' dropout
    logits = 0
    if arch == "GPT2LMHeadModel":
        rest_f += N * C + N * V + N                     # the head's input; softmax, CE weights
        logits = N * V
    elif _has_pooler(arch) or heads - {"token"} or ("token" in heads and not p_cls > 0):
        rest_f += N * C                                 # the last hidden state, read by a head
        #                                                 (the token head reads its dropout's copy)
    if _has_pooler(arch):
        rest_f += B * C                                 # tanh's output
    if "mlm" in heads:
        rest_f += N * C + (N * C + N) + N * C + N * V + N   # GELU in, LayerNorm, decoder in, CE
        logits += N * V
    if "nsp" in heads:
        rest_f += 2 * B + B
        logits += 2 * B
    if "seq" in heads:
        rest_f += B * K + B + (p_cls > 0) * B * C
        rest_b += (p_cls > 0) * B * C
        logits += B * K
    if "token" in heads:
        rest_f += N * K + N + (p_cls > 0) * N * C
        rest_b += (p_cls > 0) * N * C
        logits += N * K
    if "qa" in heads:
        rest_f += 2 * (N + B)
        logits += 2 * N
    rest = s * rest_f + rest_b
    return {"per_block": int(per_block), "blocks": int(L * per_block), "rest": int(rest),
            "total": int(L * per_block + rest), "logits": int(s * logits)}


def cached_bytes(model) -> int:
    """Bytes of the arrays a model's caches hold now (after a training forward).

    Walks every module's cache (tuples, NamedTuples, lists), takes each
    array's base (a view costs nothing of its own), counts each base once,
    and leaves out the parameters and integer arrays (token ids: the batch).
    """
    params = set()
    for p in model.parameters():
        params.add(id(_root(p.data)))
    seen = {}

    def visit(obj):
        if hasattr(obj, "nbytes") and hasattr(obj, "dtype") and hasattr(obj, "base"):
            r = _root(obj)
            if id(r) not in params and id(r) not in seen and r.dtype.kind not in "iu":
                seen[id(r)] = r
        elif isinstance(obj, (tuple, list)):
            for o in obj:
                visit(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                visit(o)

    for _, m in model.named_modules():
        if m._cache is not None:
            visit(m._cache)
    return int(sum(r.nbytes for r in seen.values()))


def _root(a):
    while getattr(a, "base", None) is not None and hasattr(a.base, "nbytes"):
        a = a.base
    return a


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

def estimate(arch, cfg, batch_size=1, block_size=None, dtype="float32") -> dict:
    """Parameters, FLOPs and memory of one training step, from the config alone."""
    L, H, C, F, V, P, types = _shape(arch, cfg)
    T = block_size or P
    if not 1 <= T <= P:
        raise ValueError(f"cost: block_size must be in [1, {P}] (the model's positions); got {T}")
    if batch_size < 1:
        raise ValueError(f"cost: batch_size must be at least 1; got {batch_size}")
    params = parameter_counts(arch, cfg)
    s = np.dtype(dtype).itemsize
    act = activation_bytes(arch, cfg, batch_size, T, dtype)
    memory = {"weights": params["total"] * s, "gradients": params["total"] * s,
              "optimizer": 2 * params["total"] * s, "activations": act["total"],
              "logits": act["logits"]}
    memory["total"] = sum(memory.values())
    return {"architecture": arch, "config": cfg.to_dict(arch), "dtype": str(np.dtype(dtype)),
            "batch_size": batch_size, "block_size": T,
            "shape": {"L": L, "H": H, "C": C, "F": F, "V": V},
            "parameters": params, "flops": flops(arch, cfg, batch_size, T), "memory": memory,
            "activations": act}


def measure(report, steps=3, warmup=1, peak_gflops=None) -> dict:
    """Build a model of the report's config (random weights), time training steps on the
    backend in force, and add {"measured": ...} to a copy of the report: step seconds
    (median), tokens/s, achieved GFLOP/s, the sgemm peak and MFU, the bytes the caches
    held after a forward, and the peak array memory of one step (tracemalloc)."""
    import tracemalloc  # noqa: PLC0415

    from scratchlm import backend  # noqa: PLC0415
    from scratchlm.kernels import get_kernels  # noqa: PLC0415
    from scratchlm.models import BertConfig, GPTConfig  # noqa: PLC0415
    from scratchlm.optim import AdamW  # noqa: PLC0415

    arch, B, T = report["architecture"], report["batch_size"], report["block_size"]
    d = dict(report["config"])
    config_class = GPTConfig if arch == "GPT2LMHeadModel" else BertConfig
    cfg = config_class.from_dict({k: v for k, v in d.items() if k != "architectures"})
    model = _model_class(arch)(cfg, seed=0, dtype=report["dtype"]).train()
    opt = AdamW(model.parameters(), lr=1e-4, flat=True)
    forward, backward = _training_call(model, B, T)

    def step():
        opt.zero_grad()
        forward()
        backward()
        opt.step()

    forward()                                           # the caches of one training forward
    cached = cached_bytes(model)
    model.clear_caches()
    for _ in range(warmup):
        step()
    runs = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        runs.append(time.perf_counter() - t0)
    seconds = float(np.median(runs))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    step()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    if peak_gflops is None:
        from scratchlm.bench import sgemm_peak  # noqa: PLC0415
        peak_gflops = sgemm_peak(repeats=4)
    achieved = report["flops"]["train_per_step"] / seconds / 1e9
    out = dict(report)
    out["measured"] = {"backend": backend.get_backend(), "kernels": get_kernels(),
                       "step_seconds": seconds, "step_seconds_runs": runs,
                       "tokens_per_s": B * T / seconds, "achieved_gflops": achieved,
                       "peak_gflops": float(peak_gflops), "mfu": achieved / peak_gflops,
                       "cached_bytes": cached, "step_peak_bytes": int(peak)}
    return out


def _mib(n):
    return f"{n / 2 ** 20:,.1f} MiB"


def _g(n):
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:,.3f} {unit}"
    return f"{n:,.0f} FLOP"


def format_report(r) -> str:
    """The report as ``scratchlm cost`` prints it."""
    sh, p, f, m = r["shape"], r["parameters"], r["flops"], r["memory"]
    B, T = r["batch_size"], r["block_size"]
    L, C, F, V = sh["L"], sh["C"], sh["F"], sh["V"]
    lines = [f"{r['architecture']}: {L} layers, {sh['H']} heads, width C={C}, feed-forward "
             f"F={F}, vocabulary V={V}; batch B={B} x context T={T} = {B * T:,} tokens, "
             f"{r['dtype']}",
             "",
             f"parameters        {p['total']:>15,}",
             f"  embeddings      {p['embeddings']:>15,}   ("
             + " + ".join(f"{k} {v:,}" for k, v in p["parts"].items()
                          if k.endswith("embedding")) + ")",
             f"  the rest        {p['rest']:>15,}   ({L} blocks x {p['per_block']:,}"
             + "".join(f" + {k} {v:,}" for k, v in p["parts"].items()
                       if not k.endswith("embedding") and k != "blocks") + ")",
             "",
             "FLOPs (2 per multiply-add of every matrix product, attention dense):",
             f"  N_mm = {f['n_mm_formula']} = {f['n_mm']:,.0f} weights per token",
             f"  forward per token       2 N_mm + 4 L C T = {2 * f['n_mm']:,.0f} + "
             f"{f['attention_per_token']:,} = {f['forward_per_token']:,.0f}"
             f" ({_g(f['forward_per_token'])})",
             f"  training step per token 3 x forward = {f['train_per_token']:,.0f}"
             f" ({_g(f['train_per_token'])})",
             f"  one training step       {B * T:,} tokens x that = {_g(f['train_per_step'])}",
             "",
             "memory of a training step:",
             f"  weights            {_mib(m['weights']):>14}   P x {np.dtype(r['dtype']).itemsize}"
             " bytes",
             f"  gradients          {_mib(m['gradients']):>14}",
             f"  optimizer state    {_mib(m['optimizer']):>14}   AdamW: 2 moments per weight",
             f"  activations        {_mib(m['activations']):>14}   kept for backward: "
             f"{L} x {_mib(r['activations']['per_block'])} per block "
             "(s (8 N C + 2 N + 2 N F + B H T^2), N = B T) + "
             f"{_mib(r['activations']['rest'])} outside the blocks",
             f"  logits             {_mib(m['logits']):>14}",
             f"  total              {_mib(m['total']):>14}"]
    if "measured" in r:
        x = r["measured"]
        lines += ["",
                  f"measured ({x['backend']}, {x['kernels']} kernels, random weights; median "
                  f"of {len(x['step_seconds_runs'])} steps of forward, loss, backward, AdamW):",
                  f"  step time          {x['step_seconds']:.3f} s = {x['tokens_per_s']:,.0f} "
                  "tokens/s",
                  f"  achieved           {x['achieved_gflops']:,.1f} GFLOP/s; sgemm peak "
                  f"{x['peak_gflops']:,.1f} GFLOP/s; MFU {100 * x['mfu']:.1f}%",
                  f"  caches after a forward  {_mib(x['cached_bytes'])} (predicted "
                  f"{_mib(m['activations'])})",
                  f"  peak array memory of a step (tracemalloc, above the weights, gradients "
                  f"and moments) {_mib(x['step_peak_bytes'])}"]
    return "\n".join(lines)
