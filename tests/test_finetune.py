"""Fine-tuning: frozen encoders, batches, and a short fine-tune per task that beats its baseline.

The models are tiny (hidden 32, 2 layers) and start from random weights; the
tasks are small synthetic ones written in the standard formats, so each run
takes a few seconds.
"""

import json
import os
import random

import numpy as np
import pytest

from scratchlm import functional as F
from scratchlm.cli import main
from scratchlm.finetune.tasks import (
    ClassificationExample, QAExample, TaggedSentence, TaskDataError, write_classification,
    write_conll, write_squad)
from scratchlm.finetune import (
    FeatureBatches, FinetuneArguments, finetune, freeze_encoder, load_for_prediction,
    pad_batch, predict_answers, predict_entities, predict_labels)
from scratchlm.models import (
    BertConfig, BertForPreTraining, BertForQuestionAnswering, BertForSequenceClassification)
from scratchlm.nn import Embedding, Linear
from scratchlm.tokenizers import WordPieceTokenizer

# --- frozen parameters skip their gradient work ---------------------------------------


def test_linear_backward_can_skip_dW_and_db():
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(3, 4, 5)), rng.normal(size=(5, 2)), rng.normal(size=2)
    dout = rng.normal(size=(3, 4, 2))
    _, cache = F.linear_forward(x, W, b)
    dx, dW, db = F.linear_backward(dout, cache)
    dx2, dW2, db2 = F.linear_backward(dout, cache, need_dW=False, need_db=False)
    np.testing.assert_array_equal(dx, dx2)
    assert dW2 is None and db2 is None and dW is not None and db is not None


def test_frozen_linear_and_embedding_layers():
    rng = np.random.default_rng(0)
    layer = Linear(5, 3, rng=rng, dtype="float64")
    twin = Linear(5, 3, rng=np.random.default_rng(0), dtype="float64")
    layer.weight.requires_grad = False
    x, dout = rng.normal(size=(2, 5)), rng.normal(size=(2, 3))
    for m in (layer, twin):
        m.forward(x)
    np.testing.assert_array_equal(layer.backward(dout), twin.backward(dout))
    assert not layer.weight.grad.any() and twin.weight.grad.any()
    np.testing.assert_array_equal(layer.bias.grad, twin.bias.grad)    # bias still trains
    emb = Embedding(7, 4, rng=rng)
    emb.weight.requires_grad = False
    emb.forward(np.array([[1, 2, 2]]))
    emb.backward(np.ones((1, 3, 4), dtype=np.float32))
    assert not emb.weight.grad.any() and emb._cache is None


TINY = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=48, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForQuestionAnswering])
def test_frozen_encoder_trains_the_head_only(cls, monkeypatch):
    ids = np.random.default_rng(0).integers(0, 60, (3, 10))
    labels = ({"labels": np.array([0, 1, 1])} if cls is BertForSequenceClassification
              else {"start_positions": np.array([1, 2, 3]), "end_positions": np.array([2, 2, 5])})
    full, frozen = cls(TINY, dtype="float64"), cls(TINY, dtype="float64")
    freeze_encoder(frozen)
    calls = []
    monkeypatch.setattr(type(frozen.bert), "backward",
                        lambda self, *a: calls.append(self) or None)
    for m in (full, frozen):
        m.train()
        m(input_ids=ids, **labels)
    frozen.backward()
    assert calls == []                                          # the encoder's backward is skipped
    assert all(m._cache is None for m in frozen.bert.modules())  # and its caches dropped
    monkeypatch.undo()
    full.backward()
    grads_full, grads_frozen = dict(full.named_parameters()), dict(frozen.named_parameters())
    for name, p in grads_frozen.items():
        if name.startswith("bert."):
            assert not p.requires_grad and not p.grad.any(), name
            assert grads_full[name].grad.any(), name
        else:                                      # the head's gradient is the same either way
            np.testing.assert_allclose(p.grad, grads_full[name].grad, rtol=1e-12, atol=1e-15)


# --- batches --------------------------------------------------------------------------

def test_pad_batch_and_epochs():
    feats = [{"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0], "labels": [-100, 1, -100]},
             {"input_ids": [2, 3], "token_type_ids": [0, 0], "labels": [-100, -100]}]
    b = pad_batch(feats, pad_token_id=0)
    assert b["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["labels"].tolist() == [[-100, 1, -100], [-100, -100, -100]]
    many = [{"input_ids": [i], "token_type_ids": [0], "labels": i} for i in range(10)]
    batches = FeatureBatches(many, 4, 0, seed=1)
    assert batches.steps_per_epoch == 3
    epoch = [batches.next_batch()["labels"].tolist() for _ in range(3)]
    assert sorted(sum(epoch, [])) == list(range(10))                  # each once per epoch
    state = json.loads(json.dumps(batches.state_dict()))
    ahead = [batches.next_batch()["labels"].tolist() for _ in range(4)]
    batches.load_state_dict(state)
    assert [batches.next_batch()["labels"].tolist() for _ in range(4)] == ahead


# --- a short fine-tune per task ------------------------------------------------------

ANIMALS = "cat dog bird fish horse mouse".split()
TOOLS = "hammer saw drill wrench chisel pliers".split()
FILLER = "the a very small big old new one my your this that".split()
PEOPLE = ["ada lovelace", "alan turing", "grace hopper", "guido", "linus"]
CITIES = ["paris", "oslo", "new york", "lima"]


def make_classification(rng, n):
    out = []
    for _ in range(n):
        label = "animal" if rng.random() < 0.6 else "tool"     # majority baseline about 0.6
        pool = ANIMALS if label == "animal" else TOOLS
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))] + [rng.choice(pool)]
        rng.shuffle(words)
        out.append(ClassificationExample(" ".join(words), None, label, 0))
    return out


def make_ner(rng, n):
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(2, 5)):
            kind = rng.random()
            if kind < 0.25:
                name, t = rng.choice(PEOPLE).split(), "PER"
            elif kind < 0.45:
                name, t = rng.choice(CITIES).split(), "LOC"
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
                continue
            words += name
            tags += [f"B-{t}"] + [f"I-{t}"] * (len(name) - 1)
        out.append(TaggedSentence(words, tags, 0))
    return out


def make_qa(rng, n):
    out = []
    for i in range(n):
        code = f"{rng.choice(ANIMALS)}{rng.randint(10, 99)}"
        before = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 30)))
        after = " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 8)))
        context = f"{before} the code is {code} . {after}".strip()
        out.append(QAExample(f"q{i}", "what is the code ?", context,
                             [(code, context.index(f"is {code}") + 3)], "t"))
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random tiny BERT directory with a WordPiece vocabulary of the synthetic words."""
    d = tmp_path_factory.mktemp("bert")
    text = " ".join(ANIMALS + TOOLS + FILLER + PEOPLE + CITIES + ["the code is . ?"] * 3
                    + [str(i) for i in range(10, 100)] + ["what"] * 2)
    tok = WordPieceTokenizer.train(text, 300, min_frequency=1)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=48, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertForPreTraining(config, seed=0).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    paths = {}
    for task, make, write, ext, n in (("classify", make_classification, write_classification,
                                       "tsv", 240),
                                      ("ner", make_ner, write_conll, "conll", 240),
                                      ("qa", make_qa, write_squad, "json", 320)):
        paths[task] = []
        for split, size in (("train", n), ("dev", 60)):
            path = str(d / f"{task}_{split}.{ext}")
            write(path, make(rng, size))
            paths[task].append(path)
    return paths


def run(task, tiny_bert, task_files, tmp_path, **kw):
    train, dev = task_files[task]
    settings = dict(epochs=4, learning_rate=3e-3, batch_size=16, max_length=48,
                    progress=False, warmup_ratio=0.0)
    settings.update(kw)
    return finetune(FinetuneArguments(task, tiny_bert, train, dev, str(tmp_path / task),
                                      **settings))


def test_classification_beats_majority(tiny_bert, task_files, tmp_path):
    r = run("classify", tiny_bert, task_files, tmp_path)
    assert r.best["accuracy"] > r.baseline["accuracy"] + 0.2
    assert r.best["accuracy"] >= 0.9 and len(r.history) == 4
    assert r.history[r.best_epoch - 1]["val_accuracy"] == max(
        h["val_accuracy"] for h in r.history)
    # the best model is saved in the Hugging Face format, with the task's labels
    with open(os.path.join(r.out_dir, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "animal", "1": "tool"}
    task, model, tok = load_for_prediction(r.out_dir)
    assert task == "classify"
    (label, p), = predict_labels(model, tok, ["the very old hammer"])
    assert label == "tool" and 0.5 < p <= 1


def test_ner_beats_all_o(tiny_bert, task_files, tmp_path):
    r = run("ner", tiny_bert, task_files, tmp_path, epochs=5)
    assert r.baseline["f1"] == 0.0
    assert r.best["f1"] > 0.6
    task, model, tok = load_for_prediction(r.out_dir)
    (entities,) = predict_entities(model, tok, ["the ada lovelace one oslo"])
    found = {(e["type"], e["text"]) for e in entities}
    assert ("LOC", "oslo") in found or ("PER", "ada lovelace") in found
    for e in entities:
        assert "the ada lovelace one oslo"[e["start"]:e["end"]] == e["text"]


def test_qa_beats_empty_answer_with_windows(tiny_bert, task_files, tmp_path):
    r = run("qa", tiny_bert, task_files, tmp_path, epochs=8, doc_stride=8)
    assert any("several windows" in n for n in r.notes)      # contexts exceed max_length
    assert r.baseline == {"exact_match": 0.0, "f1": 0.0}
    assert r.best["f1"] > 0.5
    task, model, tok = load_for_prediction(r.out_dir)
    (answer,) = predict_answers(model, tok, ["what is the code ?"],
                                ["my old the code is fish42 . the"])
    assert "my old the code is fish42 . the"[answer.start:answer.end] == answer.text != ""


def test_frozen_encoder_run_trains_the_head_only(tiny_bert, task_files, tmp_path):
    r = run("classify", tiny_bert, task_files, tmp_path, epochs=1, freeze_encoder=True)
    assert r.n_trainable == 32 * 2 + 2                    # the classifier's weight and bias
    with open(os.path.join(r.out_dir, "finetune_report.json")) as f:
        assert json.load(f)["args"]["freeze_encoder"] is True


def test_bad_eval_file_names_the_line(tiny_bert, task_files, tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\nthe cat\tanimal\nthe saw\tvehicle\n")
    with pytest.raises(TaskDataError, match=r"dev\.tsv:3: label 'vehicle' is not in the label"):
        finetune(FinetuneArguments("classify", tiny_bert, task_files["classify"][0], str(dev),
                                   str(tmp_path / "out"), progress=False))


@pytest.mark.gpu
@pytest.mark.parametrize("task, epochs, metric, floor, kw", [
    ("classify", 4, "accuracy", 0.9, {}), ("ner", 5, "f1", 0.6, {}),
    ("qa", 8, "f1", 0.5, {"doc_stride": 8})])
def test_finetuning_on_the_gpu_learns_each_task(task, epochs, metric, floor, kw, tiny_bert,
                                                task_files, tmp_path):
    from scratchlm import backend

    backend.set_backend("cupy")                         # the model is loaded onto the GPU
    try:
        r = run(task, tiny_bert, task_files, tmp_path, epochs=epochs, **kw)
    finally:
        backend.set_backend("numpy")
    assert r.best[metric] > floor, r.history            # as on the CPU (tests above)
    assert r.best[metric] > r.baseline[metric]


def test_cli_finetune_and_predict(tiny_bert, task_files, tmp_path, capsys):
    train, dev = task_files["classify"]
    out = str(tmp_path / "cli")
    assert main(["finetune", "--task", "classify", "--model", tiny_bert, "--train", train,
                 "--eval", dev, "--out", out, "--epochs", "2", "--lr", "3e-3",
                 "--max-length", "32", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "baseline (majority class ('animal'))" in text and "best epoch" in text
    assert main(["predict", "--model", out, "--text", "my big drill"]) == 0
    label, p, echoed = capsys.readouterr().out.strip().split("\t")
    assert label in ("animal", "tool") and echoed == "my big drill"
    assert main(["predict", "--model", out, "--file", dev]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().split("\n")) == 60 and "accuracy" in captured.err
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\na\tanimal\tx\n")
    assert main(["finetune", "--task", "classify", "--model", tiny_bert, "--train", str(bad),
                 "--eval", dev, "--out", out]) == 1
    assert "bad.tsv:2: expected 2 tab-separated fields" in capsys.readouterr().err
