"""Three fine-tuning tasks made from the built-in corpus, in the standard formats.

The corpus (``builtin_documents()``: the 79 sections of CPython's language
reference that ``help()`` shows) is cut into paragraphs, and one paragraph in
five (by a hash of its text, ``is_held_out``) goes to the evaluation split of
every task, so that no evaluation sentence, definition or context is seen in
fine-tuning. (Pre-training reads the whole corpus, as BERT's pre-training
read the Wikipedia that SQuAD's paragraphs come from.) From it:

    classification  a paragraph -> the part of the reference its section
                    belongs to: statement, expression, datamodel or
                    language (lexical analysis, execution model). Written as
                    GLUE/SST-2 TSV: ``sentence<TAB>label``.
    NER             sentences of prose with their Python names tagged, BIO:
                    EXC   built-in exception names ("ValueError")
                    FUNC  a built-in function named in a call ("len()"; a
                          bare "list" or "open" in prose is not one)
                    DUNDER special names ("__init__")
                    ATTR  dotted names ("sys.stdout", "os.path.join()"),
                          several words long: "sys" B-ATTR, "." I-ATTR, ...
                    Written as CoNLL: ``word tag`` per line.
    QA              definitions "X is Y." asked both ways: "What is X?" ->
                    Y and "What is Y?" -> X, with the definition's paragraph
                    (and the one after, when in the same split) as context. Written as SQuAD v1.1 JSON.

So the commands that fine-tune on these files run unchanged on SST-2,
CoNLL-2003 and SQuAD.
"""

from __future__ import annotations

import builtins
import os
import random
import re
import zlib

from scratchlm.data.corpus import builtin_documents
from scratchlm.finetune.tasks import (
    ClassificationExample, QAExample, TaggedSentence, split_words, write_classification,
    write_conll, write_squad)

# The part of the language reference each section belongs to.
FAMILIES = {
    "statement": "assert assignment async augassign break class compound continue del else "
                 "for function global if import nonlocal pass raise return try while with "
                 "yield",
    "expression": "atom-identifiers atom-literals attribute-references await binary bitwise "
                  "booleans calls comparisons conversions dict exprlists in lambda lists "
                  "operator-summary power shifting slicings subscriptions unary",
    "datamodel": "attribute-access bltin-code-objects bltin-ellipsis-object bltin-null-object "
                 "bltin-type-objects callable-types context-managers customization "
                 "numeric-types objects sequence-types specialattrs specialnames "
                 "string-methods truth types typesfunctions typesmapping typesmethods "
                 "typesmodules typesseq typesseq-mutable",
    "language": "debugger dynamic-features exceptions execmodel floating formatstrings "
                "id-classes identifiers imaginary integers naming numbers strings",
}
FAMILY_OF = {topic: family for family, topics in FAMILIES.items() for topic in topics.split()}


def is_held_out(paragraph: str) -> bool:
    """Whether a paragraph goes to the evaluation split: one in five, by a hash of
    its text (deterministic, and the same for every task)."""
    return zlib.crc32(paragraph.encode("utf-8")) % 5 == 0


def _paragraphs(text):
    """Paragraphs of a section without its title, white space collapsed; code
    blocks (indented) are marked so that callers can keep or drop them."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        if not block.strip() or re.fullmatch(r"[^\n]*\n[*=\-]+\s*", block.strip() + "\n"):
            continue                                    # a title and its underline
        lines = block.strip("\n").split("\n")
        if len(lines) >= 2 and re.fullmatch(r"[*=\-]{3,}", lines[1].strip()):
            lines = lines[2:]                           # a title above the first paragraph
            if not lines:
                continue
        is_code = all(line.startswith((" ", "\t")) or not line.strip() for line in lines)
        out.append((" ".join(" ".join(lines).split()), is_code))
    return [(p, code) for p, code in out if p]


def _sentences(paragraph):
    return re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", paragraph)


# --- classification ----------------------------------------------------------------

def classification_examples(docs, min_words=8, max_words=120):
    """(paragraph, family) examples: every paragraph of min_words..max_words words,
    prose and code, longer ones cut at a sentence end. Returns (train, dev)."""
    examples = ([], [])
    for topic, text in docs:
        for para, _ in _paragraphs(text):
            words = para.split()
            if len(words) < min_words:
                continue
            if len(words) > max_words:
                para = " ".join(words[:max_words])
                cut = para.rfind(". ")
                para = para[:cut + 1] if cut > len(para) // 2 else para
            examples[is_held_out(para)].append(
                ClassificationExample(para, None, FAMILY_OF[topic], 0))
    for split in examples:
        random.Random(0).shuffle(split)             # mixed, not section by section
    return examples


# --- NER -----------------------------------------------------------------------------

_EXCEPTIONS = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
               and issubclass(getattr(builtins, n), BaseException)}
_FUNCTIONS = {n for n in dir(builtins) if not n.startswith("_") and n not in _EXCEPTIONS
              and callable(getattr(builtins, n))}
_ENTITY = re.compile(
    r"(?P<ATTR>\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b)"         # a.b.c, called or not
    r"|(?P<DUNDER>\b__\w+__\b)"
    r"|(?P<EXC>\b(?:" + "|".join(sorted(_EXCEPTIONS, key=len, reverse=True)) + r")\b)"
    r"|(?P<FUNC>\b(?:" + "|".join(sorted(_FUNCTIONS, key=len, reverse=True)) + r")(?=\())")
_NOT_ATTR = {"e.g", "i.e", "etc", "vs"}


def tag_sentence(sentence):
    """Words of a sentence (split_words) and their BIO tags by the rules of the module doc."""
    spans = []
    for m in _ENTITY.finditer(sentence):
        kind = m.lastgroup
        if kind == "ATTR" and (m.group().lower() in _NOT_ATTR
                               or any(len(part) < 2 for part in m.group().split("."))):
            continue
        spans.append((m.start(), m.end(), kind))
    words, tags = [], []
    for word, start, end in split_words(sentence):
        tag = "O"
        for a, b, kind in spans:
            if a <= start and end <= b:
                tag = ("B-" if start == a else "I-") + kind
        words.append(word)
        tags.append(tag)
    return words, tags


def ner_sentences(docs, min_words=5, max_words=60, keep_plain=0.3, seed=0):
    """Tagged prose sentences: all with an entity, and a keep_plain share of the
    others. Returns (train, dev)."""
    rng = random.Random(seed)
    out = ([], [])
    for _, text in docs:
        for para, is_code in _paragraphs(text):
            if is_code:
                continue
            for sentence in _sentences(para):
                words, tags = tag_sentence(sentence)
                if not min_words <= len(words) <= max_words:
                    continue
                if any(t != "O" for t in tags) or rng.random() < keep_plain:
                    out[is_held_out(para)].append(TaggedSentence(words, tags, 0))
    return out


# --- QA --------------------------------------------------------------------------------

# "X is Y." / "The X are Y.": a subject of one to six words that starts like a
# noun phrase (not "It", "If ...", "When ..."), and a predicate with no second verb.
_DEFINITION = re.compile(
    r"(?P<subject>(?:(?:The|A|An) )?[\w\"][\w\"\-]*(?: [\w\"\-]+){0,5}?) "
    r"(?P<verb>is|are) (?P<predicate>[^;:]{8,160}?)\.$")
_NOT_SUBJECT = set("""this it there these that those they such which what if when while as
since because although though for in on at by with but and or so here each one note also
otherwise then thus hence however all some any both its their his her no not only even where
how why who once unless until after before same other first second following result value
most many more less""".split())


def qa_examples(docs, max_answer_words=20):
    """Definition questions in both directions, with their paragraph (and the next)
    as context. Returns (train, dev)."""
    examples = ([], [])
    for topic, text in docs:
        paras = [p for p, is_code in _paragraphs(text) if not is_code]
        for k, para in enumerate(paras):
            held_out = is_held_out(para)
            follows = k + 1 < len(paras) and is_held_out(paras[k + 1]) == held_out
            context = para + " " + paras[k + 1] if follows else para   # both of one split
            for sentence in _sentences(para):
                m = _DEFINITION.fullmatch(sentence)
                if m is None:
                    continue
                subject, verb, predicate = m.group("subject", "verb", "predicate")
                head = re.sub(r"^(the|a|an) ", "", subject.lower()).split()[0]
                if (head in _NOT_SUBJECT or re.search(r" (is|are|was|were) ", predicate)
                        or len(predicate.split()) > max_answer_words):
                    continue
                at = context.index(sentence)
                s_start = at + m.start("subject")
                p_start = at + m.start("predicate")
                bare = re.sub(r"^(?:The|A|An) ", "", subject)
                s_start += len(subject) - len(bare)
                asked = subject[0].lower() + subject[1:] if subject != bare else subject
                split = examples[held_out]
                prefix = "dev" if held_out else "train"
                split.append(QAExample(f"{prefix}-{len(split)}", f"What {verb} {asked}?",
                                       context, [(predicate, p_start)], topic))
                split.append(QAExample(f"{prefix}-{len(split)}", f"What {verb} {predicate}?",
                                       context, [(bare, s_start)], topic))
    return examples


def write_builtin_tasks(out_dir) -> dict:
    """Write the three tasks under out_dir, each as train and dev files.

    Returns {"classify": (train, dev), "ner": (train, dev), "qa": (train, dev)}:
    classify/{train,dev}.tsv, ner/{train,dev}.conll, qa/{train,dev}.json.
    """
    docs = builtin_documents()
    paths = {}
    for task, ext, make, write in (
            ("classify", "tsv", classification_examples, write_classification),
            ("ner", "conll", ner_sentences, write_conll),
            ("qa", "json", qa_examples, write_squad)):
        os.makedirs(os.path.join(out_dir, task), exist_ok=True)
        splits = make(docs)
        paths[task] = tuple(os.path.join(out_dir, task, f"{name}.{ext}")
                            for name in ("train", "dev"))
        for path, examples in zip(paths[task], splits):
            write(path, examples)
    return paths
