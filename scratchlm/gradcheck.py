"""Numerical gradient checking: is a hand-written backward right?

A backward is checked against central finite differences of its own forward,
in float64. Given a forward ``out = f(inputs)`` and a random upstream gradient
``dout`` (never a bare sum, which hides errors that cancel across outputs),
the scalar

    L(inputs) = sum(f(inputs) * dout)

has gradient ``backward(dout)`` with respect to each input. Two ways to check:

* element-wise, for small inputs: perturb each element by +-h,
      dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h)
* directional, for large inputs (cost independent of size): for random unit
  directions u,
      <dL/dx, u> ~ (L(x + h u) - L(x - h u)) / (2h)

Errors are reported per input as the largest absolute difference and the
normwise relative error ``max|a - n| / max(max|a|, max|n|)``, where ``a`` is
the analytic and ``n`` the numerical value: a scale-free number that is not
fooled by tiny entries (the denominator is at least REL_ERR_FLOOR, so an
exactly-zero gradient is judged by its absolute error). The central difference has truncation error O(h^2)
and rounding error O(eps |L| / h); with h near 1e-6 in float64 both are far
below 1e-6 for the smooth functions checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from scratchlm.backend import to_numpy


def numerical_grad(f: Callable[[], Any], x, h: float = 1e-6):
    """Central-difference gradient of the scalar ``f()`` with respect to ``x``.

    ``x`` is perturbed in place, one element at a time, and restored; ``f``
    must read it afresh on each call. Returns an array shaped like ``x``.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for i in np.ndindex(*x.shape):
        old = x[i].item()
        x[i] = old + h
        f_plus = float(f())
        x[i] = old - h
        f_minus = float(f())
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad


def directional_derivative(f: Callable[[], Any], x, u, h: float = 1e-6) -> float:
    """Central difference of the scalar ``f()`` along direction ``u`` (``x`` moved in place)."""
    old = x.copy()
    x += h * u
    f_plus = float(f())
    x[...] = old - h * u
    f_minus = float(f())
    x[...] = old
    return (f_plus - f_minus) / (2.0 * h)


@dataclass
class InputReport:
    """How well one input's analytic gradient matched the numerical one."""

    name: str
    shape: tuple
    mode: str            # "elementwise" or "directional"
    max_abs_err: float
    max_rel_err: float
    passed: bool


@dataclass
class GradcheckReport:
    """Per-input results of one gradcheck; ``passed`` when every input passed."""

    inputs: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.inputs)

    @property
    def max_rel_err(self) -> float:
        return max((r.max_rel_err for r in self.inputs), default=0.0)

    @property
    def max_abs_err(self) -> float:
        return max((r.max_abs_err for r in self.inputs), default=0.0)

    def __str__(self) -> str:
        lines = [f"{'input':<12} {'shape':<18} {'mode':<12} {'max abs err':>12} "
                 f"{'max rel err':>12}  result"]
        for r in self.inputs:
            lines.append(f"{r.name:<12} {str(r.shape):<18} {r.mode:<12} "
                         f"{r.max_abs_err:12.3e} {r.max_rel_err:12.3e}  "
                         f"{'pass' if r.passed else 'FAIL'}")
        return "\n".join(lines)


# Gradients smaller than this are judged by their absolute error: for them the
# finite-difference noise (about eps * |L| / h) is not small in relative terms,
# and an exactly-zero gradient has no meaningful relative error.
REL_ERR_FLOOR = 1e-7


def _errors(analytic, numeric, floor=REL_ERR_FLOOR):
    """Largest absolute difference, and normwise relative error (see module docstring)."""
    diff = float(np.max(np.abs(analytic - numeric), initial=0.0))
    scale = max(float(np.max(np.abs(analytic), initial=0.0)),
                float(np.max(np.abs(numeric), initial=0.0)), floor)
    return diff, diff / scale


def gradcheck(forward: Callable, backward: Callable, inputs: dict, wrt=None, *,
              seed: int = 0, h: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-9,
              max_elements: int = 256, n_directions: int = 6) -> GradcheckReport:
    """Compare ``backward`` with central finite differences of ``forward``.

    Args:
        forward: ``forward(**inputs) -> (out, cache)``.
        backward: ``backward(dout, cache)`` -> the gradients of the ``wrt``
            inputs, as a tuple in ``wrt`` order (None entries are skipped) or
            as a dict by name.
        inputs: name -> array; floating arrays are copied to float64 (the
            check is meaningless in float32); others (ids, masks) pass as is.
        wrt: names of the inputs to check (default: every floating input).
        max_elements: inputs up to this size are checked element by element,
            larger ones along ``n_directions`` random unit directions.
        rtol, atol: an input passes when its normwise relative error is at
            most rtol, or its largest absolute error at most atol (for
            gradients that are zero).
    Returns: a GradcheckReport with one InputReport per checked input.
    """
    xs = {k: (np.array(to_numpy(v), dtype=np.float64)
              if hasattr(v, "dtype") and v.dtype.kind == "f" else v)
          for k, v in inputs.items()}
    if wrt is None:
        wrt = [k for k, v in xs.items() if hasattr(v, "dtype") and v.dtype.kind == "f"]
    for name in wrt:
        if name not in xs or not hasattr(xs[name], "dtype") or xs[name].dtype.kind != "f":
            raise ValueError(f"gradcheck: wrt name {name!r} is not a floating input; "
                             f"inputs are {sorted(xs)}")
    rng = np.random.default_rng(seed)
    out, cache = forward(**xs)
    dout = rng.standard_normal(np.shape(out))
    grads = backward(dout, cache)
    if not isinstance(grads, dict):
        grads = dict(zip(wrt, grads if isinstance(grads, tuple) else (grads,)))

    def loss():
        return float((to_numpy(forward(**xs)[0]) * dout).sum())

    report = GradcheckReport()
    for name in wrt:
        x = xs[name]
        if grads.get(name) is None:
            raise ValueError(f"gradcheck: backward returned no gradient for {name!r}")
        g = np.asarray(to_numpy(grads[name]), dtype=np.float64)
        if g.shape != x.shape:
            raise ValueError(f"gradcheck: gradient of {name!r} has shape {g.shape}, "
                             f"expected {x.shape}")
        if x.size <= max_elements:
            mode, analytic, numeric = "elementwise", g, numerical_grad(loss, x, h)
        else:
            mode = "directional"
            us = rng.standard_normal((n_directions,) + x.shape)
            us /= np.sqrt((us * us).reshape(n_directions, -1).sum(1)).reshape(
                (n_directions,) + (1,) * x.ndim)
            analytic = np.array([(g * u).sum() for u in us])
            numeric = np.array([directional_derivative(loss, x, u, h) for u in us])
        abs_err, rel_err = _errors(analytic, numeric)
        report.inputs.append(InputReport(name, tuple(x.shape), mode, abs_err, rel_err,
                                         rel_err <= rtol or abs_err <= atol))
    return report


# --- the catalogue of functional ops, for ``scratchlm gradcheck`` -------------

def functional_cases(seed: int = 0):
    """Yield ``(op, shapes, forward, backward, inputs, wrt)`` for every functional op.

    Shapes are small but not trivial, values are drawn away from kinks (ReLU
    at 0) and degenerate points (constant LayerNorm rows), and masks include
    a fully masked row.
    """
    from scratchlm import functional as F  # noqa: PLC0415 (keeps import light)

    rng = np.random.default_rng(seed)
    B, T, C, H, V, Fw = 2, 5, 8, 2, 11, 12
    x = rng.standard_normal((B, T, C))

    yield ("linear", f"x {(B, T, C)} W {(C, Fw)}", F.linear_forward, F.linear_backward,
           dict(x=x, W=rng.standard_normal((C, Fw)), b=rng.standard_normal(Fw)),
           ["x", "W", "b"])
    ids = rng.integers(0, V, (B, T))
    ids[0, :3] = 4                                      # repeated ids must add up
    yield ("embedding", f"ids {(B, T)} W {(V, C)}", F.embedding_forward,
           F.embedding_backward, dict(ids=ids, W=rng.standard_normal((V, C))), ["W"])
    yield ("layernorm", f"x {(B, T, C)}", F.layernorm_forward, F.layernorm_backward,
           dict(x=x, gamma=rng.standard_normal(C), beta=rng.standard_normal(C)),
           ["x", "gamma", "beta"])
    for approximate in ("none", "tanh"):
        yield (f"gelu ({approximate})", f"x {(B, T, C)}",
               lambda x, a=approximate: F.gelu_forward(x, a), F.gelu_backward,
               dict(x=3 * x), ["x"])
    away = np.where(np.abs(x) < 0.1, 0.5, x)            # no element near the kink
    yield ("relu", f"x {(B, T, C)}", F.relu_forward, F.relu_backward, dict(x=away), ["x"])
    yield ("tanh", f"x {(B, T, C)}", F.tanh_forward, F.tanh_backward, dict(x=x), ["x"])
    yield ("silu (swish)", f"x {(B, T, C)}", F.silu_forward, F.silu_backward, dict(x=3 * x),
           ["x"])
    yield ("softmax", f"x {(B, T, V)}", F.softmax_forward, F.softmax_backward,
           dict(x=10 * rng.standard_normal((B, T, V))), ["x"])
    yield ("log_softmax", f"x {(B, T, V)}", F.log_softmax_forward, F.log_softmax_backward,
           dict(x=10 * rng.standard_normal((B, T, V))), ["x"])
    yield ("dropout (p=0.3)", f"x {(B, T, C)}",
           lambda x: F.dropout_forward(x, 0.3, rng=1234), F.dropout_backward,
           dict(x=x), ["x"])
    D = C // H
    qkv = {n: rng.standard_normal((B, H, T, D)) for n in ("q", "k", "v")}
    yield ("attention (causal)", f"q,k,v {(B, H, T, D)}",
           lambda q, k, v: F.attention_forward(q, k, v, causal=True), F.attention_backward,
           qkv, ["q", "k", "v"])
    pad = np.ones((B, T), dtype=bool)
    pad[1, :] = False                                   # a fully masked batch row
    pad[0, 3:] = False
    yield ("attention (padding mask)", f"q,k,v {(B, H, T, D)}",
           lambda q, k, v: F.attention_forward(q, k, v, mask=pad), F.attention_backward,
           qkv, ["q", "k", "v"])
    yield ("attention (causal, dropout)", f"q,k,v {(B, H, T, D)}",
           lambda q, k, v: F.attention_forward(q, k, v, causal=True, dropout_p=0.2, rng=7),
           F.attention_backward, qkv, ["q", "k", "v"])
    q_new = rng.standard_normal((B, H, 2, D))
    yield ("attention (2 queries, KV cache)", f"q {(B, H, 2, D)} k,v {(B, H, T, D)}",
           lambda q, k, v: F.attention_forward(q, k, v, causal=True), F.attention_backward,
           dict(q=q_new, k=qkv["k"], v=qkv["v"]), ["q", "k", "v"])
    S = T + 3                                           # a source longer than the target
    source = np.ones((B, S), dtype=bool)
    source[1, 4:] = False                               # the source's padding
    yield ("attention (cross, source mask)",
           f"q {(B, H, T, D)} k,v {(B, H, S, D)}",
           lambda q, k, v: F.attention_forward(q, k, v, mask=source), F.attention_backward,
           dict(q=qkv["q"], k=rng.standard_normal((B, H, S, D)),
                v=rng.standard_normal((B, H, S, D))), ["q", "k", "v"])
    targets = rng.integers(0, V, (B, T))
    targets[0, :2] = -100                               # ignored targets
    yield ("cross_entropy", f"logits {(B, T, V)}",
           lambda logits: F.cross_entropy_forward(logits, targets), F.cross_entropy_backward,
           dict(logits=5 * rng.standard_normal((B, T, V))), ["logits"])
    teacher = 5 * rng.standard_normal((B, T, V))
    yield ("soft_cross_entropy (T=2)", f"logits {(B, T, V)}",
           lambda s: F.soft_cross_entropy_forward(s, teacher, temperature=2.0),
           F.soft_cross_entropy_backward, dict(s=5 * rng.standard_normal((B, T, V))), ["s"])
    yield ("cosine_embedding", f"a,b {(B, T, C)}", F.cosine_embedding_forward,
           F.cosine_embedding_backward, dict(a=x, b=rng.standard_normal((B, T, C))),
           ["a", "b"])
    yield ("mse", f"a,b {(B, T, C)}", F.mse_forward, F.mse_backward,
           dict(a=x, b=rng.standard_normal((B, T, C))), ["a", "b"])
    big = rng.standard_normal((4, 32, 24))              # large: directional checks
    yield ("linear (large)", f"x {big.shape} W (24, 48)", F.linear_forward,
           F.linear_backward, dict(x=big, W=rng.standard_normal((24, 48)),
                                   b=rng.standard_normal(48)), ["x", "W", "b"])


def check_functional(seed: int = 0, **kwargs):
    """Gradcheck every functional op; returns a list of (op, shapes, report)."""
    return [(op, shapes, gradcheck(fwd, bwd, inputs, wrt, seed=seed, **kwargs))
            for op, shapes, fwd, bwd, inputs, wrt in functional_cases(seed)]


# --- whole models ------------------------------------------------------------

def gradcheck_model(model, loss_fn: Callable, *, seed: int = 0, h: float = 1e-5,
                    n_directions: int = 2, rtol: float = 1e-5, atol: float = 1e-10,
                    rel_floor: float = 1e-5) -> GradcheckReport:
    """Check a model's backward, parameter by parameter, along random directions.

    ``loss_fn(model)`` runs a forward that computes a loss and returns it. For
    every parameter p and random unit direction u (same shape as p), the
    analytic ``<p.grad, u>`` from ``model.backward()`` is compared with the
    central difference of the loss along u: the cost does not grow with the
    size of p. The model must be float64 and deterministic (dropout 0).
    Directional derivatives smaller than ``rel_floor`` (a bias whose gradient
    is zero by symmetry, say) are judged by their absolute error.
    """
    if np.dtype(model.dtype) != np.float64:
        raise ValueError(f"gradcheck_model: the model must be float64 (model.astype('float64')); "
                         f"got {model.dtype}")
    rng = np.random.default_rng(seed)
    model.train()
    loss_fn(model)
    model.zero_grad()
    model.backward()
    grads = {name: np.array(to_numpy(p.grad)) for name, p in model.named_parameters()}
    model.eval()                                        # no caches while probing

    report = GradcheckReport()
    for name, p in model.named_parameters():
        if not p.requires_grad:                         # a fixed buffer: nothing to check
            continue
        us = rng.standard_normal((n_directions,) + tuple(p.shape))
        analytic, numeric = [], []
        for u in us:
            u /= np.sqrt((u * u).sum())
            u_b = u if p.data.__class__ is np.ndarray else type(p.data)(u)
            analytic.append(float((grads[name] * u).sum()))
            numeric.append(directional_derivative(lambda: float(loss_fn(model)), p.data, u_b, h))
        abs_err, rel_err = _errors(np.array(analytic), np.array(numeric), rel_floor)
        report.inputs.append(InputReport(name, tuple(p.shape), "directional", abs_err,
                                         rel_err, rel_err <= rtol or abs_err <= atol))
    return report


def model_cases(seed: int = 0):
    """Yield ``(name, model, loss_fn)``: a tiny float64 instance of every model class.

    Weights are drawn with a larger spread than the usual 0.02 so that every
    parameter's gradient is well above the finite-difference noise floor. The
    batches have padding (left for GPT, right for BERT) with ignored labels.
    """
    from scratchlm import models as M  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    B, T, V = 2, 6, 23
    # Id 0 is BERT's [PAD]: as in PyTorch, its embedding row gets no gradient,
    # which finite differences would not see. Real tokens only, then.
    ids = rng.integers(1, V, (B, T))

    gpt_cfg = M.GPTConfig(vocab_size=V, n_positions=8, n_embd=8, n_layer=2, n_head=2,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                          initializer_range=0.3)
    left = np.ones((B, T), dtype=np.int64)
    left[1, :2] = 0                                     # left padding in row 1
    gpt_labels = np.where(left == 1, ids, -100)
    gpt_labels[1, 2] = -100                             # its first real token has no context
    yield ("GPT", M.GPT(gpt_cfg, seed=seed, dtype="float64"),
           lambda m: m(ids, attention_mask=left, labels=gpt_labels).loss)

    bert_cfg = M.BertConfig(vocab_size=V, hidden_size=8, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=12,
                            max_position_embeddings=8, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, initializer_range=0.3,
                            id2label={0: "A", 1: "B", 2: "C"})
    tt = np.zeros((B, T), dtype=np.int64)
    tt[:, 3:] = 1
    right = np.ones((B, T), dtype=np.int64)
    right[1, 4:] = 0                                    # right padding in row 1
    mlm = np.where(rng.random((B, T)) < 0.5, ids, -100)
    mlm[0, 0], mlm[1, 4:] = ids[0, 0], -100
    tags = rng.integers(0, 3, (B, T))
    tags[1, 4:] = -100
    enc = dict(token_type_ids=tt, attention_mask=right)
    bert_cases = [
        ("BertForPreTraining", dict(labels=mlm, next_sentence_label=np.array([0, 1]))),
        ("BertForMaskedLM", dict(labels=mlm)),
        ("BertForNextSentencePrediction", dict(labels=np.array([1, 0]))),
        ("BertForSequenceClassification", dict(labels=np.array([2, 0]))),
        ("BertForTokenClassification", dict(labels=tags)),
        ("BertForQuestionAnswering", dict(start_positions=np.array([1, 2]),
                                          end_positions=np.array([3, 3]))),
    ]
    for cls_name, labels in bert_cases:
        yield (cls_name, getattr(M, cls_name)(bert_cfg, seed=seed, dtype="float64"),
               lambda m, labels=labels: m(ids, **enc, **labels).loss)

    # Marian: the decoder starts with an id other than pad (3), whose table row gets
    # no gradient from a lookup; ignored labels are a suffix (read as pad by the shift).
    src = rng.integers(4, V, (B, T + 1))
    tgt = rng.integers(4, V, (B, T))
    tgt[1, 4:] = -100
    src_mask = np.ones((B, T + 1), dtype=np.int64)
    src_mask[1, 5:] = 0
    for act, share in (("swish", True), ("gelu", False)):
        marian_cfg = M.MarianConfig(
            vocab_size=V, d_model=8, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=12,
            decoder_ffn_dim=12, max_position_embeddings=16, pad_token_id=3, eos_token_id=0,
            decoder_start_token_id=1, dropout=0.0, init_std=0.3, activation_function=act,
            scale_embedding=share, share_encoder_decoder_embeddings=share,
            tie_word_embeddings=share)
        yield (f"MarianMTModel ({act}, {'shared' if share else 'unshared'})",
               M.MarianMTModel(marian_cfg, seed=seed, dtype="float64"),
               lambda m: m(src, src_mask, labels=tgt).loss)


def check_models(seed: int = 0, **kwargs):
    """Gradcheck every model class; returns a list of (name, shapes, report)."""
    return [(name, f"{model.num_parameters()} params", gradcheck_model(model, fn, seed=seed,
                                                                      **kwargs))
            for name, model, fn in model_cases(seed)]
