"""Distillation: the student built from the teacher's layers, the combined loss and its
gradients (finite differences in float64, every task), the frozen teacher, the Trainer's
exact resume, the data of the three tasks and the ``scratchlm distill`` command."""

import json

import numpy as np
import pytest

from scratchlm import distill as D
from scratchlm.cli import main
from scratchlm.data import CausalLMBatches, builtin_corpus
from scratchlm.models import GPT, BertConfig, BertForMaskedLM, GPTConfig
from scratchlm.tokenizers import CharTokenizer, WordPieceTokenizer
from scratchlm.train import TrainingArguments


def tiny_gpt(n_layer=4, n_embd=8, dropout=0.0, seed=0, dtype="float64", vocab=23):
    cfg = GPTConfig(vocab_size=vocab, n_positions=12, n_embd=n_embd, n_layer=n_layer, n_head=2,
                    resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                    bos_token_id=0, eos_token_id=0)
    return GPT(cfg, seed=seed, dtype=dtype)


def tiny_bert(cls, n_layer=4, seed=0, dtype="float64"):
    cfg = BertConfig(vocab_size=29, hidden_size=8, num_hidden_layers=n_layer,
                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=12,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).with_num_labels(3)
    return cls(cfg, seed=seed, dtype=dtype)


def batch_for(task, B=3, T=7, seed=0, padded=True):
    rng = np.random.default_rng(seed)
    V = 23 if task == "clm" else 29
    ids = rng.integers(1, V, (B, T))
    batch = {"input_ids": ids}
    if task != "clm":
        mask = np.ones((B, T), dtype=np.int64)
        if padded:
            mask[0, T - 2:] = 0                         # a padded row
        batch["attention_mask"] = mask
        batch["token_type_ids"] = np.zeros((B, T), dtype=np.int64)
    if task == "clm":
        batch["labels"] = ids
    elif task == "mlm":
        labels = np.full((B, T), -100)
        labels[:, 1] = ids[:, 1]
        labels[1:, 3] = ids[1:, 3]
        batch["labels"] = labels
    else:
        batch["labels"] = rng.integers(0, 3, B)
    return batch


def pair(task, n_student=2, seed=1):
    """(student from the teacher's layers, teacher), float64, dropout 0."""
    teacher = tiny_gpt(seed=seed) if task == "clm" else tiny_bert(D.STUDENT_CLASS[task], seed=seed)
    student, _ = D.student_from_teacher(teacher, n_layer=n_student)
    rng = np.random.default_rng(seed)                   # students drift from their teacher
    for p in student.parameters():
        p.data += 0.05 * rng.standard_normal(p.shape)
    return student, teacher


# --- the student ---------------------------------------------------------------------

def test_evenly_spaced_layers():
    assert D.evenly_spaced_layers(12, 6) == [0, 2, 4, 7, 9, 11]    # DistilBERT's
    assert D.evenly_spaced_layers(6, 3) == [0, 3, 5]
    assert D.evenly_spaced_layers(4, 4) == [0, 1, 2, 3]
    assert D.evenly_spaced_layers(5, 1) == [0]
    with pytest.raises(ValueError, match="the student needs 1 to 4 layers"):
        D.evenly_spaced_layers(4, 5)


@pytest.mark.parametrize("kind", ["gpt", "bert"])
def test_student_copies_the_teachers_layers(kind):
    teacher = tiny_gpt(n_layer=5) if kind == "gpt" else tiny_bert(BertForMaskedLM, n_layer=5)
    student, layers = D.student_from_teacher(teacher, layers=[0, 2, 4])
    assert layers == [0, 2, 4] and student.training
    assert D.num_layers(student) == 3 and type(student) is type(teacher)
    prefix = "h" if kind == "gpt" else "bert.encoder.layer"
    t, s = teacher.state_dict(), student.state_dict()
    n_layer_params = 0
    for name, value in s.items():
        if name.startswith(prefix + "."):
            j, rest = name[len(prefix) + 1:].split(".", 1)
            np.testing.assert_array_equal(value, t[f"{prefix}.{[0, 2, 4][int(j)]}.{rest}"])
            n_layer_params += 1
        else:                                           # embeddings, final LayerNorm, heads
            np.testing.assert_array_equal(value, t[name])
    assert n_layer_params == 3 * len([k for k in t if k.startswith(prefix + ".0.")])
    # a copy, not a view: training the student leaves the teacher alone
    next(iter(student.parameters())).data += 1.0
    assert not np.array_equal(next(iter(student.parameters())).data,
                              next(iter(teacher.parameters())).data)


def test_student_from_scratch_and_errors():
    teacher = tiny_gpt(n_layer=4)
    student, layers = D.student_from_teacher(teacher, n_layer=2, from_scratch=True, seed=5)
    assert layers is None and student.config.n_layer == 2
    assert not np.array_equal(student.h[0].attn.c_attn.weight.data,
                              teacher.h[0].attn.c_attn.weight.data)
    _, layers = D.student_from_teacher(teacher)
    assert layers == [0, 3]                             # half, evenly spaced
    with pytest.raises(ValueError, match=r"layers must be indices in \[0, 4\)"):
        D.student_from_teacher(teacher, layers=[0, 4])
    with pytest.raises(ValueError, match="layers must be increasing"):
        D.student_from_teacher(teacher, layers=[2, 1])
    with pytest.raises(ValueError, match="not both"):
        D.student_from_teacher(teacher, layers=[0], n_layer=1)


# --- the loss weights ------------------------------------------------------------------

def test_config_defaults_are_distilberts():
    c = D.DistillationConfig("mlm")
    assert (c.temperature, c.alpha_ce, c.alpha_mlm, c.alpha_cos, c.alpha_mse) == \
        (2.0, 5.0, 2.0, 1.0, 0.0)
    assert (c.alpha_clm, c.alpha_task, c.alpha_hard) == (0.0, 0.0, 2.0)
    assert D.DistillationConfig("clm").alpha_clm == 2.0
    assert D.DistillationConfig("classify").alpha_task == 2.0
    assert not D.DistillationConfig("clm", alpha_ce=0, alpha_cos=0).uses_teacher
    with pytest.raises(ValueError, match="alpha_clm=1.0 does not apply to task 'mlm'"):
        D.DistillationConfig("mlm", alpha_clm=1.0)
    with pytest.raises(ValueError, match="every alpha is 0"):
        D.DistillationConfig("clm", alpha_ce=0, alpha_clm=0, alpha_cos=0)
    with pytest.raises(ValueError, match="alpha_cos must be a finite number >= 0"):
        D.DistillationConfig("clm", alpha_cos=-1.0)
    with pytest.raises(ValueError, match="restrict_ce_to_mask applies to task 'mlm' only"):
        D.DistillationConfig("clm", restrict_ce_to_mask=True)
    with pytest.raises(ValueError, match="task must be one of"):
        D.DistillationConfig("nli")


def test_distiller_refuses_mismatched_models():
    student, teacher = pair("clm")
    with pytest.raises(TypeError, match="task 'mlm' needs a BertForMaskedLM student"):
        D.Distiller(student, teacher, D.DistillationConfig("mlm"))
    narrow = tiny_gpt(n_layer=2, n_embd=4)
    with pytest.raises(ValueError, match="alpha_cos compares hidden states, which needs the "
                                         "teacher's width 8; the student has 4"):
        D.Distiller(narrow, teacher, D.DistillationConfig("clm"))
    D.Distiller(narrow, teacher, D.DistillationConfig("clm", alpha_cos=0))   # fine without it
    with pytest.raises(ValueError, match="soft targets need the teacher's 23 outputs"):
        D.Distiller(tiny_gpt(n_layer=1, vocab=19), teacher, D.DistillationConfig("clm"))


# --- the combined loss and its gradient ---------------------------------------------------

def combined_loss(dist, batch):
    """The combined loss of a training forward, its caches dropped (a probe, not a step)."""
    value = float(dist(**batch).loss)
    dist.clear_caches()
    return value


def check_gradients(dist, batch, seed=0, h=1e-5, rtol=1e-5, atol=1e-9):
    """Every student parameter: <grad, v> against the central difference along v."""
    rng = np.random.default_rng(seed)
    dist.train()
    dist.zero_grad()
    dist(**batch)
    dist.backward()
    teacher_before = {k: v.copy() for k, v in dist.teacher.state_dict().items()}
    for name, p in dist.named_parameters():
        v = rng.standard_normal(p.shape)
        analytic = float((p.grad * v).sum())
        orig = p.data.copy()
        p.data[...] = orig + h * v
        up = combined_loss(dist, batch)
        p.data[...] = orig - h * v
        down = combined_loss(dist, batch)
        p.data[...] = orig
        numeric = (up - down) / (2 * h)
        assert abs(analytic - numeric) <= atol + rtol * abs(numeric), \
            f"{name}: analytic {analytic}, numeric {numeric}"
    for k, v in dist.teacher.state_dict().items():       # the teacher: untouched, no gradient
        np.testing.assert_array_equal(v, teacher_before[k])
    assert all(not p.grad.any() for p in dist.teacher.parameters())


@pytest.mark.parametrize("task, extra", [
    ("clm", {}),
    ("clm", {"alpha_mse": 0.5, "temperature": 3.0}),
    ("mlm", {"alpha_mse": 0.5}),
    ("mlm", {"restrict_ce_to_mask": True, "alpha_mse": 0.3}),
    ("classify", {"alpha_mse": 0.5}),
    ("classify", {"alpha_ce": 0.0, "alpha_task": 0.0, "alpha_mse": 0.0}),   # cosine alone
])
def test_distiller_gradients(task, extra):
    student, teacher = pair(task)
    dist = D.Distiller(student, teacher, D.DistillationConfig(task, **extra))
    check_gradients(dist, batch_for(task))


@pytest.mark.parametrize("task", ["clm", "mlm", "classify"])
def test_hard_loss_alone_is_the_students_own(task):
    # alpha_ce = alpha_cos = 0, the task's weight 1: the Distiller's loss and gradients are
    # those of the student's own forward with labels (the causal shift included)
    student, teacher = pair(task)
    batch = batch_for(task)
    hard = D.HARD_LOSS[task]
    dist = D.Distiller(student, teacher, D.DistillationConfig(
        task, alpha_ce=0.0, alpha_cos=0.0, **{hard: 1.0}))
    dist.train()
    loss = float(dist(**batch).loss)
    dist.backward()
    grads = {k: p.grad.copy() for k, p in dist.named_parameters()}
    student.zero_grad()
    own = student(**D.model_inputs(student, batch), labels=batch["labels"])
    student.backward()
    assert loss == pytest.approx(float(own.loss), rel=1e-13)
    for k, p in student.named_parameters():
        np.testing.assert_allclose(grads[k], p.grad, rtol=1e-12, atol=1e-15, err_msg=k)


def test_without_teacher_terms_the_teacher_never_runs():
    student, teacher = pair("clm")

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher ran")

    object.__setattr__(teacher, "forward", refuse)
    dist = D.Distiller(student, teacher, D.DistillationConfig("clm", alpha_ce=0, alpha_cos=0))
    dist.train()
    dist(**batch_for("clm"))
    dist.backward()


def test_eval_mode_is_the_student_alone_with_its_task_loss():
    student, teacher = pair("mlm")
    batch = batch_for("mlm")
    dist = D.Distiller(student, teacher, D.DistillationConfig("mlm")).eval()
    out = dist(**batch)
    student.eval()
    own = student(**D.model_inputs(student, batch), labels=batch["labels"])
    assert float(out.loss) == pytest.approx(float(own.loss), rel=1e-13)
    np.testing.assert_array_equal(out.logits, own.logits)
    assert dist.student._cache is None                  # nothing cached in eval
    with pytest.raises(RuntimeError, match="no cached forward"):
        dist.backward()


def test_terms_and_parameters_are_the_students():
    student, teacher = pair("clm")
    dist = D.Distiller(student, teacher, D.DistillationConfig("clm", alpha_mse=1.0))
    assert [k for k, _ in dist.named_parameters()] == [k for k, _ in student.named_parameters()]
    assert list(dist.state_dict()) == list(student.state_dict())
    assert dist.rng is student.rng
    dist.train()
    out = dist(**batch_for("clm"))
    t = dist.last_terms
    assert set(t) == {"loss_clm", "loss_ce", "loss_cos", "loss_mse"}
    assert float(out.loss) == pytest.approx(2 * t["loss_clm"] + 5 * t["loss_ce"]
                                            + t["loss_cos"] + t["loss_mse"], rel=1e-12)
    assert dist.pop_terms() == pytest.approx(t) and dist.pop_terms() == {}


# --- the Trainer: steps, the frozen teacher, exact resume ------------------------------------

def _trainer(out_dir, max_steps, tokens, dropout=0.1):
    teacher = tiny_gpt(n_layer=3, dropout=dropout, seed=3, dtype="float32")
    student, _ = D.student_from_teacher(teacher, n_layer=2)
    dist = D.Distiller(student, teacher, D.DistillationConfig("clm", alpha_mse=0.5))
    args = TrainingArguments(out_dir=str(out_dir), max_steps=max_steps, learning_rate=3e-3,
                             warmup_steps=2, eval_interval=3, eval_batches=1, log_interval=1,
                             progress=False)
    evals = CausalLMBatches(tokens, 10, 2).fixed_batches(1)
    return D.DistillTrainer(dist, args, CausalLMBatches(tokens, 10, 4, seed=1), evals), teacher


def test_trainer_steps_leave_the_teacher_frozen(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 23, 400)
    trainer, teacher = _trainer(tmp_path, 3, tokens)
    before = {k: v.copy() for k, v in teacher.state_dict().items()}
    student_before = {k: v.copy() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert any(not np.array_equal(v, student_before[k])
               for k, v in trainer.model.state_dict().items())
    logged = [r for r in trainer.history if "loss" in r]
    assert {"loss_clm", "loss_ce", "loss_cos", "loss_mse"} <= set(logged[-1])


def test_distillation_resumes_exactly(tmp_path):
    # 6 steps straight, against 3 steps, a checkpoint, and a new process's worth of objects
    # resuming to 6: the same losses and weights, bit for bit (student dropout included)
    tokens = np.random.default_rng(0).integers(0, 23, 400)
    full, _ = _trainer(tmp_path / "full", 6, tokens)
    full.train()
    first, _ = _trainer(tmp_path / "resumed", 3, tokens)
    first.train()
    second, _ = _trainer(tmp_path / "resumed", 6, tokens)
    second.train(resume=True)
    losses = lambda tr: [(r["step"], r["loss"], r["loss_ce"]) for r in tr.history  # noqa: E731
                         if "loss" in r]
    assert losses(second) == losses(full)[3:]
    for k, v in full.model.state_dict().items():
        np.testing.assert_array_equal(second.model.state_dict()[k], v, err_msg=k)
    with open(tmp_path / "resumed" / "metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f if '"loss"' in line]
    assert steps == [1, 2, 3, 4, 5, 6]


# --- data and measurements ---------------------------------------------------------------

def test_task_data_and_evaluate(tmp_path):
    text = builtin_corpus()[:60000]
    wp = WordPieceTokenizer.train(text, 300)
    train, evals = D.mlm_batches(wp, text, 16, 2, eval_batches=2)
    b = train.next_batch()
    assert set(b) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert len(evals) == 2 and "next_sentence_label" not in evals[0]
    bert = BertForMaskedLM(BertConfig(vocab_size=wp.vocab_size, hidden_size=8,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=16, max_position_embeddings=16))
    r = D.evaluate(bert, "mlm", evals)
    counted = sum(int((e["labels"] != -100).sum()) for e in evals)
    assert r["targets"] == counted and r["metric"] == "mlm_accuracy"
    assert abs(r["loss"] - np.log(wp.vocab_size)) < 0.5  # an untrained model: about log V

    ch = CharTokenizer.train(text)
    train, evals = D.clm_batches(ch, text, 10, 2, eval_batches=1)
    assert set(train.next_batch()) == {"input_ids", "labels"}
    gpt = tiny_gpt(n_layer=1, vocab=ch.vocab_size, dtype="float32")
    r = D.evaluate(gpt, "clm", evals)
    assert r["targets"] == 2 * 9 and r["perplexity"] == pytest.approx(np.exp(r["loss"]))
    gpt.train()
    own = gpt(evals[0]["input_ids"], labels=evals[0]["labels"])
    assert r["loss"] == pytest.approx(float(own.loss), rel=1e-5)   # the same shifted CE
    speed = D.throughput(gpt, evals[0], steps=1, warmup=0)
    assert speed["tokens"] == evals[0]["input_ids"].size == 20
    assert speed["train_tokens_per_s"] > 0 and speed["inference_tokens_per_s"] > 0

    rows = "sentence\tlabel\n" + "".join(f"word{i} and more words\t{'ab'[i % 2]}\n"
                                         for i in range(10))
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text(rows)
    train, evals = D.classify_batches(wp, str(tmp_path / "train.tsv"),
                                      str(tmp_path / "dev.tsv"), {"a": 0, "b": 1}, 16, 4)
    assert [len(e["labels"]) for e in evals] == [4, 4, 2]
    assert set(train.next_batch()) == {"input_ids", "token_type_ids", "attention_mask", "labels"}



# --- the command ---------------------------------------------------------------------------

def test_distill_command_and_resume(tmp_path, capsys):
    text = builtin_corpus()[:40000]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    tok = CharTokenizer.train(text)
    teacher = GPT(GPTConfig(vocab_size=tok.vocab_size, n_positions=16, n_embd=16, n_layer=3,
                            n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    tdir = tmp_path / "teacher"
    teacher.save_pretrained(tdir)
    tok.save_pretrained(tdir)
    out = tmp_path / "student"
    argv = ["distill", "--teacher", str(tdir), "--out", str(out), "--student-layers", "0,2",
            "--text", str(corpus), "--block-size", "16", "--batch-size", "2",
            "--max-steps", "4", "--eval-interval", "2", "--eval-batches", "1", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "from the teacher's layers [0, 2]" in printed and "teacher " in printed
    student = GPT.from_pretrained(out)
    assert student.config.n_layer == 2
    report = json.loads((out / "distill_report.json").read_text())
    assert report["steps"] == 4 and report["student"]["parameters"] == student.num_parameters()
    assert report["teacher"]["layers"] == 3 and report["task"] == "clm"
    assert main(argv[:-7] + ["--max-steps", "6", "--resume", "--no-compare",
                             "--no-progress"]) == 0
    assert "step 6" in capsys.readouterr().out
    # errors name the flag
    assert main(["distill", "--teacher", str(tmp_path), "--out", str(out)]) == 1
    assert "--teacher: no config.json" in capsys.readouterr().err
    assert main(argv[:7] + ["--student-layers", "0,x"]) == 1
    assert "--student-layers: expected comma-separated layer indices" in capsys.readouterr().err
