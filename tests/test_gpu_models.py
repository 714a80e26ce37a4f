"""Whole models on the GPU: the cupy backend gives what the numpy backend gives.

Every test here needs CuPy and a visible GPU (marker ``gpu``; skipped
elsewhere). A model is built on the CPU, copied, and the copy moved with
``.to("cupy")``; both run the same batch. In float64 the logits, loss and
every gradient agree to rounding; in float32 to float32's rounding. The
Trainer trains, checkpoints and resumes on the GPU, and out-of-range ids are
refused there too (CuPy would wrap them silently).
"""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from scratchlm import backend
from scratchlm.data import CausalLMBatches
from scratchlm.models import (
    BertConfig, BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining,
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification, GPT,
    GPTConfig,
)
from scratchlm.train import Trainer, TrainingArguments

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def numpy_backend_after():
    """Each test leaves the default backend numpy, as it found it."""
    yield
    backend.set_backend("numpy")


def on_gpu(model):
    return copy.deepcopy(model).to("cupy")


def run(model, **batch):
    model.zero_grad()
    out = model(**batch)
    model.backward()
    grads = {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()}
    return out, grads


def assert_same(cpu, gpu, rtol, fields=("logits",)):
    (out_c, grads_c), (out_g, grads_g) = cpu, gpu
    for name in fields:
        value = getattr(out_g, name)
        assert backend.is_cupy_array(value), name
        assert_allclose(backend.to_numpy(value), getattr(out_c, name), rtol=rtol, atol=rtol,
                        err_msg=name)
    assert_allclose(float(out_g.loss), float(out_c.loss), rtol=rtol)
    assert grads_c.keys() == grads_g.keys()
    for name in grads_c:
        assert_allclose(grads_g[name], grads_c[name], rtol=rtol, atol=rtol, err_msg=name)


def gpt(dtype="float64", vocab=37):
    cfg = GPTConfig(vocab_size=vocab, n_positions=48, n_embd=24, n_layer=2, n_head=3,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT(cfg, seed=1, dtype=dtype)


@pytest.mark.parametrize("attention", ["plain", "blockwise"])
@pytest.mark.parametrize("padded", [False, True])
def test_gpt_training_step_on_cupy_equals_numpy(attention, padded):
    cpu = gpt()
    gpu = on_gpu(cpu)
    for m in (cpu, gpu):
        m.set_attention(attention, block_size=7)
    ids = np.random.default_rng(0).integers(0, 37, (3, 41))
    batch = dict(input_ids=ids, labels=ids)
    if padded:
        mask = np.ones((3, 41), dtype=np.int64)
        mask[1, :9] = 0                                 # left padding
        batch["attention_mask"] = mask
    assert_same(run(cpu, **batch), run(gpu, **batch), 1e-10)


def test_gpt_float32_on_cupy_close_to_numpy():
    cpu = gpt("float32", vocab=257)
    gpu = on_gpu(cpu)
    ids = np.random.default_rng(1).integers(0, 257, (4, 48))
    c, g = run(cpu, input_ids=ids, labels=ids), run(gpu, input_ids=ids, labels=ids)
    assert g[0].logits.dtype == np.float32
    assert_same(c, g, 2e-4)


def test_gpu_gradients_repeat_bit_for_bit():
    # Repeated ids in the embedding backward: summed in a fixed order, not atomically.
    model = on_gpu(gpt("float32", vocab=5))
    ids = np.random.default_rng(2).integers(0, 5, (8, 48))
    first = run(model, input_ids=ids, labels=ids)[1]
    for _ in range(2):
        again = run(model, input_ids=ids, labels=ids)[1]
        for name in first:
            assert_array_equal(again[name], first[name], err_msg=name)


def test_clip_grad_norm_on_cupy_equals_numpy():
    from scratchlm.optim import clip_grad_norm

    cpu = gpt()
    ids = np.random.default_rng(5).integers(0, 37, (2, 20))
    run(cpu, input_ids=ids, labels=ids)
    gpu = on_gpu(cpu)                                   # the gradients move too
    norm_cpu = clip_grad_norm(cpu.parameters(), 0.5)
    norm_gpu = clip_grad_norm(gpu.parameters(), 0.5)
    assert isinstance(norm_gpu, float) and norm_gpu > 0.5
    assert norm_gpu == pytest.approx(norm_cpu, rel=1e-12)
    for (name, a), b in zip(cpu.named_parameters(), gpu.parameters()):
        assert_allclose(backend.to_numpy(b.grad), a.grad, rtol=1e-12, atol=1e-15, err_msg=name)


def bert_cfg():
    return BertConfig(vocab_size=41, hidden_size=24, num_hidden_layers=2,
                      num_attention_heads=3, intermediate_size=48, max_position_embeddings=40,
                      type_vocab_size=2, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0,
                      id2label={0: "A", 1: "B", 2: "C"})


def bert_batch(rng, B=3, T=29):
    ids = rng.integers(0, 41, (B, T))
    mask = np.ones((B, T), dtype=np.int64)
    mask[2, 20:] = 0                                    # right padding
    types = np.zeros((B, T), dtype=np.int64)
    types[:, 15:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def mlm_labels(rng, B=3, T=29):
    labels = np.full((B, T), -100)
    picked = rng.random((B, T)) < 0.3
    labels[picked] = rng.integers(0, 41, int(picked.sum()))
    labels[0, 3] = 5                                    # at least one counted target
    return labels


HEADS = {
    "pretraining": (BertForPreTraining, ("prediction_logits", "seq_relationship_logits"),
                    lambda rng: dict(labels=mlm_labels(rng),
                                     next_sentence_label=np.array([0, 1, 1]))),
    "masked_lm": (BertForMaskedLM, ("logits",), lambda rng: dict(labels=mlm_labels(rng))),
    "next_sentence": (BertForNextSentencePrediction, ("logits",),
                      lambda rng: dict(labels=np.array([1, 0, 1]))),
    "sequence_classification": (BertForSequenceClassification, ("logits",),
                                lambda rng: dict(labels=np.array([2, 0, 1]))),
    "token_classification": (BertForTokenClassification, ("logits",),
                             lambda rng: dict(labels=np.where(rng.random((3, 29)) < 0.2, -100,
                                                              rng.integers(0, 3, (3, 29))))),
    "question_answering": (BertForQuestionAnswering, ("start_logits", "end_logits"),
                           lambda rng: dict(start_positions=np.array([3, 17, 0]),
                                            end_positions=np.array([5, 19, 0]))),
}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_bert_heads_on_cupy_equal_numpy(head):
    cls, fields, labels = HEADS[head]
    cpu = cls(bert_cfg(), seed=2, dtype="float64")
    gpu = on_gpu(cpu)
    rng = np.random.default_rng(3)
    batch = {**bert_batch(rng), **labels(rng)}
    assert_same(run(cpu, **batch), run(gpu, **batch), 1e-10, fields)


def test_out_of_range_ids_are_refused_on_cupy():
    # CuPy's take wraps an index past the end instead of raising: the model checks.
    gpu = on_gpu(gpt())
    cupy = backend.xp("cupy")
    bad = cupy.asarray([[1, 2, 37]])
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, 37\); got max value 37"):
        gpu(bad)
    good = cupy.asarray([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 37\) or -100; got max value 40"):
        gpu(good, labels=cupy.asarray([[1, 40, 2]]))
    bert = on_gpu(BertForSequenceClassification(bert_cfg(), seed=0))
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, 41\); got min value -1"):
        bert(cupy.asarray([[0, -1, 2]]))


def test_dropout_training_is_reproducible_on_cupy():
    cfg = GPTConfig(vocab_size=37, n_positions=32, n_embd=24, n_layer=2, n_head=3)
    ids = np.random.default_rng(4).integers(0, 37, (2, 32))
    losses = []
    for _ in range(2):
        backend.set_backend("cupy")
        model = GPT(cfg, seed=5).train()                # made on the GPU, dropout 0.1
        assert backend.is_cupy_array(model.wte.weight.data)
        losses.append([float(model(ids, labels=ids).loss) for _ in range(3)])
        model.clear_caches()
    assert losses[0] == losses[1]
    assert len(set(losses[0])) == 3                     # a new dropout mask each call


def trainer(tmp_path, steps, seed=0):
    backend.set_backend("cupy")
    tokens = np.random.default_rng(123).integers(0, 31, 2000)
    cfg = GPTConfig(vocab_size=31, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    args = TrainingArguments(out_dir=str(tmp_path), max_steps=steps, eval_interval=5,
                             log_interval=1, warmup_steps=3, learning_rate=3e-3,
                             progress=False, seed=seed)
    return Trainer(GPT(cfg, seed=seed), args, CausalLMBatches(tokens, 16, 4, seed=seed),
                   CausalLMBatches(tokens, 16, 4).fixed_batches(2))


def test_trainer_on_cupy_resumes_exactly(tmp_path):
    full = trainer(tmp_path / "full", 12)
    full.train()
    first = trainer(tmp_path / "cut", 12)
    step = first.train_step

    def interrupted():                                  # stop during step 8: the last
        if first.step == 7:                             # checkpoint is step 5's
            raise KeyboardInterrupt
        return step()

    first.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        first.train()
    resumed = trainer(tmp_path / "cut", 12, seed=99)
    resumed.load_checkpoint()
    assert resumed.step == 5
    resumed.train()

    def losses(t):
        return [r["loss"] for r in t.history if "loss" in r]

    assert losses(first)[:5] + losses(resumed) == losses(full)    # bit-identical
    ref = dict(full.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        assert backend.is_cupy_array(p.data), name
        assert_array_equal(backend.to_numpy(p.data), backend.to_numpy(ref[name].data),
                           err_msg=name)


def test_cli_train_and_generate_on_cupy(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scratchlm", "train", "--backend", "cupy", "--n-layer", "2",
           "--n-embd", "64", "--n-head", "4", "--block-size", "64", "--batch-size", "8",
           "--max-steps", "60", "--eval-interval", "30", "--warmup-steps", "5",
           "--sample-tokens", "20", "--no-progress", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend cupy" in done.stdout
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(vals) >= 2 and np.isfinite(vals).all() and vals[-1] < vals[0], vals
    gen = subprocess.run([sys.executable, "-m", "scratchlm", "generate", "--backend", "cupy",
                          "--checkpoint", str(out), "--prompt", "The ", "--max-new-tokens", "30",
                          "--seed", "1"], capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert gen.stdout.startswith("The ") and len(gen.stdout) >= 30
