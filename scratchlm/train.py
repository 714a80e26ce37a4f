"""The training loop: steps, evaluation, metrics, checkpoints that resume exactly.

One optimizer step:

    for each of the grad_accum_steps micro-batches:
        out = model(**batch)                 forward, caches kept (train mode)
        model.backward(1 / grad_accum_steps) gradients add up over micro-batches
    (data parallel: average the gradients over the processes)
    clip the global gradient norm
    set the learning rate for this step (warmup, then cosine or linear decay)
    optimizer.step(); model.zero_grad()

A checkpoint holds everything the next step depends on: the weights, the
optimizer's moments and step counts, the step number, and the states of the
two random generators (dropout masks, batch positions). Resuming from it gives
the same losses, bit for bit, as a run that was never interrupted. Checkpoints
are written to a temporary directory, fsynced, then renamed into place, so an
interruption at any moment leaves the last good checkpoint intact.

Resuming also trims ``metrics.jsonl`` back to the checkpoint's step, so the
steps replayed after it are logged once and the file reads as one run.

Several processes (data parallel) plug in through one seam, ``parallel=``: an
object with the hooks of ``SingleProcess`` below, which the loop calls at
fixed points (after backward, when it logs, evaluates, saves and resumes).
For one process each hook does nothing. ``scratchlm.distributed.DataParallel``
implements them over MPI: each process runs the micro-batches of its own shard,
the hooks average the gradients and the logged numbers over the processes, and
only the main process writes metrics, checkpoints and the progress bar.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from scratchlm import backend
from scratchlm.backend import to_numpy
from scratchlm.optim import AdamW, clip_grad_norm, lr_at_step, param_groups_for_decay
from scratchlm.safetensors_io import read_safetensors, write_safetensors

CHECKPOINT_DIR = "checkpoint"


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss, say); the message says why."""


@dataclass
class TrainingArguments:
    """Settings of one training run (names as in transformers' TrainingArguments where they exist)."""

    out_dir: str = "out"
    max_steps: int = 1000
    grad_accum_steps: int = 1         # micro-batches per optimizer step
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1         # the decay ends at learning_rate * min_lr_ratio
    warmup_steps: int = 100
    lr_schedule: str = "cosine"       # "cosine", "linear" or "constant"
    weight_decay: float = 0.1         # not applied to biases and LayerNorm weights
    betas: tuple = (0.9, 0.99)
    max_grad_norm: float | None = 1.0
    eval_interval: int = 100          # steps between evaluations (and checkpoints)
    eval_batches: int = 8
    log_interval: int = 10
    seed: int = 0
    progress: bool = True             # a tqdm bar on stderr
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("max_steps", "grad_accum_steps", "eval_interval", "eval_batches",
                     "log_interval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainingArguments: {name} must be a positive integer; "
                                 f"got {v!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainingArguments: learning_rate must be > 0; "
                             f"got {self.learning_rate}")
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise ValueError("TrainingArguments: lr_schedule must be 'cosine', 'linear' or "
                             f"'constant'; got {self.lr_schedule!r}")


class SingleProcess:
    """The Trainer's parallel hooks for one process: each one does nothing.

    The Trainer calls these at fixed points of its loop. A data-parallel
    strategy (``scratchlm.distributed.DataParallel``) implements the same
    methods with collectives over its processes (*ranks*); the comments say
    what each is for there.
    """

    rank, world_size, is_main = 0, 1, True  # is_main: writes metrics and checkpoints

    def setup(self, trainer):
        """Once, in Trainer.__init__ (there: agree on the set-up, share rank 0's weights)."""

    def before_last_backward(self):
        """The step's last micro-batch is about to run backward (there: start all-reduces)."""

    def average_gradients(self, step):
        """After that backward, before clipping (there: every ``.grad`` <- the mean over ranks)."""

    def average_loss(self, loss, tokens):
        """The step's loss and token count, as logged (there: mean loss, summed tokens)."""
        return loss, tokens

    def average_evaluation(self, val_loss, sums, counts):
        """The evaluation's mean loss, metric sums and counts (there: over every shard)."""
        return val_loss, sums, counts

    def gather_rng_states(self, model, rng_state, step):
        """Before a checkpoint: every process's dropout state, in rank order."""
        return [rng_state]

    def after_save(self, step):
        """After the checkpoint of ``step`` is in place (there: the other ranks wait for it)."""

    def check_resume(self, directory, state):
        """Before resuming from ``directory`` (there: every rank read the same checkpoint)."""


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Trainer:
    """Train a model with a loss (GPT with labels, BERT pre-training, task heads)."""

    def __init__(self, model, args: TrainingArguments, train_batches, eval_batches=None,
                 optimizer=None, on_save=None, metrics_fn=None, parallel=None,
                 eval_fn=None):
        """
        Args:
            model: a scratchlm model whose forward returns ``.loss`` given a batch dict.
            train_batches: an object with ``next_batch() -> dict`` of model inputs, and
                ``state_dict()`` / ``load_state_dict()`` for resume.
            eval_batches: a list of batch dicts (the same ones at every evaluation).
            optimizer: default AdamW over two groups, no decay on biases and LayerNorm.
            on_save: optional ``callback(directory)``, called after each checkpoint
                (e.g. to write the tokenizer beside it).
            metrics_fn: optional ``metrics_fn(batch, output) -> dict`` of numbers,
                averaged over the evaluation batches (accuracy, say).
            eval_fn: optional ``eval_fn(model) -> dict`` of numbers over the whole
                evaluation set, at the end of each evaluation (a corpus-level metric:
                BLEU of translations, say); logged as ``val_<name>``.
            parallel: the hooks for training over several processes, default
                ``SingleProcess()``. For data parallel,
                ``scratchlm.distributed.DataParallel(comm)``; then train_batches and
                eval_batches are this rank's shards (``distributed.ShardedBatches``,
                ``shard_batch``).
        """
        self.model, self.args = model, args
        self.train_batches, self.eval_batches = train_batches, eval_batches
        self.optimizer = optimizer or AdamW(
            param_groups_for_decay(model, args.weight_decay), lr=args.learning_rate,
            betas=tuple(args.betas), flat=True)     # one update over flat buffers
        self.on_save = on_save
        self.metrics_fn = metrics_fn
        self.eval_fn = eval_fn
        self.step = 0
        self.history: list[dict] = []
        self.parallel = SingleProcess() if parallel is None else parallel
        self.parallel.setup(self)
        if self.is_main:
            os.makedirs(args.out_dir, exist_ok=True)
        self.metrics_path = os.path.join(args.out_dir, "metrics.jsonl")

    @property
    def is_main(self):
        """True in the process that writes metrics, checkpoints and the progress bar."""
        return self.parallel.is_main

    # --- one step ----------------------------------------------------------
    def lr_at(self, step):
        a = self.args
        return lr_at_step(step, a.learning_rate, a.max_steps, warmup_steps=a.warmup_steps,
                          schedule=a.lr_schedule, min_lr_ratio=a.min_lr_ratio)

    def train_step(self):
        """One optimizer step over grad_accum_steps micro-batches; returns its metrics."""
        model, n = self.model, self.args.grad_accum_steps
        model.train()
        loss_sum, tokens = 0.0, 0
        for i in range(n):
            batch = self.train_batches.next_batch()
            out = model(**batch)
            if i == n - 1:
                self.parallel.before_last_backward()
            model.backward(1.0 / n)                     # the mean over micro-batches
            loss_sum += float(out.loss) / n
            tokens += int(np.size(batch["input_ids"]))
        self.parallel.average_gradients(self.step + 1)  # data parallel: the mean over ranks
        loss_sum, tokens = self.parallel.average_loss(loss_sum, tokens)
        if not math.isfinite(loss_sum):
            model.zero_grad()
            raise TrainingError(
                f"loss became {loss_sum} at step {self.step + 1}; stopping. The last good "
                f"checkpoint is in {os.path.join(self.args.out_dir, CHECKPOINT_DIR)} "
                "(try a lower --lr)")
        grad_norm = clip_grad_norm(model.parameters(), self.args.max_grad_norm)
        lr = self.lr_at(self.step)
        self.optimizer.lr = lr
        self.optimizer.step()
        model.zero_grad()
        self.step += 1
        return {"step": self.step, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
                "tokens": tokens}

    def evaluate(self):
        """Mean loss over the fixed evaluation batches, its perplexity, and metrics_fn's values."""
        if not self.eval_batches:
            return {}
        self.model.eval()
        losses, extra = [], {}
        for batch in self.eval_batches:
            out = self.model(**batch)
            losses.append(float(out.loss))
            if self.metrics_fn is not None:
                for k, v in self.metrics_fn(batch, out).items():
                    extra.setdefault(k, []).append(float(v))
        val_loss = float(np.mean(losses))
        # A metric undefined on a batch (NaN: an accuracy over no counted tokens) is left out.
        keys = list(extra)
        sums = [float(np.nansum(extra[k])) for k in keys]
        counts = [float(np.sum(~np.isnan(extra[k]))) for k in keys]
        val_loss, sums, counts = self.parallel.average_evaluation(val_loss, sums, counts)
        means = {k: float(s / c) if c else float("nan") for k, s, c in zip(keys, sums, counts)}
        if self.eval_fn is not None:
            means.update({k: float(v) for k, v in self.eval_fn(self.model).items()})
        return {"step": self.step, "val_loss": val_loss,
                "val_ppl": float(math.exp(min(val_loss, 700.0))),
                **{f"val_{k}": v for k, v in means.items()}}

    # --- the loop ----------------------------------------------------------
    def train(self, resume: bool = False):
        """Run until max_steps; returns the last evaluation's metrics (or the last step's)."""
        args = self.args
        if resume:
            self.load_checkpoint()
        bar = None
        if args.progress and self.is_main:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=args.max_steps, initial=self.step, desc="train", unit="step",
                       dynamic_ncols=True)
        last_eval, t0, window_tokens = {}, time.perf_counter(), 0
        try:
            while self.step < args.max_steps:
                m = self.train_step()
                window_tokens += m["tokens"]
                if bar is not None:
                    bar.update(1)
                if self.step % args.log_interval == 0 or self.step == args.max_steps:
                    elapsed = time.perf_counter() - t0
                    m["tokens_per_s"] = window_tokens / elapsed if elapsed > 0 else 0.0
                    t0, window_tokens = time.perf_counter(), 0
                    self._log(m)
                    if bar is not None:
                        bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}",
                                        tok_s=f"{m['tokens_per_s']:.0f}")
                if self.step % args.eval_interval == 0 or self.step == args.max_steps:
                    last_eval = self.evaluate()
                    if last_eval:
                        self._log(last_eval)
                        if bar is not None:
                            bar.set_postfix(loss=f"{m['loss']:.4f}",
                                            val_loss=f"{last_eval['val_loss']:.4f}")
                    self.save_checkpoint()
                    t0 = time.perf_counter()            # don't count eval/save as training
        finally:
            if bar is not None:
                bar.close()
        return last_eval or (self.history[-1] if self.history else {})

    def _log(self, record):
        self.history.append(record)
        if not self.is_main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # --- checkpoints ---------------------------------------------------------
    def save_checkpoint(self):
        """Write model, optimizer, step and RNG states to out_dir/checkpoint, atomically.

        With several processes, the main one writes and the others wait for it.
        """
        final = os.path.join(self.args.out_dir, CHECKPOINT_DIR)
        model_rng, rng = _rng_checkpoint(self.model.rng)
        if rng is not self.model.rng:                   # reseeded (CuPy): go on with it
            self.model.set_rng(rng)
        rngs = self.parallel.gather_rng_states(self.model, model_rng, self.step)
        if self.is_main:
            self._write_checkpoint(final, model_rng, rngs)
        self.parallel.after_save(self.step)
        return final

    def _write_checkpoint(self, final, model_rng, rngs):
        """The files of a checkpoint, written beside ``final`` and renamed into place."""
        tmp, old = final + ".tmp", final + ".old"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        write_safetensors(os.path.join(tmp, "model.safetensors"),
                          {k: to_numpy(v) for k, v in self.model.state_dict().items()})
        opt_state = self.optimizer.state_dict()
        arrays, scalars = {}, {}
        for index, entry in opt_state["state"].items():
            for k, v in entry.items():
                if hasattr(v, "shape"):
                    arrays[f"{index}.{k}"] = to_numpy(v)
                else:
                    scalars[f"{index}.{k}"] = v
        write_safetensors(os.path.join(tmp, "optimizer.safetensors"), arrays)
        state = {
            "step": self.step,
            "optimizer_scalars": scalars,
            "optimizer_groups": opt_state["param_groups"],
            "model_rng": model_rng,
            "data": self.train_batches.state_dict(),
            "world_size": self.parallel.world_size,
            **({"model_rng_per_rank": rngs} if len(rngs) > 1 else {}),
            "args": {k: v for k, v in asdict(self.args).items()},
        }
        path = os.path.join(tmp, "trainer_state.json")
        with open(path, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if self.on_save is not None:
            self.on_save(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(final):
            os.replace(final, old)                      # keep the last good one ...
        os.replace(tmp, final)                          # ... until the new one is in place
        _fsync_dir(self.args.out_dir)
        shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, directory=None):
        """Restore everything saved by save_checkpoint (default: out_dir/checkpoint).

        The metrics logged after the checkpoint's step (by the run that was
        interrupted) are dropped, since this run logs those steps again.
        """
        directory = directory or os.path.join(self.args.out_dir, CHECKPOINT_DIR)
        if not os.path.isdir(directory) and os.path.isdir(directory + ".old"):
            directory += ".old"                         # interrupted between the two renames
        state_path = os.path.join(directory, "trainer_state.json")
        if not os.path.exists(state_path):
            raise FileNotFoundError(f"resume: no checkpoint at {directory} "
                                    "(train without --resume first)")
        with open(state_path) as f:
            state = json.load(f)
        saved, world = int(state.get("world_size", 1)), self.parallel.world_size
        if saved != world:
            raise ValueError(f"resume: the checkpoint in {directory} was written by a run of "
                             f"{saved} rank(s), this run has {world}; resume with the same "
                             f"number (mpirun -n {saved} ...), since the global batch and "
                             "the dropout streams depend on it")
        self.parallel.check_resume(directory, state)
        self.model.load_state_dict(read_safetensors(os.path.join(directory, "model.safetensors")))
        arrays = read_safetensors(os.path.join(directory, "optimizer.safetensors"))
        opt_state: dict = {}
        for key, v in list(arrays.items()) + list(state["optimizer_scalars"].items()):
            index, name = key.split(".", 1)
            opt_state.setdefault(int(index), {})[name] = v
        self.optimizer.load_state_dict({"state": opt_state,
                                        "param_groups": state["optimizer_groups"]})
        rngs = state.get("model_rng_per_rank")
        _restore_rng(self.model, rngs[self.parallel.rank] if rngs else state["model_rng"])
        self.train_batches.load_state_dict(state["data"])
        self.step = int(state["step"])
        self._forget_metrics_after(self.step)
        return state

    def _forget_metrics_after(self, step):
        """Drop logged records of steps after ``step``; metrics.jsonl is rewritten atomically."""
        self.history = [r for r in self.history if r.get("step", 0) <= step]
        if not self.is_main or not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path) as f:
            lines = f.readlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:                          # cut short when a run was killed
                continue
            if record.get("step", 0) <= step:
                kept.append(line.rstrip("\n") + "\n")
        if kept == lines:
            return
        tmp = self.metrics_path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.metrics_path)              # the old file or the new, never half


def _is_cupy_generator(rng):
    return type(rng).__module__.split(".")[0] == "cupy"


def _rng_checkpoint(rng):
    """The dropout generator as a checkpoint keeps it: (state to save, generator to go on with).

    A NumPy Generator's state is a small dict, saved as it is. A CuPy
    Generator keeps its state in device memory, which no public call reads or
    writes; so the run goes on from a new generator, seeded with a number
    drawn from the old one, and the checkpoint keeps that seed: a run resumed
    from the checkpoint draws exactly what this run draws after it.
    """
    if rng is None:
        return None, None
    if _is_cupy_generator(rng):
        seed = int(rng.integers(0, 2 ** 63 - 1))
        return {"cupy_seed": seed}, backend.default_rng(seed, "cupy")
    return rng.bit_generator.state, rng


def _restore_rng(model, state):
    """Set the model's dropout generator to a state saved by _rng_checkpoint."""
    if model.rng is None or state is None:
        return
    on_gpu = _is_cupy_generator(model.rng)
    if "cupy_seed" in state:                            # saved by a run on the GPU
        model.set_rng(backend.default_rng(state["cupy_seed"], "cupy" if on_gpu else "numpy"))
    elif on_gpu:                                        # a CPU run's state, resumed on the GPU:
        cpu = np.random.default_rng()                   # a GPU stream seeded from it
        cpu.bit_generator.state = state
        model.set_rng(backend.default_rng(int(cpu.integers(0, 2 ** 63 - 1)), "cupy"))
    else:
        model.rng.bit_generator.state = state


def plot_losses(metrics_path, png_path):
    """Draw train and validation loss from a metrics JSONL file; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    train, val = [], []
    with open(metrics_path) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                train.append((r["step"], r["loss"]))
            if "val_loss" in r:
                val.append((r["step"], r["val_loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True
