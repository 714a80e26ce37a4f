"""Evaluation metrics: accuracy, macro-F1, entity-level F1, SQuAD EM/F1, perplexity.

Every function takes plain Python sequences (or NumPy arrays) and returns
floats in [0, 1] (perplexity: >= 1). Where a ratio has a zero denominator
(no predicted entities, say) it is 0, as seqeval and scikit-learn report it.

    accuracy        fraction of predictions equal to the truth
    f1_macro        the unweighted mean over classes of each class's F1
    entity_scores   precision, recall and F1 over entities (exact span and
                    type), read from BIO tags with seqeval's default rules
    squad_scores    exact match and token F1 after SQuAD's answer
                    normalisation, the best over each question's gold answers
    perplexity      exp(mean cross-entropy in nats)
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import numpy as np


def _same_length(where, a, b):
    if len(a) != len(b):
        raise ValueError(f"{where}: y_true and y_pred must have the same length; "
                         f"got {len(a)} and {len(b)}")


def accuracy(y_true, y_pred) -> float:
    """Fraction of positions where y_pred equals y_true."""
    y_true, y_pred = list(y_true), list(y_pred)
    _same_length("accuracy", y_true, y_pred)
    if not y_true:
        raise ValueError("accuracy: no examples")
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def _f1(tp, n_pred, n_true):
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def f1_macro(y_true, y_pred, labels=None) -> float:
    """Macro-averaged F1: the mean over classes c of

        F1_c = 2 P_c R_c / (P_c + R_c),  P_c = TP_c / #predicted c,  R_c = TP_c / #true c

    labels: the classes to average over; default every class that appears in
    y_true or y_pred (as scikit-learn's f1_score(average="macro")).
    """
    y_true, y_pred = list(y_true), list(y_pred)
    _same_length("f1_macro", y_true, y_pred)
    if not y_true:
        raise ValueError("f1_macro: no examples")
    classes = sorted(set(y_true) | set(y_pred), key=str) if labels is None else list(labels)
    true, pred = Counter(y_true), Counter(y_pred)
    tp = Counter(t for t, p in zip(y_true, y_pred) if t == p)
    return float(np.mean([_f1(tp[c], pred[c], true[c])[2] for c in classes]))


# --- entities from BIO tags ------------------------------------------------------

def _split_tag(tag):
    """"B-PER" -> ("B", "PER"); "O" -> ("O", "")."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not kind:
        raise ValueError(f"get_entities: {tag!r} is not a tag of the form O, B-TYPE, I-TYPE "
                         "(or E-TYPE, S-TYPE)")
    return prefix, kind


def get_entities(tags):
    """The entities of one tag sequence, as (type, first, last) word indices (last included).

    seqeval's default (conlleval) reading, which accepts IOB1 and IOB2 alike.
    Between the previous tag (p, type pt) and the current one (c, type ct):

        an entity ends before c    if p is inside one (p != O) and
                                   p is E or S, or c is B, S or O, or ct != pt
        an entity starts at c      if c != O and
                                   c is B or S, or p is O, E or S, or ct != pt

    So an I- tag after O, or after a tag of another type, starts an entity
    of its own type ("O I-PER I-PER" holds one PER entity); "B-PER I-LOC"
    holds two entities, PER and LOC. Positions before the first tag and after
    the last count as O.
    """
    entities, start = [], None
    p, pt = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):           # a final O closes the last entity
        c, ct = _split_tag(tag)
        ends = p != "O" and (p in ("E", "S") or c in ("B", "S", "O") or ct != pt)
        starts = c != "O" and (c in ("B", "S") or p in ("O", "E", "S") or ct != pt)
        if ends and start is not None:
            entities.append((pt, start, i - 1))
            start = None
        if starts:
            start = i
        p, pt = c, ct
    return entities


def entity_scores(true_tags, pred_tags) -> dict:
    """Entity-level precision, recall and F1, micro-averaged, as seqeval computes them.

    true_tags, pred_tags: lists of sentences, each a list of BIO tags. An
    entity counts as correct only when a true entity has exactly its type,
    first and last word. Returns {"precision", "recall", "f1", "n_true",
    "n_pred", "per_type": {type: {"precision", "recall", "f1", "support"}}}.
    """
    true_tags, pred_tags = list(true_tags), list(pred_tags)
    _same_length("entity_scores", true_tags, pred_tags)
    true_set, pred_set = set(), set()
    for s, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"entity_scores: sentence {s} has {len(t)} true tags and "
                             f"{len(p)} predicted tags")
        true_set.update((s, *e) for e in get_entities(t))
        pred_set.update((s, *e) for e in get_entities(p))
    correct = true_set & pred_set
    precision, recall, f1 = _f1(len(correct), len(pred_set), len(true_set))
    per_type = {}
    for kind in sorted({e[1] for e in true_set | pred_set}):
        n_t = sum(e[1] == kind for e in true_set)
        n_p = sum(e[1] == kind for e in pred_set)
        tp = sum(e[1] == kind for e in correct)
        p_, r_, f_ = _f1(tp, n_p, n_t)
        per_type[kind] = {"precision": p_, "recall": r_, "f1": f_, "support": n_t}
    return {"precision": precision, "recall": recall, "f1": f1, "n_true": len(true_set),
            "n_pred": len(pred_set), "per_type": per_type}


# --- SQuAD ---------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD's answer normalisation: lower-case, drop ASCII punctuation, drop the
    articles a/an/the, and collapse white space (in that order, as the official
    evaluation script does). "The  Cat's hat!" -> "cats hat"."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_exact(prediction: str, gold: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token F1 of the normalised answers: overlap counted with multiplicity.

        common = |tokens(pred) ∩ tokens(gold)| (as multisets)
        P = common / |tokens(pred)|,  R = common / |tokens(gold)|,  F1 = 2PR / (P + R)

    Where either answer normalises to nothing, F1 is 1 if both do, else 0
    (the rule of the SQuAD 2.0 script; for answers with words it equals v1.1's).
    """
    pred, true = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not true:
        return float(pred == true)
    common = sum((Counter(pred) & Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions, gold_answers) -> dict:
    """Mean exact match and F1 over questions, each the best over its gold answers.

    predictions: list of predicted answer strings; gold_answers: list of lists
    of the gold strings (SQuAD's dev set has up to five per question).
    Returns {"exact_match", "f1"} as fractions (the official script prints
    them times 100).
    """
    predictions, gold_answers = list(predictions), list(gold_answers)
    _same_length("squad_scores", gold_answers, predictions)
    if not predictions:
        raise ValueError("squad_scores: no questions")
    em, f1 = [], []
    for i, (pred, golds) in enumerate(zip(predictions, gold_answers)):
        if not golds:
            raise ValueError(f"squad_scores: question {i} has no gold answer")
        em.append(max(squad_exact(pred, g) for g in golds))
        f1.append(max(squad_f1(pred, g) for g in golds))
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}


def perplexity(mean_loss: float) -> float:
    """exp(mean cross-entropy), the loss in nats per predicted token; inf past overflow."""
    if not math.isfinite(mean_loss):
        raise ValueError(f"perplexity: the loss must be finite; got {mean_loss}")
    return math.exp(mean_loss) if mean_loss < 709 else math.inf
