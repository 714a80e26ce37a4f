"""Pre-train a small BERT on the built-in corpus, then fine-tune it on three tasks.

Runs offline, end to end, in a few minutes on a laptop CPU:

1. ``scratchlm train --model bert``: a 4-layer, 128-wide BERT with a WordPiece
   vocabulary, masked LM + next-sentence prediction on CPython's reference text.
2. Three tasks made from the same corpus (scratchlm.finetune.builtin),
   written in the standard formats: GLUE/SST-2 TSV, CoNLL and SQuAD v1.1 JSON.
3. ``scratchlm finetune`` on each, and on NER and classification once more
   with the encoder frozen; then ``scratchlm predict`` on new text.
4. A table: each task's metric next to its trivial baseline, and the times.

The commands are printed as they run; they are the ones to use on the real
SST-2, CoNLL-2003 and SQuAD files (change the paths, and the model for a
Hugging Face BERT directory).

    python examples/pretrain_and_finetune.py [--out runs/builtin] [--pretrain-steps 800]
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from scratchlm.finetune import write_builtin_tasks


def run(*args):
    """Run ``scratchlm ARGS`` (as python -m scratchlm), echoing the command; its wall time."""
    print("\n$ scratchlm " + " ".join(shlex.quote(a) for a in args), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scratchlm", *args], check=True)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/builtin", help="where everything is written")
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--no-progress", action="store_true")
    opts = parser.parse_args()
    out = opts.out
    quiet = ["--no-progress"] if opts.no_progress else []

    # 1. Pre-train (skipped when a model is already there).
    bert = os.path.join(out, "bert")
    pretrain_time = None
    if not os.path.exists(os.path.join(bert, "model.safetensors")):
        pretrain_time = run("train", "--model", "bert", "--n-layer", "4", "--n-embd", "128",
                            "--n-head", "4", "--block-size", "128", "--batch-size", "16",
                            "--vocab-size", "4096", "--max-steps", str(opts.pretrain_steps),
                            "--eval-interval", "200", "--out", bert, *quiet)

    # 2. The three tasks, in the standard formats.
    data = write_builtin_tasks(os.path.join(out, "data"))
    for task, (train, dev) in data.items():
        print(f"{task:>9}: {train}, {dev}")

    # 3. Fine-tune: (task, epochs, learning rate, extra flags).
    #    The frozen-encoder runs train the task head alone, at a higher learning rate.
    runs = [("classify", "classify", 4, "3e-4", []),
            ("ner", "ner", 8, "5e-4", []),
            ("qa", "qa", 6, "5e-4", ["--max-length", "128", "--doc-stride", "32"]),
            ("ner-frozen", "ner", 8, "3e-3", ["--freeze-encoder"]),
            ("classify-frozen", "classify", 4, "3e-3", ["--freeze-encoder"])]
    times = {}
    for name, task, epochs, lr, extra in runs:
        train, dev = data[task]
        times[name] = run("finetune", "--task", task, "--model", bert, "--train", train,
                          "--eval", dev, "--out", os.path.join(out, name), "--epochs",
                          str(epochs), "--lr", lr, "--batch-size", "16", *extra, *quiet)

    # 4. Predict on new text.
    run("predict", "--model", os.path.join(out, "classify"),
        "--text", "The while statement repeats its suite as long as an expression is true.",
        "--text", "Unary minus yields the negation of its numeric argument.")
    run("predict", "--model", os.path.join(out, "ner"), "--text",
        'If "len()" is called on an object without "__len__", a "TypeError" is raised; '
        'see "sys.getsizeof".')
    run("predict", "--model", os.path.join(out, "qa"), "--question",
        "What is the global statement?", "--context",
        "The global statement is a declaration which holds for the entire current code "
        "block. It means that the listed identifiers are to be interpreted as globals.")

    # 5. The table.
    print(f"\n{'run':<16} {'metric':<9} {'model':>7} {'baseline':>9}  {'baseline is':<28}"
          f"{'epochs':>6} {'time':>7} {'ms/step':>8} {'trained params':>15}")
    for name, *_ in runs:
        with open(os.path.join(out, name, "finetune_report.json")) as f:
            r = json.load(f)
        m = r["metric"]
        print(f"{name:<16} {m:<9} {r['best'][m]:>7.3f} {r['baseline'][m]:>9.3f}  "
              f"{r['baseline_name']:<28}{len(r['history']):>6} {times[name]:>6.0f}s "
              f"{1000 * r['step_seconds']:>8.0f} {r['n_trainable']:>15,}")
    if pretrain_time is not None:
        print(f"pre-training: {pretrain_time:.0f} s")


if __name__ == "__main__":
    main()
