"""scratchlm.explain: attributions that prove themselves, attention summaries, pictures.

* Integrated gradients are complete: |sum of attributions - (F(x) - F(x'))|
  <= 1e-3 |F(x) - F(x')| at 64 steps, over random tiny models (GPT, BERT
  classifier, BERT masked LM) and inputs (a property test).
* Saliency equals gradient x input with the gradient taken by central finite
  differences of the model's score with respect to the input embeddings.
* Rollout of identity attentions is the identity; every row of the models'
  attentions (padded batches) and of the rollout sums to 1.
* HTML pages hold no network reference; PNGs are written where matplotlib is.
* ``scratchlm explain`` runs on a tiny saved classifier, masked LM and GPT.
* Reference (torch, transformers; captum where installed): attentions equal
  transformers' for every model class (float64, padded batches), and
  integrated gradients equal captum's LayerIntegratedGradients within 1e-8.
"""

import json
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from scratchlm import (
    GPT, BertConfig, BertForMaskedLM, BertForNextSentencePrediction,
    BertForSequenceClassification, BertForTokenClassification, GPTConfig, explain,
)
from scratchlm.cli import main
from scratchlm.gradcheck import directional_derivative, numerical_grad

V, C, LAYERS, HEADS = 23, 16, 2, 2
SPECIAL = {"pad": 0, "cls": 2, "sep": 3, "mask": 4}     # as in a BERT vocabulary: [PAD] first


def tiny_model(kind, seed=0, dropout=0.0):
    """A float64 model with weights ten times GPT-2's (std 0.2): far from linear, yet smooth.

    Larger weights make the path integral stiff: where s x + p (word plus position
    embedding) nearly loses its variance, LayerNorm turns its output fast, and 64
    points cannot follow it. At width 8 and std 0.4, 2 GPTs in 225 missed the 1e-3
    bound; at width 16 and std 0.2 the worst of 3,600 was 1.5e-6.
    """
    if kind == "gpt":
        cfg = GPTConfig(vocab_size=V, n_positions=16, n_embd=C, n_layer=LAYERS, n_head=HEADS,
                        initializer_range=0.2, resid_pdrop=dropout, embd_pdrop=dropout,
                        attn_pdrop=dropout)
        return GPT(cfg, seed=seed, dtype="float64")
    cfg = BertConfig(vocab_size=V, hidden_size=C, num_hidden_layers=LAYERS,
                     num_attention_heads=HEADS, intermediate_size=32, max_position_embeddings=16,
                     initializer_range=0.2, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, id2label={0: "a", 1: "b", 2: "c"})
    cls = BertForSequenceClassification if kind == "bert" else BertForMaskedLM
    return cls(cfg, seed=seed, dtype="float64")


def tiny_inputs(kind, rng, B, T):
    """A padded batch: [CLS] ... [SEP] right-padded for BERT, left padding for GPT; target."""
    lengths = rng.integers(max(3, T - 2), T + 1, size=B) if kind != "gpt" else \
        rng.integers(1, T + 1, size=B)                   # BERT: T >= 3
    lengths[0] = T                                       # one full row
    if B > 1:                                            # and one padded (when T allows)
        lengths[-1] = max(1, T // 2) if kind == "gpt" else max(3, T - 2)
    ids = rng.integers(5, V, size=(B, T))
    real = np.arange(T)[None, :] < lengths[:, None]
    if kind == "gpt":
        real = real[:, ::-1]
    else:
        ids[:, 0] = SPECIAL["cls"]
        ids[np.arange(B), lengths - 1] = SPECIAL["sep"]
    ids[~real] = SPECIAL["pad"]
    inputs = {"input_ids": ids, "attention_mask": real.astype(np.int64)}
    position = None
    if kind == "mlm":
        position = rng.integers(1, lengths - 1)          # between [CLS] and [SEP]
        ids[np.arange(B), position] = SPECIAL["mask"]
    K = 3 if kind == "bert" else V
    return inputs, rng.integers(0, K, size=B), position


# ---------------------------------------------------------------------------
# Integrated gradients and saliency
# ---------------------------------------------------------------------------

@settings(max_examples=8)
@given(kind=st.sampled_from(["gpt", "bert", "mlm"]), seed=st.integers(0, 2**16),
       B=st.integers(1, 2), T=st.integers(3, 6), score=st.sampled_from(explain.SCORES))
def test_integrated_gradients_are_complete_at_64_steps(kind, seed, B, T, score):
    rng = np.random.default_rng(seed)
    model = tiny_model(kind, seed)
    inputs, target, position = tiny_inputs(kind, rng, B, T)
    attr = explain.integrated_gradients(model, inputs, target, n_steps=64, position=position,
                                        score=score, internal_batch_size=48)
    change = attr.score - attr.baseline_score
    assume(np.all(np.abs(change) > 1e-6))               # a relative bound needs a change
    assert attr.shape == (B, T)
    assert_allclose(attr.delta, attr.sum(-1) - change, atol=1e-12)
    assert np.all(np.abs(attr.delta) <= 1e-3 * np.abs(change)), (attr.delta, change)


@pytest.mark.parametrize("kind", ["gpt", "bert", "mlm"])
def test_integrated_gradients_converge_and_batching_changes_nothing(kind):
    rng = np.random.default_rng(1)
    model = tiny_model(kind, seed=1)
    inputs, target, position = tiny_inputs(kind, rng, 2, 5)
    a = explain.integrated_gradients(model, inputs, target, n_steps=64, position=position)
    b = explain.integrated_gradients(model, inputs, target, n_steps=64, position=position,
                                     internal_batch_size=5)   # 2 steps of B = 2 per forward
    assert_allclose(b, a, rtol=1e-12, atol=1e-14)
    assert np.all(np.abs(a.delta) <= 1e-8 * np.abs(a.score - a.baseline_score))
    # Padding (identical in x and x') and, for BERT, [CLS] and [SEP] (kept) get nothing.
    kept = inputs["attention_mask"] == 0
    if kind != "gpt":
        kept |= np.isin(inputs["input_ids"], [SPECIAL["cls"], SPECIAL["sep"]])
    assert np.all(a[kept] == 0)


def test_integrated_gradients_equal_the_path_sum_of_gradients():
    """Against a plain loop: one score_and_gradient per path point, weighted by hand."""
    rng = np.random.default_rng(2)
    model = tiny_model("bert", seed=2)
    inputs, target, _ = tiny_inputs("bert", rng, 2, 5)
    ids = inputs["input_ids"]
    W = explain.word_embeddings(model)
    base_ids = np.where(np.isin(ids, [SPECIAL["cls"], SPECIAL["sep"]]), ids, SPECIAL["pad"])
    x, x0 = W[ids], W[base_ids]
    for method, n in [("trapezoid", 7), ("riemann_middle", 5), ("gauss_legendre", 3)]:
        s = {"trapezoid": np.linspace(0, 1, n), "riemann_middle": (np.arange(n) + 0.5) / n,
             "gauss_legendre": 0.5 * (1 + np.polynomial.legendre.leggauss(n)[0])}[method]
        w = {"trapezoid": np.r_[0.5, np.ones(n - 2), 0.5] / (n - 1),
             "riemann_middle": np.full(n, 1 / n),
             "gauss_legendre": 0.5 * np.polynomial.legendre.leggauss(n)[1]}[method]
        total = sum(wk * explain.score_and_gradient(model, inputs, target,
                                                    inputs_embeds=x0 + sk * (x - x0))[1]
                    for sk, wk in zip(s, w))
        attr = explain.integrated_gradients(model, inputs, target, baseline=base_ids,
                                            n_steps=n, method=method)
        assert_allclose(attr, ((x - x0) * total).sum(-1), rtol=1e-10, atol=1e-14,
                        err_msg=method)


@pytest.mark.parametrize("method", explain.INTEGRATION_METHODS)
def test_integration_points_weigh_one_and_integrate_what_they_should(method):
    s, w = explain.integration_points(method, 8)
    assert s.shape == w.shape == (8,) and np.all((0 <= s) & (s <= 1))
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    degree = {"gauss_legendre": 15, "trapezoid": 1, "riemann_middle": 1}.get(method, 0)
    for p in range(degree + 1):                          # int_0^1 s^p ds = 1 / (p + 1)
        assert (w * s ** p).sum() == pytest.approx(1 / (p + 1), rel=1e-12)


@pytest.mark.parametrize("kind", ["gpt", "bert", "mlm"])
@pytest.mark.parametrize("score", explain.SCORES)
def test_saliency_is_input_times_the_finite_difference_gradient(kind, score):
    rng = np.random.default_rng(3)
    model = tiny_model(kind, seed=3)
    inputs, target, position = tiny_inputs(kind, rng, 2, 4)
    x = explain.word_embeddings(model)[inputs["input_ids"]].copy()   # (B, T, C)

    def F():                                             # sum over rows: rows are independent
        return explain.score_and_gradient(model, inputs, target, inputs_embeds=x,
                                          position=position, score=score)[0].sum()

    fd = numerical_grad(F, x)
    sal = explain.saliency(model, inputs, target, position=position, score=score)
    _, grad = explain.score_and_gradient(model, inputs, target, position=position, score=score)
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())
    assert_allclose(sal, (x * fd).sum(-1), rtol=1e-6, atol=1e-9 * np.abs(fd).max())


@pytest.mark.parametrize("cls", [BertForTokenClassification, BertForNextSentencePrediction,
                                 BertForSequenceClassification, BertForMaskedLM])
@pytest.mark.parametrize("with_labels", [False, True])
def test_bert_heads_backward_from_dlogits(cls, with_labels):
    """backward(dlogits=D) gives the gradient of sum(logits * D), with or without a loss."""
    cfg = tiny_model("bert").config                     # dropout 0
    model = cls(cfg, seed=11, dtype="float64").train()
    rng = np.random.default_rng(11)
    inputs, _, _ = tiny_inputs("bert", rng, 2, 5)
    x = explain.word_embeddings(model)[inputs["input_ids"]].copy()
    out = model(inputs_embeds=x, attention_mask=inputs["attention_mask"])
    D = rng.standard_normal(out.logits.shape)
    labels = {} if not with_labels else {"labels": np.zeros(out.logits.shape[:-1], np.int64)}
    model(inputs_embeds=x, attention_mask=inputs["attention_mask"], **labels)
    model.backward(dlogits=D)
    u = rng.standard_normal(x.shape)
    f = lambda: (model(inputs_embeds=x, attention_mask=inputs["attention_mask"]).logits  # noqa
                 * D).sum()
    model.eval()
    expected = directional_derivative(f, x, u)
    assert (model.inputs_embeds_grad * u).sum() == pytest.approx(expected, rel=1e-7)
    attr = explain.integrated_gradients(model, inputs, 1, n_steps=64,
                                        position=None if "Sequence" in cls.__name__
                                        or "Next" in cls.__name__ else 2)
    assert np.all(np.abs(attr.delta) <= 1e-6 * np.abs(attr.score - attr.baseline_score))


def test_attribution_leaves_the_model_as_it_was():
    """Dropout off inside, every mode, flag, probability and gradient restored after."""
    model = tiny_model("bert", seed=4, dropout=0.3).eval()
    rng = np.random.default_rng(4)
    inputs, target, _ = tiny_inputs("bert", rng, 2, 5)
    for p in model.parameters():
        p.grad[...] = rng.standard_normal(p.grad.shape)
    model.classifier.weight.requires_grad = False
    before = [p.grad.copy() for p in model.parameters()]
    a = explain.integrated_gradients(model, inputs, target, n_steps=16)
    b = explain.integrated_gradients(model, inputs, target, n_steps=16)
    assert_allclose(a, b, rtol=0, atol=0)                # no dropout: deterministic
    logits = model(**inputs).logits                      # eval mode: the explained function
    assert_allclose(a.score, logits[np.arange(2), target], rtol=1e-13)
    assert not any(m.training for m in model.modules())
    assert model.dropout.p == 0.3
    assert model.bert.encoder.layer[0].attn.attn_pdrop == 0.3
    assert [p.requires_grad for p in model.parameters()].count(False) == 1
    for g, p in zip(before, model.parameters()):
        assert np.array_equal(g, p.grad)


def test_bad_targets_and_positions_are_clear_errors():
    model = tiny_model("mlm")
    ids = np.array([[2, 5, 4, 3]])
    with pytest.raises(ValueError, match="pass position="):
        explain.saliency(model, ids, 7)
    with pytest.raises(ValueError, match=r"target must be in \[0, 23\)"):
        explain.saliency(model, ids, 99, position=2)
    with pytest.raises(ValueError, match="position must be"):
        explain.saliency(model, ids, 7, position=4)
    with pytest.raises(ValueError, match="method must be one of"):
        explain.integrated_gradients(model, ids, 7, position=2, method="simpson")
    with pytest.raises(TypeError, match="model must be one of"):
        explain.saliency(model.bert, ids, 7)


# ---------------------------------------------------------------------------
# Attention: rollout, head statistics, generation
# ---------------------------------------------------------------------------

@settings(max_examples=10)
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(1, 6), L=st.integers(1, 4),
       fusion=st.sampled_from(["mean", "max", "min"]), residual=st.booleans())
def test_rollout_of_identity_attentions_is_the_identity(B, H, T, L, fusion, residual):
    eye = np.broadcast_to(np.eye(T), (B, H, T, T))
    rollout = explain.attention_rollout([eye] * L, head_fusion=fusion, add_residual=residual)
    assert_allclose(rollout, np.broadcast_to(np.eye(T), (B, T, T)), atol=1e-15)


@pytest.mark.parametrize("kind", ["gpt", "bert", "mlm"])
def test_every_row_of_the_attentions_and_of_the_rollout_sums_to_one(kind):
    rng = np.random.default_rng(5)
    model = tiny_model(kind, seed=5).eval()
    inputs, _, _ = tiny_inputs(kind, rng, 3, 6)
    out = model(**inputs, output_attentions=True)
    assert len(out.attentions) == LAYERS
    for att in out.attentions:
        assert att.shape == (3, HEADS, 6, 6)
        assert_allclose(att.sum(-1), 1.0, atol=1e-12)
    for fusion in ("mean", "max", "min"):
        rollout = explain.attention_rollout(out.attentions, head_fusion=fusion)
        assert rollout.shape == (3, 6, 6) and np.all(rollout >= 0)
        assert_allclose(rollout.sum(-1), 1.0, atol=1e-12)
    if kind == "gpt":     # causal: nothing from the future (row 0 has no padding; a padded
        # query that sees only padding spreads its attention evenly, as transformers does)
        assert_allclose(np.triu(explain.attention_rollout(out.attentions)[0], 1), 0, atol=0)


def test_head_statistics_of_hand_made_attentions():
    tokens = ["[CLS]", "the", ",", "cat", "[SEP]"]
    T = len(tokens)
    previous = np.eye(T, k=-1)
    previous[0, 0] = 1.0                                 # the first query looks at itself
    uniform = np.full((T, T), 1.0 / T)
    att = np.stack([previous, uniform])[None]            # (1, 2 heads, T, T)
    stats = explain.head_statistics([att], tokens)
    assert stats.entropy.shape == (1, 2)
    assert_allclose(stats.entropy[0], [0.0, np.log(T)], atol=1e-12)
    assert_allclose(stats.previous[0], [1.0, 1.0 / T])
    assert_allclose(stats.next[0], [0.0, 1.0 / T])
    assert_allclose(stats.cls[0], [2 / T, 1 / T])        # queries 0 and 1 look at [CLS]
    assert_allclose(stats.sep[0], [0.0, 1 / T])
    assert_allclose(stats.punctuation[0], [1 / T, 1 / T])  # query 3 looks at ","
    table = stats.table(sort_by="entropy")
    assert table.splitlines()[1].split()[:2] == ["0", "1"]
    # Padding counts neither as a query nor as a previous token.
    masked = explain.head_statistics([att], tokens, attention_mask=np.array([[1, 1, 1, 1, 0]]))
    assert_allclose(masked.previous[0, 0], 1.0)
    assert_allclose(masked.sep[0, 1], 0.0)


def test_generation_attention_reads_the_generated_rows_and_prompt_columns():
    model = tiny_model("gpt", seed=6).eval()
    ids = np.array([[5, 6, 7, 8, 9, 10]])
    out = model(input_ids=ids, output_attentions=True)
    m = explain.generation_attention(out.attentions, prompt_length=4)
    assert m.shape == (1, 2, 4)
    expected = np.mean([a[0].mean(0)[4:, :4] for a in out.attentions], axis=0)
    assert_allclose(m[0], expected)
    assert np.all(m.sum(-1) <= 1 + 1e-12)


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------

def _pictures(tmp_path, ext):
    model = tiny_model("gpt", seed=7).eval()
    ids = np.array([[5, 6, 7, 8, 9, 10]])
    tokens = ["a", "<b>", "c&d", "e", "f", "g"]          # HTML must escape these
    out = model(input_ids=ids, output_attentions=True)
    attr = explain.integrated_gradients(model, ids, 3, n_steps=8)
    return [
        explain.plot_attention_grid(out.attentions, tokens, tmp_path / f"grid{ext}"),
        explain.plot_attention_map(out.attentions[1][0, 0], tokens, tmp_path / f"head{ext}"),
        explain.plot_attributions(tokens, attr, tmp_path / f"attr{ext}"),
        explain.plot_generation_attention(out.attentions, tokens, 4, tmp_path / f"gen{ext}"),
    ]


def test_html_pages_are_self_contained(tmp_path):
    for path in _pictures(tmp_path, ".html"):
        page = open(path, encoding="utf-8").read()
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page)
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
        for banned in ("http:", "https:", "//", "<script", "<link", "@import", "url(",
                       "<b>", "c&d"):
            assert banned not in text, (path, banned)
        for src in re.findall(r'src="([^"]*)"', page):
            assert src.startswith("data:image/png;base64,")


def test_the_inline_png_encoder_round_trips():
    import base64
    import zlib
    rgb = np.random.default_rng(8).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    png = explain._png_bytes(rgb)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(5, 1 + 7 * 3)
    assert np.all(raw[:, 0] == 0) and np.array_equal(raw[:, 1:].reshape(5, 7, 3), rgb)
    assert base64.b64decode(explain._data_uri(rgb).split(",", 1)[1]) == png


def test_png_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    for path in _pictures(tmp_path, ".png"):
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_a_picture_needs_a_known_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.png .* or \.html"):
        explain.plot_attributions(["a"], np.ones(1), tmp_path / "x.svg")


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny classifier, masked LM (WordPiece) and GPT (characters), saved with tokenizers."""
    from scratchlm.tokenizers import CharTokenizer, WordPieceTokenizer
    words = "the cat sat on a mat , . dog ran big red".split()
    wp = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)
    cfg = BertConfig(vocab_size=wp.vocab_size, hidden_size=C, num_hidden_layers=LAYERS,
                     num_attention_heads=HEADS, intermediate_size=16, max_position_embeddings=32,
                     initializer_range=0.2, id2label={0: "negative", 1: "positive"})
    char = CharTokenizer.train("the cat sat on the mat. a dog ran.")
    gcfg = GPTConfig(vocab_size=char.vocab_size, n_positions=32, n_embd=C, n_layer=LAYERS,
                     n_head=HEADS, initializer_range=0.2)
    dirs = {}
    for kind, model, tok in [("classify", BertForSequenceClassification(cfg, seed=1), wp),
                             ("mlm", BertForMaskedLM(cfg, seed=2), wp),
                             ("gpt", GPT(gcfg, seed=3), char)]:
        dirs[kind] = tmp_path_factory.mktemp(kind)
        model.save_pretrained(dirs[kind])
        tok.save_pretrained(dirs[kind])
    return dirs


CLI_TEXT = {"classify": ["--text", "the cat sat on a mat .", "--text-pair", "a dog ran"],
            "mlm": ["--text", "the cat [MASK] on a mat ."], "gpt": ["--text", "the cat sat"]}
CLI_FILES = {"ig": ["ig.html", "ig.json"], "saliency": ["saliency.html", "saliency.json"],
             "rollout": ["rollout.html", "rollout_map.html"],
             "attention": ["head_statistics.json", "attention_grid.html", "attention_head.html"]}


@pytest.mark.parametrize("kind", ["classify", "mlm", "gpt"])
@pytest.mark.parametrize("method", ["ig", "saliency", "rollout", "attention"])
def test_cli_explain(saved_models, tmp_path, capsys, kind, method):
    out = tmp_path / "out"
    argv = ["explain", "--model", str(saved_models[kind]), *CLI_TEXT[kind], "--method", method,
            "--out", str(out), "--n-steps", "32", "--max-new-tokens", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "prediction for" in printed and "wrote" in printed
    files = CLI_FILES[method] + (["generation.html"] if kind == "gpt" and method == "attention"
                                 else [])
    for name in files:
        assert (out / name).is_file(), name
    if method == "ig":
        report = json.loads((out / "ig.json").read_text())
        change = report["score"] - report["baseline_score"]
        assert abs(report["delta"]) <= 1e-3 * abs(change)
        assert sum(report["attributions"]) == pytest.approx(change, rel=1e-3)


def test_cli_explain_with_a_target(saved_models, tmp_path, capsys):
    argv = ["explain", "--model", str(saved_models["classify"]), "--text", "a big red dog",
            "--target", "positive", "--method", "saliency", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "explaining: positive" in capsys.readouterr().out
    argv = ["explain", "--model", str(saved_models["mlm"]), "--text", "the [MASK] ran",
            "--target", "dog", "--out", str(tmp_path), "--n-steps", "8"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "ig.json").read_text())["target"] == "dog"


@pytest.mark.parametrize("argv, message", [
    (["--text", "the cat sat"], "put [MASK] in the text"),
    (["--text", "the [MASK] sat", "--target", "zebra"], "is not one token"),
    (["--text", "the [MASK] sat", "--text-pair", "a dog"], "only for a sequence classifier"),
])
def test_cli_explain_errors(saved_models, tmp_path, capsys, argv, message):
    assert main(["explain", "--model", str(saved_models["mlm"]), *argv,
                 "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Reference: transformers (attentions) and captum (integrated gradients)
# ---------------------------------------------------------------------------

BERT_CLASSES = ["BertModel", "BertForPreTraining", "BertForMaskedLM",
                "BertForNextSentencePrediction", "BertForSequenceClassification",
                "BertForTokenClassification", "BertForQuestionAnswering"]


def _hf_model(transformers, torch, name, seed=0):
    """A float64 transformers model (eager attention, no dropout) with perturbed weights."""
    torch.manual_seed(seed)
    if name == "GPT":
        cfg = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=12, n_layer=2,
                                      n_head=3, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, attn_implementation="eager")
        hf = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.BertConfig(vocab_size=V, hidden_size=12, num_hidden_layers=2,
                                      num_attention_heads=3, intermediate_size=20,
                                      max_position_embeddings=32, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0,
                                      num_labels=2 if name.endswith("Answering") else 3,
                                      attn_implementation="eager")
        hf = getattr(transformers, name)(cfg)
    hf = hf.double().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return hf


def _ours(name, hf, tmp_path):
    import scratchlm
    hf.save_pretrained(tmp_path)
    return getattr(scratchlm, name).from_pretrained(tmp_path, dtype="float64")


@pytest.mark.reference
@pytest.mark.parametrize("name", ["GPT"] + BERT_CLASSES)
def test_attentions_equal_transformers_float64_padded(name, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = _hf_model(transformers, torch, name)
    model = _ours(name, hf, tmp_path)
    inputs, _, _ = tiny_inputs("gpt" if name == "GPT" else "bert", np.random.default_rng(9),
                               3, 7)
    if name != "GPT":
        inputs["token_type_ids"] = (np.arange(7)[None] >= 3) * inputs["attention_mask"]
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in inputs.items()}, output_attentions=True)
    out = model(**inputs, output_attentions=True)
    assert len(out.attentions) == len(ref.attentions) == 2
    for ours, theirs in zip(out.attentions, ref.attentions):
        assert_allclose(ours, theirs.numpy(), rtol=0, atol=1e-12)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["BertForSequenceClassification", "GPT"])
@pytest.mark.parametrize("method", ["gauss_legendre", "riemann_middle", "riemann_right"])
def test_integrated_gradients_equal_captum_float64(name, method, tmp_path):
    """Same weights, inputs, baseline ids and rule. (captum multiplies the gradients by
    its weights in float32: Gauss-Legendre agrees to about 1e-10, the dyadic Riemann
    weights 1/64 to rounding.)"""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    captum_attr = pytest.importorskip("captum.attr")
    hf = _hf_model(transformers, torch, name, seed=1)
    model = _ours(name, hf, tmp_path)
    rng = np.random.default_rng(10)
    if name == "GPT":
        ids = rng.integers(1, V, size=(2, 6))
        extra, target, layer = {}, np.array([4, 9]), hf.transformer.wte
        base = np.zeros_like(ids)                        # baseline ids: token 0 everywhere

        def forward(input_ids):
            return hf(input_ids=input_ids).logits[:, -1]
    else:
        inputs, target, _ = tiny_inputs("bert", rng, 2, 6)
        ids, extra = inputs["input_ids"], {"attention_mask": inputs["attention_mask"]}
        base = np.where(np.isin(ids, [SPECIAL["cls"], SPECIAL["sep"]]), ids, SPECIAL["pad"])
        layer = hf.bert.embeddings.word_embeddings

        def forward(input_ids, attention_mask):
            return hf(input_ids=input_ids, attention_mask=attention_mask).logits
    lig = captum_attr.LayerIntegratedGradients(forward, layer)
    ref, ref_delta = lig.attribute(
        torch.tensor(ids), baselines=torch.tensor(base), target=torch.tensor(target),
        additional_forward_args=tuple(torch.tensor(v) for v in extra.values()) or None,
        n_steps=64, method=method.replace("gauss_legendre", "gausslegendre"),
        return_convergence_delta=True)
    ours = explain.integrated_gradients(model, {"input_ids": ids, **extra}, target,
                                        n_steps=64, method=method,
                                        keep_ids=None if name == "GPT" else [2, 3],
                                        baseline=base if name == "GPT" else None)
    theirs = ref.sum(-1).detach().numpy()
    assert np.abs(ours - theirs).max() <= 1e-8 * max(1.0, np.abs(theirs).max())
    assert_allclose(ours.delta, ref_delta.detach().numpy(), atol=1e-8)
