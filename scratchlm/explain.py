"""Explaining a prediction: attention maps, attention rollout, saliency,
integrated gradients, per-head statistics, and their pictures.

Two questions about a trained Transformer:

* What does each head attend to?  ``output_attentions=True`` returns each
  layer's attention probabilities att_l (B, H, T, T). ``head_statistics``
  summarises every head (the entropy of its rows; the share of attention on
  [CLS], on [SEP], on punctuation, on the previous and on the next token, as
  Clark et al. 2019 measure them), and ``attention_rollout`` follows attention
  through the layers (Abnar & Zuidema 2020).
* Which input tokens does a prediction rest on?  Take a score F (one logit,
  or its log-probability or probability) as a function of the input word
  embeddings x (B, T, C) and give each token t a number a_t:

      saliency                a_t = sum_c x_tc dF/dx_tc               (gradient x input)
      integrated gradients    a_t = sum_c (x - x')_tc int_0^1 dF/dx_tc(x' + s (x - x')) ds

  (Sundararajan et al. 2017), with x' a baseline input. Along the straight
  path from x' to x the integrand is the derivative of F, so the attributions
  add up to the change of the score (completeness):

      sum_t a_t = F(x) - F(x')

  The integral is a quadrature sum_k w_k g(s_k); what it misses of the
  identity, ``.delta = sum_t a_t - (F(x) - F(x'))``, is reported.

Every gradient comes from the model's own hand-written backward: a forward
with ``inputs_embeds=x`` and ``backward(dlogits=dF/dlogits)`` leave dF/dx in
``model.inputs_embeds_grad`` (``score_and_gradient``). Only the word
embeddings are the input; position and token-type embeddings stay as they are.

Pictures: each ``plot_*`` function writes a PNG through matplotlib (the
``plot`` extra, imported when first needed) when the path ends in ".png", and
a self-contained HTML page, written with the standard library alone, when it
ends in ".html": no script, and nothing fetched from anywhere (heat maps are
PNG images encoded here and inlined as data: URIs; token maps are tables).

Results are NumPy arrays on the host (float64 for the attributions). Nothing
here prints; ``HeadStatistics.table()`` returns its table as a string.
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
import struct
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np

from scratchlm import backend
from scratchlm.models import (
    GPT, BertForMaskedLM, BertForNextSentencePrediction, BertForSequenceClassification,
    BertForTokenClassification,
)
from scratchlm.nn import Dropout
from scratchlm.nn.layers import MultiHeadSelfAttention

# Models whose .logits a score can be read from: (B, K) per sequence, or (B, T, K) per position.
SEQUENCE_MODELS = (BertForSequenceClassification, BertForNextSentencePrediction)
POSITION_MODELS = (GPT, BertForMaskedLM, BertForTokenClassification)
SCORES = ("logit", "log_prob", "prob")
INTEGRATION_METHODS = ("gauss_legendre", "trapezoid", "riemann_left", "riemann_middle",
                       "riemann_right")
FORWARD_KEYS = ("attention_mask", "token_type_ids", "position_ids")


# ---------------------------------------------------------------------------
# Attention: rollout, statistics per head, what generated tokens looked at
# ---------------------------------------------------------------------------

def _host_attentions(where, attentions):
    """L arrays (B, H, T, T) of any backend -> a list of host arrays, checked."""
    if attentions is None or len(attentions) == 0:
        raise ValueError(f"{where}: attentions must be a non-empty sequence of (B, H, T, T) "
                         "arrays (a forward with output_attentions=True returns them)")
    atts = [np.asarray(backend.to_numpy(a)) for a in attentions]
    shape = atts[0].shape
    for a in atts:
        if a.ndim != 4 or a.shape != shape or a.shape[2] != a.shape[3]:
            raise ValueError(f"{where}: every attention must have the same shape (B, H, T, T) "
                             f"with T queries and T keys; got {[a.shape for a in atts]}")
    return atts


def attention_rollout(attentions, head_fusion="mean", add_residual=True):
    """How much each position's last representation draws on each input position.

    Math (Abnar & Zuidema 2020), for layers l = 1 .. L:
        A_l = fuse_h att_l                    heads fused: mean (or max, min)
        A_l = (A_l + I) / rowsum(A_l + I)     the residual connection, rows sum to 1
        R_1 = A_1,   R_l = A_l R_{l-1}        rollout: the product over layers
    Each row of R_L is a distribution over input positions (rows of a product
    of row-stochastic matrices sum to 1).
    Shapes: attentions: L arrays (B, H, T, T) -> R_L (B, T, T)
    Args:
        head_fusion: "mean" (the paper's), "max" or "min" over heads.
        add_residual: add the identity for the residual stream (the paper's);
            False multiplies the fused attentions alone.
    """
    atts = _host_attentions("attention_rollout", attentions)
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}.get(head_fusion)
    if fuse is None:
        raise ValueError(f"attention_rollout: head_fusion must be 'mean', 'max' or 'min'; "
                         f"got {head_fusion!r}")
    B, _, T, _ = atts[0].shape
    eye = np.eye(T)
    rollout = None
    for att in atts:
        A = fuse(att.astype(np.float64), axis=1)            # (B, T, T) heads fused
        if add_residual:
            A = A + eye                                     # the residual: x + attn(x)
        A = A / A.sum(-1, keepdims=True)                    # rows sum to 1
        rollout = A if rollout is None else A @ rollout     # R_l = A_l R_{l-1}
    return rollout


def _is_punctuation(token: str) -> bool:
    """Every character of the token, without a sub-word mark, is punctuation (Unicode P*)."""
    for mark in ("##", "\u0120", "\u2581"):          # WordPiece, byte-level BPE, SentencePiece
        if token.startswith(mark) and len(token) > len(mark):
            token = token[len(mark):]
    token = token.strip()
    return bool(token) and all(unicodedata.category(ch).startswith("P") for ch in token)


def _token_rows(where, tokens, B, T):
    """tokens: B lists of T strings (or one list for B = 1) -> list of lists, checked."""
    if tokens and isinstance(tokens[0], str):
        tokens = [tokens]
    tokens = [list(row) for row in tokens]
    if len(tokens) != B or any(len(row) != T for row in tokens):
        raise ValueError(f"{where}: tokens must hold {B} list(s) of {T} token strings, one per "
                         f"position (padding included); got lengths {[len(r) for r in tokens]}")
    return tokens


@dataclass
class HeadStatistics:
    """What each head attends to, averaged over the real query positions of a batch.

    Every field is an (L, H) array:
        entropy:      mean entropy of a query's attention, in nats (0: one key;
                      log n: uniform over n keys)
        cls, sep:     share of attention on [CLS] / on [SEP] tokens
        punctuation:  share on punctuation tokens
        previous:     share on the previous token (queries that have one)
        next:         share on the next token (0 for a causal model)
    """

    entropy: np.ndarray
    cls: np.ndarray
    sep: np.ndarray
    punctuation: np.ndarray
    previous: np.ndarray
    next: np.ndarray

    FIELDS = ("entropy", "cls", "sep", "punctuation", "previous", "next")
    HEADERS = ("entropy", "[CLS]", "[SEP]", "punct", "prev", "next")

    def table(self, top=None, sort_by=None) -> str:
        """The statistics as a text table, one row per head.

        sort_by: a field name to order the heads by (descending); top: keep
        that many rows. Shares are fractions of each query's attention.
        """
        L, H = self.entropy.shape
        rows = [(layer, head) for layer in range(L) for head in range(H)]
        if sort_by is not None:
            if sort_by not in self.FIELDS:
                raise ValueError(f"HeadStatistics.table: sort_by must be one of {self.FIELDS}; "
                                 f"got {sort_by!r}")
            values = getattr(self, sort_by)
            rows.sort(key=lambda lh: -values[lh])
        rows = rows[:top] if top is not None else rows
        lines = [f"{'layer':>5} {'head':>4} " + " ".join(f"{h:>7}" for h in self.HEADERS)]
        for layer, head in rows:
            lines.append(f"{layer:>5} {head:>4} " + " ".join(
                f"{getattr(self, f)[layer, head]:>7.3f}" for f in self.FIELDS))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """Plain lists (for JSON): {field: [[value per head] per layer]}."""
        return {f: np.round(getattr(self, f), 6).tolist() for f in self.FIELDS}


def head_statistics(attentions, tokens, attention_mask=None, *, cls_token="[CLS]",
                    sep_token="[SEP]"):
    """Per-head statistics of a batch's attentions (Clark et al. 2019, section 3).

    Math, for a head's attention a (rows: queries i, columns: keys j), over
    the real (unpadded) queries i of every example:
        entropy     = mean_i  -sum_j a_ij log a_ij
        share on S  = mean_i  sum_{j in S} a_ij       S: [CLS], [SEP] or punctuation keys
        previous    = mean_i  a_{i, i-1}              (i >= 1, both real)
        next        = mean_i  a_{i, i+1}
    Shapes: attentions: L arrays (B, H, T, T); tokens: B lists of T strings
        (or one list for B = 1); attention_mask (B, T) or None -> HeadStatistics
        of (L, H) arrays.
    cls_token, sep_token: the strings of the two special tokens.
    """
    where = "head_statistics"
    atts = _host_attentions(where, attentions)
    B, _, T, _ = atts[0].shape
    tokens = _token_rows(where, tokens, B, T)
    real = np.ones((B, T), dtype=bool) if attention_mask is None else \
        np.asarray(backend.to_numpy(attention_mask)).astype(bool)
    if real.shape != (B, T):
        raise ValueError(f"{where}: attention_mask must have shape {(B, T)}; got {real.shape}")
    key_sets = {name: np.array([[test(t) for t in row] for row in tokens]) & real
                for name, test in (("cls", lambda t: t == cls_token),
                                   ("sep", lambda t: t == sep_token),
                                   ("punctuation", _is_punctuation))}
    prev_ok = real[:, 1:] & real[:, :-1]                    # (B, T-1) query i = 1 .. T-1
    next_ok = real[:, :-1] & real[:, 1:]                    # (B, T-1) query i = 0 .. T-2

    def mean_over(values, ok):
        """values (B, H, n), ok (B, n) -> (H,): the mean over the counted queries."""
        count = ok.sum()
        return (values * ok[:, None, :]).sum((0, 2)) / count if count else \
            np.zeros(values.shape[1])

    out = {f: [] for f in HeadStatistics.FIELDS}
    for att in atts:
        a = att.astype(np.float64)                          # (B, H, T, T)
        logs = np.log(np.where(a > 0, a, 1.0))              # 0 log 0 = 0
        out["entropy"].append(mean_over(-(a * logs).sum(-1), real))
        for name, keys in key_sets.items():
            out[name].append(mean_over((a * keys[:, None, None, :]).sum(-1), real))
        out["previous"].append(mean_over(np.diagonal(a, offset=-1, axis1=2, axis2=3), prev_ok))
        out["next"].append(mean_over(np.diagonal(a, offset=1, axis1=2, axis2=3), next_ok))
    return HeadStatistics(**{f: np.stack(v) for f, v in out.items()})


def generation_attention(attentions, prompt_length, how="mean"):
    """What each generated token looked at in the prompt.

    From one forward over prompt + generated tokens (a causal model's row t
    is the attention it computed when it produced token t + 1), the rows of
    the generated positions and the columns of the prompt:
        how="mean":    mean over layers and heads of att_l[t, j]
        how="last":    the last layer's, mean over heads
        how="rollout": attention_rollout (through generated tokens too)
    A row sums to the share of that token's attention that lands on the
    prompt (the rest is on generated tokens).
    Shapes: attentions: L arrays (B, H, T, T) -> (B, T - P, P), P = prompt_length
    """
    where = "generation_attention"
    atts = _host_attentions(where, attentions)
    T = atts[0].shape[2]
    if not 0 < prompt_length < T:
        raise ValueError(f"{where}: prompt_length must be in [1, {T}) for T = {T} positions; "
                         f"got {prompt_length}")
    if how == "mean":
        m = np.mean([a.astype(np.float64).mean(1) for a in atts], axis=0)
    elif how == "last":
        m = atts[-1].astype(np.float64).mean(1)
    elif how == "rollout":
        m = attention_rollout(atts)
    else:
        raise ValueError(f"{where}: how must be 'mean', 'last' or 'rollout'; got {how!r}")
    return m[:, prompt_length:, :prompt_length]


# ---------------------------------------------------------------------------
# Gradients with respect to the input embeddings
# ---------------------------------------------------------------------------

class Attributions(np.ndarray):
    """Per-token attributions (B, T): a NumPy array that also carries its scores.

    delta:          (B,) sum_t a_t - (F(x) - F(x')), integrated gradients only
    score:          (B,) F(x), the explained score
    baseline_score: (B,) F(x'), integrated gradients only
    Arithmetic on it gives plain arrays (the fields describe these values only).
    """

    def __new__(cls, values, delta=None, score=None, baseline_score=None):
        obj = np.asarray(values).view(cls)
        obj.delta, obj.score, obj.baseline_score = delta, score, baseline_score
        return obj

    def __array_finalize__(self, obj):
        for name in ("delta", "score", "baseline_score"):
            setattr(self, name, getattr(obj, name, None))

    def __array_wrap__(self, out, context=None, return_scalar=False):
        out = np.asarray(out)
        return out[()] if return_scalar else out


def word_embeddings(model):
    """The model's word-embedding table W (V, C): its input x is W[input_ids]."""
    if isinstance(model, GPT):
        return model.wte.weight.data
    if hasattr(model, "bert"):
        return model.bert.embeddings.word_embeddings.weight.data
    raise TypeError(f"word_embeddings: expected a GPT or a BERT model with a head; got "
                    f"{type(model).__name__}")


@contextlib.contextmanager
def gradients_only(model):
    """Run forward and backward for input gradients alone; restore the model after.

    Inside the block the model is in train() mode (its forward keeps what
    backward needs), every dropout probability is 0 (Dropout.p and the
    attention's attn_pdrop: the function differentiated is the deterministic
    one eval() computes), and every parameter is frozen (requires_grad=False:
    layers skip their weight gradients and no .grad changes). On exit the
    modes, probabilities and flags are put back and the caches dropped.
    """
    modules = model.modules()
    training = [m.training for m in modules]
    dropouts = [(m, m.p) for m in modules if isinstance(m, Dropout)]
    attentions = [(m, m.attn_pdrop) for m in modules if isinstance(m, MultiHeadSelfAttention)]
    params = model.parameters()
    flags = [p.requires_grad for p in params]
    try:
        model.train()
        for m, _ in dropouts:
            m.p = 0.0
        for m, _ in attentions:
            m.attn_pdrop = 0.0
        for p in params:
            p.requires_grad = False
        yield model
    finally:
        model.clear_caches()
        for m, p in dropouts:
            m.p = p
        for m, p in attentions:
            m.attn_pdrop = p
        for p, flag in zip(params, flags):
            p.requires_grad = flag
        for m, mode in zip(modules, training):
            object.__setattr__(m, "training", mode)


def _check_model(where, model):
    if not isinstance(model, SEQUENCE_MODELS + POSITION_MODELS):
        names = [c.__name__ for c in SEQUENCE_MODELS + POSITION_MODELS]
        raise TypeError(f"{where}: model must be one of {names}; got {type(model).__name__}")


def _inputs(where, model, inputs):
    """(input_ids (B, T) int64, {forward keyword: (B, T) array}) from ids or a tokenizer's dict."""
    extra = {}
    if isinstance(inputs, dict):
        unknown = sorted(set(inputs) - {"input_ids", *FORWARD_KEYS})
        if unknown:
            raise ValueError(f"{where}: inputs has keys {unknown}; expected input_ids and "
                             f"optionally {list(FORWARD_KEYS)}")
        if inputs.get("input_ids") is None:
            raise ValueError(f"{where}: inputs must hold input_ids")
        extra = {k: np.asarray(backend.to_numpy(v)) for k, v in inputs.items()
                 if k != "input_ids" and v is not None}
        inputs = inputs["input_ids"]
    ids = np.asarray(backend.to_numpy(inputs) if not isinstance(inputs, (list, tuple))
                     else inputs)
    if ids.ndim == 1:                                       # one sequence: a batch of one
        ids = ids[None]
        extra = {k: v[None] if v.ndim == 1 else v for k, v in extra.items()}
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
        raise ValueError(f"{where}: input_ids must be integer ids (B, T) or (T,) with T >= 1; "
                         f"got {ids.dtype} {ids.shape}")
    for k, v in extra.items():
        if v.shape != ids.shape:
            raise ValueError(f"{where}: {k} must have the shape of input_ids {ids.shape}; "
                             f"got {v.shape}")
    if isinstance(model, GPT) and "token_type_ids" in extra:
        raise ValueError(f"{where}: a GPT takes no token_type_ids")
    return ids.astype(np.int64), extra


def _ints(where, name, value, B):
    """An int or B ints -> an int64 array (B,)."""
    v = np.asarray(backend.to_numpy(value) if hasattr(value, "dtype") else value)
    if v.dtype.kind not in "iu" or v.ndim > 1 or (v.ndim == 1 and len(v) != B):
        raise ValueError(f"{where}: {name} must be an int or {B} ints; got {value!r}")
    return np.broadcast_to(v, (B,)).astype(np.int64)


def _target_and_position(where, model, ids, extra, target, position):
    """target (B,) ids of the explained logit; position (B,) for per-position models, or None."""
    B, T = ids.shape
    target = _ints(where, "target", target, B)
    if isinstance(model, (GPT, BertForMaskedLM)):
        K = model.config.vocab_size
    else:
        K = 2 if isinstance(model, BertForNextSentencePrediction) else model.config.num_labels
    if target.min() < 0 or target.max() >= K:
        raise ValueError(f"{where}: target must be in [0, {K}); got {target.tolist()}")
    if isinstance(model, SEQUENCE_MODELS):
        if position is not None:
            raise ValueError(f"{where}: {type(model).__name__} has one prediction per "
                             "sequence; position must be None")
        return target.astype(np.int64), None
    if position is None:
        if not isinstance(model, GPT):
            raise ValueError(f"{where}: {type(model).__name__} predicts at every position; "
                             "pass position= (e.g. the [MASK] position)")
        real = extra.get("attention_mask", np.ones((B, T), dtype=np.int64)).astype(bool)
        position = T - 1 - np.argmax(real[:, ::-1], axis=1)   # the last real token: next token
    position = _ints(where, "position", position, B)
    if position.min() < 0 or position.max() >= T:
        raise ValueError(f"{where}: position must be an int or {B} ints in [0, {T}); "
                         f"got {position.tolist()}")
    return target.astype(np.int64), position.astype(np.int64)


def _score_and_dlogits(logits, target, position, score):
    """F (n,) of each row and dF/dlogits (the shape of logits).

    Math, with z the row's logits (at its position) and y its target:
        logit:     F = z_y                  dF/dz = e_y
        log_prob:  F = z_y - logsumexp(z)   dF/dz = e_y - softmax(z)
        prob:      F = softmax(z)_y         dF/dz = p_y (e_y - softmax(z))
    """
    xp = backend.get_array_module(logits)
    rows = xp.arange(logits.shape[0])
    z = logits if position is None else logits[rows, position]          # (n, K)
    e_y = xp.zeros_like(z)
    e_y[rows, target] = 1.0
    if score == "logit":
        F, dz = z[rows, target], e_y
    else:
        shifted = z - z.max(-1, keepdims=True)              # max subtracted: exp cannot overflow
        p = xp.exp(shifted)
        p /= p.sum(-1, keepdims=True)
        if score == "log_prob":
            F = shifted[rows, target] - xp.log(xp.exp(shifted).sum(-1))
            dz = e_y - p
        else:
            F = p[rows, target]
            dz = F[:, None] * (e_y - p)
    if position is None:
        return F, dz
    dlogits = xp.zeros_like(logits)
    dlogits[rows, position] = dz
    return F, dlogits


def _run(model, embeds, extra, target, position, score, grad=True):
    """One forward from embeddings (n, T, C); F (n,) and, with grad, dF/dx (n, T, C).

    Call inside ``gradients_only(model)``.
    """
    out = model.forward(inputs_embeds=embeds, **extra)
    xp = backend.get_array_module(out.logits)           # indices on the logits' backend
    F, dlogits = _score_and_dlogits(out.logits, xp.asarray(target),
                                    None if position is None else xp.asarray(position), score)
    if not grad:
        model.clear_caches()
        return F, None
    model.backward(dlogits=dlogits)
    return F, model.inputs_embeds_grad


def _check_score(where, score):
    if score not in SCORES:
        raise ValueError(f"{where}: score must be one of {SCORES}; got {score!r}")


def score_and_gradient(model, inputs, target, *, inputs_embeds=None, position=None,
                       score="logit"):
    """The explained score F and its gradient with respect to the word embeddings.

    Args:
        model: a GPT, BertForMaskedLM, BertForTokenClassification,
            BertForSequenceClassification or BertForNextSentencePrediction.
        inputs: input_ids (B, T) (or (T,)), or a tokenizer's dict with
            input_ids and optionally attention_mask, token_type_ids, position_ids.
        target: the explained class or token id: an int, or B ints.
        inputs_embeds: (B, T, C) embeddings to evaluate at, in the model's
            dtype; default W[input_ids].
        position: for per-position models, the position whose logits are
            explained (int or B ints); default for a GPT the last real token
            (its next-token prediction); a BERT masked LM needs it.
        score: "logit" (default), "log_prob" or "prob" of the target.
    Returns: F (B,) and dF/dx (B, T, C), host float64 arrays.
    """
    where = "score_and_gradient"
    _check_model(where, model)
    _check_score(where, score)
    ids, extra = _inputs(where, model, inputs)
    target, position = _target_and_position(where, model, ids, extra, target, position)
    x = word_embeddings(model)[model.xp.asarray(ids)] if inputs_embeds is None \
        else inputs_embeds
    with gradients_only(model):
        F, g = _run(model, x, extra, target, position, score)
    return _host(F), _host(g)


def _host(a):
    return np.asarray(backend.to_numpy(a), dtype=np.float64)


def saliency(model, inputs, target, *, position=None, score="logit"):
    """Gradient x input per token: a_t = sum_c x_tc dF/dx_tc.

    The first-order share of each token's embedding in the score; arguments
    as ``score_and_gradient``.
    Returns: Attributions (B, T) with .score = F(x).
    """
    where = "saliency"
    _check_model(where, model)
    _check_score(where, score)
    ids, extra = _inputs(where, model, inputs)
    target, position = _target_and_position(where, model, ids, extra, target, position)
    x = word_embeddings(model)[model.xp.asarray(ids)]      # (B, T, C)
    with gradients_only(model):
        F, g = _run(model, x, extra, target, position, score)
    return Attributions((_host(x) * _host(g)).sum(-1), score=_host(F))


def integration_points(method="gauss_legendre", n_steps=50):
    """Nodes s_k in [0, 1] and weights w_k: int_0^1 g(s) ds ~= sum_k w_k g(s_k).

        gauss_legendre:  the n-point Gauss-Legendre rule moved from [-1, 1] to
                         [0, 1] (exact for polynomials of degree 2n - 1)
        trapezoid:       s_k = k / (n - 1), w = 1/(n - 1), halved at both ends
        riemann_left / riemann_middle / riemann_right:  w = 1/n, s_k at the left
                         ends, middles or right ends of n equal intervals
    The Gauss-Legendre and Riemann rules are captum's ("gausslegendre",
    "riemann_*"). Its "riemann_trapezoid" weighs 1/n (halved at both ends),
    which add to (n - 1)/n; the trapezoid rule here weighs 1/(n - 1), which add to 1.
    Returns: (s, w), two float64 arrays (n_steps,)
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"integration_points: n_steps must be a positive int; got {n_steps!r}")
    n = int(n_steps)
    if method == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1.0 + nodes), 0.5 * weights
    if method not in INTEGRATION_METHODS:
        raise ValueError(f"integration_points: method must be one of {INTEGRATION_METHODS}; "
                         f"got {method!r}")
    if method == "trapezoid":
        if n < 2:
            raise ValueError("integration_points: the trapezoid rule needs n_steps >= 2")
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, n), w
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)


def _baseline(where, model, ids, extra, baseline, keep_ids):
    """x' (B, T, C) on the model's backend: the embeddings of the path's start."""
    W, xp = word_embeddings(model), model.xp
    B, T = ids.shape
    if baseline is not None:
        baseline = baseline if hasattr(baseline, "dtype") else np.asarray(baseline)
        if baseline.dtype.kind in "iu":                     # baseline token ids
            if baseline.shape != (B, T):
                raise ValueError(f"{where}: baseline ids must have shape {(B, T)}; got "
                                 f"{baseline.shape}")
            return W[xp.asarray(backend.to_numpy(baseline))]
        if baseline.shape != (B, T, W.shape[1]):
            raise ValueError(f"{where}: baseline embeddings must have shape "
                             f"{(B, T, W.shape[1])}; got {baseline.shape}")
        return xp.asarray(backend.to_numpy(baseline)).astype(W.dtype)
    if keep_ids is None and not isinstance(model, GPT):
        real = extra.get("attention_mask", np.ones((B, T))).astype(bool)
        last = T - 1 - np.argmax(real[:, ::-1], axis=1)
        keep = (ids == ids[:, :1]) | (ids == ids[np.arange(B), last][:, None])
    elif keep_ids is None:
        keep = np.zeros((B, T), dtype=bool)
    else:
        keep = np.isin(ids, np.asarray(keep_ids))
    if isinstance(model, GPT):                              # no [PAD]: the zero vector
        start = xp.zeros((B, T, W.shape[1]), dtype=W.dtype)
    else:
        start = xp.broadcast_to(W[model.config.pad_token_id], (B, T, W.shape[1])).copy()
    kept = xp.asarray(keep)
    start[kept] = W[xp.asarray(ids)][kept]
    return start


def integrated_gradients(model, inputs, target, baseline=None, n_steps=50,
                         method="gauss_legendre", *, position=None, score="logit",
                         keep_ids=None, internal_batch_size=None):
    """Integrated gradients along the straight path from a baseline x' to x.

    Math (Sundararajan et al. 2017), with x = W[input_ids] (B, T, C):
        a_t   = sum_c (x - x')_tc  sum_k w_k dF/dx_tc(x' + s_k (x - x'))
        delta = sum_t a_t - (F(x) - F(x'))     (0 for the exact integral)
    Args:
        model, inputs, target, position, score: as ``score_and_gradient``.
        baseline: x'. None: [PAD] embeddings (a GPT: zero vectors), except at
            the tokens in ``keep_ids``, which keep their own; or baseline ids
            (B, T); or baseline embeddings (B, T, C).
        keep_ids: token ids the default baseline keeps. None: for a BERT,
            each row's first token and its last real token, wherever they
            occur ([CLS] and [SEP] in an encoding with special tokens: pass
            ``[tok.cls_token_id, tok.sep_token_id]`` to say so explicitly);
            for a GPT, none.
        n_steps, method: the quadrature (see ``integration_points``).
        internal_batch_size: rows (path points x examples) per forward; None:
            all n_steps x B at once. At least one whole step (B rows) runs.
    Returns: Attributions (B, T) with .delta, .score = F(x), .baseline_score = F(x').
    """
    where = "integrated_gradients"
    _check_model(where, model)
    _check_score(where, score)
    s, w = integration_points(method, n_steps)
    ids, extra = _inputs(where, model, inputs)
    target, position = _target_and_position(where, model, ids, extra, target, position)
    B, T = ids.shape
    xp, dtype = model.xp, word_embeddings(model).dtype
    x = word_embeddings(model)[xp.asarray(ids)]            # (B, T, C)
    x0 = _baseline(where, model, ids, extra, baseline, keep_ids)
    steps = len(s) if internal_batch_size is None else max(1, int(internal_batch_size) // B)

    def tiled(k):
        """Forward keywords, targets and positions for k copies of the batch (row k*B + b)."""
        return ({name: np.tile(v, (k, 1)) for name, v in extra.items()}, np.tile(target, k),
                None if position is None else np.tile(position, k))

    with gradients_only(model):
        kw, tg, pos = tiled(2)
        F, _ = _run(model, xp.concatenate([x, x0]), kw, tg, pos, score, grad=False)
        F_x, F_x0 = _host(F[:B]), _host(F[B:])
        total = xp.zeros(x.shape, dtype=np.float64)        # sum_k w_k dF/dx(path_k)
        for k0 in range(0, len(s), steps):
            sk = xp.asarray(s[k0:k0 + steps]).astype(dtype)  # (k,)
            k = len(sk)
            path = x0[None] + sk[:, None, None, None] * (x - x0)[None]   # (k, B, T, C)
            kw, tg, pos = tiled(k)
            _, g = _run(model, path.reshape(k * B, T, -1), kw, tg, pos, score)
            wk = xp.asarray(w[k0:k0 + k])[:, None, None, None]
            total += (wk * g.reshape(k, B, T, -1)).sum(0)
    attributions = (_host(x - x0) * _host(total)).sum(-1)  # (B, T)
    delta = attributions.sum(-1) - (F_x - F_x0)
    return Attributions(attributions, delta=delta, score=F_x, baseline_score=F_x0)


# ---------------------------------------------------------------------------
# Pictures: PNG through matplotlib, HTML with the standard library
# ---------------------------------------------------------------------------

def _kind(where, path):
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".png", ".html", ".htm"):
        raise ValueError(f"{where}: path must end in .png (matplotlib) or .html; got {path!r}")
    return "png" if ext == ".png" else "html"


def _figure(where, width, height):
    """A matplotlib Figure (no pyplot, no global state); a clear error without matplotlib."""
    try:                                                # the optional plot extra
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        raise ImportError(f"{where}: PNG pictures need matplotlib: pip install "
                          "'scratchlm[plot]' (or write .html, which needs nothing)") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)                                # draws to PNG, measures text
    return fig


# Colours: a sequential white -> blue scale for attention, and a diverging
# blue (negative) - white - red (positive) scale for attributions.
_WHITE, _BLUE, _RED = np.array([255, 255, 255]), np.array([8, 48, 107]), np.array([165, 15, 21])
_NEG = np.array([33, 102, 172])


def _sequential(v):
    """Values in [0, 1] -> RGB uint8 (..., 3): white to dark blue."""
    v = np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0)[..., None]
    return np.rint(_WHITE + v * (_BLUE - _WHITE)).astype(np.uint8)


def _diverging(v):
    """Values in [-1, 1] -> RGB uint8: blue below 0, white at 0, red above."""
    v = np.clip(np.asarray(v, dtype=np.float64), -1.0, 1.0)[..., None]
    end = np.where(v >= 0, _RED, _NEG)
    return np.rint(_WHITE + np.abs(v) * (end - _WHITE)).astype(np.uint8)


def _hex(rgb):
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


def _png_bytes(rgb):
    """Encode an RGB image (h, w, 3) uint8 as PNG: signature, IHDR, one zlib IDAT, IEND."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))   # filter 0 on every row

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)   # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _data_uri(rgb):
    return "data:image/png;base64," + base64.b64encode(_png_bytes(rgb)).decode("ascii")


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.grid td { text-align: center; font-size: 11px; padding: 2px; }
img.map { image-rendering: pixelated; border: 1px solid #ccc; }
table.map { border-collapse: collapse; font-size: 11px; }
table.map td { width: 18px; height: 18px; padding: 0; border: 1px solid #f4f4f4; }
table.map th { font-weight: normal; padding: 0 3px; white-space: nowrap; }
table.map th.col { writing-mode: vertical-rl; transform: rotate(180deg); height: auto; }
.tok { padding: 2px 3px; margin: 1px; border-radius: 3px; line-height: 2em;
       white-space: pre; font-family: monospace; font-size: 14px; }
.note { color: #666; font-size: 13px; }
"""


def _write_html(path, title, body):
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return str(path)


def _one_example(where, attentions, index):
    atts = _host_attentions(where, attentions)
    if not 0 <= index < atts[0].shape[0]:
        raise ValueError(f"{where}: index must be in [0, {atts[0].shape[0]}); got {index}")
    return np.stack([a[index] for a in atts]).astype(np.float64)    # (L, H, T, T)


def plot_attention_grid(attentions, tokens, path, *, index=0,
                        title="Attention per layer and head"):
    """Every layer's and head's attention of one example, as a grid of heat maps.

    Rows: layers; columns: heads. Each map's rows are queries, its columns
    keys, each scaled to its own maximum (white 0, dark blue the maximum).
    attentions: L arrays (B, H, T, T); tokens: the T tokens of example ``index``.
    Returns: the path written (.png or .html).
    """
    where = "plot_attention_grid"
    kind = _kind(where, path)
    att = _one_example(where, attentions, index)            # (L, H, T, T)
    L, H, T, _ = att.shape
    tokens = _token_rows(where, tokens, 1, T)[0]
    peak = att.max(axis=(2, 3), keepdims=True)
    scaled = att / np.where(peak > 0, peak, 1.0)
    if kind == "html":
        size = max(48, min(160, 4 * T))
        cells = []
        for layer in range(L):
            row = [f"<th>layer {layer}</th>"]
            for head in range(H):
                uri = _data_uri(_sequential(scaled[layer, head]))
                row.append(f"<td><img class=\"map\" src=\"{uri}\" "
                           f"width=\"{size}\" height=\"{size}\" alt=\"layer {layer} head {head}\" "
                           f"title=\"layer {layer}, head {head}\"><br>head {head}</td>")
            cells.append("<tr>" + "".join(row) + "</tr>")
        body = (f"<p class=\"note\">{T} tokens: {html.escape(' '.join(tokens))}</p>\n"
                "<p class=\"note\">Rows of each map: queries; columns: keys; each map scaled "
                "to its own maximum.</p>\n<table class=\"grid\">" + "".join(cells) + "</table>")
        return _write_html(path, title, body)
    fig = _figure(where, 1.6 * H + 0.6, 1.6 * L + 0.6)
    axes = fig.subplots(L, H, squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            ax.imshow(scaled[layer, head], cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, bbox_inches="tight")
    return str(path)


def plot_attention_map(matrix, row_tokens, path, *, col_tokens=None, title="Attention",
                       vmax=None, axis_labels=("queries", "keys")):
    """One matrix large, with its tokens: a head's attention, a rollout, or what
    generated tokens looked at (rows: queries, columns: keys).

    matrix: (T_rows, T_cols); row_tokens, col_tokens: their labels (col_tokens
    default row_tokens); vmax: the top of the colour scale (default the maximum);
    axis_labels: what the rows and the columns are.
    Returns: the path written (.png or .html).
    """
    where = "plot_attention_map"
    kind = _kind(where, path)
    m = np.asarray(backend.to_numpy(matrix), dtype=np.float64)
    col_tokens = row_tokens if col_tokens is None else col_tokens
    if m.ndim != 2 or m.shape != (len(row_tokens), len(col_tokens)):
        raise ValueError(f"{where}: matrix must have shape ({len(row_tokens)}, "
                         f"{len(col_tokens)}) to match the tokens; got {m.shape}")
    top = float(m.max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    if kind == "html":
        colours = _sequential(m / top)
        head = "<tr><th></th>" + "".join(f"<th class=\"col\">{html.escape(t)}</th>"
                                          for t in col_tokens) + "</tr>"
        rows = []
        for i, t in enumerate(row_tokens):
            cells = "".join(f"<td style=\"background:{_hex(colours[i, j])}\" "
                            f"title=\"{html.escape(t)} -> {html.escape(col_tokens[j])}: "
                            f"{m[i, j]:.3f}\"></td>" for j in range(m.shape[1]))
            rows.append(f"<tr><th>{html.escape(t)}</th>{cells}</tr>")
        body = (f"<p class=\"note\">Rows: {html.escape(axis_labels[0])}; columns: "
                f"{html.escape(axis_labels[1])}; white 0, dark blue "
                f"{top:.3f}. Hover over a cell for its value.</p>\n"
                f"<table class=\"map\">{head}{''.join(rows)}</table>")
        return _write_html(path, title, body)
    R, C = m.shape
    fig = _figure(where, min(2.5 + 0.28 * C, 30), min(1.5 + 0.28 * R, 30))
    ax = fig.subplots()
    image = ax.imshow(m, cmap="Blues", vmin=0, vmax=top, aspect="auto")
    ax.set_xticks(range(C), col_tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(R), row_tokens, fontsize=8)
    ax.set_ylabel(axis_labels[0])
    ax.set_xlabel(axis_labels[1])
    ax.set_title(title, fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.savefig(path, bbox_inches="tight")
    return str(path)


def plot_attributions(tokens, attributions, path, *, title="Token attributions", labels=None):
    """Token attributions as coloured text: red adds to the score, blue takes away.

    tokens: one list of T strings, or B lists; attributions: (T,) or (B, T)
    (an Attributions' .delta and .score are shown when present); labels: one
    caption per row (e.g. "target: positive"). Colours scale with
    max |attribution| of each row.
    Returns: the path written (.png or .html).
    """
    where = "plot_attributions"
    kind = _kind(where, path)
    a = np.asarray(attributions, dtype=np.float64)
    a = a[None] if a.ndim == 1 else a
    rows = _token_rows(where, tokens, a.shape[0], a.shape[1])
    labels = [None] * len(rows) if labels is None else list(labels)
    notes = []
    for b in range(len(rows)):
        parts = [] if labels[b] is None else [str(labels[b])]
        for name, field in (("F(x)", "score"), ("F(x')", "baseline_score"), ("delta", "delta")):
            value = getattr(attributions, field, None)
            if value is not None:
                parts.append(f"{name} = {np.atleast_1d(value)[b]:.4g}")
        parts.append(f"sum of attributions = {a[b].sum():.4g}")
        notes.append(", ".join(parts))
    if kind == "html":
        body = []
        for b, row in enumerate(rows):
            scale = np.abs(a[b]).max() or 1.0
            colours = _diverging(a[b] / scale)
            spans = "".join(f"<span class=\"tok\" style=\"background:{_hex(colours[t])};"
                            f"color:{'#fff' if abs(a[b, t]) > 0.6 * scale else '#222'}\" "
                            f"title=\"{a[b, t]:+.4f}\">{html.escape(tok)}</span>"
                            for t, tok in enumerate(row))
            body.append(f"<p>{spans}</p><p class=\"note\">{html.escape(notes[b])}</p>")
        body.append("<p class=\"note\">Red: the token raises the score; blue: it lowers it "
                    "(strongest colour: the largest |attribution| of the row). Hover over a "
                    "token for its value.</p>")
        return _write_html(path, title, "\n".join(body))
    width = 10.0
    fig = _figure(where, width, 0.6 + 0.9 * len(rows))
    renderer = fig.canvas.get_renderer()
    px_w, px_h = fig.get_size_inches() * fig.dpi
    y, line_h = 1.0 - 0.45 / fig.get_size_inches()[1], 26.0 / px_h
    fig.text(0.01, y + 0.2 / fig.get_size_inches()[1], title, fontsize=11, va="bottom")
    for b, row in enumerate(rows):
        scale = np.abs(a[b]).max() or 1.0
        colours = _diverging(a[b] / scale) / 255.0
        x = 0.01
        for t, tok in enumerate(row):
            text = fig.text(x, y, tok, fontsize=10, family="monospace", va="top",
                            color="white" if abs(a[b, t]) > 0.6 * scale else "black",
                            bbox=dict(facecolor=colours[t], edgecolor="none", pad=2.0))
            extent = text.get_window_extent(renderer)
            if x > 0.01 and x + extent.width / px_w > 0.99:     # wrap to the next line
                y -= line_h
                x = 0.01
                text.set_position((x, y))
            x += extent.width / px_w + 6.0 / px_w
        y -= line_h
        fig.text(0.01, y, notes[b], fontsize=8, color="#555555", va="top")
        y -= 1.4 * line_h
    fig.savefig(path, bbox_inches="tight")
    return str(path)


def plot_generation_attention(attentions, tokens, prompt_length, path, *, how="mean",
                              index=0, title="What each generated token looked at in the prompt"):
    """For a generated sequence: which prompt tokens each new token attended to.

    attentions: from one forward over the prompt and the generated tokens
    (L arrays (B, H, T, T)); tokens: the T tokens of example ``index``;
    prompt_length: P, the prompt's tokens; how: see ``generation_attention``.
    The PNG is a heat map (rows: new tokens; columns: prompt tokens); the HTML
    page writes each new token followed by the prompt shaded by its attention.
    Returns: the path written (.png or .html).
    """
    where = "plot_generation_attention"
    kind = _kind(where, path)
    atts = _host_attentions(where, attentions)
    m = generation_attention([a[index:index + 1] for a in atts], prompt_length, how)[0]
    tokens = _token_rows(where, tokens, 1, atts[0].shape[2])[0]
    prompt, new = tokens[:prompt_length], tokens[prompt_length:]
    if kind == "png":
        return plot_attention_map(m, new, path, col_tokens=prompt, title=title,
                                  axis_labels=("generated tokens", "prompt tokens"))
    top = m.max() or 1.0
    colours = _sequential(m / top)
    rows = []
    for i, tok in enumerate(new):
        spans = "".join(f"<span class=\"tok\" style=\"background:{_hex(colours[i, j])};"
                        f"color:{'#fff' if m[i, j] > 0.6 * top else '#222'}\" "
                        f"title=\"{m[i, j]:.3f}\">{html.escape(p)}</span>"
                        for j, p in enumerate(prompt))
        rows.append(f"<tr><th style=\"text-align:right;padding-right:1em\">"
                    f"<span class=\"tok\">{html.escape(tok)}</span></th><td>{spans}</td>"
                    f"<td class=\"note\">{m[i].sum():.2f} on the prompt</td></tr>")
    body = (f"<p class=\"note\">Each row: a generated token, then the prompt shaded by how "
            f"much attention it paid to each prompt token ({how} over "
            f"{'layers and heads' if how == 'mean' else how}; darkest {top:.3f}).</p>\n"
            f"<table>{''.join(rows)}</table>")
    return _write_html(path, title, body)
