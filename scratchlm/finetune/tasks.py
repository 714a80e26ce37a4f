"""Task data for fine-tuning: the standard file formats, label alignment, QA windows.

Three tasks, three formats, read as the public data sets ship them:

    classification  CSV, TSV or JSONL rows: a text, an optional second text,
                    a label. A GLUE TSV (SST-2's ``sentence<TAB>label``) reads
                    as it is.
    NER             CoNLL: one token per line, its tag in the last column, a
                    blank line between sentences, ``-DOCSTART-`` lines
                    skipped. Tags are BIO (IOB2: B-TYPE opens an entity,
                    I-TYPE continues it, O is outside); CoNLL-2003's IOB1
                    files read too (an I- tag may open an entity).
    QA              SQuAD v1.1 JSON: data -> paragraphs -> context and qas,
                    each question with answers as (text, answer_start), the
                    character offset of the answer in the context.

What the models need from them:

    words -> word pieces     a word may become several pieces; its label goes
                             to the first and -100 (ignored by the loss) to the
                             rest: align_labels
    answer chars -> tokens   the character span of an answer becomes the first
                             and last token that cover it, through the offsets
                             of each word piece (tokenize_with_offsets)
    long contexts -> windows a context longer than the model's max_length is
                             cut into overlapping windows ([CLS] question [SEP]
                             window [SEP]); the answer is read back from the
                             best (start, end) over all windows: best_answers

Bad input is an error that names the file and the line (or the question id);
nothing is dropped silently: whatever a step leaves out is counted in a
``Counts`` and reported by the caller.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


class TaskDataError(ValueError):
    """A task file that cannot be read as its format says; the message names the place."""


def _where(path, line=None):
    return f"{path}:{line}" if line is not None else f"{path}"


def _read_lines(path, what):
    """The lines of a UTF-8 text file; clear errors for a missing, binary or empty file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise TaskDataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None
    if not text.strip():
        raise TaskDataError(f"{path}: the file is empty")
    return text


class Counts(Counter):
    """What a reading or encoding step left out or changed, by reason; reported to the user.

    E.g. Counts({"truncated to max_length": 3}) -> "3 truncated to max_length".
    """

    def report(self) -> list[str]:
        return [f"{n} {reason}" for reason, n in self.items() if n]


# ---------------------------------------------------------------------------
# Sequence classification: CSV / TSV / JSONL
# ---------------------------------------------------------------------------

# Column names that the public data sets use, tried in this order.
TEXT_COLUMNS = ("text", "sentence", "sentence1", "question", "premise", "text_a", "#1 String")
PAIR_COLUMNS = ("text_pair", "text_b", "sentence2", "hypothesis", "#2 String", "sentence")
LABEL_COLUMNS = ("label", "labels", "gold_label", "class", "Quality")


@dataclass
class ClassificationExample:
    """One row: a text, an optional second text, its label (str, or None when unlabelled)."""

    text: str
    text_pair: str | None
    label: str | None
    line: int                       # the line of the file it was read from


def _pick(columns, given, candidates, what, path, required):
    if given is not None:
        if given not in columns:
            raise TaskDataError(f"{path}: no column {given!r} for the {what}; the columns "
                                f"are {list(columns)}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise TaskDataError(f"{path}: no column for the {what}: expected one of "
                            f"{list(candidates)}, found {list(columns)} (name it with "
                            f"--{what.replace(' ', '-')}-column)")
    return found


def _label_str(value, where):
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise TaskDataError(f"{where}: the label must be a string or an integer; got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    label = str(value).strip()
    if not label:
        raise TaskDataError(f"{where}: the label is empty")
    return label


def read_classification(path, text_column=None, text_pair_column=None, label_column=None,
                        require_labels=True) -> list[ClassificationExample]:
    """Read a classification file: ``.tsv`` (GLUE style), ``.csv`` or ``.jsonl``.

    TSV and CSV files start with a header naming the columns; JSONL files hold
    one JSON object per line. The text, second text and label columns are
    found by name (TEXT_COLUMNS, PAIR_COLUMNS, LABEL_COLUMNS) or given.
    GLUE's TSVs are not quoted (a sentence may hold a ``"``), so TSV fields
    are split at tabs only, as the GLUE loaders do.

    Errors (TaskDataError) name the file and line: a row with the wrong
    number of fields, bad JSON, a missing or empty text or label, an empty file.
    """
    text = _read_lines(path, "read_classification")
    ext = os.path.splitext(str(path))[1].lower()
    if ext in (".jsonl", ".ndjson", ".json"):
        rows = _jsonl_rows(text, path)
        columns = list(dict.fromkeys(k for _, row in rows for k in row))
    elif ext in (".tsv", ".csv", ".tab"):
        rows, columns = _delimited_rows(text, path, "\t" if ext != ".csv" else ",")
    else:
        raise TaskDataError(f"{path}: unknown classification format {ext!r}; expected .tsv, "
                            ".csv or .jsonl")
    text_col = _pick(columns, text_column, TEXT_COLUMNS, "text", path, True)
    pair_col = _pick(columns, text_pair_column,
                     [c for c in PAIR_COLUMNS if c != text_col], "text pair", path, False)
    label_col = _pick(columns, label_column, LABEL_COLUMNS, "label", path, require_labels)
    examples = []
    for line, row in rows:
        where = _where(path, line)
        a = row.get(text_col)
        if not isinstance(a, str) or not a.strip():
            raise TaskDataError(f"{where}: the text ({text_col!r}) is missing or empty")
        b = None
        if pair_col is not None:
            b = row.get(pair_col)
            if not isinstance(b, str) or not b.strip():
                raise TaskDataError(f"{where}: the second text ({pair_col!r}) is missing "
                                    "or empty")
        label = None
        if label_col is not None:
            if label_col not in row:
                raise TaskDataError(f"{where}: no label ({label_col!r})")
            label = _label_str(row[label_col], where)
        examples.append(ClassificationExample(a, b, label, line))
    if not examples:
        raise TaskDataError(f"{path}: no examples (a header and no rows)")
    return examples


def _jsonl_rows(text, path):
    rows = []
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue                                 # a blank line holds no example
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{_where(path, i)}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise TaskDataError(f"{_where(path, i)}: expected a JSON object; got "
                                f"{type(row).__name__}")
        rows.append((i, row))
    return rows


def _delimited_rows(text, path, delimiter):
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
        columns = [c.strip() for c in header]
        if len(set(columns)) != len(columns):
            raise TaskDataError(f"{_where(path, 1)}: the header repeats a column: {columns}")
        rows = []
        for fields in reader:
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue                             # a blank line holds no example
            if len(fields) != len(columns):
                raise TaskDataError(
                    f"{_where(path, line)}: expected {len(columns)} "
                    f"{'tab' if delimiter == chr(9) else 'comma'}-separated fields "
                    f"({', '.join(columns)}); got {len(fields)}")
            rows.append((line, dict(zip(columns, fields))))
    except csv.Error as exc:
        raise TaskDataError(f"{_where(path, reader.line_num)}: {exc}") from None
    return rows, columns


def label_list(labels) -> list[str]:
    """The sorted label set: numerically when every label is an integer ("0" < "1" < "10")."""
    labels = set(labels)
    if all(re.fullmatch(r"-?\d+", lab) for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def write_classification(path, examples, text_name="sentence", pair_name="sentence2"):
    """Write examples as a GLUE-style TSV (``sentence<TAB>label``, with a header)."""
    pair = any(ex.text_pair is not None for ex in examples)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join([text_name] + ([pair_name] if pair else []) + ["label"]) + "\n")
        for ex in examples:
            fields = [ex.text] + ([ex.text_pair] if pair else []) + [ex.label]
            for value in fields:
                if "\t" in value or "\n" in value:
                    raise ValueError(f"write_classification: a field holds a tab or a "
                                     f"newline: {value[:40]!r}")
            f.write("\t".join(fields) + "\n")


# ---------------------------------------------------------------------------
# Named entities: CoNLL
# ---------------------------------------------------------------------------

_BIO = re.compile(r"O|[BI]-\S+")


@dataclass
class TaggedSentence:
    """The words of a sentence and their tags (None when the file has no tag column)."""

    words: list[str]
    tags: list[str] | None
    line: int                       # the line of the sentence's first word


def read_conll(path, require_tags=True) -> list[TaggedSentence]:
    """Read a CoNLL file: a token per line, the tag last, sentences split by blank lines.

    Columns are split at white space; every token line of the file must have
    as many columns as the first (CoNLL-2003 has four: word, POS, chunk, NER).
    ``-DOCSTART-`` lines and the blank line after them start a new document and
    are skipped. With require_tags=False a file of one column (words only)
    reads with tags None. Errors name the file and line: a wrong number of
    columns, a tag that is not BIO (O, B-TYPE, I-TYPE), an empty file.
    """
    text = _read_lines(path, "read_conll")
    sentences, words, tags, first = [], [], [], None
    n_columns, columns_line = None, None

    def close():
        nonlocal words, tags, first
        if words:
            sentences.append(TaggedSentence(words, tags if n_columns > 1 else None, first))
        words, tags, first = [], [], None

    for i, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            close()
            continue
        if fields[0] == "-DOCSTART-":
            close()
            continue
        if n_columns is None:
            n_columns, columns_line = len(fields), i
            if n_columns < 2 and require_tags:
                raise TaskDataError(f"{_where(path, i)}: expected a word and a tag (two or "
                                    f"more columns); got one column {fields[0]!r}")
        elif len(fields) != n_columns:
            raise TaskDataError(f"{_where(path, i)}: expected {n_columns} columns, as on line "
                                f"{columns_line}; got {len(fields)}: {line.strip()!r}")
        if n_columns > 1 and not _BIO.fullmatch(fields[-1]):
            raise TaskDataError(f"{_where(path, i)}: tag {fields[-1]!r} is not a BIO tag "
                                "(O, B-TYPE or I-TYPE)")
        if first is None:
            first = i
        words.append(fields[0])
        tags.append(fields[-1])
    close()
    if not sentences:
        raise TaskDataError(f"{path}: no sentences (only -DOCSTART- lines?)")
    return sentences


def ner_label_list(tag_lists) -> list[str]:
    """The NER label set: "O", then B- and I- of each entity type in sorted order
    (both, even where a file has only one, so that either can be predicted)."""
    types = sorted({t[2:] for tags in tag_lists for t in tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def check_labels(examples, label2id, path):
    """An error naming the file and line of the first label (or tag) outside the label set.

    examples: ClassificationExample or TaggedSentence (a sentence's words are
    on consecutive lines, so word k is on line ``line + k``).
    """
    known = ", ".join(label2id)
    for ex in examples:
        if isinstance(ex, TaggedSentence):
            for k, tag in enumerate(ex.tags or []):
                if tag not in label2id:
                    raise TaskDataError(f"{_where(path, ex.line + k)}: tag {tag!r} is not in "
                                        f"the label set of the training data ({known})")
        elif ex.label is not None and ex.label not in label2id:
            raise TaskDataError(f"{_where(path, ex.line)}: label {ex.label!r} is not in the "
                                f"label set of the training data ({known})")


def write_conll(path, sentences):
    """Write sentences as CoNLL: ``word tag`` per line, a blank line after each sentence."""
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            for w, t in zip(s.words, s.tags):
                if not w or any(c.isspace() for c in w):
                    raise ValueError(f"write_conll: a word must be non-empty, without "
                                     f"white space; got {w!r}")
                f.write(f"{w} {t}\n")
            f.write("\n")


def encode_words(tokenizer, words, max_length, cache=None):
    """Word pieces of a sentence given as words, framed as [CLS] ... [SEP].

    Each word is tokenized on its own, so every piece knows its word.
    Returns (input_ids, word_ids, n_cut): word_ids[p] is the index of the
    word that piece p belongs to (None for [CLS] and [SEP]); n_cut counts
    words left out because the sentence is longer than max_length.
    A word with no pieces at all (a lone control character) appears in no
    word_ids; the caller counts it.
    """
    ids, word_ids = [], []
    for w, word in enumerate(words):
        pieces = cache.get(word) if cache is not None else None
        if pieces is None:
            pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
            if cache is not None:
                cache[word] = pieces
        ids.extend(pieces)
        word_ids.extend([w] * len(pieces))
    room = max_length - 2
    kept_words = set(word_ids[:room])
    n_cut = len(set(word_ids) - kept_words)
    ids, word_ids = ids[:room], word_ids[:room]
    return ([tokenizer.cls_token_id] + ids + [tokenizer.sep_token_id],
            [None] + word_ids + [None], n_cut)


def align_labels(word_ids, word_labels, ignore_index=-100):
    """Word labels -> piece labels: the first piece of each word takes its word's
    label, the other pieces and the special tokens take ignore_index.

        words   ["Johanson", "lives"]        labels [B-PER, O] = [1, 0]
        pieces  [CLS] johan ##son lives [SEP]
        labels  -100   1    -100   0   -100
    """
    labels, previous = [], None
    for w in word_ids:
        labels.append(ignore_index if w is None or w == previous else word_labels[w])
        previous = w
    return labels


_WORD = re.compile(r"\w+|[^\w\s]")


def split_words(text):
    """Words of raw text for token classification, with their character spans:
    runs of letters, digits and underscores, and each other visible character alone.

    "Call len(x)." -> [("Call", 0, 4), ("len", 5, 8), ("(", 8, 9), ("x", 9, 10), ...]
    """
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


# ---------------------------------------------------------------------------
# Extractive question answering: SQuAD v1.1
# ---------------------------------------------------------------------------

@dataclass
class QAExample:
    """A question about a context, with its answers: (text, answer_start) pairs."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)
    title: str = ""


def read_squad(path, require_answers=True) -> list[QAExample]:
    """Read a SQuAD v1.1 JSON file: {"data": [{"title", "paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}.

    Every answer is checked against its context: context[answer_start:
    answer_start + len(text)] must be the answer text. Errors name the file
    and the question id: bad JSON, a missing field, an answer that does not
    match its offset, repeated ids, no questions. SQuAD v2 questions marked
    ``is_impossible`` read with no answers; the caller counts them.
    """
    text = _read_lines(path, "read_squad")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskDataError(f"{_where(path, exc.lineno)}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise TaskDataError(f"{path}: expected a SQuAD object {{\"data\": [...]}}")
    examples, seen = [], set()
    for a, article in enumerate(doc["data"]):
        place = f"{path}: data[{a}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise TaskDataError(f"{place}: expected an object with a list \"paragraphs\"")
        title = str(article.get("title", ""))
        for p, para in enumerate(article["paragraphs"]):
            place = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or not isinstance(para.get("context"), str) \
                    or not isinstance(para.get("qas"), list):
                raise TaskDataError(f"{place}: expected an object with \"context\" (a string) "
                                    "and \"qas\" (a list)")
            context = para["context"]
            for q, qa in enumerate(para["qas"]):
                examples.append(_squad_question(qa, context, title, path,
                                                f"{place}.qas[{q}]", seen, require_answers))
    if not examples:
        raise TaskDataError(f"{path}: no questions")
    return examples


def _squad_question(qa, context, title, path, place, seen, require_answers):
    if not isinstance(qa, dict) or "id" not in qa:
        raise TaskDataError(f"{place}: a question needs an \"id\"")
    qid = str(qa["id"])
    where = f"{path}: question id {qid!r}"
    if qid in seen:
        raise TaskDataError(f"{where}: the id appears twice")
    seen.add(qid)
    question = qa.get("question")
    if not isinstance(question, str) or not question.strip():
        raise TaskDataError(f"{where}: the question is missing or empty")
    answers = qa.get("answers", [])
    if not isinstance(answers, list):
        raise TaskDataError(f"{where}: \"answers\" must be a list")
    if not answers and require_answers and not qa.get("is_impossible", False):
        raise TaskDataError(f"{where}: no answers")
    checked = []
    for ans in answers:
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), str) \
                or isinstance(ans.get("answer_start"), bool) \
                or not isinstance(ans.get("answer_start"), int):
            raise TaskDataError(f"{where}: an answer must be {{\"text\": str, "
                                f"\"answer_start\": int}}; got {ans!r}")
        a_text, start = ans["text"], ans["answer_start"]
        found = context[start:start + len(a_text)] if 0 <= start <= len(context) else None
        if not a_text.strip() or found != a_text:
            raise TaskDataError(
                f"{where}: the answer {a_text!r} does not match the context at answer_start="
                f"{start} (the context there reads {found!r})")
        checked.append((a_text, start))
    return QAExample(qid, question, context, checked, title)


def write_squad(path, examples, version="1.1"):
    """Write examples as SQuAD JSON, one paragraph per distinct (title, context)."""
    articles = {}
    for ex in examples:
        paragraphs = articles.setdefault(ex.title, {})
        para = paragraphs.setdefault(ex.context, {"context": ex.context, "qas": []})
        para["qas"].append({"id": ex.id, "question": ex.question,
                            "answers": [{"text": t, "answer_start": s} for t, s in ex.answers]})
    doc = {"version": version,
           "data": [{"title": title, "paragraphs": list(paragraphs.values())}
                    for title, paragraphs in articles.items()]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


@dataclass
class QAFeature:
    """One window of one example, as the model sees it.

    input_ids       [CLS] question [SEP] window of the context [SEP]
    offsets         per position: (start, end) characters of the context for
                    a context token, None for the question and special tokens
    start_position, end_position: the answer's first and last token in this
                    window, or 0 ([CLS]) where the window does not hold it
    """

    example_index: int
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list
    start_position: int = 0
    end_position: int = 0


def answer_token_span(offsets, start_char, end_char):
    """The first and last token (indices into offsets) that overlap the characters
    [start_char, end_char); None where no token does (an answer of white space)."""
    first = last = None
    for i, (s, e) in enumerate(offsets):
        if e > start_char and s < end_char:
            first = i if first is None else first
            last = i
    return None if first is None else (first, last)


def qa_features(examples, tokenizer, max_length, doc_stride, max_query_length=64,
                training=True):
    """Windows of every example, labelled with the answer's token span.

    Each example becomes one or more features [CLS] q [SEP] c_w [SEP], the
    windows c_w of the context's tokens starting 0, step, 2 step, ... with
    step = room - doc_stride, so consecutive windows share doc_stride tokens
    (the meaning of --doc_stride in transformers' run_qa.py); room =
    max_length - len(q) - 3. An answer lies in a window when all its tokens
    do; a window without it points at [CLS] (position 0), as in BERT.

    training=True leaves out examples the model cannot learn from, and counts
    them: no answer (SQuAD v2's impossible questions), and answers in no
    single window (longer than a window). Questions longer than
    max_query_length are cut, and counted.
    Returns: (features, Counts)
    """
    counts = Counts()
    features, contexts = [], {}              # contexts: each context tokenized once
    for index, ex in enumerate(examples):
        q_ids = tokenizer.encode(ex.question, add_special_tokens=False)
        if len(q_ids) > max_query_length:
            counts["questions cut to max_query_length"] += 1
            q_ids = q_ids[:max_query_length]
        if ex.context not in contexts:       # SQuAD asks several questions per paragraph
            tokens = tokenizer.tokenize_with_offsets(ex.context)
            contexts[ex.context] = ([tokenizer.vocab[t] for t, _, _ in tokens],
                                    [(s, e) for _, s, e in tokens])
        c_ids, c_offsets = contexts[ex.context]
        room = max_length - len(q_ids) - 3
        if room < 1:
            raise ValueError(f"qa_features: max_length={max_length} leaves no room for the "
                             f"context after a question of {len(q_ids)} tokens")
        overlap = min(doc_stride, room // 2)        # each window moves on by at least half
        step = room - overlap
        span = None
        if ex.answers:
            text, start = ex.answers[0]
            span = answer_token_span(c_offsets, start, start + len(text))
        if training and span is None:
            counts["without an answer, not trained on" if not ex.answers
                   else "with an answer of no tokens, not trained on"] += 1
            continue
        windows, w_start = [], 0
        while True:
            windows.append((w_start, min(w_start + room, len(c_ids))))
            if w_start + room >= len(c_ids):
                break
            w_start += step
        if len(windows) > 1:
            counts["split into several windows"] += 1
        labelled = []
        for a, b in windows:
            prefix = [tokenizer.cls_token_id] + q_ids + [tokenizer.sep_token_id]
            ids = prefix + c_ids[a:b] + [tokenizer.sep_token_id]
            types = [0] * len(prefix) + [1] * (b - a + 1)
            offsets = [None] * len(prefix) + c_offsets[a:b] + [None]
            s_pos = e_pos = 0
            if span is not None and a <= span[0] and span[1] < b:
                s_pos, e_pos = len(prefix) + span[0] - a, len(prefix) + span[1] - a
            labelled.append(QAFeature(index, ids, types, offsets, s_pos, e_pos))
        if training and all(f.start_position == 0 for f in labelled):
            counts["with an answer in no single window, not trained on"] += 1
            continue
        features.extend(labelled)
    return features, counts


@dataclass
class Answer:
    """The answer read from the model: the span of the context and its scores."""

    text: str
    start: int                      # characters of the context: context[start:end] == text
    end: int
    score: float                    # start logit + end logit
    probability: float              # p_start * p_end, softmax over the window's context tokens


def best_answers(examples, features, start_logits, end_logits, n_best=20,
                 max_answer_length=30):
    """The best answer of each example over all its windows.

    For each window, the n_best highest start and end logits among context
    tokens are paired; a pair counts when start <= end and the span has at
    most max_answer_length tokens. Its score is start_logit + end_logit; the
    best over all windows of the example wins, and its characters are read
    from the context through the token offsets. An example with no valid
    span gets the empty answer.

    start_logits, end_logits: one 1-D array per feature (padding beyond the
    feature's length is ignored).
    Returns: a list of Answer, one per example.
    """
    best = [None] * len(examples)
    for f, s_logits, e_logits in zip(features, start_logits, end_logits):
        context = [i for i, o in enumerate(f.offsets) if o is not None]
        if not context:
            continue
        ctx = np.asarray(context)
        s = np.asarray(s_logits, dtype=np.float64)[:len(f.offsets)]
        e = np.asarray(e_logits, dtype=np.float64)[:len(f.offsets)]
        p_s = np.exp(s[ctx] - s[ctx].max())
        p_s /= p_s.sum()
        p_e = np.exp(e[ctx] - e[ctx].max())
        p_e /= p_e.sum()
        prob = dict(zip(context, zip(p_s, p_e)))
        starts = ctx[np.argsort(-s[ctx], kind="stable")[:n_best]]
        ends = ctx[np.argsort(-e[ctx], kind="stable")[:n_best]]
        for i in starts:
            for j in ends:
                if j < i or j - i + 1 > max_answer_length:
                    continue
                score = float(s[i] + e[j])
                current = best[f.example_index]
                if current is None or score > current.score:
                    a, b = f.offsets[i][0], f.offsets[j][1]
                    text = examples[f.example_index].context[a:b]
                    best[f.example_index] = Answer(text, a, b, score,
                                                   float(prob[i][0] * prob[j][1]))
    return [b if b is not None else Answer("", 0, 0, float("-inf"), 0.0) for b in best]
