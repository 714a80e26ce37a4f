"""Fine-tuning a BERT for a task, from data files to metrics, and predicting with it.

    scratchlm finetune --task classify|ner|qa --model DIR --train FILE --eval FILE --out DIR

1. Read the model directory: a Hugging Face BERT (config.json,
   model.safetensors, vocab.txt), such as ``scratchlm train --model bert``
   writes. The task head (classifier / qa_outputs) is new: initialised and
   reported; pre-training heads in the checkpoint are left unused.
2. Read the train and eval files (scratchlm.finetune.tasks), take the label set
   from the training file and check the eval file against it.
3. Turn examples into features (token ids and labels at token level) and
   train with the Trainer: AdamW, linear warmup and decay, gradient clipping,
   an evaluation after every epoch, the best epoch's model kept in --out in
   the Hugging Face format with its labels in ``id2label``.
4. Report the metrics of every epoch, the best, and the trivial baseline
   (majority class; all-O tags; the empty answer) on the same eval file.

With ``freeze_encoder`` every parameter of ``model.bert`` is frozen
(requires_grad=False): only the task head learns, and the backward stops at
the head (BertFor*.backward skips the encoder).

Nothing is dropped silently: examples cut to max_length, words no piece
reaches, questions split into windows or left out of training are counted,
and the counts are part of the result (``notes``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from scratchlm import backend
from scratchlm.backend import to_numpy
from scratchlm.checkpoint import read_config
from scratchlm.finetune.tasks import (
    ClassificationExample, Counts, QAExample, TaggedSentence, TaskDataError, align_labels,
    best_answers, check_labels, encode_words, label_list, ner_label_list, qa_features,
    read_classification, read_conll, read_squad, split_words)
from scratchlm.metrics import accuracy, entity_scores, f1_macro, get_entities, squad_scores
from scratchlm.models import (
    BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification)
from scratchlm.tokenizers import WordPieceTokenizer
from scratchlm.tokenizers.base import truncate_pair
from scratchlm.train import Trainer, TrainingArguments

TASKS = {"classify": BertForSequenceClassification, "ner": BertForTokenClassification,
         "qa": BertForQuestionAnswering}
TASK_OF_ARCHITECTURE = {cls.__name__: task for task, cls in TASKS.items()}
# The metric that picks the best epoch, per task.
MAIN_METRIC = {"classify": "accuracy", "ner": "f1", "qa": "f1"}
REPORT_FILE = "finetune_report.json"


@dataclass
class FinetuneArguments:
    """Settings of a fine-tuning run (the flags of ``scratchlm finetune``)."""

    task: str
    model: str                        # a BERT directory: config.json, model.safetensors, vocab.txt
    train_file: str
    eval_file: str
    out_dir: str
    freeze_encoder: bool = False      # train the task head only
    epochs: int = 3
    learning_rate: float | None = None  # None: 5e-5, or 1e-3 with a frozen encoder
    batch_size: int = 16
    max_length: int | None = None     # None: 128 (qa: 384), at most max_position_embeddings
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1         # share of the steps with a rising learning rate
    max_grad_norm: float = 1.0
    seed: int = 0
    doc_stride: int | None = None     # qa: tokens neighbouring windows share; None: max_length // 4
    max_query_length: int = 64        # qa: longer questions are cut
    max_answer_length: int = 30       # qa: the longest answer read, in tokens
    text_column: str | None = None    # classify: column names, found by name when None
    text_pair_column: str | None = None
    label_column: str | None = None
    eval_batch_size: int = 64
    progress: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"finetune: task must be one of {sorted(TASKS)}; got {self.task!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "max_query_length",
                     "max_answer_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"finetune: {name} must be a positive integer; got {v!r}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"finetune: max_length must be at least 8; got {self.max_length}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"finetune: learning_rate must be > 0; got {self.learning_rate}")
        if self.doc_stride is not None and self.doc_stride < 0:
            raise ValueError(f"finetune: doc_stride must be >= 0; got {self.doc_stride}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"finetune: warmup_ratio must be in [0, 1); got {self.warmup_ratio}")


@dataclass
class FinetuneResult:
    """What a run did: metrics per epoch, the best epoch, the baseline, counts, times."""

    task: str
    metric: str                       # the metric that chose the best epoch
    history: list                     # per epoch: epoch, step, train_loss, val_loss, metrics
    best_epoch: int
    best: dict                        # the best epoch's metrics
    baseline: dict                    # the trivial baseline on the same eval file
    baseline_name: str
    notes: list                       # what was cut or left out, counted
    n_train: int                      # training examples (and features: windows, rows)
    n_eval: int
    n_train_features: int
    n_parameters: int
    n_trainable: int
    train_seconds: float              # optimizer steps only (no evaluation, no saving)
    step_seconds: float               # mean time of one optimizer step
    total_seconds: float
    labels: list = field(default_factory=list)
    out_dir: str = ""


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def freeze_encoder(model) -> int:
    """Freeze every parameter of model.bert (requires_grad=False); returns how many values."""
    n = 0
    for p in model.bert.parameters():
        p.requires_grad = False
        n += p.size
    return n


def _with_labels(model, labels):
    """Give the model's config the task's label names (id2label / label2id)."""
    model.config = dataclasses.replace(model.config, id2label=dict(enumerate(labels)),
                                       label2id=None)
    return model


def load_task_model(task, directory, labels=None, dtype=None):
    """The task model for ``task`` from a BERT directory, with a head for ``labels``."""
    cls = TASKS[task]
    num_labels = None if task == "qa" else len(labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = cls.from_pretrained(directory, dtype=dtype, num_labels=num_labels)
    if labels is not None and task != "qa":
        _with_labels(model, labels)
    notes = [str(w.message).split(":", 1)[-1].strip() for w in caught]
    return model, notes


def load_tokenizer(directory) -> WordPieceTokenizer:
    """The WordPiece tokenizer of a BERT directory (vocab.txt, tokenizer_config.json)."""
    if not os.path.isfile(os.path.join(directory, "vocab.txt")):
        raise FileNotFoundError(f"{directory}: no vocab.txt; a BERT model directory holds "
                                "its WordPiece vocabulary (scratchlm train --model bert "
                                "writes one)")
    return WordPieceTokenizer.from_pretrained(directory)


def load_for_prediction(directory):
    """(task, model in eval mode, tokenizer) of a fine-tuned model directory."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: no config.json (is it a model directory?)")
    with open(path, encoding="utf-8") as f:
        architectures = json.load(f).get("architectures") or []
    task = next((TASK_OF_ARCHITECTURE[a] for a in architectures if a in TASK_OF_ARCHITECTURE),
                None)
    if task is None:
        raise ValueError(f"{path}: architectures {architectures} is none of "
                         f"{sorted(TASK_OF_ARCHITECTURE)}; fine-tune the model first "
                         "(scratchlm finetune)")
    model = TASKS[task].from_pretrained(directory)
    return task, model, load_tokenizer(directory)


# ---------------------------------------------------------------------------
# Features and batches
# ---------------------------------------------------------------------------

def classification_features(tokenizer, examples, label2id, max_length):
    """[CLS] a [SEP] (b [SEP]) ids cut to max_length (longest first), with the label id."""
    counts, features = Counts(), []
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    for ex in examples:
        a = tokenizer.encode(ex.text, add_special_tokens=False)
        b = None if ex.text_pair is None else tokenizer.encode(ex.text_pair,
                                                               add_special_tokens=False)
        budget = room - (1 if b is not None else 0)
        if len(a) + len(b or []) > budget:
            counts[f"examples cut to max_length={max_length}"] += 1
            a, b = truncate_pair(a, b, budget)
        ids, types = tokenizer.build_inputs(a, b)
        feature = {"input_ids": ids, "token_type_ids": types}
        if ex.label is not None and label2id is not None:
            feature["labels"] = label2id[ex.label]
        features.append(feature)
    return features, counts


def token_features(tokenizer, sentences, label2id, max_length):
    """Pieces of each sentence's words with labels on first pieces (align_labels)."""
    counts, features, cache = Counts(), [], {}
    for s in sentences:
        ids, word_ids, n_cut = encode_words(tokenizer, s.words, max_length, cache)
        if n_cut:
            counts[f"sentences cut to max_length={max_length}"] += 1
            counts["words cut off (predicted O)"] += n_cut
        n_empty = len(s.words) - n_cut - len({w for w in word_ids if w is not None})
        if n_empty:
            counts["words with no word piece (predicted O)"] += n_empty
        feature = {"input_ids": ids, "token_type_ids": [0] * len(ids), "word_ids": word_ids,
                   "n_words": len(s.words)}
        if s.tags is not None and label2id is not None:
            feature["labels"] = align_labels(word_ids, [label2id[t] for t in s.tags])
        features.append(feature)
    return features, counts


def _qa_dicts(features):
    return [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids,
             "start_positions": f.start_position, "end_positions": f.end_position}
            for f in features]


MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask", "labels", "start_positions",
              "end_positions")


def pad_batch(features, pad_token_id):
    """Model inputs of a list of features, padded on the right to the longest:
    input_ids with the pad id, token_type_ids 0, attention_mask 0, token labels -100."""
    T = max(len(f["input_ids"]) for f in features)
    B = len(features)
    batch = {"input_ids": np.full((B, T), pad_token_id, dtype=np.int64),
             "token_type_ids": np.zeros((B, T), dtype=np.int64),
             "attention_mask": np.zeros((B, T), dtype=np.int64)}
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        batch["input_ids"][i, :n] = f["input_ids"]
        batch["token_type_ids"][i, :n] = f["token_type_ids"]
        batch["attention_mask"][i, :n] = 1
    first = features[0]
    if isinstance(first.get("labels"), list):                  # token classification
        batch["labels"] = np.full((B, T), -100, dtype=np.int64)
        for i, f in enumerate(features):
            batch["labels"][i, :len(f["labels"])] = f["labels"]
    elif "labels" in first:
        batch["labels"] = np.array([f["labels"] for f in features], dtype=np.int64)
    for key in ("start_positions", "end_positions"):
        if key in first:
            batch[key] = np.array([f[key] for f in features], dtype=np.int64)
    return batch


class FeatureBatches:
    """Mini-batches of features in a new random order every epoch, padded per batch.

    The order, the position in it and the generator are the whole state, so
    ``state_dict`` / ``load_state_dict`` resume exactly (Trainer checkpoints).
    The last batch of an epoch may be smaller.
    """

    def __init__(self, features, batch_size, pad_token_id, seed=0):
        if not features:
            raise ValueError("FeatureBatches: no features to train on")
        self.features, self.batch_size, self.pad_token_id = features, batch_size, pad_token_id
        self.rng = np.random.default_rng(seed)
        self.order, self.position = self.rng.permutation(len(features)), 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.features) / self.batch_size)

    def next_batch(self):
        if self.position >= len(self.order):
            self.order, self.position = self.rng.permutation(len(self.features)), 0
        rows = self.order[self.position:self.position + self.batch_size]
        self.position += len(rows)
        return pad_batch([self.features[i] for i in rows], self.pad_token_id)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(),
                "position": self.position}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = np.asarray(state["order"]), int(state["position"])


def run_model(model, features, pad_token_id, batch_size=64):
    """Forward passes in eval mode over features; (mean loss or None, outputs per feature).

    Outputs are NumPy arrays cut to each feature's length: logits (classify:
    (num_labels,); ner: (T, num_labels)) or a (start_logits, end_logits) pair.
    """
    model.eval()
    loss_sum, n, outputs = 0.0, 0, []
    for k in range(0, len(features), batch_size):
        chunk = features[k:k + batch_size]
        batch = pad_batch(chunk, pad_token_id)
        out = model(**batch)
        if out.loss is not None:
            loss_sum += float(out.loss) * len(chunk)
            n += len(chunk)
        if out.start_logits is not None:
            s, e = to_numpy(out.start_logits), to_numpy(out.end_logits)
            outputs += [(s[i, :len(f["input_ids"])], e[i, :len(f["input_ids"])])
                        for i, f in enumerate(chunk)]
        elif out.logits.ndim == 3:
            logits = to_numpy(out.logits)
            outputs += [logits[i, :len(f["input_ids"])] for i, f in enumerate(chunk)]
        else:
            outputs += list(to_numpy(out.logits))
    return (loss_sum / n if n else None), outputs


def _softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def word_predictions(feature, logits, id2label):
    """Tags (and their probabilities) of a sentence's words from its pieces' logits:
    each word is read at its first piece; words no piece reaches are O."""
    tags, probs = ["O"] * feature["n_words"], [1.0] * feature["n_words"]
    p = _softmax(logits)
    previous = None
    for pos, w in enumerate(feature["word_ids"]):
        if w is not None and w != previous:
            k = int(p[pos].argmax())
            tags[w], probs[w] = id2label[k], float(p[pos, k])
        previous = w
    return tags, probs


# ---------------------------------------------------------------------------
# The three tasks: data, evaluation, baseline
# ---------------------------------------------------------------------------

@dataclass
class TaskData:
    labels: list                      # id -> label name ([] for qa)
    train_features: list
    eval_features: list
    evaluate: object                  # evaluate(model) -> {"loss": ..., metric: ...}
    baseline: dict
    baseline_name: str
    n_train: int
    n_eval: int
    notes: list


def _note(where, counts):
    return [f"{where}: {line}" for line in counts.report()]


def _prepare_classify(args, tok, max_length, pad):
    kw = dict(text_column=args.text_column, text_pair_column=args.text_pair_column,
              label_column=args.label_column)
    train = read_classification(args.train_file, **kw)
    evals = read_classification(args.eval_file, **kw)
    labels = label_list(ex.label for ex in train)
    if len(labels) < 2:
        raise TaskDataError(f"{args.train_file}: a classifier needs at least two labels; "
                            f"found only {labels}")
    label2id = {lab: i for i, lab in enumerate(labels)}
    check_labels(evals, label2id, args.eval_file)
    train_f, c_train = classification_features(tok, train, label2id, max_length)
    eval_f, c_eval = classification_features(tok, evals, label2id, max_length)
    gold = [f["labels"] for f in eval_f]

    def evaluate(model):
        loss, logits = run_model(model, eval_f, pad, args.eval_batch_size)
        pred = [int(np.argmax(x)) for x in logits]
        return {"loss": loss, "accuracy": accuracy(gold, pred), "macro_f1": f1_macro(gold, pred)}

    counts = np.bincount([f["labels"] for f in train_f], minlength=len(labels))
    majority = int(counts.argmax())
    baseline = {"accuracy": accuracy(gold, [majority] * len(gold)),
                "macro_f1": f1_macro(gold, [majority] * len(gold))}
    return TaskData(labels, train_f, eval_f, evaluate, baseline,
                    f"majority class ({labels[majority]!r})", len(train), len(evals),
                    _note(args.train_file, c_train) + _note(args.eval_file, c_eval))


def _prepare_ner(args, tok, max_length, pad):
    train = read_conll(args.train_file)
    evals = read_conll(args.eval_file)
    labels = ner_label_list(s.tags for s in train)
    label2id = {lab: i for i, lab in enumerate(labels)}
    check_labels(evals, label2id, args.eval_file)
    train_f, c_train = token_features(tok, train, label2id, max_length)
    eval_f, c_eval = token_features(tok, evals, label2id, max_length)
    gold = [s.tags for s in evals]

    def evaluate(model):
        loss, logits = run_model(model, eval_f, pad, args.eval_batch_size)
        pred = [word_predictions(f, x, labels)[0] for f, x in zip(eval_f, logits)]
        scores = entity_scores(gold, pred)
        words = [(t, p) for gs, ps in zip(gold, pred) for t, p in zip(gs, ps)]
        return {"loss": loss, "f1": scores["f1"], "precision": scores["precision"],
                "recall": scores["recall"],
                "tag_accuracy": accuracy(*zip(*words)),
                "per_type_f1": {k: v["f1"] for k, v in scores["per_type"].items()}}

    all_o = [["O"] * len(t) for t in gold]
    scores = entity_scores(gold, all_o)
    words = [t for ts in gold for t in ts]
    baseline = {"f1": scores["f1"], "precision": scores["precision"],
                "recall": scores["recall"], "tag_accuracy": accuracy(words, ["O"] * len(words))}
    return TaskData(labels, train_f, eval_f, evaluate, baseline, "all-O tags",
                    len(train), len(evals),
                    _note(args.train_file, c_train) + _note(args.eval_file, c_eval))


def _doc_stride(args, max_length):
    return args.doc_stride if args.doc_stride is not None else max_length // 4


def _prepare_qa(args, tok, max_length, pad):
    train = read_squad(args.train_file)
    evals = read_squad(args.eval_file)
    stride = _doc_stride(args, max_length)
    train_q, c_train = qa_features(train, tok, max_length, stride, args.max_query_length,
                                   training=True)
    answerable = [ex for ex in evals if ex.answers]
    c_eval = Counts()
    if len(answerable) < len(evals):
        c_eval["questions without an answer (SQuAD v2), not scored"] = \
            len(evals) - len(answerable)
    if not answerable:
        raise TaskDataError(f"{args.eval_file}: no question has an answer to score against")
    eval_q, c_windows = qa_features(answerable, tok, max_length, stride, args.max_query_length,
                                    training=False)
    c_eval.update(c_windows)
    eval_f = _qa_dicts(eval_q)
    gold = [[text for text, _ in ex.answers] for ex in answerable]

    def evaluate(model):
        loss, logits = run_model(model, eval_f, pad, args.eval_batch_size)
        answers = best_answers(answerable, eval_q, [s for s, _ in logits],
                               [e for _, e in logits], max_answer_length=args.max_answer_length)
        scores = squad_scores([a.text for a in answers], gold)
        return {"loss": loss, "f1": scores["f1"], "exact_match": scores["exact_match"]}

    baseline = squad_scores([""] * len(gold), gold)
    return TaskData([], _qa_dicts(train_q), eval_f, evaluate, baseline, "empty answer",
                    len(train), len(answerable),
                    _note(args.train_file, c_train) + _note(args.eval_file, c_eval))


PREPARE = {"classify": _prepare_classify, "ner": _prepare_ner, "qa": _prepare_qa}


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

class EpochTrainer(Trainer):
    """The Trainer, evaluating the task metrics after each epoch and keeping the best model.

    ``evaluate`` runs the task's own evaluation over the whole eval file
    (span-level F1 and answers read across windows do not average over
    batches); when the main metric improves, ``keep_best()`` saves the model.
    """

    def __init__(self, model, args, batches, task_evaluate, metric, keep_best):
        super().__init__(model, args, batches)
        self.task_evaluate, self.metric, self.keep_best = task_evaluate, metric, keep_best
        self.steps_per_epoch = batches.steps_per_epoch
        self.step_times, self.epochs = [], []
        self.best_value, self.best_epoch = -math.inf, 0
        self._losses = []

    def train_step(self):
        t0 = time.perf_counter()
        m = super().train_step()
        self.step_times.append(time.perf_counter() - t0)
        self._losses.append(m["loss"])
        return m

    def evaluate(self):
        scores = self.task_evaluate(self.model)
        epoch = math.ceil(self.step / self.steps_per_epoch)
        record = {"step": self.step, "epoch": epoch,
                  "train_loss": float(np.mean(self._losses)) if self._losses else None,
                  "val_loss": scores.pop("loss"), **{f"val_{k}": v for k, v in scores.items()}}
        self._losses = []
        self.epochs.append(record)
        value = record[f"val_{self.metric}"]
        if value > self.best_value:
            self.best_value, self.best_epoch = value, epoch
            self.keep_best()
        return record


def finetune(args: FinetuneArguments, log=None) -> FinetuneResult:
    """Fine-tune, evaluate each epoch, keep the best model in args.out_dir; see the module doc.

    log: optional callable receiving one line of text per event (the CLI prints them).
    """
    log = log or (lambda line: None)
    t_start = time.perf_counter()
    for path, flag in ((args.train_file, "--train"), (args.eval_file, "--eval")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag}: no such file: {path}")
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"--model: no such directory: {args.model}")
    tok = load_tokenizer(args.model)
    config = read_config(args.model, BertConfig, "finetune")
    max_length = args.max_length or (384 if args.task == "qa" else 128)
    max_length = min(max_length, config.max_position_embeddings)
    if tok.vocab_size != config.vocab_size:
        raise ValueError(f"{args.model}: vocab.txt has {tok.vocab_size} tokens but config.json "
                         f"says vocab_size={config.vocab_size}")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    data = PREPARE[args.task](args, tok, max_length, pad)
    model, load_notes = load_task_model(args.task, args.model, data.labels or None)
    notes = [f"model: {n}" for n in load_notes] + data.notes
    if args.freeze_encoder:
        freeze_encoder(model)
    n_params = model.num_parameters()
    n_trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    lr = args.learning_rate or (1e-3 if args.freeze_encoder else 5e-5)

    batches = FeatureBatches(data.train_features, args.batch_size, pad, seed=args.seed)
    max_steps = args.epochs * batches.steps_per_epoch
    os.makedirs(args.out_dir, exist_ok=True)
    metrics_path = os.path.join(args.out_dir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    targs = TrainingArguments(
        out_dir=args.out_dir, max_steps=max_steps, learning_rate=lr, min_lr_ratio=0.0,
        warmup_steps=int(args.warmup_ratio * max_steps), lr_schedule="linear",
        weight_decay=args.weight_decay, betas=(0.9, 0.999), max_grad_norm=args.max_grad_norm,
        eval_interval=batches.steps_per_epoch,
        log_interval=max(1, min(10, batches.steps_per_epoch)), seed=args.seed,
        progress=args.progress)
    model.set_rng(backend.default_rng(args.seed))            # dropout masks

    def keep_best():
        model.save_pretrained(args.out_dir)
        tok.save_pretrained(args.out_dir)

    log(f"{args.task}: {data.n_train} training examples ({len(data.train_features)} "
        f"features), {data.n_eval} eval examples; labels: {data.labels or 'answer spans'}")
    log(f"model: {type(model).__name__}, {n_params:,} parameters, {n_trainable:,} trained"
        + (" (encoder frozen)" if args.freeze_encoder else "")
        + f"; max_length {max_length}, {args.epochs} epochs x {batches.steps_per_epoch} steps, "
        f"batch {args.batch_size}, lr {lr:g}")
    for n in notes:
        log(f"note: {n}")
    trainer = EpochTrainer(model, targs, batches, data.evaluate, MAIN_METRIC[args.task],
                           keep_best)
    trainer.train()
    best = next(r for r in trainer.epochs if r["epoch"] == trainer.best_epoch)
    result = FinetuneResult(
        task=args.task, metric=MAIN_METRIC[args.task], history=trainer.epochs,
        best_epoch=trainer.best_epoch,
        best={k[4:]: v for k, v in best.items() if k.startswith("val_")},
        baseline=data.baseline, baseline_name=data.baseline_name, notes=notes,
        n_train=data.n_train, n_eval=data.n_eval, n_train_features=len(data.train_features),
        n_parameters=n_params, n_trainable=n_trainable,
        train_seconds=float(sum(trainer.step_times)),
        step_seconds=float(np.mean(trainer.step_times)),
        total_seconds=time.perf_counter() - t_start, labels=data.labels, out_dir=args.out_dir)
    report = {"args": dataclasses.asdict(args), **dataclasses.asdict(result)}
    with open(os.path.join(args.out_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return result


def format_report(result: FinetuneResult) -> str:
    """The metrics report the CLI prints: epochs, best, baseline, counts, times."""
    keys = [k for k in result.best if k not in ("loss", "per_type_f1")]
    lines = [f"{'epoch':>5} {'train_loss':>10} {'val_loss':>9} "
             + " ".join(f"{k:>12}" for k in keys)]
    for r in result.history:
        lines.append(f"{r['epoch']:>5} {r['train_loss']:>10.4f} {r['val_loss']:>9.4f} "
                     + " ".join(f"{r['val_' + k]:>12.4f}" for k in keys))
    m = result.metric
    lines.append(f"best epoch {result.best_epoch}: {m} {result.best[m]:.4f}; baseline "
                 f"({result.baseline_name}): {m} {result.baseline[m]:.4f}  "
                 + ", ".join(f"{k} {v:.4f}" for k, v in result.baseline.items() if k != m))
    if "per_type_f1" in result.best:
        lines.append("per type F1: " + ", ".join(f"{k} {v:.3f}"
                                                for k, v in result.best["per_type_f1"].items()))
    lines.append(f"time: {result.total_seconds:.1f} s in all, {result.train_seconds:.1f} s in "
                 f"{len(result.history) and result.history[-1]['step']} optimizer steps "
                 f"({1000 * result.step_seconds:.0f} ms per step); trained "
                 f"{result.n_trainable:,} of {result.n_parameters:,} parameters")
    lines.append(f"best model (Hugging Face format, id2label) and {REPORT_FILE} in "
                 f"{result.out_dir}/")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------

def _max_length(model, max_length, default):
    return min(max_length or default, model.config.max_position_embeddings)


def predict_labels(model, tokenizer, texts, text_pairs=None, max_length=None, batch_size=32):
    """(label, probability) of each text (or pair) from a sequence classifier."""
    pairs = text_pairs if text_pairs is not None else [None] * len(texts)
    examples = [ClassificationExample(a, b, None, 0) for a, b in zip(texts, pairs)]
    features, _ = classification_features(tokenizer, examples, None,
                                          _max_length(model, max_length, 128))
    _, logits = run_model(model, features, tokenizer.pad_token_id or 0, batch_size)
    out = []
    for x in logits:
        p = _softmax(x)
        k = int(p.argmax())
        out.append((model.config.id2label[k], float(p[k])))
    return out


def predict_tags(model, tokenizer, word_lists, max_length=None, batch_size=32):
    """BIO tags (and their probabilities) of each sentence given as a list of words."""
    sentences = [TaggedSentence(list(w), None, 0) for w in word_lists]
    features, _ = token_features(tokenizer, sentences, None,
                                 _max_length(model, max_length, 128))
    _, logits = run_model(model, features, tokenizer.pad_token_id or 0, batch_size)
    return [word_predictions(f, x, model.config.id2label) for f, x in zip(features, logits)]


def predict_entities(model, tokenizer, texts, max_length=None):
    """Entities of raw texts: dicts with type, text, start, end (characters) and score
    (the mean probability of the entity's word tags)."""
    out = []
    spans_of = [split_words(t) for t in texts]
    tagged = predict_tags(model, tokenizer, [[w for w, _, _ in s] for s in spans_of], max_length)
    for text, spans, (tags, probs) in zip(texts, spans_of, tagged):
        entities = []
        for kind, first, last in get_entities(tags):
            start, end = spans[first][1], spans[last][2]
            entities.append({"type": kind, "text": text[start:end], "start": start, "end": end,
                             "score": float(np.mean(probs[first:last + 1]))})
        out.append(entities)
    return out


def predict_answers(model, tokenizer, questions, contexts, max_length=None, doc_stride=None,
                    max_query_length=64, max_answer_length=30):
    """The best answer span of each (question, context) pair, read over all windows."""
    examples = [QAExample(str(i), q, c) for i, (q, c) in enumerate(zip(questions, contexts))]
    max_length = _max_length(model, max_length, 384)
    stride = doc_stride if doc_stride is not None else max_length // 4
    features, _ = qa_features(examples, tokenizer, max_length, stride, max_query_length,
                              training=False)
    _, logits = run_model(model, _qa_dicts(features), tokenizer.pad_token_id or 0)
    return best_answers(examples, features, [s for s, _ in logits], [e for _, e in logits],
                        max_answer_length=max_answer_length)
