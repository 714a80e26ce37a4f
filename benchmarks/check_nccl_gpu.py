"""Check the NCCL gradient all-reduce on real GPUs: N ranks x batch B == 1 process x batch N*B.

    mpirun -n 2 python benchmarks/check_nccl_gpu.py     # two GPUs, one rank on each
    mpirun -n 1 python benchmarks/check_nccl_gpu.py     # one GPU: NCCL with a single rank

Every rank trains a tiny float64 GPT for a few AdamW steps on the cupy backend,
its gradients all-reduced by NCCL in several buckets; then each rank trains the
same model alone, with the global batch, and rank 0 prints the largest loss and
weight differences (rounding only: expect below 1e-12). NCCL needs a GPU of its
own for each rank, so with one GPU run one rank: the NCCL path (communicator,
stream, events, all-reduce) runs all the same, summing over one rank.
Exits with status 1 and a message when CuPy, a GPU, mpi4py or NCCL is missing.
"""

import os
import sys
import tempfile

import numpy as np

from scratchlm import backend, distributed
from scratchlm.data import CausalLMBatches
from scratchlm.models import GPT, GPTConfig
from scratchlm.train import Trainer, TrainingArguments

STEPS, BATCH, BLOCK, VOCAB = 5, 2, 16, 31


def train(dist, batch, out):
    """STEPS optimizer steps of a tiny GPT: this rank's losses, final weights (NumPy), buckets."""
    world = 1 if dist is None else dist.world_size
    tokens = np.random.default_rng(123).integers(0, VOCAB, 3000)
    cfg = GPTConfig(vocab_size=VOCAB, n_positions=BLOCK, n_embd=32, n_layer=3, n_head=2,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT(cfg, seed=0, dtype="float64")
    args = TrainingArguments(out_dir=out, max_steps=STEPS, warmup_steps=1,
                             learning_rate=3e-3, progress=False, seed=0)
    batches = CausalLMBatches(tokens, BLOCK, batch * world, seed=0)
    if dist is not None:
        batches = distributed.ShardedBatches(batches, dist.rank, world)
    trainer = Trainer(model, args, batches, [],             # several buckets, as in a larger
                      parallel=None if dist is None           # model
                      else distributed.DataParallel(dist, bucket_mb=0.05))
    losses = [trainer.train_step()["loss"] for _ in range(STEPS)]
    buckets = 0 if dist is None else len(trainer.parallel.reducer.buckets)
    return losses, backend.to_numpy(model.state_dict()), buckets


def main():
    if distributed.launched_world_size() is None:
        sys.exit("check_nccl_gpu: start it with mpirun, e.g. mpirun -n 2 python "
                 "benchmarks/check_nccl_gpu.py (one rank per GPU)")
    try:
        backend.set_backend("cupy")
        dist = distributed.init_distributed("cupy", timeout=120)
    except (RuntimeError, distributed.DistributedError) as exc:
        sys.exit(f"check_nccl_gpu: cannot use NCCL here: {exc}")
    n = dist.world_size
    with tempfile.TemporaryDirectory() as out:
        losses, weights, buckets = train(dist, BATCH, os.path.join(out, "ranks"))
        ref_losses, ref_weights, _ = train(None, n * BATCH, os.path.join(out, "one"))
    dist.check_agreement("the trained weights", distributed.fingerprint(weights.values()))
    loss_diff = max(abs(a - b) for a, b in zip(losses, ref_losses))
    weight_diff = max(float(np.abs(weights[k] - ref_weights[k]).max()) for k in weights)
    ok = loss_diff <= 1e-12 and weight_diff <= 1e-12
    if dist.is_main:
        print(f"{dist!r}, {buckets} buckets; {n} rank(s) x batch {BATCH} vs 1 process x "
              f"batch {n * BATCH}, float64, {STEPS} AdamW steps")
        for i, (a, b) in enumerate(zip(ref_losses, losses)):
            print(f"  step {i + 1}: loss {a:.16f} (1 process) {b:.16f} (NCCL) "
                  f"|diff| {abs(a - b):.1e}")
        print(f"max |loss diff| {loss_diff:.1e}, max |weight diff| {weight_diff:.1e}: "
              f"{'OK' if ok else 'MISMATCH'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
