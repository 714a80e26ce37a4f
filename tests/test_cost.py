"""scratchlm.cost: parameter counts, the FLOP formula against the products the code runs,
the activation memory against the caches a forward keeps, and ``scratchlm cost``."""

import json

import numpy as np
import pytest

from scratchlm import bench, cost
from scratchlm.cli import main
from scratchlm.models import BertConfig, GPTConfig

GPT2_124M, BERT_BASE = 124_439_808, 109_482_240


def small(arch, p=0.0, n_inner=20):
    """A small config of an architecture (odd sizes: T, C, F, V, H all differ)."""
    if arch == "GPT2LMHeadModel":
        return GPTConfig(vocab_size=37, n_positions=16, n_embd=12, n_layer=2, n_head=3,
                         n_inner=n_inner, resid_pdrop=p, embd_pdrop=p, attn_pdrop=p)
    return BertConfig(vocab_size=37, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                      intermediate_size=n_inner, max_position_embeddings=16, type_vocab_size=3,
                      hidden_dropout_prob=p, attention_probs_dropout_prob=p).with_num_labels(5)


def build(arch, cfg, dtype="float32"):
    return cost._model_class(arch)(cfg, seed=0, dtype=dtype)


# --- parameters ----------------------------------------------------------------------------

def test_known_parameter_counts():
    gpt = cost.parameter_counts(*cost.config_from_flags("gpt"))
    bert = cost.parameter_counts(*cost.config_from_flags("bert"))
    assert gpt["total"] == GPT2_124M and bert["total"] == BERT_BASE
    assert gpt["embeddings"] == 50257 * 768 + 1024 * 768
    assert bert["embeddings"] == (30522 + 512 + 2) * 768
    assert gpt["rest"] == 12 * (12 * 768 ** 2 + 13 * 768) + 2 * 768


@pytest.mark.parametrize("arch", cost.ARCHITECTURES)
@pytest.mark.parametrize("n_inner", [20, 48])
def test_parameter_counts_equal_the_models(arch, n_inner):
    cfg = small(arch, n_inner=n_inner)
    counts = cost.parameter_counts(arch, cfg)
    model = build(arch, cfg)
    assert counts["total"] == model.num_parameters()
    assert counts["embeddings"] + counts["rest"] == counts["total"]
    tables = sum(p.size for name, p in model.named_parameters()
                 if name.endswith(("wte.weight", "wpe.weight", "embeddings.weight")))
    assert counts["embeddings"] == tables


@pytest.mark.reference
def test_parameter_counts_equal_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):                          # shapes only: no memory, no init time
        gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config())
        bert = transformers.BertModel(transformers.BertConfig())
    assert gpt.num_parameters() == GPT2_124M
    assert bert.num_parameters() == BERT_BASE


# --- FLOPs: the formula against the products the code performs ------------------------------

@pytest.mark.parametrize("arch", cost.ARCHITECTURES)
@pytest.mark.parametrize("B, T", [(2, 5), (1, 16)])
def test_flop_formula_equals_the_counted_products(arch, B, T):
    cfg = small(arch)
    model = build(arch, cfg, "float64")
    counted = cost.count_flops(model, B, T)
    formula = cost.flops(arch, cfg, B, T)
    assert counted["forward"] == formula["forward_per_step"]
    assert counted["backward"] == 2 * counted["forward"]
    assert counted["train"] == formula["train_per_step"]
    assert formula["forward_per_token"] * B * T == pytest.approx(formula["forward_per_step"])


def test_flop_counter_sees_a_frozen_weight():
    # the counter reads what the code does: a frozen layer's backward skips its dW
    arch = "GPT2LMHeadModel"
    cfg = small(arch)
    model = build(arch, cfg)
    full = cost.count_flops(model, 2, 4)
    model.h[0].mlp.c_fc.weight.requires_grad = False
    frozen = cost.count_flops(model, 2, 4)
    assert full["backward"] - frozen["backward"] == 2 * 2 * 4 * 12 * 20
    assert frozen["forward"] == full["forward"]


def test_flop_formula_equals_the_benchmarks():
    # scratchlm.bench's MFU uses 2 N_mm + 4 L C T (training x 3); ours is the same for
    # GPT, and for the BERT-base encoder adds only the pooler, which bench leaves out
    for name, c in bench.CONFIGS.items():
        cfg = GPTConfig(vocab_size=c["vocab_size"], n_positions=512, n_embd=c["n_embd"],
                        n_layer=c["n_layer"], n_head=c["n_head"])
        f = cost.flops("GPT2LMHeadModel", cfg, c["batch"], c["context"])
        for training, key in ((False, "forward_per_token"), (True, "train_per_token")):
            assert f[key] == bench.flops_per_token(c, c["context"], training), name
    c = bench.BERT_BASE
    arch, cfg = cost.config_from_flags("bert")
    f = cost.flops(arch, cfg, c["batch"], c["context"])
    pooler = 2 * 768 ** 2 / c["context"]
    assert f["forward_per_token"] - bench.flops_per_token(c, c["context"], False, head=False) \
        == pytest.approx(pooler)


def test_gpt2_flops_per_token():
    f = cost.flops(*cost.config_from_flags("gpt"), 1, 1024)
    n_mm = 12 * 12 * 768 ** 2 + 50257 * 768
    assert f["n_mm"] == n_mm
    assert f["forward_per_token"] == 2 * n_mm + 4 * 12 * 768 * 1024 == 284_812_800
    assert f["train_per_token"] == 3 * 284_812_800


# --- memory: the activation formula against the caches ----------------------------------------

@pytest.mark.parametrize("arch", cost.ARCHITECTURES)
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_activation_formula_equals_the_caches(arch, p, kernels):
    cfg = small(arch, p)
    model = build(arch, cfg).train()
    forward, _ = cost._training_call(model, 3, 7)
    forward()
    assert cost.cached_bytes(model) == cost.activation_bytes(arch, cfg, 3, 7)["total"]


@pytest.mark.parametrize("arch", ["BertForMaskedLM", "BertForSequenceClassification"])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_activation_formula_with_a_padding_mask(arch, p):
    cfg = small(arch, p)
    model = build(arch, cfg).train()
    ids = np.random.default_rng(0).integers(0, 37, (3, 7))
    mask = np.ones((3, 7), dtype=np.int64)
    mask[0, 5:] = 0
    labels = ids if arch == "BertForMaskedLM" else np.array([0, 1, 2])
    model(ids, attention_mask=mask, labels=labels)
    expected = cost.activation_bytes(arch, cfg, 3, 7, attention_mask=True)["total"]
    assert cost.cached_bytes(model) == expected


def test_dropout_flag_sets_every_probability():
    _, gpt = cost.config_from_flags("gpt", dropout=0.0)
    assert gpt.resid_pdrop == gpt.embd_pdrop == gpt.attn_pdrop == 0.0
    _, bert = cost.config_from_flags("bert", dropout=0.2)
    assert bert.hidden_dropout_prob == bert.attention_probs_dropout_prob == 0.2
    # dropout keeps masks: the activations of BERT-base at 8 x 128 grow by them
    with_masks = cost.activation_bytes("BertModel", bert, 8, 128)["total"]
    _, plain = cost.config_from_flags("bert", dropout=0.0)
    assert with_masks > cost.activation_bytes("BertModel", plain, 8, 128)["total"]


def test_memory_of_gpt2():
    r = cost.estimate(*cost.config_from_flags("gpt"), batch_size=1, block_size=1024)
    m = r["memory"]
    assert m["weights"] == m["gradients"] == 4 * GPT2_124M
    assert m["optimizer"] == 8 * GPT2_124M
    assert m["logits"] == 4 * 1024 * 50257
    assert m["total"] == sum(v for k, v in m.items() if k != "total")


# --- the measured step and the command ------------------------------------------------------

def test_measure_a_small_model():
    arch = "GPT2LMHeadModel"
    r = cost.measure(cost.estimate(arch, small(arch, 0.1), batch_size=2, block_size=8),
                     steps=1, warmup=0, peak_gflops=50.0)
    x = r["measured"]
    assert x["cached_bytes"] == r["memory"]["activations"]
    assert x["mfu"] == pytest.approx(r["flops"]["train_per_step"] / x["step_seconds"] / 50e9)
    assert x["tokens_per_s"] == pytest.approx(16 / x["step_seconds"])
    assert x["step_peak_bytes"] > 0
    assert "MFU" in cost.format_report(r)


def test_cost_command(tmp_path, capsys):
    assert main(["cost", "--arch", "bert", "--batch-size", "8", "--block-size", "128",
                 "--steps", "0"]) == 0
    printed = capsys.readouterr().out
    assert "109,482,240" in printed and "BertModel" in printed
    assert "2 N_mm + 4 L C T" in printed and "measured" not in printed
    assert main(["cost", "--steps", "0"]) == 0
    assert "124,439,808" in capsys.readouterr().out
    arch = "BertForSequenceClassification"
    model_dir = tmp_path / "model"
    build(arch, small(arch)).save_pretrained(model_dir)
    path = tmp_path / "cost.json"
    assert main(["cost", "--model", str(model_dir), "--batch-size", "2", "--block-size", "8",
                 "--steps", "1", "--warmup", "0", "--peak-gflops", "100", "--json",
                 str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["architecture"] == arch
    assert report["parameters"]["total"] == build(arch, small(arch)).num_parameters()
    assert report["measured"]["cached_bytes"] == report["memory"]["activations"]
    capsys.readouterr()
    assert main(["cost", "--model", str(model_dir), "--n-layer", "3", "--dropout", "0"]) == 1
    assert "--model reads the sizes from its config.json; drop --n-layer, --dropout" in \
        capsys.readouterr().err
    assert main(["cost", "--model", str(model_dir), "--block-size", "99", "--steps", "0"]) == 1
    assert "block_size must be in [1, 16]" in capsys.readouterr().err
    assert main(["cost", "--model", str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().err
