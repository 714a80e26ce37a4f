"""Distillation: a smaller student taught by a frozen teacher, DistilBERT's recipe.

The student reads the same batch as the teacher and learns from a weighted sum
of losses (Sanh et al. 2019, "DistilBERT, a distilled version of BERT"):

    loss = alpha_ce   * T^2 KL(softmax(t/T) || softmax(s/T))   the teacher's soft targets
         + alpha_hard * CE(s, labels)                           the task's own loss: alpha_mlm,
                                                                alpha_clm or alpha_task
         + alpha_cos  * mean(1 - cos(h_s, h_t))                 last hidden states aligned
         + alpha_mse  * MSE(s, t)                               logits, masked entries zeroed

with s, t the student's and teacher's logits, h_s, h_t their last hidden
states, T the temperature, the means over the counted rows (real tokens: the
attention mask; masked-LM: its masked positions too with
``restrict_ce_to_mask``). DistilBERT's weights are the defaults: T = 2,
alpha_ce 5, the task's loss 2, alpha_cos 1, alpha_mse 0.

Three tasks:

    mlm       a BERT teacher (BertForMaskedLM, or the MLM head of BertForPreTraining)
              -> a BertForMaskedLM student, on masked-LM batches (80/10/10)
    clm       a GPT teacher -> a shallower GPT, on causal-LM windows
    classify  a fine-tuned BertForSequenceClassification -> a smaller one, the
              teacher's logits as soft targets beside the gold labels

The student starts from the teacher (``student_from_teacher``): every weight
copied, the stack keeping the layers named (``layers=[0, 2, 4, 7, 9, 11]``, as
DistilBERT took them from BERT-base, or ``n_layer=K`` evenly spaced ones), or
from scratch (a random model of the student's shape).

The teacher runs in eval mode (no dropout, no caches), frozen: no gradient is
ever computed for it. Its forward is the only extra cost of a step.

``Distiller`` wraps student and teacher in one object with the interface the
Trainer drives: ``forward(**batch)`` returns the combined ``.loss``,
``backward(dloss)`` pushes each term's gradient into the student (the logits'
terms add up into one ``dlogits``; the cosine term enters at the last hidden
state), and ``named_parameters()`` / ``state_dict()`` are the student's under
its own names. So the Trainer brings progress, evaluation, checkpoints and an
exact resume unchanged, and a checkpoint loads into the student. In eval mode
the Distiller runs the student alone and reports the task's own loss, so that
runs with and without a teacher compare.

    scratchlm distill --teacher DIR --out DIR [--student-n-layer K | --student-layers 0,2,4]
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass

import numpy as np

from scratchlm.backend import to_numpy
from scratchlm.functional import (
    cosine_embedding_backward, cosine_embedding_forward, mse_backward, mse_forward,
    soft_cross_entropy_backward, soft_cross_entropy_forward,
)
from scratchlm.models import GPT, BertForMaskedLM, BertForSequenceClassification, ModelOutput
from scratchlm.nn import CrossEntropyLoss, Module
from scratchlm.train import Trainer

TASKS = ("mlm", "clm", "classify")
HARD_LOSS = {"mlm": "alpha_mlm", "clm": "alpha_clm", "classify": "alpha_task"}
STUDENT_CLASS = {"mlm": BertForMaskedLM, "clm": GPT, "classify": BertForSequenceClassification}
# DistilBERT's weights (its README's training command): T = 2, ce 5, mlm 2, cos 1, mse 0.
DEFAULT_ALPHAS = {"alpha_ce": 5.0, "hard": 2.0, "alpha_cos": 1.0, "alpha_mse": 0.0}


@dataclass
class DistillationConfig:
    """The weights of the distillation loss (names of DistilBERT's training script).

    An alpha left at None takes DistilBERT's value: alpha_ce 5, the task's own
    loss 2 (alpha_mlm for "mlm", alpha_clm for "clm", alpha_task for
    "classify"; the other two must stay 0), alpha_cos 1, alpha_mse 0.
    """

    task: str
    temperature: float = 2.0
    alpha_ce: float | None = None       # soft targets, T^2 KL
    alpha_mlm: float | None = None      # masked-LM cross-entropy on the labels
    alpha_clm: float | None = None      # causal-LM cross-entropy
    alpha_task: float | None = None     # classification cross-entropy on the gold labels
    alpha_cos: float | None = None      # 1 - cos of the last hidden states
    alpha_mse: float | None = None      # MSE of the logits
    restrict_ce_to_mask: bool = False   # mlm: soft, cos and mse terms at masked positions only

    def __post_init__(self):
        where = "DistillationConfig"
        if self.task not in TASKS:
            raise ValueError(f"{where}: task must be one of {TASKS}; got {self.task!r}")
        own = HARD_LOSS[self.task]
        for name in ("alpha_ce", "alpha_mlm", "alpha_clm", "alpha_task", "alpha_cos",
                     "alpha_mse"):
            v = getattr(self, name)
            if v is None:
                v = DEFAULT_ALPHAS["hard"] if name == own else DEFAULT_ALPHAS.get(name, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < np.inf:
                raise ValueError(f"{where}: {name} must be a finite number >= 0; got {v!r}")
            if name in HARD_LOSS.values() and name != own and v:
                raise ValueError(f"{where}: {name}={v} does not apply to task {self.task!r} "
                                 f"(its own loss is {own})")
            setattr(self, name, float(v))
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not 0 < self.temperature < np.inf:
            raise ValueError(f"{where}: temperature must be > 0; got {self.temperature!r}")
        if self.restrict_ce_to_mask and self.task != "mlm":
            raise ValueError(f"{where}: restrict_ce_to_mask applies to task 'mlm' only")
        if not (self.alpha_ce or self.alpha_hard or self.alpha_cos or self.alpha_mse):
            raise ValueError(f"{where}: every alpha is 0; nothing to learn from")

    @property
    def alpha_hard(self) -> float:
        """The weight of the task's own loss (alpha_mlm, alpha_clm or alpha_task)."""
        return getattr(self, HARD_LOSS[self.task])

    @property
    def uses_teacher(self) -> bool:
        """Whether any term reads the teacher (else the student trains alone)."""
        return bool(self.alpha_ce or self.alpha_cos or self.alpha_mse)


# ---------------------------------------------------------------------------
# The student: the teacher's shape with fewer layers, from its layers or from scratch
# ---------------------------------------------------------------------------

def num_layers(model):
    """The number of Transformer blocks of a GPT or BERT model."""
    return model.config.n_layer if isinstance(model, GPT) else model.config.num_hidden_layers


def evenly_spaced_layers(n_teacher: int, n_student: int) -> list[int]:
    """n_student of the teacher's layer indices, first and last included, evenly spaced.

    linspace(0, L-1, K) rounded half up: 6 of 12 gives [0, 2, 4, 7, 9, 11], DistilBERT's.
    """
    if not isinstance(n_student, int) or not 1 <= n_student <= n_teacher:
        raise ValueError(f"evenly_spaced_layers: the student needs 1 to {n_teacher} layers "
                         f"(the teacher's); got {n_student!r}")
    if n_student == 1:
        return [0]
    return [int(np.floor(i * (n_teacher - 1) / (n_student - 1) + 0.5)) for i in range(n_student)]


# Parameter names of the layers: GPT's "h.3.attn...", BERT's "bert.encoder.layer.3.attn...".
_LAYER = re.compile(r"^(h|(?:bert\.)?encoder\.layer)\.(\d+)\.")


def student_from_teacher(teacher, layers=None, n_layer=None, from_scratch=False, seed=0,
                         student_class=None):
    """A student of the teacher's shape with fewer layers.

    Args:
        teacher: a GPT or BERT task model.
        layers: the teacher's layers the student keeps, in order (student layer
            j starts as teacher layer layers[j]); or
        n_layer: K evenly spaced layers (``evenly_spaced_layers``); default half.
        from_scratch: a random student of that shape (seeded) instead of copies.
        student_class: default the teacher's class (BertForMaskedLM for the MLM
            head of a BertForPreTraining).
    Returns: (student in train mode, the layer list; None from scratch).
    Every other weight (embeddings, final LayerNorm, heads) is copied as it is.
    """
    where = "student_from_teacher"
    L = num_layers(teacher)
    if layers is not None and n_layer is not None:
        raise ValueError(f"{where}: give layers or n_layer, not both")
    if layers is None:
        layers = evenly_spaced_layers(L, n_layer if n_layer is not None else max(1, L // 2))
    layers = [int(i) for i in layers]
    if not layers or any(not 0 <= i < L for i in layers):
        raise ValueError(f"{where}: layers must be indices in [0, {L}) of the teacher's "
                         f"{L} layers; got {layers}")
    if layers != sorted(set(layers)):
        raise ValueError(f"{where}: layers must be increasing, each once; got {layers}")
    cls = student_class or type(teacher)
    key = "n_layer" if isinstance(teacher, GPT) else "num_hidden_layers"
    config = dataclasses.replace(teacher.config, **{key: len(layers)})
    student = cls(config, seed=seed, dtype=teacher.dtype)
    if from_scratch:
        return student.train(), None
    source = teacher.state_dict()
    state = {}
    for name in student.state_dict():
        m = _LAYER.match(name)
        src = name if m is None else \
            f"{m.group(1)}.{layers[int(m.group(2))]}.{name[m.end():]}"
        state[name] = source[src]
    student.load_state_dict(state)
    return student.train(), layers


# ---------------------------------------------------------------------------
# The distiller: student + frozen teacher, one loss, one backward
# ---------------------------------------------------------------------------

def _hidden_width(model):
    return model.config.n_embd if isinstance(model, GPT) else model.config.hidden_size


class Distiller(Module):
    """Student and frozen teacher as one model for the Trainer; see the module docstring.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None)``
    (a batch of the task: masked-LM labels, the tokens themselves for causal LM,
    class ids for classification; other keys are refused). In training mode:
    the combined loss; in eval mode: the student alone and its task loss.
    ``last_terms`` holds each term of the last training forward.
    """

    def __init__(self, student, teacher, config: DistillationConfig):
        super().__init__()
        where = "Distiller"
        if not isinstance(config, DistillationConfig):
            raise TypeError(f"{where}: config must be a DistillationConfig; got "
                            f"{type(config).__name__}")
        cls = STUDENT_CLASS[config.task]
        for role, m in (("student", student), ("teacher", teacher)):
            if not isinstance(m, cls):
                raise TypeError(f"{where}: task {config.task!r} needs a {cls.__name__} "
                                f"{role}; got {type(m).__name__}")
        if student.dtype != teacher.dtype:
            raise TypeError(f"{where}: student ({student.dtype}) and teacher ({teacher.dtype}) "
                            "must share one dtype")
        if config.alpha_cos and _hidden_width(student) != _hidden_width(teacher):
            raise ValueError(f"{where}: alpha_cos compares hidden states, which needs the "
                             f"teacher's width {_hidden_width(teacher)}; the student has "
                             f"{_hidden_width(student)} (set alpha_cos=0)")
        if config.alpha_ce or config.alpha_mse:
            vs, vt = student.config.vocab_size, teacher.config.vocab_size
            if config.task == "classify":
                vs, vt = student.config.num_labels, teacher.config.num_labels
            if vs != vt:
                raise ValueError(f"{where}: soft targets need the teacher's {vt} outputs; "
                                 f"the student has {vs}")
        self.config = config
        self.student = student                          # registered: trained, saved
        object.__setattr__(self, "teacher", teacher.eval())  # not registered: frozen
        self.hard_loss_fn = CrossEntropyLoss(ignore_index=-100)
        self.set_rng(student.rng)                       # dropout: the student's generator
        self.last_terms: dict = {}
        self._term_sums: dict = {}

    # The student's parameters under its own names: optimizers, checkpoints and
    # load_state_dict see a plain student.
    def named_parameters(self, prefix=""):
        return self.student.named_parameters(prefix)

    def _inputs(self, input_ids, attention_mask, token_type_ids):
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if not isinstance(self.student, GPT):
            kw["token_type_ids"] = token_type_ids
        elif token_type_ids is not None:
            raise ValueError("Distiller.forward: a GPT takes no token_type_ids")
        return kw

    def _targets(self, labels):
        """The hard loss's targets: causal LM shifts them (position t predicts t + 1)."""
        xp = self.xp
        labels = xp.asarray(labels)
        if self.config.task != "clm":
            return labels
        targets = xp.full_like(labels, -100)
        targets[:, :-1] = labels[:, 1:]
        return targets

    def _rows(self, input_ids, attention_mask, labels):
        """(B, T) bool: the positions the soft, cos and mse terms count."""
        xp = self.xp
        B, T = np.shape(input_ids)[:2]
        if self.config.restrict_ce_to_mask:
            return xp.asarray(labels) != -100
        if attention_mask is None:
            return xp.ones((B, T), dtype=bool)
        return xp.asarray(attention_mask) != 0

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        """The combined loss (training) or the student's task loss (eval); see the class doc."""
        cfg = self.config
        if labels is None:
            raise ValueError("Distiller.forward: labels are required (the task's targets)")
        inputs = self._inputs(input_ids, attention_mask, token_type_ids)
        if not self.training:                           # evaluation: the student alone
            out = self.student(**inputs)
            loss = self.hard_loss_fn(out.logits, self._targets(labels))
            return ModelOutput(loss=loss, logits=out.logits)

        need_hidden = bool(cfg.alpha_cos)
        t_out = None
        if cfg.uses_teacher:                            # (1) the teacher: eval, frozen, no caches
            t_out = self.teacher(**inputs, output_hidden_states=need_hidden)
        s_out = self.student(**inputs, output_hidden_states=need_hidden)   # (2) the student
        s, xp = s_out.logits, self.xp
        hard = self.hard_loss_fn(s, self._targets(labels))                 # (3) the task's loss
        terms = {HARD_LOSS[cfg.task].replace("alpha_", "loss_"): hard}
        total = cfg.alpha_hard * hard
        rows = None if cfg.task == "classify" else self._rows(input_ids, attention_mask, labels)
        soft_cache = cos_cache = mse_cache = None
        if cfg.alpha_ce:                                # (4) soft targets at temperature T
            terms["loss_ce"], soft_cache = soft_cross_entropy_forward(
                s, t_out.logits, cfg.temperature, rows)
            total = total + cfg.alpha_ce * terms["loss_ce"]
        if cfg.alpha_cos:                               # (5) last hidden states, real tokens
            cos_rows = rows if rows is not None else self._rows(input_ids, attention_mask, None)
            terms["loss_cos"], cos_cache = cosine_embedding_forward(
                s_out.hidden_states[-1], t_out.hidden_states[-1], cos_rows)
            total = total + cfg.alpha_cos * terms["loss_cos"]
        if cfg.alpha_mse:                               # (6) logits, masked rows zeroed
            terms["loss_mse"], mse_cache = mse_forward(
                s, t_out.logits, None if rows is None else rows[..., None])
            total = total + cfg.alpha_mse * terms["loss_mse"]
        self._save((soft_cache, cos_cache, mse_cache, s.shape))
        self.last_terms = {k: float(v) for k, v in terms.items()}
        for k, v in self.last_terms.items():
            self._term_sums.setdefault(k, []).append(v)
        return ModelOutput(loss=xp.asarray(total), logits=s)

    def backward(self, dloss=1.0):
        """Each term's gradient into the student; the teacher takes none.

        The logits feed the task's loss, the soft targets and the MSE: their
        three gradients add into one dlogits. The cosine term's gradient
        enters at the student's last hidden state (d_hidden_states).
        """
        cfg = self.config
        soft_cache, cos_cache, mse_cache, shape = self._pop_cache()
        dlogits = None
        if cfg.alpha_hard:                              # back through (3)
            dlogits = self.hard_loss_fn.backward(dloss * cfg.alpha_hard)
        else:
            self.hard_loss_fn.clear_caches()
        if soft_cache is not None:                      # back through (4)
            g = soft_cross_entropy_backward(dloss * cfg.alpha_ce, soft_cache)
            dlogits = g if dlogits is None else dlogits + g   # gradients add at the fork
        if mse_cache is not None:                       # back through (6): the student's side
            g, _ = mse_backward(dloss * cfg.alpha_mse, mse_cache)   # (the teacher's: frozen)
            dlogits = g if dlogits is None else dlogits + g
        if dlogits is None:                             # only the cosine term: no logit loss
            dlogits = self.xp.zeros(shape, dtype=self.dtype)
        d_hidden = None
        if cos_cache is not None:                       # back through (5)
            dh, _ = cosine_embedding_backward(dloss * cfg.alpha_cos, cos_cache)
            d_hidden = [None] * num_layers(self.student) + [dh]
        self.student.backward(dlogits=dlogits, d_hidden_states=d_hidden)   # back through (2)

    def pop_terms(self) -> dict:
        """The mean of each loss term over the training forwards since the last call."""
        out = {k: float(np.mean(v)) for k, v in self._term_sums.items()}
        self._term_sums = {}
        return out


class DistillTrainer(Trainer):
    """The Trainer, logging each term of the distillation loss beside the total."""

    def train_step(self):
        m = super().train_step()
        m.update(self.model.pop_terms())
        return m


# ---------------------------------------------------------------------------
# Data for the three tasks
# ---------------------------------------------------------------------------

def mlm_batches(tokenizer, text, block_size, batch_size, seed=0, eval_batches=8):
    """Masked-LM batches, with the train/validation split of ``scratchlm train --model bert``:
    documents separated by blank lines, the last tenth for validation. The
    next-sentence labels of the pre-training batches are dropped (DistilBERT
    has no NSP). Returns (train batches, a fixed list of validation batches).
    """
    from scratchlm.data import BertPretrainingBatches  # noqa: PLC0415

    class MLMBatches(BertPretrainingBatches):
        def next_batch(self):
            batch = super().next_batch()
            batch.pop("next_sentence_label")
            return batch

    docs = [d for d in text.split("\n\n") if d.strip()]
    n_val = max(2, len(docs) // 10)
    if len(docs) < n_val + 2:
        raise ValueError("mlm_batches: the text needs several documents separated by blank lines")
    encode = lambda ds: [tokenizer.encode(d, add_special_tokens=False) for d in ds]  # noqa: E731
    train_ids, val_ids = encode(docs[:-n_val]), encode(docs[-n_val:])
    train = MLMBatches(train_ids, tokenizer, block_size, batch_size, seed=seed)
    evals = MLMBatches(val_ids, tokenizer, block_size, batch_size).fixed_batches(eval_batches)
    return train, evals


def clm_batches(tokenizer, text, block_size, batch_size, seed=0, eval_batches=8):
    """Causal-LM windows, with the 90/10 split of ``scratchlm train``.
    Returns (train batches, a fixed list of validation batches)."""
    from scratchlm.data import CausalLMBatches, train_val_split  # noqa: PLC0415

    train_text, val_text = train_val_split(text, 0.1)
    ids = [np.asarray(tokenizer.encode(t), dtype=np.int64) for t in (train_text, val_text)]
    train = CausalLMBatches(ids[0], block_size, batch_size, seed=seed)
    evals = CausalLMBatches(ids[1], block_size, batch_size).fixed_batches(eval_batches)
    return train, evals


def classify_batches(tokenizer, train_file, eval_file, label2id, max_length, batch_size,
                     seed=0):
    """Classification batches from task files (CSV/TSV/JSONL, as ``scratchlm finetune`` reads
    them), labels mapped by the teacher's label2id. Returns (train batches, the whole eval
    file as a list of batches)."""
    from scratchlm.finetune import (  # noqa: PLC0415 - the fine-tuning wing, only when asked
        FeatureBatches,
        check_labels,
        classification_features,
        pad_batch,
        read_classification,
    )

    train, evals = read_classification(train_file), read_classification(eval_file)
    check_labels(train, label2id, train_file)
    check_labels(evals, label2id, eval_file)
    pad = tokenizer.pad_token_id or 0
    train_f, _ = classification_features(tokenizer, train, label2id, max_length)
    eval_f, _ = classification_features(tokenizer, evals, label2id, max_length)
    eval_batches = [pad_batch(eval_f[k:k + batch_size], pad)
                    for k in range(0, len(eval_f), batch_size)]
    return FeatureBatches(train_f, batch_size, pad, seed=seed), eval_batches


# ---------------------------------------------------------------------------
# Measuring: the task metric and the speed of a model, teacher or student
# ---------------------------------------------------------------------------

METRIC = {"mlm": "mlm_accuracy", "clm": "val_loss", "classify": "accuracy"}


def model_inputs(model, batch):
    """The model's input arrays of a batch (no labels)."""
    keys = ("input_ids", "attention_mask") if isinstance(model, GPT) else \
        ("input_ids", "attention_mask", "token_type_ids")
    return {k: batch[k] for k in keys if k in batch}


def _ce_sum(logits, targets):
    """(sum of -log p[target] over counted targets, their number, correct argmaxes), float64."""
    z = np.asarray(to_numpy(logits), dtype=np.float64)
    z = z.reshape(-1, z.shape[-1])
    t = np.asarray(targets).reshape(-1)
    keep = t != -100
    z, t = z[keep], t[keep]
    m = z.max(-1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
    return float(-log_p[np.arange(len(t)), t].sum()), int(keep.sum()), \
        int((z.argmax(-1) == t).sum())


def evaluate(model, task, batches) -> dict:
    """The task's loss and metric of a model over batches, pooled over every counted
    target (not a mean of batch means): mlm loss and accuracy at the masked
    positions; clm loss (and its perplexity) of the next token; classify loss
    and accuracy over the examples. ``metric`` names the one the task reports."""
    model.eval()
    total, n, correct = 0.0, 0, 0
    for batch in batches:
        out = model(**model_inputs(model, batch))
        labels = np.asarray(batch["labels"])
        if task == "clm":
            targets = np.full_like(labels, -100)
            targets[:, :-1] = labels[:, 1:]
        else:
            targets = labels
        s, k, c = _ce_sum(out.logits, targets)
        total, n, correct = total + s, n + k, correct + c
    loss = total / max(n, 1)
    result = {"loss": loss, "accuracy": correct / max(n, 1), "targets": n}
    if task == "clm":
        result["perplexity"] = float(np.exp(min(loss, 700.0)))
    result["metric"] = METRIC[task]
    return result


def throughput(model, batch, steps=3, warmup=1) -> dict:
    """Training and inference tokens/s of a model's architecture on one batch.

    A fresh model of the same config and class (the weights do not change the
    speed, and the model passed in is left as it is): training steps of
    forward, the task loss, backward and AdamW (flat), then eval-mode
    forwards; the median of ``steps`` timed runs each. Returns
    {"train_tokens_per_s", "inference_tokens_per_s", "tokens"}.
    """
    from scratchlm.optim import AdamW  # noqa: PLC0415

    fresh = type(model)(model.config, seed=0, dtype=model.dtype).train()
    opt = AdamW(fresh.parameters(), lr=1e-4, flat=True)
    inputs = model_inputs(fresh, batch)
    tokens = int(np.size(batch["input_ids"]))

    def train_step():
        opt.zero_grad()
        fresh(**inputs, labels=batch["labels"])
        fresh.backward()
        opt.step()

    def timed(fn):
        for _ in range(warmup):
            fn()
        runs = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return float(np.median(runs))

    train_s = timed(train_step)
    fresh.eval()
    infer_s = timed(lambda: fresh(**inputs))
    return {"train_tokens_per_s": tokens / train_s, "inference_tokens_per_s": tokens / infer_s,
            "tokens": tokens}
