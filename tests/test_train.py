"""The training loop: accumulation, clipping, schedules, resume, and the train command."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scratchlm.data import CausalLMBatches, builtin_corpus, train_val_split
from scratchlm.models import GPT, GPTConfig
from scratchlm.nn import Parameter
from scratchlm.optim import clip_grad_norm, lr_at_step, param_groups_for_decay
from scratchlm.train import SingleProcess, Trainer, TrainingArguments, TrainingError


def tiny_gpt(dtype="float64", dropout=0.0, seed=0):
    cfg = GPTConfig(vocab_size=31, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                    resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return GPT(cfg, seed=seed, dtype=dtype)


def grads(model):
    return {n: p.grad.copy() for n, p in model.named_parameters()}


def test_accumulated_micro_batches_equal_one_large_batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 31, (8, 12))
    big, small = tiny_gpt(), tiny_gpt()
    big.train()
    big(ids, labels=ids)
    big.backward()
    small.train()
    for half in (ids[:4], ids[4:]):                     # equal halves: mean of means
        small(half, labels=half)
        small.backward(0.5)
    g_big, g_small = grads(big), grads(small)
    for name in g_big:
        np.testing.assert_allclose(g_small[name], g_big[name], rtol=1e-10, atol=1e-13,
                                   err_msg=name)


def test_clip_grad_norm_scales_to_max_norm_and_returns_the_old_norm():
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros((2, 2)))
    a.grad[...] = [3.0, 0.0, 0.0]
    b.grad[...] = [[0.0, 4.0], [0.0, 0.0]]
    frozen = Parameter(np.zeros(2), requires_grad=False)
    frozen.grad[...] = 100.0                            # not counted, not scaled
    norm = clip_grad_norm([a, b, frozen], 1.0)
    assert norm == pytest.approx(5.0)
    new = math.sqrt(float((a.grad ** 2).sum() + (b.grad ** 2).sum()))
    assert new == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(a.grad, [3 / 5.000001, 0, 0], rtol=1e-12)
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(new)   # under the limit: unchanged
    np.testing.assert_array_equal(frozen.grad, [100.0, 100.0])


def test_lr_schedule_values():
    kw = dict(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at_step(0, 1.0, 110, **kw) == pytest.approx(0.1)
    assert lr_at_step(9, 1.0, 110, **kw) == pytest.approx(1.0)
    assert lr_at_step(10, 1.0, 110, **kw) == pytest.approx(1.0)
    assert lr_at_step(60, 1.0, 110, **kw) == pytest.approx(0.55)      # cosine midpoint
    assert lr_at_step(110, 1.0, 110, **kw) == pytest.approx(0.1)
    assert lr_at_step(60, 1.0, 110, schedule="linear", **kw) == pytest.approx(0.55)
    assert lr_at_step(35, 1.0, 110, schedule="linear", **kw) == pytest.approx(0.775)
    assert lr_at_step(50, 1.0, 110, schedule="constant", **kw) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_at_step(0, 1.0, 10, schedule="step")


def test_decay_groups_leave_out_biases_and_layernorm_weights():
    groups = param_groups_for_decay(tiny_gpt(), 0.1)
    decay = {n for n, _ in groups[0]["params"]}
    plain = {n for n, _ in groups[1]["params"]}
    assert "h.0.attn.c_attn.weight" in decay and "wte.weight" in decay
    assert "h.0.attn.c_attn.bias" in plain and "h.0.ln_1.weight" in plain
    assert "ln_f.weight" in plain and not decay & plain
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0


def _trainer(tmp_path, steps, seed=0, dropout=0.1, parallel=None, **kw):
    rng = np.random.default_rng(123)
    tokens = rng.integers(0, 31, 2000)
    model = tiny_gpt("float32", dropout=dropout, seed=seed)
    args = TrainingArguments(out_dir=str(tmp_path), max_steps=steps, eval_interval=5,
                             log_interval=1, warmup_steps=3, learning_rate=3e-3,
                             progress=False, seed=seed, **kw)
    batches = CausalLMBatches(tokens, 16, 4, seed=seed)
    return Trainer(model, args, batches, CausalLMBatches(tokens, 16, 4).fixed_batches(2),
                   parallel=parallel)


def _losses(trainer):
    return [r["loss"] for r in trainer.history if "loss" in r]


def _interrupted(out, steps=12):
    """A run stopped during step 8: the last checkpoint is the one of step 5."""
    first = _trainer(out, steps)
    step = first.train_step

    def interrupted():
        if first.step == 7:
            raise KeyboardInterrupt
        return step()

    first.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        first.train()
    return first


def test_resume_from_a_checkpoint_gives_identical_losses(tmp_path):
    full = _trainer(tmp_path / "full", 12)
    full.train()
    first = _interrupted(tmp_path / "cut")
    resumed = _trainer(tmp_path / "cut", 12, seed=99)   # a different init, overwritten
    resumed.load_checkpoint()
    assert resumed.step == 5
    resumed.train()
    assert _losses(first)[:5] + _losses(resumed) == _losses(full)   # bit-identical
    a = dict(full.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        np.testing.assert_array_equal(p.data, a[name].data, err_msg=name)


def test_a_resumed_run_logs_each_step_once(tmp_path):
    # The interrupted run logged steps 6 and 7 after its checkpoint of step 5, and was
    # killed while writing a row of step 8; the resumed run logs 6 onwards again.
    def rows(out):
        with open(out / "metrics.jsonl") as f:
            return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
                    for line in f]

    _trainer(tmp_path / "full", 12).train()
    _interrupted(tmp_path / "cut")
    assert [r["step"] for r in rows(tmp_path / "cut")][-3:] == [5, 6, 7]
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')                      # a row cut short by the kill
    resumed = _trainer(tmp_path / "cut", 12)
    resumed.train(resume=True)
    assert rows(tmp_path / "cut") == rows(tmp_path / "full")      # one run, step by step
    assert [r["step"] for r in resumed.history if "loss" in r] == list(range(6, 13))
    assert not os.path.exists(tmp_path / "cut" / "metrics.jsonl.tmp")


class RecordingHooks(SingleProcess):
    """The one-process hooks, noting when the Trainer calls each (and what it sees then)."""

    def __init__(self):
        self.calls = []

    def setup(self, trainer):
        self.trainer = trainer
        self.calls.append("setup")

    def _grad_norm(self):
        return math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum())
                             for p in self.trainer.model.parameters()))

    def before_last_backward(self):
        self.calls.append(f"before_last_backward (gradients {self._grad_norm() > 0})")

    def average_gradients(self, step):
        self.norm = self._grad_norm()
        self.calls.append(f"average_gradients {step}")

    def average_loss(self, loss, tokens):
        self.calls.append(f"average_loss {tokens}")
        return loss, tokens

    def average_evaluation(self, val_loss, sums, counts):
        self.calls.append("average_evaluation")
        return val_loss, sums, counts

    def gather_rng_states(self, model, rng_state, step):
        self.calls.append(f"gather_rng_states {step}")
        return [rng_state]

    def after_save(self, step):
        saved = os.path.exists(os.path.join(self.trainer.args.out_dir, "checkpoint"))
        self.calls.append(f"after_save {step} (saved {saved})")

    def check_resume(self, directory, state):
        self.calls.append(f"check_resume {state['step']}")


def test_the_parallel_hooks_are_called_at_fixed_points_of_the_loop(tmp_path):
    hooks = RecordingHooks()
    trainer = _trainer(tmp_path, 2, grad_accum_steps=2, parallel=hooks)
    m = trainer.train_step()
    assert m["grad_norm"] == pytest.approx(hooks.norm, rel=1e-6)    # averaged before clipping
    trainer.train()
    step = ["before_last_backward (gradients True)"]      # after the first micro-batch's
    assert hooks.calls == ["setup",
                           *step, "average_gradients 1", "average_loss 128",
                           *step, "average_gradients 2", "average_loss 128",
                           "average_evaluation", "gather_rng_states 2",
                           "after_save 2 (saved True)"]
    again = RecordingHooks()
    _trainer(tmp_path, 2, grad_accum_steps=2, parallel=again).load_checkpoint()
    assert again.calls == ["setup", "check_resume 2"]


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, 20)
    trainer.train()                                     # checkpoint at step 20
    before = open(tmp_path / "checkpoint" / "trainer_state.json").read()
    trainer.args.max_steps = 30
    trainer.model.wte.weight.data[...] = np.nan
    with pytest.raises(TrainingError, match="loss became nan at step 21"):
        trainer.train()
    assert open(tmp_path / "checkpoint" / "trainer_state.json").read() == before


def test_training_lowers_the_loss_on_the_builtin_corpus(tmp_path):
    from scratchlm.tokenizers import CharTokenizer

    train_text, val_text = train_val_split(builtin_corpus()[:60000])
    tok = CharTokenizer.train(train_text + val_text)
    ids = np.array(tok.encode(train_text))
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_positions=32, n_embd=32, n_layer=2,
                    n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT(cfg)
    evals = CausalLMBatches(np.array(tok.encode(val_text)), 32, 8).fixed_batches(4)
    args = TrainingArguments(out_dir=str(tmp_path), max_steps=80, eval_interval=80,
                             warmup_steps=10, learning_rate=5e-3, progress=False)
    trainer = Trainer(model, args, CausalLMBatches(ids, 32, 8), evals)
    before = trainer.evaluate()["val_loss"]
    after = trainer.train()["val_loss"]
    assert before > math.log(tok.vocab_size) - 0.5    # near uniform at the start
    assert after < before - 1.0, (before, after)


def _cli(out, *extra, steps=300):
    return [sys.executable, "-m", "scratchlm", "train", "--text", str(out.parent / "text.txt"),
            "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "16",
            "--batch-size", "4", "--max-steps", str(steps), "--eval-interval", "5",
            "--warmup-steps", "2", "--dropout", "0.1", "--sample-tokens", "0",
            "--no-progress", "--out", str(out), *extra]


def _cli_losses(out):
    with open(out / "metrics.jsonl") as f:
        rows = [r for r in map(json.loads, f) if "loss" in r]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), "a step logged twice"   # a resumed run reads as one
    return [r["loss"] for r in rows]


@pytest.mark.slow
def test_resume_after_the_process_is_killed_gives_identical_losses(tmp_path):
    (tmp_path / "text.txt").write_text(builtin_corpus()[:20000])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli(ref), check=True, env=env, capture_output=True, timeout=300)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(_cli(cut), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = cut / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            try:
                step = json.loads(state.read_text())["step"]
            except (ValueError, KeyError):
                step = 0
            if step >= 20:
                break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads(state.read_text())["step"]
    assert 20 <= saved < 300
    subprocess.run(_cli(cut, "--resume"), check=True, env=env, capture_output=True, timeout=300)
    assert _cli_losses(cut) == _cli_losses(ref)


def test_train_command_rejects_impossible_settings(tmp_path, capsys):
    from scratchlm.cli import main

    assert main(["train", "--n-embd", "30", "--n-head", "4", "--out", str(tmp_path)]) == 1
    assert "divisible" in capsys.readouterr().err
    assert main(["train", "--text", str(tmp_path / "missing.txt"), "--out",
                 str(tmp_path)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 1
    assert "no run to resume" in capsys.readouterr().err


class FakeCupyGenerator:
    """Stands for a CuPy Generator on the CPU: its type lives in the cupy package and it
    has no readable state (CuPy keeps it in device memory)."""
    __module__ = "cupy.random._generator"

    def __init__(self, seed):
        self.seed, self._g = seed, np.random.default_rng(seed)

    def integers(self, low, high):
        return self._g.integers(low, high)


def test_a_cupy_generator_is_checkpointed_as_a_seed_and_the_run_goes_on_from_it(monkeypatch):
    from scratchlm import backend, train

    monkeypatch.setattr(backend, "default_rng",
                        lambda seed, name=None: FakeCupyGenerator(seed) if name == "cupy"
                        else np.random.default_rng(seed))
    state, rng = train._rng_checkpoint(FakeCupyGenerator(7))
    expected = int(np.random.default_rng(7).integers(0, 2 ** 63 - 1))
    assert state == {"cupy_seed": expected} and json.loads(json.dumps(state)) == state
    assert isinstance(rng, FakeCupyGenerator) and rng.seed == expected
    model = tiny_gpt(dropout=0.1)
    model.set_rng(FakeCupyGenerator(0))
    train._restore_rng(model, state)                    # resumed on the GPU: the same stream
    assert isinstance(model.rng, FakeCupyGenerator) and model.rng.seed == expected
    assert model.h[1].attn.rng is model.rng
    cpu_state = np.random.default_rng(3).bit_generator.state
    train._restore_rng(model, cpu_state)                # a CPU run resumed on the GPU
    assert model.rng.seed == int(np.random.default_rng(3).integers(0, 2 ** 63 - 1))
    model.set_rng(np.random.default_rng(0))
    train._restore_rng(model, state)                    # a GPU run resumed on the CPU
    assert model.rng.integers(0, 100) == np.random.default_rng(expected).integers(0, 100)
    plain = np.random.default_rng(5)                    # NumPy: the state itself, same generator
    assert train._rng_checkpoint(plain) == (plain.bit_generator.state, plain)
