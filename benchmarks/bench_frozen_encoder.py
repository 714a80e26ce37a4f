"""Time a fine-tuning step with the encoder frozen and with full fine-tuning.

    python benchmarks/bench_frozen_encoder.py [BERT_DIR] [--task classify|ner|qa]

The same model, batch and optimizer, steps alternated between the two
settings so that other work on the machine slows both alike. A frozen
encoder skips the encoder's backward (BertFor*.backward clears its caches
instead) and the optimizer skips its parameters. Without BERT_DIR a random
4-layer, 128-wide BERT is used. Prints the median step times.
"""

import argparse
import tempfile
import time

import numpy as np

from scratchlm.finetune import TASKS, freeze_encoder
from scratchlm.models import BertConfig, BertForPreTraining
from scratchlm.optim import AdamW, param_groups_for_decay


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", help="a BERT directory (default: random weights)")
    parser.add_argument("--task", choices=sorted(TASKS), default="classify")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    opts = parser.parse_args()
    directory = opts.model
    if directory is None:
        directory = tempfile.mkdtemp()
        BertForPreTraining(BertConfig(vocab_size=4096, hidden_size=128, num_hidden_layers=4,
                                      num_attention_heads=4, intermediate_size=512,
                                      max_position_embeddings=128)).save_pretrained(directory)
    cls = TASKS[opts.task]
    B, T = opts.batch_size, opts.length
    rng = np.random.default_rng(0)
    models, optims = {}, {}
    for name in ("full", "frozen"):
        model = cls.from_pretrained(directory, num_labels=None if opts.task == "qa" else 4)
        if name == "frozen":
            freeze_encoder(model)
        models[name] = model.train()
        optims[name] = AdamW(param_groups_for_decay(model, 0.01), lr=1e-4)
    V = models["full"].config.vocab_size
    batch = {"input_ids": rng.integers(5, V, (B, T)), "attention_mask": np.ones((B, T), int)}
    if opts.task == "classify":
        batch["labels"] = rng.integers(0, 4, B)
    elif opts.task == "ner":
        batch["labels"] = rng.integers(0, 4, (B, T))
    else:
        batch["start_positions"] = rng.integers(0, T, B)
        batch["end_positions"] = rng.integers(0, T, B)
    times = {"full": [], "frozen": []}
    for step in range(opts.steps + 1):
        for name in ("full", "frozen"):
            t0 = time.perf_counter()
            models[name](**batch)
            models[name].backward()
            optims[name].step()
            models[name].zero_grad()
            if step:                                    # the first step warms up
                times[name].append(time.perf_counter() - t0)
    full, frozen = np.median(times["full"]), np.median(times["frozen"])
    print(f"{opts.task}, batch {B} x {T}: full {1000 * full:.0f} ms/step, frozen encoder "
          f"{1000 * frozen:.0f} ms/step ({full / frozen:.1f}x faster)")


if __name__ == "__main__":
    main()
