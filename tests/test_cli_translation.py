"""``scratchlm train --model marian`` and ``scratchlm translate`` on a small TSV file.

A few hundred made-up pairs (numbers in words, English -> German) are enough to
run every path: the tokenizer, the batches, BLEU at each evaluation, the
checkpoint and an exact resume, the closing report, translation of a file
with references. The system's catalogs are not needed here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from scratchlm.cli import main

EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DE = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]


def write_pairs(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        digits = rng.integers(0, 10, rng.integers(1, 5))
        lines.append(" ".join(EN[d] for d in digits) + "\t" + " ".join(DE[d] for d in digits))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_marian(tmp_path, *extra, steps="4"):
    pairs = write_pairs(tmp_path / "pairs.tsv")
    return ["train", "--model", "marian", "--pairs", str(pairs), "--vocab-size", "36",
            "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--batch-size", "8",
            "--block-size", "12", "--max-steps", steps, "--eval-interval", "2",
            "--warmup-steps", "1", "--bleu-sentences", "5",
            "--no-progress", "--out", str(tmp_path / "out"), *extra]


def records(out_dir):
    with open(out_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_train_logs_bleu_and_resumes_exactly(tmp_path, capsys):
    assert main(tiny_marian(tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "copy the source" in printed and "beam search, 4 beams" in printed
    assert printed.count("source:      ") == 3
    full = records(tmp_path / "out")
    evals = [r for r in full if "val_bleu" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0 <= r["val_bleu"] <= 100 for r in evals)
    for name in ("config.json", "model.safetensors", "source.spm", "target.spm",
                 "vocab.json"):
        assert (tmp_path / "out" / name).is_file(), name

    # The same run cut at step 2, then resumed to step 4: the same losses.
    cut = tmp_path / "cut"
    cut.mkdir()
    assert main(tiny_marian(cut, steps="2")) == 0
    assert main(["train", "--resume", "--out", str(cut / "out"), "--max-steps", "4",
                 "--no-progress"]) == 0
    resumed = records(cut / "out")
    key = lambda rs: [(r["step"], r["val_loss"], r["val_bleu"])  # noqa: E731
                      for r in rs if "val_loss" in r]
    assert key(resumed) == key(full)


def test_translate_a_file_with_references_reports_bleu(tmp_path, capsys):
    assert main(tiny_marian(tmp_path)) == 0
    capsys.readouterr()
    refs = tmp_path / "test.tsv"
    refs.write_text("one two\teins zwei\nthree\tdrei\n", encoding="utf-8")
    assert main(["translate", "--checkpoint", str(tmp_path / "out"), "--file", str(refs),
                 "--num-beams", "2", "--max-new-tokens", "6"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 2           # one line per source
    assert "BLEU" in captured.err and "on 2 sentences" in captured.err
    assert main(["translate", "--checkpoint", str(tmp_path / "out"), "--text", "four",
                 "--num-beams", "1"]) == 0
    assert capsys.readouterr().out.count("\n") == 1


def test_clear_errors(tmp_path, capsys):
    assert main(["train", "--model", "marian", "--pairs", str(tmp_path / "none.tsv"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "--pairs: no such file" in capsys.readouterr().err
    assert main(["train", "--model", "marian", "--target-lang", "xx-nowhere",
                 "--out", str(tmp_path / "o")]) == 1
    assert "--pairs" in capsys.readouterr().err
    assert main(["train", "--pairs", "x.tsv", "--out", str(tmp_path / "o")]) == 1
    assert "--pairs applies to --model marian only" in capsys.readouterr().err
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("one\ttwo\nthree\n", encoding="utf-8")
    assert main(["translate", "--checkpoint", str(tmp_path), "--file", str(mixed)]) == 1
    assert "line 2: lines must all be plain sources, or all source<TAB>reference" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["translate", "--checkpoint", "c", "--text", "x", "--num-beams", "0"], "--num-beams"),
    (["train", "--model", "marian", "--bleu-sentences", "0"], "--bleu-sentences"),
])
def test_bad_numbers(capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
