"""Task readers, label alignment, token offsets, QA windows and answer extraction."""

import json
import os

import numpy as np
import pytest

from scratchlm.data import builtin_corpus
from scratchlm.finetune.tasks import (
    ClassificationExample, QAExample, TaggedSentence, TaskDataError, align_labels,
    answer_token_span, best_answers, check_labels, encode_words, label_list, ner_label_list,
    qa_features, read_classification, read_conll, read_squad, split_words,
    write_classification, write_conll, write_squad)
from scratchlm.tokenizers import WordPieceTokenizer, bert_basic_tokenize


@pytest.fixture(scope="module")
def tok():
    text = builtin_corpus()[:60000] + " Johanson lives in Reykjavik. Café naïve"
    return WordPieceTokenizer.train(text, 600)


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


# --- classification --------------------------------------------------------------

def test_read_sst2_tsv_as_it_is(tmp_path):
    # GLUE TSVs are not quoted: a lone " is part of the sentence
    path = write(tmp_path / "train.tsv",
                 'sentence\tlabel\nit \'s a charming " journey \t1\nunflinchingly bleak\t0\n')
    examples = read_classification(path)
    assert [(e.text, e.label, e.line) for e in examples] == [
        ('it \'s a charming " journey ', "1", 2), ("unflinchingly bleak", "0", 3)]
    assert examples[0].text_pair is None
    assert label_list(["10", "2", "1"]) == ["1", "2", "10"]           # numeric order


def test_read_csv_pairs_and_jsonl(tmp_path):
    path = write(tmp_path / "rte.csv", 'premise,hypothesis,label\n"A, b",c,entailment\n'
                 '"multi\nline",d,neutral\n')
    examples = read_classification(path)
    assert [(e.text, e.text_pair, e.label, e.line) for e in examples] == [
        ("A, b", "c", "entailment", 2), ("multi\nline", "d", "neutral", 4)]
    path = write(tmp_path / "x.jsonl", '{"text": "good", "label": 1}\n\n'
                 '{"text": "bad", "label": 0}\n')
    assert [(e.text, e.label, e.line) for e in read_classification(path)] == [
        ("good", "1", 1), ("bad", "0", 3)]


def test_classification_errors_name_file_and_line(tmp_path):
    path = write(tmp_path / "bad.tsv", "sentence\tlabel\na\t1\nb\t0\textra\n")
    with pytest.raises(TaskDataError, match=r"bad\.tsv:3: expected 2 tab-separated fields"):
        read_classification(path)
    path = write(tmp_path / "empty.tsv", "")
    with pytest.raises(TaskDataError, match=r"empty\.tsv: the file is empty"):
        read_classification(path)
    path = write(tmp_path / "nolabel.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(TaskDataError, match=r"nolabel\.jsonl:2: no label"):
        read_classification(path)
    path = write(tmp_path / "badjson.jsonl", '{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(TaskDataError, match=r"badjson\.jsonl:2: not valid JSON"):
        read_classification(path)
    path = write(tmp_path / "cols.tsv", "words\tlabel\na\t1\n")
    with pytest.raises(TaskDataError, match="no column for the text"):
        read_classification(path)
    assert read_classification(path, text_column="words")[0].text == "a"
    path = write(tmp_path / "dev.tsv", "sentence\tlabel\na\t1\nb\tmaybe\n")
    with pytest.raises(TaskDataError, match=r"dev\.tsv:3: label 'maybe' is not in the label "
                                            r"set of the training data \(0, 1\)"):
        check_labels(read_classification(path), {"0": 0, "1": 1}, path)


def test_classification_round_trip(tmp_path):
    examples = [ClassificationExample("a b", None, "x", 0), ClassificationExample("c", None,
                                                                                 "y", 0)]
    path = str(tmp_path / "t.tsv")
    write_classification(path, examples)
    assert [(e.text, e.label) for e in read_classification(path)] == [("a b", "x"), ("c", "y")]


# --- CoNLL -----------------------------------------------------------------------

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
Lisbon NNP B-NP I-LOC
"""


def test_read_conll(tmp_path):
    sentences = read_conll(write(tmp_path / "train.conll", CONLL))
    assert [(s.words, s.tags, s.line) for s in sentences] == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 3),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], 7),
        (["Lisbon"], ["I-LOC"], 10)]                     # IOB1: an I- may open an entity
    assert ner_label_list(s.tags for s in sentences) == [
        "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_conll_errors_name_file_and_line(tmp_path):
    path = write(tmp_path / "a.conll", "EU NNP B-ORG\nrejects O\n")
    with pytest.raises(TaskDataError, match=r"a\.conll:2: expected 3 columns, as on line 1; "
                                            "got 2"):
        read_conll(path)
    path = write(tmp_path / "b.conll", "EU B-ORG\nrejects E-ORG\n")
    with pytest.raises(TaskDataError, match=r"b\.conll:2: tag 'E-ORG' is not a BIO tag"):
        read_conll(path)
    path = write(tmp_path / "c.conll", "\n\n")
    with pytest.raises(TaskDataError, match="empty"):
        read_conll(path)
    path = write(tmp_path / "d.conll", "-DOCSTART- O\n\n")
    with pytest.raises(TaskDataError, match="no sentences"):
        read_conll(path)
    path = write(tmp_path / "dev.conll", "EU B-ORG\n\nPeter B-PER\nBlack I-XYZ\n")
    with pytest.raises(TaskDataError, match=r"dev\.conll:4: tag 'I-XYZ' is not in the label"):
        check_labels(read_conll(path), {"O": 0, "B-ORG": 1, "B-PER": 2, "I-PER": 3}, path)
    words_only = read_conll(write(tmp_path / "w.conll", "EU\nrejects\n"), require_tags=False)
    assert words_only[0].words == ["EU", "rejects"] and words_only[0].tags is None


def test_conll_round_trip(tmp_path):
    sentences = [TaggedSentence(["a", "b"], ["B-X", "I-X"], 0),
                 TaggedSentence(["c"], ["O"], 0)]
    path = str(tmp_path / "t.conll")
    write_conll(path, sentences)
    assert [(s.words, s.tags) for s in read_conll(path)] == [(["a", "b"], ["B-X", "I-X"]),
                                                            (["c"], ["O"])]


def test_first_subword_alignment(tok):
    words = ["Johanson", "lives", "in", "Reykjavik", "."]
    ids, word_ids, n_cut = encode_words(tok, words, max_length=64)
    assert n_cut == 0
    assert word_ids[0] is None and word_ids[-1] is None            # [CLS], [SEP]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    labels = align_labels(word_ids, [7, 0, 0, 1, 0])
    for p, (w, lab) in enumerate(zip(word_ids, labels)):
        first = w is not None and (p == 0 or word_ids[p - 1] != w)
        assert lab == ([7, 0, 0, 1, 0][w] if first else -100)
    # every word labelled exactly once, on its first piece
    assert sorted(lab for lab in labels if lab != -100) == [0, 0, 0, 1, 7]
    assert len(tok.tokenize("Reykjavik")) > 1                        # the test means something
    # a sentence longer than max_length: the words cut off are counted
    ids, word_ids, n_cut = encode_words(tok, words * 10, max_length=16)
    assert len(ids) == 16 and n_cut == 50 - len({w for w in word_ids if w is not None})


def test_split_words():
    assert split_words("Call len(x).") == [("Call", 0, 4), ("len", 5, 8), ("(", 8, 9),
                                           ("x", 9, 10), (")", 10, 11), (".", 11, 12)]


# --- token offsets ---------------------------------------------------------------

def test_offsets_round_trip(tok):
    text = "Héllo,  WORLD! Johanson's café\tin Reykjavik [SEP] naïve 北京"
    tokens = tok.tokenize_with_offsets(text)
    assert [t for t, _, _ in tokens] == tok.tokenize(text)
    for token, start, end in tokens:
        piece = token[2:] if token.startswith("##") else token
        if token != tok.unk_token and token != "[SEP]":
            assert "".join(bert_basic_tokenize(text[start:end])) == piece
    assert ("[SEP]", 44, 49) in tokens                    # special tokens keep their place
    assert text[tokens[0][1]:tokens[0][2]].lower().startswith("h")


def test_offsets_in_call(tok):
    enc = tok("Johanson lives", "in Reykjavik", return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"])
    assert enc["offset_mapping"][0] == (0, 0)                                  # [CLS]
    sep = [i for i, t in enumerate(enc["input_ids"]) if t == tok.sep_token_id]
    assert all(enc["offset_mapping"][i] == (0, 0) for i in sep)
    # offsets of the pair's tokens point into the second text
    second = [o for o, ty in zip(enc["offset_mapping"], enc["token_type_ids"]) if ty == 1]
    assert "".join("in Reykjavik"[a:b] for a, b in second[:-1]) == "inReykjavik"
    batch = tok(["Johanson lives in Reykjavik", "in"], padding=True, truncation=True,
                max_length=6, return_offsets_mapping=True, return_tensors="np")
    assert batch["offset_mapping"].shape == (2, 6, 2)
    assert batch["offset_mapping"][1, 2:].tolist() == [[0, 0]] * 4        # [SEP] and padding


@pytest.mark.reference
def test_offsets_match_the_tokenizers_library(tok, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok.save_pretrained(tmp_path)
    ref = tokenizers.BertWordPieceTokenizer(os.path.join(tmp_path, "vocab.txt"),
                                            lowercase=True)
    texts = builtin_corpus()[60000:90000].split("\n\n") + [
        "Héllo, WORLD! Café naïve İstanbul 北京 ﬁx ½ x\u0301y \x00z"]
    for text in texts:
        enc = ref.encode(text, add_special_tokens=False)
        assert tok.tokenize_with_offsets(text) == [(t, a, b) for t, (a, b)
                                                   in zip(enc.tokens, enc.offsets)]


# --- SQuAD ------------------------------------------------------------------------

def squad_doc(answer_start=4, text="cat"):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{
        "context": "The cat sat on the mat.",
        "qas": [{"id": "q1", "question": "Who sat?",
                 "answers": [{"text": text, "answer_start": answer_start}]}]}]}]}


def test_read_squad_and_round_trip(tmp_path):
    path = write(tmp_path / "a.json", json.dumps(squad_doc()))
    (ex,) = read_squad(path)
    assert (ex.id, ex.question, ex.answers, ex.title) == ("q1", "Who sat?", [("cat", 4)], "t")
    write_squad(str(tmp_path / "b.json"), [ex])
    assert read_squad(str(tmp_path / "b.json")) == [ex]


def test_squad_errors_name_file_and_id(tmp_path):
    path = write(tmp_path / "bad.json", json.dumps(squad_doc(answer_start=5)))
    with pytest.raises(TaskDataError, match=r"bad\.json: question id 'q1': the answer 'cat' "
                                            r"does not match the context at answer_start=5 "
                                            r"\(the context there reads 'at '\)"):
        read_squad(path)
    path = write(tmp_path / "e.json", "")
    with pytest.raises(TaskDataError, match="empty"):
        read_squad(path)
    path = write(tmp_path / "n.json", '{"data": []}')
    with pytest.raises(TaskDataError, match="no questions"):
        read_squad(path)
    doc = squad_doc()
    doc["data"][0]["paragraphs"][0]["qas"] *= 2
    path = write(tmp_path / "d.json", json.dumps(doc))
    with pytest.raises(TaskDataError, match="'q1': the id appears twice"):
        read_squad(path)
    path = write(tmp_path / "j.json", '{"data": [\n{]')
    with pytest.raises(TaskDataError, match=r"j\.json:2: not valid JSON"):
        read_squad(path)


def long_example(n_sentences=30, at=17):
    sentences = [f"Item {i} weighs {i + 3} kilograms." for i in range(n_sentences)]
    context = " ".join(sentences)
    answer = f"{at + 3} kilograms"
    start = context.index(f"Item {at} ") + len(f"Item {at} weighs ")
    return QAExample("x", f"How much does item {at} weigh?", context, [(answer, start)])


def test_qa_windows_cover_the_context_with_stride(tok):
    ex = long_example()
    max_length, stride = 48, 12
    features, counts = qa_features([ex], tok, max_length, stride, training=False)
    assert len(features) > 2 and counts["split into several windows"] == 1
    n_q = len(tok.encode(ex.question, add_special_tokens=False))
    room = max_length - n_q - 3
    windows = [[o for o in f.offsets if o is not None] for f in features]
    all_tokens = [(a, b) for _, a, b in tok.tokenize_with_offsets(ex.context)]
    for f, w in zip(features, windows):
        assert len(f.input_ids) <= max_length and len(w) <= room
        assert f.token_type_ids.count(1) == len(w) + 1                # context and last [SEP]
    for w, nxt in zip(windows, windows[1:]):                          # neighbours share stride
        assert len(set(w) & set(nxt)) == stride
    assert sorted(set().union(*map(set, windows))) == all_tokens      # every token somewhere


def test_qa_answer_offsets_round_trip(tok):
    ex = long_example()
    features, _ = qa_features([ex], tok, 48, 12, training=True)
    holding = [f for f in features if f.start_position > 0]
    assert holding                                                    # some window holds it
    text, start = ex.answers[0]
    for f in holding:
        a, b = f.offsets[f.start_position][0], f.offsets[f.end_position][1]
        assert ex.context[a:b] == text and a == start
    assert all(f.start_position == f.end_position == 0 for f in features if f not in holding)
    assert answer_token_span([(0, 3), (4, 7)], 5, 6) == (1, 1)
    assert answer_token_span([(0, 3), (4, 7)], 3, 4) is None          # a space: no token


def test_qa_counts_what_it_leaves_out(tok):
    ex = long_example()
    long_answer = QAExample("y", "Which items?", ex.context,
                            [(ex.context[:200], 0)])
    no_answer = QAExample("z", "Why?", "Because.", [])
    long_question = QAExample("w", " ".join(["item"] * 80) + "?", "Item one.",
                              [("one", 5)])
    features, counts = qa_features([long_answer, no_answer, long_question], tok, 48, 12,
                                   max_query_length=20, training=True)
    assert counts["with an answer in no single window, not trained on"] == 1
    assert counts["without an answer, not trained on"] == 1
    assert counts["questions cut to max_query_length"] == 1
    assert {f.example_index for f in features} == {2}


def test_best_answer_over_windows(tok):
    ex = long_example()
    features, _ = qa_features([ex], tok, 48, 12, training=True)
    rng = np.random.default_rng(0)
    starts = [rng.normal(0, 0.1, len(f.input_ids)) for f in features]
    ends = [rng.normal(0, 0.1, len(f.input_ids)) for f in features]
    k = next(i for i, f in enumerate(features) if f.start_position > 0)
    f = features[k]
    starts[k][f.start_position] = ends[k][f.end_position] = 5.0
    # a higher-scoring span that is invalid: end before start, and one too long
    starts[k][f.end_position + 1] = ends[k][f.start_position - 1] = 9.0
    (answer,) = best_answers([ex], features, starts, ends, max_answer_length=30)
    assert answer.text == ex.answers[0][0] and answer.start == ex.answers[0][1]
    assert answer.score == pytest.approx(10.0) and 0 < answer.probability < 1
    (short,) = best_answers([ex], features, starts, ends, max_answer_length=1)
    assert len(tok.tokenize(short.text)) == 1
    # the answer keeps the original characters of the context
    ex2 = QAExample("c", "Where?", "Ünïcode Café, Reykjavik.", [])
    feats, _ = qa_features([ex2], tok, 48, 12, training=False)
    s = np.full(len(feats[0].input_ids), -5.0)
    e = np.full(len(feats[0].input_ids), -5.0)
    first_ctx = feats[0].token_type_ids.index(1)
    s[first_ctx] = 5.0
    e[first_ctx + len(tok.tokenize("Ünïcode Café")) - 1] = 5.0
    assert best_answers([ex2], feats, [s], [e])[0].text == "Ünïcode Café"
    # no valid span at all: the empty answer
    assert best_answers([ex2], [], [], [])[0].text == ""


# --- the tasks made from the built-in corpus -------------------------------------

def test_builtin_tasks_write_standard_files(tmp_path):
    from scratchlm.finetune.builtin import tag_sentence, write_builtin_tasks

    paths = write_builtin_tasks(tmp_path)
    train, dev = (read_classification(p) for p in paths["classify"])
    assert {e.label for e in train} == {"statement", "expression", "datamodel", "language"}
    assert not {e.text for e in train} & {e.text for e in dev}          # disjoint splits
    train, dev = (read_conll(p) for p in paths["ner"])
    assert len(train) > 500 and len(dev) > 100
    train, dev = (read_squad(p) for p in paths["qa"])                  # offsets checked on read
    assert len(train) > 200 and not {e.context for e in train} & {e.context for e in dev}
    words, tags = tag_sentence('Use "os.path.join()" or "len(x)", not a "list"; see __init__.')
    tagged = [(w, t) for w, t in zip(words, tags) if t != "O"]
    assert tagged == [("os", "B-ATTR"), (".", "I-ATTR"), ("path", "I-ATTR"), (".", "I-ATTR"),
                      ("join", "I-ATTR"), ("len", "B-FUNC"), ("__init__", "B-DUNDER")]
