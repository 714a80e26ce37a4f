"""Tests of scratchlm.tokenizers: char, byte-level BPE (GPT-2) and WordPiece (BERT).

The tokenizers are trained once per module on the built-in corpus (the text of
CPython's pydoc_data.topics). Tests marked `reference` compare, on the same
vocabulary files, with the `tokenizers` library (and `transformers`), and are
skipped where those are not installed.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchlm.tokenizers import (
    ByteLevelBPETokenizer, CharTokenizer, WordPieceTokenizer, bert_basic_tokenize,
    bytes_to_unicode, gpt2_pre_tokenize, learn_merges, truncate_pair)

VOCAB_SIZE = 4096
EOT = "<|endoftext|>"

# Strings that have tripped tokenizers before: accents (composed and not),
# CJK, emoji with modifiers and joiners, control and format characters,
# very long words, numbers of many scripts, runs of white space, contractions.
TRICKY = [
    "", " ", "   ", "\n", "\n\n\n", "\t", " \t \n ", "end   ", "   start",
    "Hello, world! It's a test.", "it's I'm we've they're I'll he'd don't 'S 'T 'RE",
    "Café naïve résumé façade ÀÉÎÕÜ", "e\u0301 a\u0300\u0301 n\u0303",
    "中文字符，日本語のテキスト、한국어 텍스트", "Ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ",
    "👍🏽 👨\u200d👩\u200d👧 🇫🇷 ❤️ 🙂🙃", "a\x00b\x01c\x7fd\x1ce\x1ff", "zero\u200bwidth\ufeffbom",
    "replacement \ufffd char", "nbsp\u00a0here thin\u2009space ideographic\u3000space",
    "line\u2028sep para\u2029sep nel\x85x", "a" * 500, "supercalifragilistic" * 12,
    "x" * 101, "x" * 100, "1234567890 3.14159 1,000,000 -42 1e-10 0x1F",
    "²³ ① Ⅻ ١٢٣ ४२ 〇", "ΟΔΟΣ Σίσυφος ΣΑΣ", "İstanbul ıi ǅ ǈ Straße ﬁ ﬂ",
    "$5+3=8 <tag> a|b ~x^y `code` @user #hash 50% a&b {x} [y] \\z",
    "line1\nline2\r\nline3\r\n\r\n  indented\n\ttabbed\t\ttwice",
    "def f(x):\n    return x ** 2  # square\n", "' '' ''' 's's 'sss s'",
    "...!!!???,,,;;;::", "—– “quotes” ‘single’ «guillemets» „low“", "a-b_c.d/e\\f",
]


# ------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def corpus() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics.values())


@pytest.fixture(scope="module")
def corpus_lines(corpus) -> list[str]:
    """Every line and every paragraph of the corpus."""
    return corpus.split("\n") + corpus.split("\n\n")


@pytest.fixture(scope="module")
def bpe(corpus) -> ByteLevelBPETokenizer:
    return ByteLevelBPETokenizer.train(corpus, VOCAB_SIZE, special_tokens=[EOT])


@pytest.fixture(scope="module")
def wordpiece(corpus) -> WordPieceTokenizer:
    return WordPieceTokenizer.train(corpus, VOCAB_SIZE, do_lower_case=True)


@pytest.fixture(scope="module")
def wordpiece_cased(corpus) -> WordPieceTokenizer:
    return WordPieceTokenizer.train(corpus, VOCAB_SIZE, do_lower_case=False)


@pytest.fixture(scope="module")
def char(corpus) -> CharTokenizer:
    return CharTokenizer.train(corpus, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture
def bpe_padded(bpe):
    """The trained BPE tokenizer with <|endoftext|> as its padding token, for one test."""
    bpe.pad_token = bpe.eos_token
    yield bpe
    bpe.pad_token = None


def tiny_wordpiece(**kwargs) -> WordPieceTokenizer:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a",
              "b", "c", "##b", "##c", ",", ".", "!", "'", "s", "hello", "world", "##s", "it"]
    return WordPieceTokenizer(tokens, **kwargs)


# ------------------------------------------------------------ byte-level BPE

def test_bytes_to_unicode_is_gpt2_table():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"
    assert table[ord("!")] == "!" and table[ord("~")] == "~" and table[0xAD] == "Ń"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_gpt2_pre_tokenize_examples():
    assert gpt2_pre_tokenize("Hello  world's") == ["Hello", " ", " world", "'s"]
    assert gpt2_pre_tokenize("a   b") == ["a", "  ", " b"]
    assert gpt2_pre_tokenize("x²3 ⅷ 42!?") == ["x", "²3", " ⅷ", " 42", "!?"]
    assert gpt2_pre_tokenize("end \n") == ["end", " \n"]
    assert gpt2_pre_tokenize("I'll DON'T") == ["I", "'ll", " DON", "'", "T"]
    # U+001C..U+001F are white space for Python's str.isspace but symbols for GPT-2
    assert gpt2_pre_tokenize("a\x1cb") == ["a", "\x1c", "b"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_gpt2_pre_tokenize_covers_the_text(text):
    assert "".join(gpt2_pre_tokenize(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trip(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < len(bpe) for i in ids)
    assert bpe.decode(ids) == text


def test_bpe_round_trip_tricky(bpe):
    for text in TRICKY:
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_training_result(bpe, corpus):
    assert len(bpe) == bpe.vocab_size == VOCAB_SIZE
    # the 256 bytes first, in GPT-2's order; the special token last, as in GPT-2
    assert bpe.convert_ids_to_tokens(list(range(256))) == list(bytes_to_unicode().values())
    assert bpe.eos_token == bpe.bos_token == EOT and bpe.eos_token_id == VOCAB_SIZE - 1
    assert bpe.pad_token is None and bpe.pad_token_id is None
    # one merge per new token, in the order learned
    assert len(bpe.merges) >= VOCAB_SIZE - 257
    assert [bpe.vocab[a + b] for a, b in bpe.merges[:100]] == list(range(256, 356))
    assert bpe.tokenize(" the") == ["Ġthe"]
    # compression: far fewer tokens than bytes
    assert len(bpe.encode(corpus)) < 0.3 * len(corpus.encode("utf-8"))


def test_bpe_special_tokens(bpe):
    eot = bpe.eos_token_id
    assert bpe.encode("hello") == bpe.encode("hello", add_special_tokens=True)
    assert eot not in bpe.encode("hello world")               # GPT-2 adds nothing
    ids = bpe.encode(f"a{EOT}b {EOT}{EOT}")
    assert ids.count(eot) == 3
    assert ids == bpe.encode("a") + [eot] + bpe.encode("b ") + [eot, eot]
    assert bpe.tokenize(f"x{EOT}") == ["x", EOT]
    assert bpe.decode(ids) == f"a{EOT}b {EOT}{EOT}"
    assert bpe.decode(ids, skip_special_tokens=True) == "ab "
    assert bpe.all_special_ids == [eot]
    # a pair is the two texts one after the other, as GPT-2 does
    assert bpe.encode("a", "b") == bpe.encode("a") + bpe.encode("b")


def test_bpe_merges_apply_by_rank():
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for token in ["ab", "bc", "abc", "Ġa", "Ġab"]:
        vocab[token] = len(vocab)
    merges = [("b", "c"), ("a", "b"), ("a", "bc"), ("Ġ", "a"), ("Ġa", "b")]
    tok = ByteLevelBPETokenizer(vocab, merges)
    # (b, c) has the lowest rank, so "abc" is a + bc, then abc
    assert tok.tokenize("abc") == ["abc"]
    assert tok.tokenize("ab") == ["ab"]
    # (a, b) outranks (Ġ, a), so Ġ never meets a: there is no (Ġ, ab) merge
    assert tok.tokenize(" abab") == ["Ġ", "ab", "ab"]
    assert tok.tokenize(" a") == ["Ġa"]
    assert tok.tokenize("aab") == ["a", "ab"]


def naive_learn_merges(word_counts, num_symbols, min_frequency):
    """Byte-pair merges by recounting every pair at every step."""
    words = {word: list(word) for word in word_counts}
    merges, made = [], set()
    while len(made) < num_symbols:
        pairs = Counter()
        for word, symbols in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += word_counts[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_frequency:
            break
        if best not in merges:
            merges.append(best)
        made.add(best[0] + best[1])
        for word, symbols in words.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i:i + 2] == list(best):
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[word] = out
    return merges


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text("abc", min_size=1, max_size=8), st.integers(1, 5), max_size=12),
       st.integers(0, 30), st.integers(1, 3))
def test_learn_merges_equals_recounting(counts, num_symbols, min_frequency):
    word_counts = {tuple(word): n for word, n in counts.items()}
    assert learn_merges(word_counts, num_symbols, min_frequency=min_frequency) == \
        naive_learn_merges({tuple(w): n for w, n in counts.items()}, num_symbols, min_frequency)


def test_learn_merges_textbook_example():
    counts = {tuple("low"): 5, tuple("lower"): 2, tuple("newest"): 6, tuple("widest"): 3}
    assert learn_merges(counts, 4) == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w")]


def test_bpe_train_small_and_iterable():
    docs = ["aaa bbb aaa", "aaa ccc"]
    tok = ByteLevelBPETokenizer.train(docs, 260, min_frequency=2)
    assert len(tok) == 260 and tok.special_tokens == [] and tok.eos_token is None
    assert tok.tokenize("aaa") == ["aaa"]
    # training stops early when no pair is frequent enough
    assert len(ByteLevelBPETokenizer.train("ab", 300)) == 256


def test_bpe_save_load_round_trip(bpe, tmp_path):
    paths = bpe.save_pretrained(tmp_path)
    assert sorted(os.path.basename(p) for p in paths) == [
        "merges.txt", "tokenizer_config.json", "vocab.json"]
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version")
    loaded = ByteLevelBPETokenizer.from_pretrained(tmp_path)
    assert loaded.vocab == bpe.vocab and loaded.merges == bpe.merges
    assert loaded.special_tokens == [EOT] and loaded.eos_token_id == bpe.eos_token_id
    for text in TRICKY + [f"one{EOT}two"]:
        assert loaded.encode(text) == bpe.encode(text)


def test_bpe_loads_gpt2_files_without_config(bpe, tmp_path):
    bpe.save_pretrained(tmp_path)
    os.remove(tmp_path / "tokenizer_config.json")
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    (tmp_path / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")  # no #version
    loaded = ByteLevelBPETokenizer.from_pretrained(tmp_path)
    assert loaded.special_tokens == [EOT] and loaded.eos_token == EOT   # as GPT-2
    assert loaded.encode(f"it's{EOT}") == bpe.encode(f"it's{EOT}")


def test_bpe_file_errors(bpe, tmp_path):
    with pytest.raises(FileNotFoundError, match="no directory"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)
    bpe.save_pretrained(tmp_path)
    merges_path = tmp_path / "merges.txt"
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    merges_path.write_text("\n".join(lines[:5] + ["Ġ t h"] + lines[5:]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 6 of .*merges.txt.*two tokens"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)
    merges_path.write_text("\n".join(lines[:3] + ["Ġ zzzzz"]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 4 of .*'zzzzz' is not in the vocabulary"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)


def test_bpe_bad_input(bpe):
    with pytest.raises(TypeError, match=r"BPETokenizer.encode: text must be a str; got int"):
        bpe.encode(5)
    with pytest.raises(TypeError, match=r"encode: text_pair must be a str; got list"):
        bpe.encode("a", ["b"])
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800"):
        bpe.encode("a\ud800b")
    with pytest.raises(ValueError, match=r"decode: ids must be in \[0, 4096\); got 4096 at pos"):
        bpe.decode([1, VOCAB_SIZE])
    with pytest.raises(ValueError, match=r"got -1 at position 0"):
        bpe.decode([-1])
    with pytest.raises(TypeError, match=r"decode: ids must be integers; got str"):
        bpe.decode(["a"])
    with pytest.raises(TypeError, match=r"decode: ids must be integers; got bool"):
        bpe.decode([True])
    with pytest.raises(TypeError, match=r"train: text_or_iterable must hold str; got int at"):
        ByteLevelBPETokenizer.train(["a", 1], 300)
    with pytest.raises(ValueError, match=r"train: vocab_size must be an int of at least 256"):
        ByteLevelBPETokenizer.train("abc", 100)
    with pytest.raises(ValueError, match=r"pad_token: the padding token must be in the vocabulary"):
        bpe.pad_token = "<pad>"
    with pytest.raises(ValueError, match=r"special token '<x>' is not in the vocabulary"):
        ByteLevelBPETokenizer(bpe.vocab, bpe.merges, ["<x>"])


def test_bpe_decode_accepts_arrays_and_broken_utf8(bpe):
    ids = bpe.encode("héllo wörld")
    assert bpe.decode(np.array(ids, dtype=np.int32)) == "héllo wörld"
    assert bpe.batch_decode(np.array([ids, ids])) == ["héllo wörld"] * 2
    e_acute_first_byte = bpe.vocab[bytes_to_unicode()[0xC3]]
    assert bpe.decode([e_acute_first_byte]) == "\ufffd"        # half a character


# ------------------------------------------------------ batches: __call__

def test_call_single_and_batch(bpe):
    out = bpe("hello world")
    assert set(out) == {"input_ids", "attention_mask"}        # no token types for GPT-2
    assert out["input_ids"] == bpe.encode("hello world")
    assert out["attention_mask"] == [1] * len(out["input_ids"])
    batch = bpe(["hello world", "a"])
    assert batch["input_ids"] == [bpe.encode("hello world"), bpe.encode("a")]


def test_call_padding_needs_a_pad_token(bpe):
    with pytest.raises(ValueError, match=r"__call__: padding needs a pad token.*pad_token"):
        bpe(["a", "bb cc"], padding=True)


def test_call_padding_and_truncation(bpe_padded):
    tok = bpe_padded
    texts = ["hello world, this is long", "short", ""]
    lengths = [len(tok.encode(t)) for t in texts]
    out = tok(texts, padding=True)
    longest = max(lengths)
    assert [len(row) for row in out["input_ids"]] == [longest] * 3
    assert [sum(mask) for mask in out["attention_mask"]] == lengths
    assert out["input_ids"][1][lengths[1]:] == [tok.pad_token_id] * (longest - lengths[1])

    out = tok(texts, padding="max_length", max_length=12, return_tensors="np")
    assert out["input_ids"].shape == out["attention_mask"].shape == (3, 12)
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].dtype == np.int64

    out = tok(texts, padding="max_length", truncation=True, max_length=3, return_tensors="np")
    assert out["input_ids"].shape == (3, 3)
    assert out["input_ids"][0].tolist() == tok.encode(texts[0])[:3]

    out = tok(texts, truncation=True, max_length=2)
    assert [len(row) for row in out["input_ids"]] == [min(n, 2) for n in lengths]

    tok.padding_side = "left"
    try:
        out = tok(["a", "hello world"], padding=True)
        assert out["attention_mask"][0][0] == 0 and out["attention_mask"][0][-1] == 1
        assert out["input_ids"][0][-1] == tok.encode("a")[-1]
    finally:
        tok.padding_side = "right"


def test_call_return_tensors(bpe_padded):
    out = bpe_padded("hello", return_tensors="np")
    assert out["input_ids"].shape == (1, len(bpe_padded.encode("hello")))
    with pytest.raises(ValueError, match=r"different lengths.*padding=True"):
        bpe_padded(["a", "hello world"], return_tensors="np")
    with pytest.raises(ValueError, match=r"return_tensors must be None or 'np'; got 'pt'"):
        bpe_padded("a", return_tensors="pt")
    empty = bpe_padded([], padding=True, return_tensors="np")
    assert empty["input_ids"].shape == (0, 0)


def test_call_bad_arguments(bpe_padded, wordpiece):
    with pytest.raises(ValueError, match=r"truncation needs max_length"):
        bpe_padded("a", truncation=True)
    with pytest.raises(ValueError, match=r'padding="max_length" needs max_length'):
        bpe_padded("a", padding="max_length")
    with pytest.raises(ValueError, match=r"padding must be False, True, 'longest' or 'max_len"):
        bpe_padded("a", padding="most")
    with pytest.raises(ValueError, match=r"max_length must be a positive int; got 0"):
        bpe_padded("a", truncation=True, max_length=0)
    with pytest.raises(ValueError, match=r"text_pair must be a list as long as text \(2\); got a"):
        bpe_padded(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"__call__: text must be a str; got NoneType"):
        bpe_padded([None])
    with pytest.raises(ValueError, match=r"max_length=2 leaves no room for the 3 special tokens"):
        wordpiece("a", "b", truncation=True, max_length=2)


def test_truncate_pair_examples():
    a, b = list(range(5)), list(range(10, 15))
    assert truncate_pair(a, b, 7) == (a[:3], b[:4])
    assert truncate_pair(a, b, 6) == (a[:3], b[:3])
    assert truncate_pair(a, b, 20) == (a, b)
    assert truncate_pair(list(range(8)), b[:3], 6) == (list(range(3)), b[:3])
    assert truncate_pair(list(range(20)), b[:2], 4) == ([0, 1], b[:2])
    assert truncate_pair(b[:2], list(range(20)), 4) == (b[:2], [0, 1])
    assert truncate_pair(a, None, 2) == ([0, 1], None)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 40))
def test_truncate_pair_properties(n_a, n_b, budget):
    a, b = list(range(n_a)), list(range(100, 100 + n_b))
    ta, tb = truncate_pair(a, b, budget)
    assert ta == a[:len(ta)] and tb == b[:len(tb)]                       # prefixes
    assert len(ta) + len(tb) == min(n_a + n_b, budget)                   # uses the budget
    assert abs(len(ta) - len(tb)) <= 1 or len(ta) == n_a or len(tb) == n_b   # balanced


# ----------------------------------------------------------------- WordPiece

def test_basic_tokenizer_examples():
    assert bert_basic_tokenize("Héllo, WORLD!") == ["hello", ",", "world", "!"]
    assert bert_basic_tokenize("Héllo, WORLD!", lowercase=False) == ["Héllo", ",", "WORLD", "!"]
    assert bert_basic_tokenize("Héllo", lowercase=False, strip_accents=True) == ["Hello"]
    assert bert_basic_tokenize("Héllo", lowercase=True, strip_accents=False) == ["héllo"]
    # ASCII symbols are punctuation for BERT, although Unicode calls $ + < = > ^ ` | ~ symbols
    assert bert_basic_tokenize("$5+3=8 a|b ~x^y `c`") == [
        "$", "5", "+", "3", "=", "8", "a", "|", "b", "~", "x", "^", "y", "`", "c", "`"]
    assert bert_basic_tokenize("中文abc字") == ["中", "文", "abc", "字"]
    assert bert_basic_tokenize("a\x00b\x01c\ufffd d\u200be\tf\u00a0g") == ["abc", "de", "f", "g"]
    assert bert_basic_tokenize("ΟΔΟΣ") == ["οδοσ"]      # character by character: no final ς
    assert bert_basic_tokenize("don't") == ["don", "'", "t"]
    assert bert_basic_tokenize("  \n ") == []


def test_wordpiece_greedy_longest_match():
    tok = tiny_wordpiece()
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tok.tokenize("abc, hello worlds!") == [
        "a", "##b", "##c", ",", "hello", "world", "##s", "!"]
    assert tok.tokenize("xyz a") == ["[UNK]", "a"]                # no piece for "x"
    assert tok.tokenize("abd") == ["[UNK]"]                        # stuck after "ab": all of it
    assert tok.tokenize("a" + "b" * 99) == ["a"] + ["##b"] * 99    # 100 characters: fine
    assert tok.tokenize("a" + "b" * 100) == ["[UNK]"]              # 101: too long
    assert tok.tokenize("Hello [MASK] [mask]") == ["hello", "[MASK]", "[UNK]", "[UNK]", "[UNK]"]


def test_wordpiece_pairs_and_type_ids():
    tok = tiny_wordpiece()
    cls, sep = tok.cls_token_id, tok.sep_token_id
    a = tok.encode("a b", add_special_tokens=False)
    b = tok.encode("hello", add_special_tokens=False)
    assert tok.encode("a b") == [cls, *a, sep]
    assert tok.encode("a b", "hello") == [cls, *a, sep, *b, sep]
    out = tok("a b", "hello")
    assert out["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert list(out) == ["input_ids", "token_type_ids", "attention_mask"]
    out = tok(["a b c", "a"], ["hello hello", "b"], padding=True, truncation=True, max_length=7,
              return_tensors="np")
    assert out["input_ids"].shape == out["token_type_ids"].shape == (2, 7)
    assert out["input_ids"][0].tolist() == [cls, *a, sep, b[0], b[0], sep]
    assert out["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert out["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert tok.num_special_tokens_to_add() == 2 and tok.num_special_tokens_to_add(pair=True) == 3


def test_wordpiece_decode():
    tok = tiny_wordpiece()
    ids = tok.encode("unaffable hello, it's worlds!")
    assert tok.decode(ids) == "[CLS] unaffable hello, it's worlds! [SEP]"
    assert tok.decode(ids, skip_special_tokens=True) == "unaffable hello, it's worlds!"
    raw = WordPieceTokenizer(tok.ids_to_tokens, clean_up_tokenization_spaces=False)
    assert raw.decode(ids, skip_special_tokens=True) == "unaffable hello , it ' s worlds !"


def test_wordpiece_training(wordpiece, corpus):
    assert len(wordpiece) == VOCAB_SIZE
    assert wordpiece.convert_ids_to_tokens([0, 1, 2, 3, 4]) == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (wordpiece.pad_token_id, wordpiece.unk_token_id, wordpiece.mask_token_id) == (0, 1, 4)
    ids = wordpiece.encode(corpus[:20000], add_special_tokens=False)
    assert wordpiece.unk_token_id not in ids                  # every training word can be written
    text = "The assert statement is a convenient way to insert debugging assertions."
    assert wordpiece.decode(wordpiece.encode(text), skip_special_tokens=True) == text.lower()


def test_wordpiece_save_load_round_trip(wordpiece_cased, tmp_path):
    wordpiece_cased.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["do_lower_case"] is False and config["tokenizer_class"] == "BertTokenizer"
    loaded = WordPieceTokenizer.from_pretrained(tmp_path)
    assert loaded.vocab == wordpiece_cased.vocab and loaded.do_lower_case is False
    for text in TRICKY:
        pair = "Pair [MASK] text"
        assert loaded.encode(text, pair) == wordpiece_cased.encode(text, pair)
    # without tokenizer_config.json, do_lower_case is True, as for BERT
    os.remove(tmp_path / "tokenizer_config.json")
    assert WordPieceTokenizer.from_pretrained(tmp_path).do_lower_case is True


def test_wordpiece_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vocab.txt"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    vocab_txt = tmp_path / "vocab.txt"
    vocab_txt.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'a' appears twice, at line 6 of .*' and line 8"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    vocab_txt.write_text("[PAD]\n[UNK]\n[CLS]\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"special token '\[SEP\]' is not in the vocabulary"):
        WordPieceTokenizer.from_pretrained(tmp_path)
    vocab_txt.write_text("[PAD]\n\n[CLS]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 of .*vocab.txt' must be a non-empty token"):
        WordPieceTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("content", ["", "\n", " \n\n"])
def test_wordpiece_empty_vocab_file_is_named_as_empty(tmp_path, content):
    (tmp_path / "vocab.txt").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"from_pretrained: '.*vocab\.txt' is empty; .*\[UNK\]"):
        WordPieceTokenizer.from_pretrained(tmp_path)


def test_convert_tokens_and_ids(wordpiece, bpe):
    assert wordpiece.convert_tokens_to_ids("[CLS]") == wordpiece.cls_token_id
    assert wordpiece.convert_tokens_to_ids(["[SEP]", "no-such-token"]) == [
        wordpiece.sep_token_id, wordpiece.unk_token_id]
    assert wordpiece.convert_ids_to_tokens(wordpiece.cls_token_id) == "[CLS]"
    assert bpe.convert_ids_to_tokens(bpe.encode(" world")) == bpe.tokenize(" world")
    with pytest.raises(ValueError, match=r"convert_tokens_to_ids: token 'zzzzzzzz' is not in"):
        bpe.convert_tokens_to_ids("zzzzzzzz")
    with pytest.raises(ValueError, match=r"convert_ids_to_tokens: ids must be in \[0, 4096\)"):
        bpe.convert_ids_to_tokens(9999)


# ------------------------------------------------------------------------ char

def test_char_tokenizer(char, corpus):
    assert char.special_tokens == ["<pad>", "<eos>"]
    assert char.convert_ids_to_tokens([0, 1]) == ["<pad>", "<eos>"]
    chars = sorted(set(corpus))
    assert len(char) == len(chars) + 2 and char.convert_ids_to_tokens(2) == chars[0]
    text = "def f(x): return x<eos>"
    ids = char.encode(text)
    assert len(ids) == len(text) - len("<eos>") + 1 and ids[-1] == char.eos_token_id
    assert char.decode(ids) == text
    assert char.decode(ids, skip_special_tokens=True) == text[:-len("<eos>")]
    out = char(["ab", "abcd"], padding=True, return_tensors="np")
    assert out["input_ids"][0, 2:].tolist() == [0, 0]


def test_char_unknown_characters(char):
    with pytest.raises(ValueError, match=r"CharTokenizer.encode: character '☃' \(U\+2603\) is"):
        char.encode("snow ☃")
    tok = CharTokenizer.train("abc", unk_token="<unk>")
    assert tok.encode("abz") == [1, 2, tok.unk_token_id]


def test_char_save_load(char, tmp_path):
    char.save_pretrained(tmp_path)
    loaded = CharTokenizer.from_pretrained(tmp_path)
    assert loaded.vocab == char.vocab
    assert (loaded.pad_token, loaded.eos_token) == ("<pad>", "<eos>")
    assert loaded.encode("x<eos><pad>y") == char.encode("x<eos><pad>y")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=50))
def test_char_round_trip(text):
    tok = CharTokenizer.train(text + "q")
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)


# ================================================================= reference

@pytest.fixture(scope="module")
def bpe_reference(bpe, tmp_path_factory):
    """The `tokenizers` library's byte-level BPE on our vocab.json and merges.txt."""
    tokenizers = pytest.importorskip("tokenizers")
    directory = tmp_path_factory.mktemp("bpe")
    bpe.save_pretrained(directory)
    reference = tokenizers.ByteLevelBPETokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), add_prefix_space=False)
    reference.add_special_tokens([EOT])
    return reference


@pytest.fixture(scope="module")
def wordpiece_references(wordpiece, wordpiece_cased, tmp_path_factory):
    """The `tokenizers` library's BERT WordPiece on our vocab.txt files: lowercase -> pair."""
    tokenizers = pytest.importorskip("tokenizers")
    pairs = {}
    for lowercase, ours in ((True, wordpiece), (False, wordpiece_cased)):
        directory = tmp_path_factory.mktemp("wordpiece")
        ours.save_pretrained(directory)
        theirs = tokenizers.BertWordPieceTokenizer(str(directory / "vocab.txt"),
                                                   lowercase=lowercase)
        pairs[lowercase] = (ours, theirs)
    return pairs


def assigned_characters(lo=0, hi=0x10FFFF) -> list[str]:
    """Every code point in [lo, hi] that Python's Unicode database assigns (no
    surrogates, no unassigned Cn). Characters assigned only in later Unicode
    versions than Python's cannot be expected to agree."""
    return [chr(cp) for cp in range(lo, hi + 1)
            if unicodedata.category(chr(cp)) not in ("Cn", "Cs")]


@pytest.mark.reference
def test_bpe_matches_tokenizers_on_corpus(bpe, bpe_reference, corpus_lines):
    texts = corpus_lines + TRICKY + [f"a{EOT}b {EOT}", f" {EOT}\n"]
    different = [t for t in texts if bpe.encode(t) != bpe_reference.encode(t).ids]
    assert different == [], f"{len(different)} of {len(texts)} texts differ, e.g. {different[:3]}"


@pytest.mark.reference
def test_gpt2_pre_tokenize_matches_tokenizers(corpus_lines):
    pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    to_bytechars = bytes_to_unicode()

    def ours(text):
        return ["".join(to_bytechars[b] for b in word.encode("utf-8"))
                for word in gpt2_pre_tokenize(text)]

    for text in corpus_lines + TRICKY:
        assert ours(text) == [w for w, _ in byte_level.pre_tokenize_str(text)], repr(text)


# The sweeps over every character: the Basic Multilingual Plane always, all
# of Unicode (five times longer) with the slow tests.
CHARACTER_RANGES = [pytest.param(0, 0xFFFF, id="BMP"),
                    pytest.param(0x10000, 0x10FFFF, id="astral", marks=pytest.mark.slow)]


@pytest.mark.reference
@pytest.mark.parametrize("lo, hi", CHARACTER_RANGES)
def test_gpt2_pre_tokenize_matches_tokenizers_on_every_character(lo, hi):
    """Each assigned character next to a letter, a digit, a symbol, white space and itself."""
    pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    text = "".join(f"{c}a{c}1 {c}!{c}\t{c}{c} " for c in assigned_characters(lo, hi))
    theirs = [w for w, _ in byte_level.pre_tokenize_str(text)]
    to_bytechars = bytes_to_unicode()
    ours = ["".join(to_bytechars[b] for b in word.encode("utf-8"))
            for word in gpt2_pre_tokenize(text)]
    assert ours == theirs


@pytest.mark.reference
@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs", "Cn"))))
def test_bpe_matches_tokenizers_on_random_text(bpe, bpe_reference, text):
    assert bpe.encode(text) == bpe_reference.encode(text).ids


@pytest.mark.reference
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, VOCAB_SIZE - 1), max_size=30))
def test_bpe_decode_matches_tokenizers(bpe, bpe_reference, ids):
    assert bpe.decode(ids) == bpe_reference.decode(ids, skip_special_tokens=False)


@pytest.mark.reference
@pytest.mark.parametrize("lowercase", [True, False])
def test_wordpiece_matches_tokenizers_on_corpus(wordpiece_references, corpus_lines, lowercase):
    ours, theirs = wordpiece_references[lowercase]
    texts = corpus_lines + TRICKY + ["[CLS] Hello [MASK] world [SEP] [PAD]"]
    different = [t for t in texts if ours.encode(t) != theirs.encode(t).ids]
    assert different == [], f"{len(different)} of {len(texts)} texts differ, e.g. {different[:3]}"
    # pairs: each line with the next, ids and token type ids
    for a, b in zip(texts[:2000], texts[1:2001]):
        mine, reference = ours(a, b), theirs.encode(a, b)
        assert mine["input_ids"] == reference.ids, (a, b)
        assert mine["token_type_ids"] == reference.type_ids, (a, b)


# BERT's normalizer and pre-tokenizer inside `tokenizers` classify characters
# with Unicode tables much older than Python's unicodedata: there, characters
# assigned or re-categorized since are handled differently (U+061D, a
# punctuation mark since Unicode 14, is not split off; U+166D, punctuation
# before Unicode 12, still is). Random text for the comparison is drawn from
# blocks on which the two agree, character by character.
STABLE_BLOCKS = [(0x20, 0x5FF), (0x2000, 0x2064), (0x3000, 0x30FF), (0x4E00, 0x4FFF),
                 (0xAC00, 0xACFF), (0x1F300, 0x1F64F)]
STABLE_CHARACTERS = [c for lo, hi in STABLE_BLOCKS for c in assigned_characters(lo, hi)]


@pytest.mark.reference
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_wordpiece_matches_tokenizers_on_random_text(wordpiece_references, data):
    lowercase = data.draw(st.booleans())
    ours, theirs = wordpiece_references[lowercase]
    alphabet = st.sampled_from(STABLE_CHARACTERS + list(" \t\n\x00\ufffd"))
    a, b = data.draw(st.text(alphabet, max_size=40)), data.draw(st.text(alphabet, max_size=40))
    assert ours.encode(a) == theirs.encode(a).ids
    assert ours(a, b)["token_type_ids"] == theirs.encode(a, b).type_ids


@pytest.mark.reference
@pytest.mark.parametrize("lo, hi", CHARACTER_RANGES)
def test_basic_tokenizer_matches_transformers_on_every_character(lo, hi):
    """BERT's basic tokenizer as `transformers` writes it in Python (on the same
    Unicode database as ours) agrees on every assigned character."""
    pytest.importorskip("transformers")
    try:
        from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer
    except ImportError:
        pytest.skip("this transformers version has no Python BasicTokenizer")
    basic = BasicTokenizer(do_lower_case=True)
    texts = [f"a{c}b {c}" for c in assigned_characters(lo, hi)]
    different = [t for t in texts if bert_basic_tokenize(t) != basic.tokenize(t)]
    assert different == []


@pytest.mark.reference
@settings(max_examples=100, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(3, 20))
def test_truncation_matches_tokenizers(wordpiece_references, n_a, n_b, max_length):
    ours, theirs = wordpiece_references[True]
    a, b = " ".join(["a"] * n_a), " ".join(["b"] * n_b)
    theirs.enable_truncation(max_length)
    try:
        reference = theirs.encode(a, b)
    finally:
        theirs.no_truncation()
    mine = ours(a, b, truncation=True, max_length=max_length)
    assert mine["input_ids"] == reference.ids
    assert mine["token_type_ids"] == reference.type_ids


@pytest.mark.reference
def test_transformers_reads_our_files(bpe, wordpiece, tmp_path):
    transformers = pytest.importorskip("transformers")
    bpe.save_pretrained(tmp_path / "gpt2")
    wordpiece.save_pretrained(tmp_path / "bert")
    gpt2 = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "gpt2"))
    bert = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "bert"))
    for text in TRICKY[:20] + [f"x{EOT}y"]:
        assert gpt2(text)["input_ids"] == bpe(text)["input_ids"], repr(text)
    for text in ["Hello, World! [MASK] it's", "Café 中文 naïve"]:
        assert bert(text, "second")["input_ids"] == wordpiece(text, "second")["input_ids"]
