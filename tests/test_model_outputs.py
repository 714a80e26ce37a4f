"""Hidden states, attentions, inputs_embeds and their gradients, for every model.

Every model's forward takes ``output_hidden_states``, ``output_attentions``
and ``inputs_embeds``; its backward takes upstream gradients of the returned
hidden states and attentions (``d_hidden_states``, ``d_attentions``) and, after
a forward from ``inputs_embeds``, leaves their gradient in
``model.inputs_embeds_grad``. Checked here, in float64, on tiny models, padded
batches (left padding for GPT, right for BERT), under both kernel modes:

* shapes and invariants: L + 1 hidden states and L attentions of the right
  shapes; the first hidden state is the embeddings' output and GPT's last
  the ln_f output the head reads; every attention row sums to 1; nothing
  attends to padding or (GPT) to the future; each layer's attention equals
  softmax(q k^T / sqrt(D)) recomputed here from that layer's input hidden
  state; the attentions are taken after dropout; a KV-cache decoding step
  returns the last row of the full forward's attentions;
* inputs_embeds = table[input_ids] gives the same outputs as the ids, and the
  gradient it takes is the one the table's lookup would have taken;
* gradients: for the scalar

      L = loss + sum_i <hidden_states[i], G_i> + sum_l <attentions[l], A_l>

  (fixed random G, A; some entries None; for BertModel the loss is replaced
  by random projections of its two outputs, or left out), backward with
  d_hidden_states=G, d_attentions=A gives every parameter's gradient and
  inputs_embeds_grad; both are compared with centred differences of L along
  random unit directions;
* bad calls raise ValueError / TypeError / RuntimeError naming the problem.

One thing finite differences cannot see (see tests/test_model_gradients.py):
a left-padded GPT query sees padding only, its scores are all the dtype's most
negative value and its attention is uniform and, as computed, constant in q
and k, while the backward (as autograd through transformers) still passes a
gradient through q.k there. So for GPT, G_i (i >= 1) and A_l are zero on padded
query positions, and no label sits on one; G_0 (the embeddings' output, before
any attention) is random everywhere. BERT's right-padded queries see real keys:
its G and A are random everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchlm import backend
from scratchlm import models as M
from scratchlm.functional import KVCache
from scratchlm.gradcheck import directional_derivative

V = 19                  # vocabulary of every model here
WIDTH, N_HEAD = 8, 2    # model width and heads (D = 4)
NUM_LABELS = 3
T_MAX = 64              # position tables; the "long" cases reach the fast attention's block
H_STEP = 1e-5           # finite-difference step along a unit direction (check_directions)
RTOL = 1e-6             # |analytic - numeric| <= RTOL * max(|analytic|, |numeric|) + atol,
ATOL = 1e-9             # atol = ATOL * max(1, |L|): the rounding noise of L(x +- h u) / 2h

BERT_NAMES = ["BertModel", "BertForPreTraining", "BertForMaskedLM",
              "BertForNextSentencePrediction", "BertForSequenceClassification",
              "BertForTokenClassification", "BertForQuestionAnswering"]
MODEL_NAMES = ["GPT"] + BERT_NAMES

checks = settings(max_examples=4, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.function_scoped_fixture])


# --- models and batches ----------------------------------------------------------

def make_model(name, n_layer=2, pdrop=0.0, seed=0):
    """A float64 model, every parameter moved off its initial value, in train mode."""
    if name == "GPT":
        cfg = M.GPTConfig(vocab_size=V, n_positions=T_MAX, n_embd=WIDTH, n_layer=n_layer,
                          n_head=N_HEAD, resid_pdrop=pdrop, embd_pdrop=pdrop, attn_pdrop=pdrop,
                          initializer_range=0.3)
    else:
        cfg = M.BertConfig(vocab_size=V, hidden_size=WIDTH, num_hidden_layers=n_layer,
                           num_attention_heads=N_HEAD, intermediate_size=2 * WIDTH,
                           max_position_embeddings=T_MAX, hidden_dropout_prob=pdrop,
                           attention_probs_dropout_prob=pdrop, initializer_range=0.3,
                           id2label={i: f"L{i}" for i in range(NUM_LABELS)})
    model = getattr(M, name)(cfg, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed + 1)
    for _, p in model.named_parameters():
        p.data += 0.1 * rng.standard_normal(p.data.shape)
    return model.train()


def encoder(model):
    """The BertModel inside a task model (or the model itself)."""
    return getattr(model, "bert", model)


def table(model):
    """The word-embedding table that input_ids index, (V, C)."""
    if isinstance(model, M.GPT):
        return model.wte.weight
    return encoder(model).embeddings.word_embeddings.weight


def make_batch(name, pad, T, seed=0, labels=True):
    """ids (B, T), the other forward arguments, and the (B, T) bool mask of real tokens.

    Padding on the left for GPT, on the right for BERT, ``pad[b]`` positions in
    row b (None: no attention_mask at all). Ids are never 0 (BERT's [PAD]:
    its table row takes no gradient from the lookup, which finite differences
    would see) and padded positions keep a random id too.
    """
    rng = np.random.default_rng(seed)
    B = 1 if pad is None else len(pad)
    ids = rng.integers(1, V, (B, T))
    n_pad = np.zeros(B, dtype=int) if pad is None else np.array(pad)
    real = np.arange(T)[None, :] < (T - n_pad)[:, None]         # right padding
    if name == "GPT":
        real = real[:, ::-1]                                    # left padding
    kw = {} if pad is None else {"attention_mask": real.astype(np.int64)}
    if name == "GPT":
        if labels:
            lab = np.where(real, ids, -100)
            for b, p in enumerate(n_pad):
                lab[b, p] = -100                # predicted from a padded position: none
            lab[:, -1] = ids[:, -1]
            kw["labels"] = lab
        return ids, kw, real
    real_len = T - n_pad
    split = np.maximum(real_len // 2, 1)
    kw["token_type_ids"] = ((np.arange(T)[None, :] >= split[:, None]) & real).astype(np.int64)
    if not labels or name == "BertModel":
        return ids, kw, real
    masked = (rng.random((B, T)) < 0.4) & real
    masked[:, 0] = True
    mlm = np.where(masked, ids, -100)
    if name == "BertForPreTraining":
        kw.update(labels=mlm, next_sentence_label=rng.integers(0, 2, B))
    elif name == "BertForMaskedLM":
        kw.update(labels=mlm)
    elif name == "BertForNextSentencePrediction":
        kw.update(labels=rng.integers(0, 2, B))
    elif name == "BertForSequenceClassification":
        kw.update(labels=rng.integers(0, NUM_LABELS, B))
    elif name == "BertForTokenClassification":
        kw.update(labels=np.where(masked | ~real, rng.integers(0, NUM_LABELS, (B, T)), -100))
    else:
        start = rng.integers(0, real_len)
        kw.update(start_positions=start, end_positions=start + rng.integers(0, real_len - start))
    return ids, kw, real


def outputs(model, **kw):
    return model(**kw, output_hidden_states=True, output_attentions=True)


# --- (a) shapes and invariants ---------------------------------------------------

def layernorm(x, ln):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * ln.weight.data + ln.bias.data


def expected_embeddings(model, ids, kw):
    """The first hidden state, computed here from the tables."""
    T = ids.shape[1]
    if isinstance(model, M.GPT):
        return model.wte.weight.data[ids] + model.wpe.weight.data[np.arange(T)]
    emb = encoder(model).embeddings
    x = emb.word_embeddings.weight.data[ids] + emb.position_embeddings.weight.data[np.arange(T)]
    x = x + emb.token_type_embeddings.weight.data[kw["token_type_ids"]]
    return layernorm(x, emb.LayerNorm)


def expected_attention(model, hidden, real, layer):
    """softmax(q k^T / sqrt(D)) of one layer from its input hidden state (B, T, C).

    Masked scores (padding keys; GPT's future) take the most negative value, as
    transformers does: a GPT query that sees padding only is uniform over all keys.
    """
    gpt = isinstance(model, M.GPT)
    block = model.h[layer] if gpt else encoder(model).encoder.layer[layer]
    x = layernorm(hidden, block.ln_1) if gpt else hidden
    qkv = x @ block.attn.c_attn.weight.data + block.attn.c_attn.bias.data
    B, T, _ = x.shape
    q, k, _ = (qkv[..., i * WIDTH:(i + 1) * WIDTH].reshape(B, T, N_HEAD, -1).transpose(0, 2, 1, 3)
               for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(WIDTH // N_HEAD)
    keep = np.broadcast_to(real[:, None, None, :], scores.shape)
    if gpt:
        keep = keep & np.tri(T, dtype=bool)
    scores = np.where(keep, scores, np.finfo(np.float64).min)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@st.composite
def padded_shapes(draw):
    """(pad per row, T): 1-3 rows, T in 1..9, every row with at least one real token."""
    T = draw(st.integers(1, 9))
    B = draw(st.integers(1, 3))
    return tuple(draw(st.integers(0, T - 1)) for _ in range(B)), T, draw(st.integers(0, 99))


@pytest.mark.parametrize("name", MODEL_NAMES)
@checks
@given(case=padded_shapes())
def test_hidden_states_and_attentions_shapes_and_invariants(name, kernels, case):
    pad, T, seed = case
    B, L = len(pad), 2
    model = make_model(name, seed=seed)
    ids, kw, real = make_batch(name, pad, T, seed)
    plain = model(input_ids=ids, **kw)
    assert plain.hidden_states is None and plain.attentions is None
    out = outputs(model, input_ids=ids, **kw)
    for field in ("loss", "logits", "prediction_logits", "start_logits", "last_hidden_state",
                  "pooler_output"):
        if plain[field] is not None:            # asking for more changes nothing
            np.testing.assert_array_equal(out[field], plain[field], err_msg=field)
    hs, att = out.hidden_states, out.attentions
    assert isinstance(hs, tuple) and len(hs) == L + 1
    assert isinstance(att, tuple) and len(att) == L
    for h in hs:
        assert h.shape == (B, T, WIDTH) and h.dtype == np.float64
    for a in att:
        assert a.shape == (B, N_HEAD, T, T) and a.dtype == np.float64

    np.testing.assert_allclose(hs[0], expected_embeddings(model, ids, kw), rtol=1e-12,
                               atol=1e-12)
    if name == "GPT":                           # the last one is after ln_f: the head reads it
        np.testing.assert_allclose(out.logits, hs[-1] @ model.wte.weight.data.T, rtol=1e-12,
                                   atol=1e-12)
    if name == "BertModel":
        np.testing.assert_array_equal(hs[-1], out.last_hidden_state)

    for layer, a in enumerate(att):
        assert np.all(a >= 0)
        np.testing.assert_allclose(a.sum(-1), 1.0, rtol=0, atol=1e-12)   # every row sees a key
        pad_keys = ~real[:, None, None, :] & real[:, None, :, None]      # real query, pad key
        assert not np.any(np.where(np.broadcast_to(pad_keys, a.shape), a, 0))
        if name == "GPT":                       # real queries: nothing from the future
            future = np.triu(np.ones((T, T), dtype=bool), 1) & real[:, None, :, None]
            assert not np.any(np.where(np.broadcast_to(future, a.shape), a, 0))
            padded_rows = np.broadcast_to(~real[:, None, :, None], a.shape)
            np.testing.assert_allclose(a[padded_rows], 1.0 / T, rtol=1e-12)  # as transformers
        np.testing.assert_allclose(a, expected_attention(model, hs[layer], real, layer),
                                   rtol=0, atol=1e-12, err_msg=f"layer {layer}")

    model.eval()                                # eval mode: the same numbers, nothing cached
    ev = outputs(model, input_ids=ids, **kw)
    for mine, theirs in zip(ev.hidden_states + ev.attentions, hs + att):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ["GPT", "BertModel", "BertForQuestionAnswering"])
def test_attentions_are_taken_after_dropout(name):
    """With attention dropout in training, layer 0's weights are 0 or att / (1 - p)."""
    p = 0.5
    model = make_model(name, pdrop=0.0)
    for m in model.modules():                   # dropout on the attention weights only
        if hasattr(m, "attn_pdrop"):
            m.attn_pdrop = p
    ids, kw, _ = make_batch(name, (0, 2), 6, labels=False)
    train = outputs(model, input_ids=ids, **kw).attentions[0]
    model.eval()
    ref = outputs(model, input_ids=ids, **kw).attentions[0]
    dropped = train == 0
    assert dropped.any() and (~dropped & (ref > 0)).any()
    np.testing.assert_allclose(train[~dropped], ref[~dropped] / (1 - p), rtol=1e-12)


def test_gpt_kv_cache_step_returns_the_last_rows():
    """Decoding one token with a KV cache: its attentions are (B, H, 1, T_past + 1),
    the last query row of a full forward's, and its hidden states that row's too."""
    model = make_model("GPT").eval()
    ids, _, _ = make_batch("GPT", None, 7, labels=False)
    ids = np.concatenate([ids, ids[:, ::-1]])
    full = outputs(model, input_ids=ids)
    caches = [KVCache(2, N_HEAD, 7, WIDTH // N_HEAD, np.float64) for _ in range(2)]
    model(input_ids=ids[:, :6], kv_caches=caches)
    step = outputs(model, input_ids=ids[:, 6:], kv_caches=caches)
    for mine, theirs in zip(step.attentions, full.attentions):
        assert mine.shape == (2, N_HEAD, 1, 7)
        np.testing.assert_allclose(mine, theirs[:, :, 6:], rtol=0, atol=1e-13)
    for mine, theirs in zip(step.hidden_states, full.hidden_states):
        np.testing.assert_allclose(mine, theirs[:, 6:], rtol=0, atol=1e-12)


# --- inputs_embeds = table[ids] --------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inputs_embeds_equal_to_the_lookup(name, kernels):
    """table[ids] as inputs_embeds: the same outputs, the same gradients except the
    table's, whose difference is the lookup's scatter-add of inputs_embeds_grad."""
    model = make_model(name)
    ids, kw, _ = make_batch(name, (0, 2, 3), 6)
    rng = np.random.default_rng(5)
    B, T = ids.shape
    G = [rng.standard_normal((B, T, WIDTH)) for _ in range(3)]
    A = [rng.standard_normal((B, N_HEAD, T, T)) for _ in range(2)]
    d_last = rng.standard_normal((B, T, WIDTH))
    runs = {}
    for source in ("ids", "embeds"):
        model.zero_grad()
        embeds = table(model).data[ids].copy()
        feed = {"input_ids": ids} if source == "ids" else {"inputs_embeds": embeds}
        out = outputs(model, **feed, **kw)
        if name == "BertModel":
            model.backward(d_last, None, G, A)
        else:
            model.backward(d_hidden_states=G, d_attentions=A)
        if source == "embeds":
            np.testing.assert_array_equal(embeds, table(model).data[ids])  # left as it was
        runs[source] = (out, {n: p.grad.copy() for n, p in model.named_parameters()},
                        model.inputs_embeds_grad)
    (out_i, grads_i, eg_i), (out_e, grads_e, eg_e) = runs["ids"], runs["embeds"]
    assert eg_i is None
    assert eg_e.shape == ids.shape + (WIDTH,) and eg_e.dtype == np.float64
    for field in ("loss", "logits", "prediction_logits", "start_logits", "last_hidden_state",
                  "pooler_output"):
        if out_i[field] is not None:
            np.testing.assert_allclose(out_e[field], out_i[field], rtol=1e-14, atol=0)
    for mine, theirs in zip(out_e.hidden_states + out_e.attentions,
                            out_i.hidden_states + out_i.attentions):
        np.testing.assert_allclose(mine, theirs, rtol=1e-14, atol=0)
    tname = next(n for n, p in model.named_parameters() if p is table(model))
    for n in grads_i:
        if n != tname:
            np.testing.assert_allclose(grads_e[n], grads_i[n], rtol=1e-12, atol=1e-14,
                                       err_msg=n)
    lookup = np.zeros_like(grads_i[tname])
    np.add.at(lookup, ids, eg_e)
    if name != "GPT":
        lookup[model.config.pad_token_id] = 0   # the [PAD] row takes no lookup gradient
    np.testing.assert_allclose(grads_i[tname] - grads_e[tname], lookup, rtol=1e-10, atol=1e-13)


# --- (b) gradients against finite differences ------------------------------------

# (name, variant): what the scalar L is made of, and from what input.
#   ids       from input_ids; the loss, every G_i and every A_l
#             (BertModel: random projections of last_hidden_state and pooler_output)
#   embeds    from inputs_embeds; the loss, G_1 and A_0 None
#             (BertModel: pooler_output only, d_last_hidden_state None)
#   upstream  from inputs_embeds; no loss at all: G = [None, G_1, G_2], A = [A_0, None]
#   attention from input_ids; no loss, no hidden states: d_attentions only
#   dropout   from input_ids; every dropout at 0.2, the same masks at every forward
#   long      from inputs_embeds, T = 64 and no attention_mask: the fast kernels'
#             own attention forward (under "fast"), then a backward with datt
CASES = ([(n, "ids") for n in MODEL_NAMES] + [(n, "embeds") for n in MODEL_NAMES]
         + [(n, v) for n in ("GPT", "BertModel") for v in ("upstream", "attention")]
         + [(n, "dropout") for n in ("GPT", "BertModel", "BertForPreTraining",
                                      "BertForSequenceClassification")]
         + [(n, "long") for n in ("GPT", "BertForMaskedLM")])


def build_case(name, variant, seed=0):
    """The model, what forward takes, the upstream arrays and the scalar L(model)."""
    pdrop = 0.2 if variant == "dropout" else 0.0
    n_layer = 1 if variant == "long" else 2
    model = make_model(name, n_layer=n_layer, pdrop=pdrop, seed=seed)
    has_loss = variant not in ("upstream", "attention")
    if variant == "long":
        ids, kw, real = make_batch(name, None, T_MAX, seed)
    else:
        pad = (0, 3, 5) if name == "GPT" else (0, 2, 4)
        ids, kw, real = make_batch(name, pad, 7, seed, labels=has_loss)
    rng = np.random.default_rng(seed + 2)
    if variant in ("embeds", "upstream", "long"):
        feed = {"inputs_embeds": table(model).data[ids] + 0.1 * rng.standard_normal(
            ids.shape + (WIDTH,))}
    else:
        feed = {"input_ids": ids}
    feed.update(kw)

    B, T = ids.shape
    G = [rng.standard_normal((B, T, WIDTH)) for _ in range(n_layer + 1)]
    A = [rng.standard_normal((B, N_HEAD, T, T)) for _ in range(n_layer)]
    if name == "GPT":                           # no upstream on a padded query (module doc)
        G[1:] = [g * real[:, :, None] for g in G[1:]]
        A = [a * real[:, None, :, None] for a in A]
    if variant == "embeds":
        G[1], A[0] = None, None
    elif variant == "upstream":
        G[0], A[1] = None, None
    elif variant == "attention":
        G = None
    heads = [None, None]                        # BertModel: d_last_hidden_state, d_pooler_output
    if name == "BertModel" and has_loss:
        heads = [rng.standard_normal((B, T, WIDTH)), rng.standard_normal((B, WIDTH))]
        if variant == "embeds":
            heads[0] = None

    def total():
        if pdrop:
            model.set_rng(backend.default_rng(seed + 3))    # the same dropout masks each time
        out = outputs(model, **feed)
        value = float(out.loss) if out.loss is not None else 0.0
        for arrays, ups in ((out.hidden_states, G), (out.attentions, A),
                            ((out.last_hidden_state, out.pooler_output), heads)):
            for x, u in zip(arrays, ups or ()):
                if u is not None:
                    value += float((x * u).sum())
        return value

    def backward():
        if name == "BertModel":
            model.backward(heads[0], heads[1], d_hidden_states=G, d_attentions=A)
        else:
            model.backward(d_hidden_states=G, d_attentions=A)

    return model, feed, total, backward


def check_directions(model, feed, total, backward, seed=0):
    """<grad, u> against the centred difference of L along u: every parameter, and
    inputs_embeds (three directions) when the forward takes them.

    The step is 1e-5: the difference's rounding error, about eps |L| / h, is what
    limits it here (a random direction can nearly cancel a gradient of size 10 to a
    derivative of 1e-3), and its truncation error, O(h^2), stays far below RTOL.
    Returns the largest relative error seen (where the derivative is above atol).
    """
    model.zero_grad()
    value = total()
    assert np.isfinite(value)
    backward()
    embeds = feed.get("inputs_embeds")
    if embeds is None:
        assert model.inputs_embeds_grad is None
    else:
        assert model.inputs_embeds_grad.shape == embeds.shape
    checked = [(n, p.data, p.grad.copy()) for n, p in model.named_parameters()]
    if embeds is not None:
        checked += [("inputs_embeds", embeds, model.inputs_embeds_grad.copy())] * 3
    rng = np.random.default_rng(seed + 4)
    atol = ATOL * max(1.0, abs(value))
    failures, worst = [], 0.0
    for what, x, grad in checked:
        u = rng.standard_normal(x.shape)
        u /= np.sqrt((u * u).sum())
        analytic = float((grad * u).sum())
        numeric = directional_derivative(total, x, u, H_STEP)
        err = abs(analytic - numeric)
        scale = max(abs(analytic), abs(numeric))
        if scale > atol:
            worst = max(worst, err / scale)
        if not err <= atol + RTOL * scale:
            failures.append(f"{what} {x.shape}: analytic {analytic:.12e}, numeric "
                            f"{numeric:.12e}, relative error {err / max(scale, 1e-300):.2e}")
    assert not failures, "gradient along a random direction is wrong for\n  " + \
        "\n  ".join(failures)
    return worst


@pytest.mark.parametrize("name,variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_gradients_of_hidden_states_and_attentions(name, variant, kernels):
    model, feed, total, backward = build_case(name, variant)
    check_directions(model, feed, total, backward)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_upstream_lists_of_none_change_nothing(name):
    """d_hidden_states / d_attentions of None entries: exactly the plain backward;
    the caller's upstream arrays are left as they were."""
    model, feed, _, _ = build_case(name, "ids")
    runs = []
    for ups in ("none", "lists"):
        model.zero_grad()
        out = outputs(model, **feed)
        L = len(out.attentions)
        kw = {} if ups == "none" else {"d_hidden_states": [None] * (L + 1),
                                       "d_attentions": (None,) * L}
        if name == "BertModel":
            model.backward(np.ones_like(out.last_hidden_state), **kw)
        else:
            model.backward(**kw)
        runs.append({n: p.grad.copy() for n, p in model.named_parameters()})
    for n in runs[0]:
        np.testing.assert_array_equal(runs[1][n], runs[0][n], err_msg=n)

    model, feed, total, _ = build_case(name, "ids", seed=1)
    total()
    before = {k: v.copy() for k, v in feed.items() if v is not None}
    G = [np.ones((len(feed["input_ids"]), 7, WIDTH))] * 3    # one array, used three times
    A = [np.ones((len(feed["input_ids"]), N_HEAD, 7, 7))] * 2
    if name == "BertModel":
        model.backward(G[0], None, d_hidden_states=G, d_attentions=A)
    else:
        model.backward(d_hidden_states=G, d_attentions=A)
    assert all(np.all(g == 1) for g in G) and all(np.all(a == 1) for a in A)
    for k, v in before.items():
        np.testing.assert_array_equal(feed[k], v)


@pytest.mark.parametrize("name,variant", [("GPT", "ids"), ("GPT", "long"),
                                          ("BertModel", "ids"), ("BertForMaskedLM", "long")])
def test_returned_arrays_outlive_later_calls(name, variant, kernels):
    """Hidden states, attentions and inputs_embeds_grad are the caller's: a backward and
    another forward and backward (which may reuse the kernels' buffers) leave them as
    they were."""
    model, feed, total, backward = build_case(name, variant)
    out = outputs(model, **feed)
    kept = out.hidden_states + out.attentions
    before = [a.copy() for a in kept]
    backward()
    grad = model.inputs_embeds_grad
    grad_before = None if grad is None else grad.copy()
    total()
    backward()
    for a, b in zip(kept, before):
        np.testing.assert_array_equal(a, b)
    if grad is not None:
        np.testing.assert_array_equal(grad, grad_before)


# --- (c) errors ------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bad_inputs_embeds_are_rejected(name):
    model = make_model(name)
    ids, kw, _ = make_batch(name, (0, 1), 5, labels=False)
    good = table(model).data[ids].copy()
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(input_ids=ids, inputs_embeds=good, **kw)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(**kw)
    for bad in (good[..., 0], good[..., :-1], good[:, :0], good[None]):
        with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(B, T, 8\)"):
            model(inputs_embeds=bad, **({} if bad.shape[:2] != ids.shape else kw))
    for bad in (good.astype(np.float32), ids[..., None].repeat(WIDTH, -1), good.tolist()):
        with pytest.raises(TypeError, match="inputs_embeds must"):
            model(inputs_embeds=bad, **kw)
    with pytest.raises(ValueError, match=r"must have shape \(2, 4\); got \(2, 5\)"):
        model(inputs_embeds=good[:, :4], **kw)  # the other arguments still checked against T


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_upstream_lists_of_the_wrong_length_are_rejected(name):
    model = make_model(name)
    ids, kw, _ = make_batch(name, (0, 1), 5)
    B, T = ids.shape
    cases = [("d_hidden_states", [None] * 2), ("d_hidden_states", [None] * 4),
             ("d_attentions", [None]), ("d_attentions", [np.zeros((B, N_HEAD, T, T))] * 3)]
    for arg, value in cases:
        out = outputs(model, input_ids=ids, **kw)
        pos = (np.zeros_like(out.last_hidden_state),) if name == "BertModel" else ()
        with pytest.raises(ValueError, match=f"{arg} must hold {3 if 'hidden' in arg else 2} "
                                             "arrays"):
            model.backward(*pos, **{arg: value})
        model.clear_caches()


@pytest.mark.parametrize("name", ["GPT", "BertModel"])
def test_backward_with_nothing_to_propagate_is_an_error(name):
    model = make_model(name)
    ids, kw, _ = make_batch(name, (0, 1), 5, labels=False)
    outputs(model, input_ids=ids, **kw)
    L = 2
    error = RuntimeError if name == "GPT" else ValueError
    with pytest.raises(error, match="d_hidden_states"):
        model.backward(d_hidden_states=[None] * (L + 1), d_attentions=[None] * L)


@pytest.mark.parametrize("name", ["GPT", "BertModel", "BertForMaskedLM"])
def test_upstream_entries_of_the_wrong_shape_are_rejected(name):
    model = make_model(name)
    ids, kw, _ = make_batch(name, (0, 1), 5)
    T = ids.shape[1]
    cases = [("d_hidden_states", [np.ones((1, T, WIDTH)), None, None]),
             ("d_attentions", [np.ones((N_HEAD, T, T)), None])]
    for arg, value in cases:
        out = outputs(model, input_ids=ids, **kw)
        pos = (np.zeros_like(out.last_hidden_state),) if name == "BertModel" else ()
        with pytest.raises(ValueError, match=arg):
            model.backward(*pos, **{arg: value})
        model.clear_caches()
