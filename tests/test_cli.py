"""The ``scratchlm`` command as a new user meets it: short contexts and bad flag values.

A bad number on the command line is an argparse error (exit code 2) that
names the flag as it was typed, before any work starts.
"""

import pytest

from scratchlm.cli import main
from scratchlm.data import builtin_corpus


def _tiny_train(tmp_path, *extra):
    text = tmp_path / "text.txt"
    text.write_text(builtin_corpus()[:6000], encoding="utf-8")
    return ["train", "--text", str(text), "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
            "--batch-size", "2", "--max-steps", "2", "--eval-interval", "2",
            "--warmup-steps", "1", "--no-progress", "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize("block_size", ["32", "2"])
def test_train_with_a_context_shorter_than_the_sample_prompt_ends_with_a_sample(
        tmp_path, capsys, block_size):
    # The closing sample's prompt is the first 40 characters of the validation text:
    # longer than this context. It is cut to half the context, and the sample fills the rest.
    assert main(_tiny_train(tmp_path, "--block-size", block_size,
                            "--sample-tokens", "100")) == 0
    out = capsys.readouterr().out
    sample = out.split("--- sample ---\n", 1)[1].rstrip("\n")
    assert len(sample) == int(block_size)           # a character tokenizer: one per token


@pytest.mark.parametrize("argv, flag, message", [
    (["train", "--lr", "-0.1"], "--lr", "must be > 0; got -0.1"),
    (["train", "--lr", "0"], "--lr", "must be > 0; got 0"),
    (["train", "--lr", "nan"], "--lr", "must be > 0; got nan"),
    (["train", "--lr", "fast"], "--lr", "expected a number; got 'fast'"),
    (["train", "--max-steps", "0"], "--max-steps", "must be a positive integer; got 0"),
    (["train", "--max-steps", "1.5"], "--max-steps", "expected an integer; got '1.5'"),
    (["train", "--block-size", "-4"], "--block-size", "must be a positive integer"),
    (["train", "--batch-size", "0"], "--batch-size", "must be a positive integer"),
    (["train", "--grad-accum", "0"], "--grad-accum", "must be a positive integer"),
    (["train", "--eval-interval", "0"], "--eval-interval", "must be a positive integer"),
    (["train", "--warmup-steps", "-1"], "--warmup-steps", "must be an integer >= 0"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay", "must be >= 0"),
    (["train", "--dropout", "1"], "--dropout", "must be in [0, 1)"),
    (["train", "--seed", "-1"], "--seed", "must be an integer >= 0"),
    (["train", "--sample-tokens", "-5"], "--sample-tokens", "must be an integer >= 0"),
    (["finetune", "--task", "classify", "--model", "m", "--train", "t", "--eval", "e",
      "--out", "o", "--lr=-1e-5"], "--lr", "must be > 0; got -1e-5"),
    (["finetune", "--task", "qa", "--model", "m", "--train", "t", "--eval", "e",
      "--out", "o", "--epochs", "0"], "--epochs", "must be a positive integer"),
    (["finetune", "--task", "qa", "--model", "m", "--train", "t", "--eval", "e",
      "--out", "o", "--warmup-ratio", "1.5"], "--warmup-ratio", "must be in [0, 1)"),
    (["finetune", "--task", "qa", "--model", "m", "--train", "t", "--eval", "e",
      "--out", "o", "--max-length", "4"], "--max-length", "must be at least 8"),
    (["finetune", "--task", "qa", "--model", "m", "--train", "t", "--eval", "e",
      "--out", "o", "--doc-stride", "-1"], "--doc-stride", "must be an integer >= 0"),
    (["predict", "--model", "m", "--max-answer-length", "0"], "--max-answer-length",
     "must be a positive integer"),
])
def test_a_bad_number_names_the_flag_typed(capsys, argv, flag, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"scratchlm {argv[0]}: error: argument {flag}: {message}" in err
    assert "TrainingArguments" not in err and "learning_rate" not in err


def test_good_numbers_still_parse():
    from scratchlm.cli import build_parser

    args = build_parser().parse_args(["train", "--lr", "3e-4", "--dropout", "0",
                                      "--warmup-steps", "0", "--block-size", "32"])
    assert (args.lr, args.dropout, args.warmup_steps, args.block_size) == (3e-4, 0.0, 0, 32)
    assert args.max_steps is None                   # unset flags keep their defaults
