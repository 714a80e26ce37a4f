"""Training runs for tests/test_distributed.py, started under ``mpirun -n N`` (or alone).

    python tests/distributed_worker.py SCENARIO OUT_DIR [key=value ...]

Each rank writes what the test compares to OUT_DIR/rank<r>.json (losses, notes)
and OUT_DIR/rank<r>.npz (final weights). Without mpirun, the same code runs as
one process (no communicator), which is the reference.
"""

import json
import os
import sys

import numpy as np

from scratchlm.backend import to_numpy
from scratchlm.data import CausalLMBatches
from scratchlm.distributed import (
    DEFAULT_BUCKET_MB, DataParallel, DistributedError, ShardedBatches, init_distributed,
    shard_batch)
from scratchlm.models import GPT, GPTConfig
from scratchlm.train import Trainer, TrainingArguments

VOCAB, BLOCK = 31, 16


def make_trainer(out, dist, *, batch=2, accum=1, steps=6, dtype="float64", dropout=0.0,
                 lr=3e-3, seed=0, eval_interval=3, bucket_mb=DEFAULT_BUCKET_MB):
    """A tiny GPT on random tokens; ``batch`` rows per rank (the global batch is N * batch).

    ``dist``: a Communicator (data parallel over its ranks) or None (one process).
    """
    world = 1 if dist is None else dist.world_size
    rank = 0 if dist is None else dist.rank
    tokens = np.random.default_rng(123).integers(0, VOCAB, 3000)
    cfg = GPTConfig(vocab_size=VOCAB, n_positions=BLOCK, n_embd=16, n_layer=2, n_head=2,
                    resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    model = GPT(cfg, seed=seed, dtype=dtype)
    args = TrainingArguments(out_dir=str(out), max_steps=steps, grad_accum_steps=accum,
                             eval_interval=eval_interval, log_interval=1, warmup_steps=2,
                             learning_rate=lr, progress=False, seed=seed)
    train = CausalLMBatches(tokens, BLOCK, batch * world, seed=seed)
    evals = CausalLMBatches(tokens, BLOCK, batch * world).fixed_batches(2)
    parallel = None
    if dist is not None:
        train = ShardedBatches(train, rank, world)
        evals = [shard_batch(b, rank, world) for b in evals]
        parallel = DataParallel(dist, bucket_mb=bucket_mb)
    return Trainer(model, args, train, evals, parallel=parallel)


def attach_without_setup(trainer, dist):
    """Make a one-process trainer data-parallel with no collective yet (no set-up checks)."""
    parallel = DataParallel(dist)
    parallel.reducer = dist.gradient_reducer(trainer.model)
    trainer.parallel = parallel
    return parallel


def losses(trainer):
    return [r["loss"] for r in trainer.history if "loss" in r]


def val_losses(trainer):
    return [r["val_loss"] for r in trainer.history if "val_loss" in r]


def save(out, rank, trainer=None, **notes):
    os.makedirs(out, exist_ok=True)
    if trainer is not None:
        notes.update(losses=losses(trainer), val_losses=val_losses(trainer))
        np.savez(os.path.join(out, f"rank{rank}.npz"),
                 **{k: to_numpy(v) for k, v in trainer.model.state_dict().items()})
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(notes, f)


def run(scenario, out, dist, **kw):
    rank = 0 if dist is None else dist.rank
    if scenario == "train":                      # plain training; the equivalence tests
        steps_only = kw.pop("steps_only", 0)     # no checkpoints: the optimizer steps alone
        trainer = make_trainer(os.path.join(out, "run"), dist, **kw)
        if steps_only:
            for _ in range(trainer.args.max_steps):
                trainer._log(trainer.train_step())
            trainer._log(trainer.evaluate())
        else:
            trainer.train()
        reducer = getattr(trainer.parallel, "reducer", None)
        save(out, rank, trainer, buckets=reducer.describe() if reducer else [],
             nbytes=reducer.nbytes if reducer else 0)
    elif scenario == "resume":                   # interrupted and resumed vs straight through
        full = make_trainer(os.path.join(out, "full"), dist, dropout=0.1, steps=8,
                            eval_interval=4, **kw)
        full.train()
        cut = make_trainer(os.path.join(out, "cut"), dist, dropout=0.1, steps=8,
                           eval_interval=4, **kw)
        step = cut.train_step

        def interrupted():                       # every rank stops during step 7
            if cut.step == 6:
                raise KeyboardInterrupt
            return step()

        cut.train_step = interrupted
        try:
            cut.train()
        except KeyboardInterrupt:
            pass
        resumed = make_trainer(os.path.join(out, "cut"), dist, dropout=0.1, steps=8,
                               eval_interval=4, seed=5, **kw)
        resumed.train(resume=True)
        save(out, rank, resumed, full=losses(full), first=losses(cut)[:4],
             resumed=losses(resumed),
             same_weights=all(np.array_equal(to_numpy(a), to_numpy(b)) for a, b in zip(
                 full.model.state_dict().values(), resumed.model.state_dict().values())))
    elif scenario == "disagree":                 # rank 1 asks for another learning rate
        try:
            make_trainer(os.path.join(out, "run"), dist, lr=3e-3 if rank == 0 else 1e-3)
            save(out, rank, error=None)
        except DistributedError as exc:
            save(out, rank, error=str(exc))
    elif scenario == "other_checkpoint":         # rank 1 resumes from a different checkpoint
        trainer = make_trainer(os.path.join(out, "a"), dist, steps=3)
        trainer.train()
        if rank == 1:                            # its own copy, one weight changed
            import shutil

            from scratchlm.safetensors_io import read_safetensors, write_safetensors
            mine = os.path.join(out, "b", "checkpoint")
            shutil.copytree(os.path.join(out, "a", "checkpoint"), mine)
            weights = read_safetensors(os.path.join(mine, "model.safetensors"))
            weights["wte.weight"][0, 0] += 1e-3
            write_safetensors(os.path.join(mine, "model.safetensors"), weights)
        dist.barrier()
        again = make_trainer(os.path.join(out, "a"), dist, steps=6)
        try:
            again.load_checkpoint(os.path.join(out, "a" if rank == 0 else "b", "checkpoint"))
            save(out, rank, error=None)
        except DistributedError as exc:
            save(out, rank, error=str(exc))
    elif scenario == "dead":                     # rank 1 leaves before the first step
        if rank == 1:
            save(out, rank, note="leaving")
            return
        trainer = make_trainer(os.path.join(out, "run"), None)   # no collectives yet
        dist.timeout = float(kw.get("timeout", 2.0))
        attach_without_setup(trainer, dist)
        try:
            trainer.train()
            save(out, rank, error=None)
        except DistributedError as exc:
            save(out, rank, error=str(exc))
            dist.abort(3)                        # what scratchlm train does after an error
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


def parse(items):
    kw = {}
    for item in items:
        key, value = item.split("=", 1)
        kw[key] = value if key == "dtype" else (float(value) if "." in value else int(value))
    return kw


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    run(scenario, out, init_distributed(timeout=60), **parse(sys.argv[3:]))
