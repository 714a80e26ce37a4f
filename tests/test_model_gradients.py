"""Every model's backward against finite differences of its own forward, in float64.

For each parameter p (by name) and a random unit direction u of p's shape,
the analytic directional derivative <p.grad, u> left by ``model.backward()``
is compared with the centred difference of the loss along u,

    (L(p + h u) - L(p - h u)) / (2 h),

so the cost does not grow with the size of p. Hypothesis draws the batch:
its size, a short T or a T past the fast attention's first block of 64 query
rows, the padding of each row (left for GPT, right for BERT), the ignored
labels (-100), token types and answer spans. Every model class runs under
both kernel modes, "textbook" and "fast". Tied weights (GPT's ``wte`` read
again by the LM head, BERT's word embeddings read again by the MLM decoder)
are one parameter each, so their check covers the sum of both uses.

One thing finite differences cannot see: a left-padded GPT query sees padding
only, so each of its scores is the dtype's most negative value plus q.k,
which rounds back to that value. Its attention is uniform and, as computed,
constant in q and k; the backward (like transformers' autograd) still passes a
gradient through q.k there. The GPT cases therefore never put a loss on a
padded position (the label of each row's first real token is ignored), and a
separate test checks that a loss on padded positions gives the same gradients
under both kernel modes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import scratchlm
from scratchlm import models as M
from scratchlm.gradcheck import directional_derivative

V = 19                  # vocabulary size of every model here
T_MAX = 80              # past the fast attention's first block of 64 query rows
LONG_T = (65, T_MAX)    # the range of T that crosses that block
NUM_LABELS = 3
H = 1e-5                # finite-difference step along a unit direction
RTOL, ATOL = 1e-5, 1e-9  # |analytic - numeric| <= ATOL + RTOL * max(|analytic|, |numeric|)

MODEL_NAMES = ["GPT", "BertModel", "BertForPreTraining", "BertForMaskedLM",
               "BertForNextSentencePrediction", "BertForSequenceClassification",
               "BertForTokenClassification", "BertForQuestionAnswering"]

# Under the fixture the kernel mode is the same for every example of a test, as it should be.
checks = settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow,
                                                         HealthCheck.function_scoped_fixture])


# --- the drawn case --------------------------------------------------------------

class Case(NamedTuple):
    """The shape of one batch and model; everything else comes from ``seed``."""

    T: int              # sequence length
    pad: tuple          # padding per row (left for GPT, right for BERT); len(pad) = B
    n_layer: int
    width: int          # n_embd / hidden_size, two heads
    variant: int        # 0-2: position_ids for GPT, which outputs feed BertModel's loss
    seed: int


@st.composite
def cases(draw):
    """A batch of 1-3 rows with T in 2..12 or 65..80, each row with at least two real tokens."""
    T = draw(st.integers(2, 12) | st.integers(*LONG_T))
    B = draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, T - 2)) for _ in range(B))
    return Case(T, pad, draw(st.integers(1, 2)), draw(st.sampled_from([8, 12, 16])),
                draw(st.integers(0, 2)), draw(st.integers(0, 2**32 - 1)))


# Explicit examples in every run: left/right padding past one attention block, and short.
LONG_PADDED = Case(T=72, pad=(0, 9, 70), n_layer=2, width=8, variant=1, seed=1)
LONG_UNPADDED = Case(T=65, pad=(0,), n_layer=1, width=16, variant=2, seed=2)
SHORT_PADDED = Case(T=6, pad=(2, 0), n_layer=2, width=8, variant=0, seed=3)


# --- models and batches ----------------------------------------------------------

def jitter(model, rng, scale=0.1):
    """Move every parameter off its initial value: no bias at 0, no LayerNorm weight at 1."""
    for _, p in model.named_parameters():
        p.data += scale * rng.standard_normal(p.data.shape)
    return model


def gpt_batch(case, rng):
    """A GPT model and ``(model) -> loss`` on a left-padded batch; no loss on a padded position."""
    cfg = M.GPTConfig(vocab_size=V, n_positions=T_MAX, n_embd=case.width, n_layer=case.n_layer,
                      n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      initializer_range=0.3)
    model = jitter(M.GPT(cfg, seed=case.seed % 1000, dtype="float64"), rng)
    B, T = len(case.pad), case.T
    ids = rng.integers(0, V, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    labels = np.where(rng.random((B, T)) < 0.25, -100, ids)    # some ignored labels
    for b, p in enumerate(case.pad):
        mask[b, :p] = 0
        labels[b, :p + 1] = -100                        # padding, and the first real token
    labels[0, -1] = ids[0, -1]                          # at least one counted target
    batch = dict(input_ids=ids, attention_mask=mask, labels=labels)
    if case.variant == 1:                               # positions from the first real token
        batch["position_ids"] = np.maximum(mask.cumsum(axis=1) - 1, 0)
    elif case.variant == 2 and not any(case.pad):
        batch["attention_mask"] = None
    return model, lambda m: m(**batch).loss, lambda m: m.backward()


def bert_batch(name, case, rng):
    """A BERT-family model and its loss on a right-padded batch with token types."""
    cfg = M.BertConfig(vocab_size=V, hidden_size=case.width, num_hidden_layers=case.n_layer,
                       num_attention_heads=2, intermediate_size=2 * case.width,
                       max_position_embeddings=T_MAX, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, initializer_range=0.3,
                       id2label={i: f"L{i}" for i in range(NUM_LABELS)})
    model = jitter(getattr(M, name)(cfg, seed=case.seed % 1000, dtype="float64"), rng)
    B, T = len(case.pad), case.T
    real = np.array([T - p for p in case.pad])          # real tokens per row, >= 2
    is_real = np.arange(T)[None, :] < real[:, None]
    # Id 0 is [PAD]: its embedding row gets no gradient (as in PyTorch), which finite
    # differences would see wherever a padded position reaches the loss. Ids 1.. only.
    ids = rng.integers(1, V, (B, T))
    split = rng.integers(1, real)                       # sentence B starts here
    token_type_ids = ((np.arange(T)[None, :] >= split[:, None]) & is_real).astype(np.int64)
    enc = dict(input_ids=ids, token_type_ids=token_type_ids,
               attention_mask=is_real.astype(np.int64))

    masked = (rng.random((B, T)) < 0.3) & is_real
    masked[0, 0] = True                                 # at least one counted target
    mlm = np.where(masked, ids, -100)
    if name == "BertModel":                             # no loss: random upstream gradients
        d_hidden = rng.standard_normal((B, T, case.width))
        d_pooled = rng.standard_normal((B, case.width))
        d_hidden, d_pooled = [(d_hidden, d_pooled), (d_hidden, None),
                              (None, d_pooled)][case.variant]

        def loss(m):
            out = m(**enc)
            total = 0.0
            if d_hidden is not None:
                total += (out.last_hidden_state * d_hidden).sum()
            if d_pooled is not None:
                total += (out.pooler_output * d_pooled).sum()
            return total

        return model, loss, lambda m: m.backward(d_hidden, d_pooled)
    if name == "BertForPreTraining":
        labels = dict(labels=mlm, next_sentence_label=rng.integers(0, 2, B))
    elif name == "BertForMaskedLM":
        labels = dict(labels=mlm)
    elif name == "BertForNextSentencePrediction":
        labels = dict(labels=rng.integers(0, 2, B))
    elif name == "BertForSequenceClassification":
        labels = dict(labels=rng.integers(0, NUM_LABELS, B))
    elif name == "BertForTokenClassification":
        tags = rng.integers(0, NUM_LABELS, (B, T))
        ignored = (rng.random((B, T)) < 0.25) | (~is_real & (rng.random((B, T)) < 0.8))
        ignored[0, 0] = False
        labels = dict(labels=np.where(ignored, -100, tags))
    else:                                               # BertForQuestionAnswering
        start = rng.integers(0, real)
        end = start + rng.integers(0, real - start)     # start <= end < real length
        if B > 1:
            start[-1] = T + 3                           # out of range: clamped to T, ignored
        labels = dict(start_positions=start, end_positions=end)
    return model, lambda m: m(**enc, **labels).loss, lambda m: m.backward()


def make(name, case):
    rng = np.random.default_rng(case.seed)
    return gpt_batch(case, rng) if name == "GPT" else bert_batch(name, case, rng)


# --- the check -------------------------------------------------------------------

def assert_directional_derivatives(model, loss, backward, seed):
    """<p.grad, u> equals the centred difference of ``loss`` along u, for every parameter p."""
    model.train()
    model.zero_grad()
    value = float(loss(model))
    assert np.isfinite(value)
    backward(model)
    grads = {name: np.array(p.grad) for name, p in model.named_parameters()}
    rng = np.random.default_rng(seed)
    failures = []
    for name, p in model.named_parameters():
        if not p.requires_grad:                         # a fixed buffer (Marian's logits bias)
            continue
        u = rng.standard_normal(p.data.shape)
        u /= np.sqrt((u * u).sum())
        analytic = float((grads[name] * u).sum())
        numeric = directional_derivative(lambda: float(loss(model)), p.data, u, H)
        err = abs(analytic - numeric)
        if not err <= ATOL + RTOL * max(abs(analytic), abs(numeric)):
            failures.append(f"{name} {tuple(p.data.shape)}: analytic {analytic:.10e}, "
                            f"numeric {numeric:.10e}, relative error "
                            f"{err / max(abs(analytic), abs(numeric), 1e-300):.2e}")
    assert not failures, "gradient along a random direction is wrong for\n  " + \
        "\n  ".join(failures)


@pytest.mark.parametrize("name", MODEL_NAMES)
@checks
@given(case=cases())
@example(case=LONG_PADDED)
@example(case=LONG_UNPADDED)
@example(case=SHORT_PADDED)
def test_model_gradients_match_finite_differences(name, kernels, case):
    assert scratchlm.get_kernels() == kernels
    model, loss, backward = make(name, case)
    assert_directional_derivatives(model, loss, backward, case.seed)


# --- tied weights ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["GPT", "BertForPreTraining", "BertForMaskedLM"])
def test_tied_weights_are_one_parameter(name):
    """The (V, C) table is listed once: the LM head / MLM decoder holds no copy of its own."""
    model, _, _ = make(name, SHORT_PADDED)
    tables = [n for n, p in model.named_parameters() if p.data.shape == (V, SHORT_PADDED.width)]
    assert len(tables) == 1, tables


# --- a loss on left padding: the two kernel modes agree ---------------------------

@checks
@given(case=cases())
@example(case=LONG_PADDED)
def test_gpt_loss_on_padded_positions_same_under_both_kernels(case):
    """Labels on every position (padding included), as a plain copy of input_ids gives."""
    before = scratchlm.get_kernels()
    rng = np.random.default_rng(case.seed)
    model, _, _ = gpt_batch(case, rng)
    B, T = len(case.pad), case.T
    ids = rng.integers(0, V, (B, T))
    mask = (np.arange(T)[None, :] >= np.array(case.pad)[:, None]).astype(np.int64)
    runs = {}
    try:
        for mode in ("textbook", "fast"):
            scratchlm.use_kernels(mode)
            model.train()
            model.zero_grad()
            out = model(ids, attention_mask=mask, labels=ids)
            model.backward()
            runs[mode] = (float(out.loss), out.logits.copy(),
                          {n: p.grad.copy() for n, p in model.named_parameters()})
    finally:
        scratchlm.use_kernels(before)
    (loss_t, logits_t, grads_t), (loss_f, logits_f, grads_f) = runs["textbook"], runs["fast"]
    np.testing.assert_allclose(loss_f, loss_t, rtol=1e-10)
    np.testing.assert_allclose(logits_f, logits_t, rtol=1e-9, atol=1e-10)
    for name, g in grads_t.items():
        scale = float(np.abs(g).max())
        np.testing.assert_allclose(grads_f[name], g, rtol=0, atol=1e-9 * max(scale, 1.0),
                                   err_msg=name)
