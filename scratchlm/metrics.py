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
    corpus_bleu     corpus-level BLEU (0-100) as sacrebleu computes it: 13a
                    tokenisation, n-grams up to 4, "exp" smoothing, brevity
                    penalty against the closest reference length
    tokenize_13a    the mteval-v13a tokeniser that BLEU uses by default
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass

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


# --- BLEU ----------------------------------------------------------------------
#
# BLEU (Papineni et al., 2002) as sacrebleu computes it by default, so that
# scores agree with the ones papers and WMT report. For a corpus of
# hypotheses h_i, each with one or more references r_ij:
#
#     tokens      13a tokenisation of every segment (below)
#     m_n, t_n    over the corpus, for n = 1..N (N = 4): t_n counts the n-grams
#                 of the hypotheses, m_n those matched, each n-gram's count
#                 clipped to the most times it occurs in any one reference
#     p_n         100 * m_n / t_n, smoothed where m_n = 0 (smooth_method)
#     c, r        hypothesis length and reference length, summed over segments;
#                 per segment the reference length closest to the hypothesis
#                 length (the shorter one on a tie)
#     BP          1 if c >= r, else exp(1 - r / c) (0 when c = 0)
#     BLEU        BP * exp((1/N) sum_n log p_n)      (0 when any p_n is 0)

# 13a treats every ASCII punctuation mark as a token of its own, except four:
# the apostrophe (kept inside words: "don't"), and the comma, period and dash,
# which have rules of their own so that numbers ("1,000.5") and hyphenated
# words ("state-of-the-art") stay whole.
_13A_SYMBOLS = "!\"#$%&()*+/:;<=>?@[\\]^_`{|}~"
_13A_RULES = [
    (re.compile("([" + re.escape(_13A_SYMBOLS) + "])"), r" \1 "),  # symbols stand alone
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),   # . and , split off unless after a digit ...
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),   # ... or unless before one
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),       # a dash after a digit splits ("5-10")
]
# The SGML escapes mteval's input may carry, undone in this order (so "&amp;lt;" -> "<").
_13A_ENTITIES = [("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")]

_SMOOTH_DEFAULTS = {"exp": None, "floor": 0.1, "add-k": 1, "none": None}


def tokenize_13a(line: str) -> list:
    """The tokens of one segment by mteval-v13a's rules (sacrebleu's "13a").

    1. Drop "<skipped>"; join words hyphenated across a line break ("-\\n");
       line breaks become spaces; undo &quot; &amp; &lt; &gt;.
    2. Pad with a space at each end (so a leading "." has a non-digit before it).
    3. Apply the four rules of _13A_RULES in order, each over the whole line.
    4. Split on white space (any Unicode white space, as str.split does).

    "Hello, world!" -> ["Hello", ",", "world", "!"];  "1,000.5" stays whole;
    "5-10" -> ["5", "-", "10"];  "state-of-the-art" stays whole.
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _13A_ENTITIES:
        line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


@dataclass
class BLEUScore:
    """A corpus BLEU score and its statistics (the fields of sacrebleu's BLEUScore).

    counts and totals are the matched and total n-grams for n = 1..N, before
    smoothing (sacrebleu reports them after add-k's additions); precisions are
    the p_n in percent, after smoothing. float(result) is the score.
    """
    score: float          # 0-100
    counts: list          # (N,) m_n, matched n-grams
    totals: list          # (N,) t_n, n-grams in the hypotheses
    precisions: list      # (N,) p_n in percent
    bp: float             # brevity penalty
    sys_len: int          # c, hypothesis tokens
    ref_len: int          # r, closest-reference tokens

    def __float__(self):
        return float(self.score)

    def __str__(self):
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        ratio = self.sys_len / self.ref_len if self.ref_len else 0.0
        return (f"BLEU = {self.score:.2f} {precisions} (BP = {self.bp:.3f} ratio = {ratio:.3f} "
                f"hyp_len = {self.sys_len} ref_len = {self.ref_len})")


def _reference_streams(references, n_hyp):
    """references as a list of streams, each of n_hyp strings (None: no reference there)."""
    if isinstance(references, str):
        raise TypeError("corpus_bleu: references must be a list of strings (one per "
                        "hypothesis) or a list of reference streams; got one string")
    references = list(references)
    if all(r is None or isinstance(r, str) for r in references):
        streams = [references] if references else []            # one reference per hypothesis
    else:
        streams = []
        for k, stream in enumerate(references):
            if isinstance(stream, str) or not hasattr(stream, "__len__"):
                raise TypeError(f"corpus_bleu: references mixes strings and streams; "
                                f"references[{k}] is {type(stream).__name__}")
            streams.append(list(stream))
    if n_hyp and not streams:
        raise ValueError(f"corpus_bleu: references is empty; expected {n_hyp} references "
                         "(one per hypothesis), or streams of that many")
    for k, stream in enumerate(streams):
        if len(stream) != n_hyp:
            raise ValueError(
                f"corpus_bleu: references stream {k} has {len(stream)} segments but "
                f"hypotheses has {n_hyp}; each stream holds one reference per hypothesis "
                "(sacrebleu's layout); a list of references per hypothesis is its "
                "transpose, list(zip(*refs))")
        for i, ref in enumerate(stream):
            if ref is not None and not isinstance(ref, str):
                raise TypeError(f"corpus_bleu: references stream {k}, segment {i} must be a "
                                f"string or None; got {type(ref).__name__}")
    return streams


def _ngrams(tokens, max_order):
    """Counter of every n-gram (as a tuple), 1 <= n <= max_order."""
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_order + 1)
                   for i in range(len(tokens) - n + 1))


def _closest_length(hyp_len, ref_lens):
    """The reference length nearest hyp_len; the shorter one on a tie."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def _bleu_from_stats(counts, totals, sys_len, ref_len, smooth_method, smooth_value):
    """BLEUScore from the corpus statistics (the formulas at the head of this section).

    Smoothing of a zero count m_n (Chen and Cherry, 2014):
        "none"   p_n = 0 (and so BLEU = 0)
        "floor"  p_n = 100 * k / t_n                  (k = smooth_value, default 0.1)
        "add-k"  m_n and t_n both + k for n >= 2      (k default 1), for every n >= 2
        "exp"    p_n = 100 / (2^j * t_n) for the j-th order with m_n = 0 (mteval's rule)
    An order with no n-grams at all (t_n = 0, every hypothesis shorter than n)
    leaves p_n and all higher orders 0. When nothing matches at all the score is 0.
    """
    N = len(counts)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * N
    if not any(counts):
        return BLEUScore(0.0, list(counts), list(totals), precisions, bp, sys_len, ref_len)
    exp_denominator = 1.0
    for n in range(N):                         # n-gram order n + 1
        m, t = counts[n], totals[n]
        if smooth_method == "add-k" and n > 0:
            m, t = m + smooth_value, t + smooth_value
        if t == 0:
            break
        if m == 0:
            if smooth_method == "exp":
                exp_denominator *= 2
                precisions[n] = 100.0 / (exp_denominator * t)
            elif smooth_method == "floor":
                precisions[n] = 100.0 * smooth_value / t
        else:
            precisions[n] = 100.0 * m / t
    if min(precisions) == 0.0:                 # a zero factor in the geometric mean
        score = 0.0
    else:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / N)
    return BLEUScore(score, list(counts), list(totals), precisions, bp, sys_len, ref_len)


def corpus_bleu(hypotheses, references, *, smooth_method: str = "exp", smooth_value=None,
                tokenize: str = "13a", lowercase: bool = False,
                max_ngram_order: int = 4) -> BLEUScore:
    """Corpus BLEU of hypotheses against references, equal to sacrebleu.corpus_bleu.

    hypotheses: list of strings. references: either a list of strings, one
    reference per hypothesis, or a list of reference streams (sacrebleu's
    layout: stream k holds the k-th reference of every hypothesis); a None in
    a stream means that hypothesis has one reference fewer.
    smooth_method: "exp" (the default), "floor", "add-k" or "none";
    smooth_value: k for "floor" (default 0.1) and "add-k" (default 1).
    tokenize: "13a" (mteval-v13a, tokenize_13a) or "none" (split on white space).
    lowercase: compare lower-cased text.
    Each segment is lower-cased (when asked), stripped of trailing white space,
    then tokenized. An empty corpus scores 0.
    Returns: BLEUScore; .score is in [0, 100], float(result) too.
    """
    if smooth_method not in _SMOOTH_DEFAULTS:
        raise ValueError(f"corpus_bleu: smooth_method must be one of "
                         f"{', '.join(map(repr, _SMOOTH_DEFAULTS))}; got {smooth_method!r}")
    if tokenize not in ("13a", "none"):
        raise ValueError(f"corpus_bleu: tokenize must be '13a' or 'none'; got {tokenize!r}")
    if not isinstance(max_ngram_order, int) or max_ngram_order < 1:
        raise ValueError(f"corpus_bleu: max_ngram_order must be an integer >= 1; "
                         f"got {max_ngram_order!r}")
    if smooth_value is None:
        smooth_value = _SMOOTH_DEFAULTS[smooth_method]
    if isinstance(hypotheses, str):
        raise TypeError("corpus_bleu: hypotheses must be a list of strings; got one string")
    hypotheses = list(hypotheses)
    for i, h in enumerate(hypotheses):
        if not isinstance(h, str):
            raise TypeError(f"corpus_bleu: hypotheses[{i}] must be a string; "
                            f"got {type(h).__name__}")
    streams = _reference_streams(references, len(hypotheses))

    def tokens(segment):
        segment = (segment.lower() if lowercase else segment).rstrip()
        return tokenize_13a(segment) if tokenize == "13a" else segment.split()

    N = max_ngram_order
    counts, totals, sys_len, ref_len = [0] * N, [0] * N, 0, 0
    for i, hyp in enumerate(hypotheses):
        refs = [tokens(stream[i]) for stream in streams if stream[i] is not None]
        if not refs:
            raise ValueError(f"corpus_bleu: hypothesis {i} has no reference (None in "
                             "every references stream)")
        max_ref_counts = Counter()             # each n-gram's most occurrences in one reference
        for ref in refs:
            max_ref_counts |= _ngrams(ref, N)
        hyp_tokens = tokens(hyp)
        sys_len += len(hyp_tokens)
        ref_len += _closest_length(len(hyp_tokens), [len(r) for r in refs])
        for ngram, count in _ngrams(hyp_tokens, N).items():
            n = len(ngram) - 1
            totals[n] += count
            counts[n] += min(count, max_ref_counts[ngram])    # clipped to the references
    return _bleu_from_stats(counts, totals, sys_len, ref_len, smooth_method, smooth_value)
