"""Tests of scratchlm.tokenizers.sentencepiece: the .model format, the double-array
trie, the normaliser, unigram Viterbi, decoding, EM training and the tokenizer.

The tests at the top need nothing but scratchlm. Those marked `reference`
compare with the `sentencepiece` library (models it trains here, offline, on
the built-in corpus plus non-ASCII text written below) and with `transformers`'
MarianTokenizer; they are skipped where those are not installed.
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import random
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchlm.data import builtin_corpus
from scratchlm.tokenizers import SentencePieceModel, SentencePieceTokenizer, train_unigram
from scratchlm.tokenizers import _protobuf as pb
from scratchlm.tokenizers.sentencepiece import (
    BYTE, CONTROL, NORMAL, SPACE, UNKNOWN, UNUSED, USER_DEFINED, DoubleArray, Normalizer,
    _digamma, _Lattices, _m_step, compile_charsmap, nfkc_rules, parse_charsmap, parse_model_proto,
    serialize_model_proto)

# Text that NFKC or the white space rules change, in several scripts.
NON_ASCII = [
    "Größe, Maß und Gemütlichkeit: Äpfel, Öl, Übermut — ß ẞ.",
    "Déjà vu : le café crème à l'hôtel, naïveté, cœur, Noël, œuvre.",
    "中文字符和日本語のテキスト、東京都。カタカナ ひらがな。",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Ελληνικά: γειά σου κόσμε. العربية: مرحبا بالعالم. 한국어 텍스트.",
    "emoji 👍🏽 👨\u200d👩\u200d👧 🇫🇷 ❤️ 🙂🙃 ok",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ １２３ ｶﾀｶﾅ",
    "ligatures ﬁ ﬂ ﬀ ﬃ, circled ① ② ⑩, roman Ⅻ, ㍿ ™ ½ ² ℃ ㎏",
    "decomposed e\u0301 a\u0300 u\u0308\u0304 n\u0303 versus é à ǖ ñ",
    "\ttabs\tand   multiple    spaces\n and\r\nnewlines\x0b\x0c",
    "   leading and trailing white space   ",
    "zero\u200bwidth\ufeffbom and \u2028line\u2029para and ▁ itself",
    "control \x01\x02\x1f\x7f characters and NUL \x00 too",
]

TRICKY = ["", " ", "   ", "\n", "\t\t", "▁", "▁▁x", "a▁", "x ¨ y", "´a", "ﷺ ﷻ", "a\u0301\u0302",
          "<s> </s> <unk> <pad> [MASK] >>de<< <sep>", "\ufffd\ufffd", "😀😀😀", "ab" * 60,
          "a" * 300, "1,000,000.5 3.14e-10 0x1F", "x\u0300\u0301\u0302\u0303y"]


def corpus_lines() -> list[str]:
    return builtin_corpus().split("\n")


def mo_translations(limit: int = 3000, per_catalog: int = 100) -> list[str]:
    """Translated messages from compiled gettext catalogs, where the system has some:
    a few from each language's coreutils.mo (header: magic, revision, N, offset of
    the originals' table, offset of the translations' table; entries (length, offset))."""
    out = []
    for path in sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/coreutils.mo")):
        try:
            with open(path, "rb") as f:
                data = f.read()
            order = next(o for o in "<>" if struct.unpack(o + "I", data[:4])[0] == 0x950412DE)
            n, _, table = struct.unpack(order + "3I", data[8:20])
            for k in range(1, n, max(1, n // per_catalog)):
                length, offset = struct.unpack(order + "2I", data[table + 8 * k:table + 8 * k + 8])
                out.extend(s for s in data[offset:offset + length].decode("utf-8").split("\0") if s)
        except (OSError, StopIteration, UnicodeDecodeError, struct.error):
            continue
    return out[:limit]


def make_model(pieces, model_type=1, byte_fallback=False, **normalizer) -> SentencePieceModel:
    """A model from (piece, score, type) triples; no normalisation unless asked."""
    spec = {"name": "identity", "add_dummy_prefix": False, "remove_extra_whitespaces": False,
            **normalizer}
    trainer = {"model_type": model_type, "vocab_size": len(pieces)}
    if byte_fallback:
        trainer["byte_fallback"] = True
    proto = {"pieces": [{"piece": p, "score": s, "type": t} for p, s, t in pieces],
             "trainer_spec": trainer, "normalizer_spec": spec}
    return SentencePieceModel(serialize_and_parse(proto))


def serialize_and_parse(proto: dict) -> dict:
    return parse_model_proto(serialize_model_proto(proto))


# ============================================================ protocol buffers

@given(st.integers(-(2**63), 2**64 - 1))
def test_varint_round_trip(value):
    data = pb.write_varint(value)
    decoded, end = pb.read_varint(data + b"\x07", 0)
    assert end == len(data) <= 10
    assert decoded == value % 2**64


def test_varint_known_bytes():
    assert pb.write_varint(300) == b"\xac\x02"
    assert pb.write_varint(-1) == b"\xff" * 9 + b"\x01"


piece_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)


@given(st.lists(st.tuples(piece_text, st.floats(-30, 0, width=32),
                          st.sampled_from([NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE])),
                max_size=8),
       st.integers(-1, 50), st.booleans(), st.binary(max_size=20))
def test_model_proto_round_trip(pieces, pad_id, dummy, charsmap):
    proto = {"pieces": [{"piece": p, "score": s, "type": t} for p, s, t in pieces],
             "trainer_spec": {"model_type": 1, "vocab_size": 8000, "pad_id": pad_id,
                              "control_symbols": ["<a>", "<b>"]},
             "normalizer_spec": {"name": "nmt", "precompiled_charsmap": charsmap,
                                 "add_dummy_prefix": dummy}}
    data = serialize_model_proto(proto)
    if pieces:
        assert parse_model_proto(data) == proto
    again = pb.decode(data, pb.Message("M", {}))            # every field unknown
    assert pb.encode(again, pb.Message("M", {})) == data      # kept raw, written back


def test_unknown_fields_survive_round_trip():
    proto = {"pieces": [{"piece": "<unk>", "score": 0.0, "type": UNKNOWN}]}
    data = serialize_model_proto(proto)
    extra = pb.write_varint(200 << 3 | 2) + pb.write_varint(3) + b"abc"     # field 200
    parsed = parse_model_proto(data + extra)
    assert parsed["_unknown"] == [extra]
    assert serialize_model_proto(parsed) == data + extra


def test_bad_model_files_are_named(tmp_path):
    good = serialize_model_proto({"pieces": [{"piece": "<unk>", "type": UNKNOWN},
                                             {"piece": "a", "score": -1.0}]})
    cases = {"empty.model": (b"", "empty"), "cut.model": (good[:-3], "cut short"),
             "text.model": (b"this is not a model\n", "not a SentencePiece model"),
             "nopieces.model": (serialize_model_proto({"trainer_spec": {"vocab_size": 3}}),
                                "no pieces")}
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as info:
            SentencePieceModel.from_file(path)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SentencePieceModel.from_file(tmp_path / "missing.model")


@pytest.mark.parametrize("model_type, name", [(3, "WORD"), (4, "CHAR"), (9, "unknown type 9")])
def test_unsupported_model_type(model_type, name):
    with pytest.raises(ValueError, match=f"{name} is not supported"):
        make_model([("<unk>", 0.0, UNKNOWN), ("a", -1.0, NORMAL)], model_type=model_type)


def test_inconsistent_pieces_are_refused():
    with pytest.raises(ValueError, match="exactly one UNKNOWN"):
        make_model([("a", -1.0, NORMAL)])
    with pytest.raises(ValueError, match="appears twice"):
        make_model([("<unk>", 0.0, UNKNOWN), ("a", -1.0, NORMAL), ("a", -2.0, NORMAL)])
    with pytest.raises(ValueError, match="byte_fallback is false"):
        make_model([("<unk>", 0.0, UNKNOWN), ("<0x41>", 0.0, BYTE)])
    with pytest.raises(ValueError, match="256 byte pieces"):
        make_model([("<unk>", 0.0, UNKNOWN), ("<0x41>", 0.0, BYTE)], byte_fallback=True)


# ================================================================ the trie

def hand_built_trie() -> list[int]:
    """The double array of {b"a": 1, b"ab": 2}, laid out by hand.

    root (unit 0): children from base 256  -> offset 0 ^ 256
    "a" at 256 ^ 0x61 = 353: label 0x61, has_leaf, base 512 -> offset 353 ^ 512
        its value at 512 ^ 0 = 512: 1 | bit 31
    "ab" at 512 ^ 0x62 = 610: label 0x62, has_leaf, base 768 -> offset 610 ^ 768
        its value at 768: 2 | bit 31
    """
    units = [0] * 1024
    units[0] = 256 << 10
    units[353] = 0x61 | 1 << 8 | (353 ^ 512) << 10
    units[512] = 1 | 1 << 31
    units[610] = 0x62 | 1 << 8 | (610 ^ 768) << 10
    units[768] = 2 | 1 << 31
    return units


def test_hand_built_trie_lookup():
    trie = DoubleArray(hand_built_trie())
    assert trie.common_prefix_search(b"abc") == [(1, 1), (2, 2)]
    assert trie.common_prefix_search(b"xab", start=1) == [(1, 1), (2, 2)]
    assert trie.common_prefix_search(b"b") == []
    assert trie.common_prefix_search(b"a") == [(1, 1)]
    assert sorted(trie.items()) == [(b"a", 1), (b"ab", 2)]


def test_normaliser_on_hand_built_trie():
    units = DoubleArray(hand_built_trie()).to_bytes()
    strings = b"X\0YY\0"                         # "a" -> "X" (at 0), "ab" -> "YY" (at 2)
    units_list = hand_built_trie()
    units_list[512], units_list[768] = 0 | 1 << 31, 2 | 1 << 31
    units = DoubleArray(units_list).to_bytes()
    blob = len(units).to_bytes(4, "little") + units + strings
    assert parse_charsmap(blob) == {"a": "X", "ab": "YY"}
    spec = {"precompiled_charsmap": blob, "add_dummy_prefix": False,
            "remove_extra_whitespaces": False}
    normalizer = Normalizer(spec)
    for text, expected in [("abac", "YYXc"), ("ba", "bX"), ("aab b", "XYY▁b")]:
        assert normalizer.normalize(text) == expected
        assert normalizer.normalize_bytewise(text) == expected


keys = st.dictionaries(st.binary(min_size=1, max_size=5).map(
    lambda b: bytes(1 + c % 6 if c < 128 else 0x80 + c % 4 for c in b)),
    st.integers(0, 2**31 - 1), max_size=30)


@given(keys, st.lists(st.binary(max_size=6).map(
    lambda b: bytes(1 + c % 6 if c < 128 else 0x80 + c % 4 for c in b)), max_size=10))
def test_double_array_build_and_search(pairs, queries):
    trie = DoubleArray.build(pairs)
    assert dict(trie.items()) == pairs
    assert len(trie) % 256 == 0
    for query in queries + list(pairs):
        expected = sorted((v, len(k)) for k, v in pairs.items() if query.startswith(k))
        assert trie.common_prefix_search(query) == sorted(expected, key=lambda vl: vl[1])


def test_charsmap_round_trip():
    rules = {"\t": " ", "ﬁ": "fi", "\x01": "", "e\u0301": "é", "①": "1", "ｶ": "カ"}
    assert parse_charsmap(compile_charsmap(rules)) == rules
    with pytest.raises(ValueError, match="trie size"):
        parse_charsmap(b"\xff\xff\x00\x00abcdefgh")


# ============================================================ the normaliser

def nfkc_normalizer(**flags) -> Normalizer:
    rules = {k: v for k, v in nfkc_rules().items()
             if len(k) == 1 and (ord(k) < 0x2500 or 0xFB00 <= ord(k) <= 0xFB06)}
    rules.update({"e\u0301": "é", "u\u0308\u0304": "ǖ", "ü\u0304": "ǖ"})
    return Normalizer({"precompiled_charsmap": compile_charsmap(rules), **flags},
                      user_defined=["<sep>"])


@pytest.fixture(scope="module")
def small_nfkc():
    return {flags: nfkc_normalizer(add_dummy_prefix=flags[0], remove_extra_whitespaces=flags[1])
            for flags in itertools.product([True, False], repeat=2)}


def test_normaliser_white_space(small_nfkc):
    n = small_nfkc[True, True]
    assert n.normalize("  Hello\tworld  ") == "▁Hello▁world"
    assert n.normalize("ﬁne ① e\u0301") == "▁fine▁1▁é"
    assert n.normalize("   ") == n.normalize("") == n.normalize("\x01") == ""
    assert n.normalize("x ¨ y") == "▁x▁\u0308▁y"          # "¨" -> " ̈", no double space
    assert n.normalize("a<sep> ﬁ<sep>") == "▁a<sep>▁fi<sep>"  # user pieces stay as they are
    assert small_nfkc[False, True].normalize("  a  b ") == "a▁b"
    assert small_nfkc[True, False].normalize(" a  b ") == "▁▁a▁▁b▁"
    assert small_nfkc[False, False].normalize("\t") == "▁"


@given(st.text(st.sampled_from(list("ab ¨´\t\x01ﬁ①e\u0301\u0308\u0304ü<sep>▁ﷺ")), max_size=14))
def test_normaliser_paths_agree(small_nfkc, text):
    """The fast path, the unit-by-unit loop and the bytewise trie walk agree."""
    for n in small_nfkc.values():
        assert n.normalize(text) == n._whitespace(n._units(text)) == n.normalize_bytewise(text)


# ============================================================ Viterbi

vocabularies = st.dictionaries(st.text("abc", min_size=1, max_size=3),
                               st.floats(-10, -0.125, width=32), min_size=1, max_size=12)


def all_segmentations(text, vocab, unk_score):
    """Every way to cut text into vocabulary pieces, with sentencepiece's unknowns:
    a character no single-character piece covers is an unknown piece by itself."""
    if not text:
        yield [], 0.0
        return
    options = [(text[:k], vocab[text[:k]]) for k in range(1, len(text) + 1) if text[:k] in vocab]
    if text[0] not in vocab:
        options.append((text[0], unk_score))
    for piece, score in options:
        for rest, rest_score in all_segmentations(text[len(piece):], vocab, unk_score):
            yield [piece] + rest, score + rest_score


@given(vocabularies, st.text("abcd", max_size=8))
def test_viterbi_against_brute_force(vocab, text):
    model = make_model([("<unk>", 0.0, UNKNOWN)] + [(p, s, NORMAL) for p, s in vocab.items()])
    best = sorted(all_segmentations(text, vocab, model.unk_score), key=lambda ps: -ps[1])
    path = model._viterbi(text)
    pieces = [p for p, _ in path]
    assert "".join(pieces) == text
    score = sum(model.unk_score if i == model.unk_id else model.scores[i] for _, i in path)
    assert score == pytest.approx(best[0][1], abs=1e-4)
    if len(best) == 1 or best[0][1] - best[1][1] > 1e-3:       # a clear winner
        assert pieces == best[0][0]


def test_viterbi_tie_keeps_the_longer_last_piece():
    """On an exact tie sentencepiece keeps the path whose last piece starts first."""
    model = make_model([("<unk>", 0.0, UNKNOWN), ("a", -1.0, NORMAL), ("b", -1.0, NORMAL),
                        ("ab", -2.0, NORMAL), ("bab", -3.0, NORMAL)])
    assert model.encode_as_pieces("ab") == ["ab"]
    assert model.encode_as_pieces("abab") == ["a", "bab"]


def test_unknown_runs_and_user_pieces():
    model = make_model([("<unk>", 0.0, UNKNOWN), ("a", -1.0, NORMAL), ("b", -1.0, NORMAL),
                        ("ab", -5.0, NORMAL), ("<x>", 0.0, USER_DEFINED), ("c", -1.0, UNUSED)])
    assert model.encode_as_pieces("a☃☃bc") == ["a", "☃☃", "b", "c"]     # one unknown run
    assert model.encode("a☃☃bc") == [1, 0, 2, 0]
    assert model.encode_as_pieces("ab") == ["a", "b"]
    assert model.encode_as_pieces("a<x>b") == ["a", "<x>", "b"]


@pytest.mark.parametrize("each, expected", [(-0.02, ["xy"]), (0.04, ["xy"]), (0.06, ["x", "y"])])
def test_user_piece_score(each, expected):
    """A user-defined piece of n UTF-8 bytes scores 0.1 * (n - 1): "xy" beats
    x + y up to a total of 0.1 (measured on sentencepiece 0.2)."""
    model = make_model([("<unk>", 0.0, UNKNOWN), ("x", each, NORMAL), ("y", each, NORMAL),
                        ("xy", 0.0, USER_DEFINED), ("z", -3.0, NORMAL)])
    assert model.encode_as_pieces("xy") == expected


def test_byte_fallback():
    pieces = [("<unk>", 0.0, UNKNOWN), ("a", -1.0, NORMAL)]
    pieces += [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
    model = make_model(pieces, byte_fallback=True)
    assert model.encode_as_pieces("aé") == ["a", "<0xC3>", "<0xA9>"]
    assert model.decode(model.encode("aé☃a")) == "aé☃a"
    assert model.decode_pieces(["<0xC3>", "a", "<0xE2>", "<0x98>"]) == "\ufffda\ufffd\ufffd"


def test_bpe_merges_best_pair_first():
    pieces = [("<unk>", 0.0, UNKNOWN), ("a", -1.0, NORMAL), ("b", -1.0, NORMAL),
              ("c", -1.0, NORMAL), ("ab", -2.0, NORMAL), ("bc", -1.5, NORMAL)]
    model = make_model(pieces, model_type=2)
    assert model.encode_as_pieces("abc") == ["a", "bc"]          # bc scores higher than ab
    assert model.encode_as_pieces("abab") == ["ab", "ab"]
    assert model.encode_as_pieces("abcd") == ["a", "bc", "d"]
    model = make_model(pieces + [("abc", -3.0, NORMAL), ("bca", -3.5, UNUSED)], model_type=2)
    assert model.encode_as_pieces("abc") == ["abc"]              # then a + bc -> abc
    assert model.encode_as_pieces("bca") == ["bc", "a"]          # an UNUSED merge is undone


# ============================================================ decoding

def test_decode_rules():
    model = make_model([("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("▁a", -1.0, NORMAL),
                        ("b", -1.0, NORMAL), ("▁", -2.0, NORMAL)],
                       add_dummy_prefix=True, remove_extra_whitespaces=True)
    assert model.decode_pieces(["▁a", "b", "▁a"]) == "ab a"
    assert model.decode_pieces(["▁", "▁a"]) == "a"             # leading spaces all go
    assert model.decode_pieces(["<s>", "▁a", "<unk>", "xyz"]) == "a \u2047 xyz"
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\)"):
        model.decode([0, 7])
    keep = make_model([("<unk>", 0.0, UNKNOWN), ("▁a", -1.0, NORMAL), ("▁", -2.0, NORMAL)],
                      add_dummy_prefix=True, remove_extra_whitespaces=False)
    assert keep.decode_pieces(["▁", "▁a"]) == " a"             # only the dummy space goes


# ============================================================ training

def test_digamma_and_m_step():
    from scipy.special import digamma
    x = np.array([1e-3, 0.3, 0.5, 1.0, 2.5, 7.0, 123.4, 1e6])
    np.testing.assert_allclose(_digamma(x), digamma(x), rtol=1e-10, atol=1e-10)
    counts = np.array([0.2, 10.0, 0.3, 5.0])
    is_char = np.array([True, False, False, False])
    logp, alive = _m_step(counts, np.ones(4, bool), is_char)
    assert alive.tolist() == [True, True, False, True]       # rare pieces go, characters stay
    kept = np.array([0.5, 10.0, 5.0])                         # a character's count is floored
    np.testing.assert_allclose(logp[alive], digamma(kept) - digamma(kept.sum()))
    assert logp[2] == -np.inf


@given(vocabularies, st.lists(st.text("abc", min_size=1, max_size=6), min_size=1, max_size=4))
def test_lattice_passes(vocab, words):
    """forward = log of the sum over all segmentations; the expected counts cover
    every character exactly once per word."""
    vocab = {**{c: -2.0 for c in "abc"}, **vocab}
    pieces = list(vocab)
    logp = np.array([vocab[p] for p in pieces], dtype=np.float64)
    sent, start, end, pid = [], [], [], []
    for k, w in enumerate(words):
        for i in range(len(w)):
            for j in range(i + 1, len(w) + 1):
                if w[i:j] in vocab:
                    sent.append(k), start.append(i), end.append(j), pid.append(pieces.index(w[i:j]))
    lattices = _Lattices([len(w) for w in words], sent, start, end, pid)
    alpha = lattices.forward(logp)
    beta = lattices.backward(logp)
    for k, w in enumerate(words):
        total = np.logaddexp.reduce([s for _, s in all_segmentations(w, vocab, -np.inf)])
        assert alpha[lattices.last[k]] == pytest.approx(total)
        assert beta[lattices.first[k]] == pytest.approx(total)
    weights = np.arange(1.0, len(words) + 1)
    counts, _ = lattices.expected_counts(logp, weights, len(pieces))
    covered = sum(c * len(p) for c, p in zip(counts, pieces))
    assert covered == pytest.approx(sum(wt * len(w) for wt, w in zip(weights, words)))
    path_edges, path_owner, best = lattices.viterbi(logp)
    for k, w in enumerate(words):
        top = max(s for _, s in all_segmentations(w, vocab, -np.inf))
        assert best[k] == pytest.approx(top)
        assert "".join(pieces[lattices.pid[e]] for e in path_edges[path_owner == k][::-1]) == w


@pytest.fixture(scope="module")
def trained():
    """A unigram model trained here on the built-in corpus and the non-ASCII text."""
    lines = corpus_lines() + NON_ASCII * 3
    return SentencePieceTokenizer.train(lines, 1200, character_coverage=1.0)


def test_training_gives_the_requested_model(trained):
    model = trained.model
    assert len(model) == 1200 == trained.vocab_size
    assert model.pieces[:3] == ["<unk>", "<s>", "</s>"]
    assert model.types[:3] == [UNKNOWN, CONTROL, CONTROL]
    normal = [s for s, t in zip(model.scores, model.types) if t == NORMAL]
    assert normal == sorted(normal, reverse=True) and max(normal) < 0
    text = " ".join(corpus_lines())
    alphabet = set(model.normalize(text)) | set(model.normalize(" ".join(NON_ASCII)))
    assert alphabet - {"\0"} <= set(model.pieces)        # every character is a piece
    assert trained.tokenize("\0") == ["▁", "\0"]         # but NUL, as in sentencepiece
    assert trained.encode("\0")[1] == trained.unk_token_id
    assert trained.unk_token_id not in trained.encode(text[:20000])
    assert len(trained.encode(text[:20000])) < 0.35 * 20000   # pieces longer than characters
    for line in corpus_lines()[:3000:7] + [t for t in NON_ASCII if "\0" not in t]:
        ids = trained.encode(line)
        assert trained.decode(ids) == model.normalize(line).replace(SPACE, " ").strip()


def test_saved_model_reads_back(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    back = SentencePieceTokenizer.from_pretrained(tmp_path)
    assert (tmp_path / "spiece.model").read_bytes() == trained.model.serialize()
    for line in corpus_lines()[::50] + NON_ASCII + TRICKY:
        assert back.encode(line) == trained.encode(line)


def test_training_errors():
    with pytest.raises(ValueError, match="fewer than the .* characters"):
        train_unigram(corpus_lines()[:200], 20)
    with pytest.raises(ValueError, match="lower vocab_size"):
        train_unigram("abc abd", 300)
    with pytest.raises(ValueError, match="bos_id=1 is also the id"):
        train_unigram("abc", 100, unk_id=1)


# ============================================================ the tokenizer

def test_tokenizer_batches(trained):
    with pytest.raises(ValueError, match="padding needs a pad token"):
        trained(["Hello world", "a"], padding=True)
    trained.pad_token = "</s>"
    try:
        out = trained(["Hello world", "a"], padding=True, return_tensors="np")
    finally:
        trained.pad_token = None
    assert out["input_ids"].shape == out["attention_mask"].shape
    assert out["attention_mask"][1].tolist() == [1] * len(trained.encode("a")) + [0] * (
        out["input_ids"].shape[1] - len(trained.encode("a")))
    cut = trained("Hello world, this is long", truncation=True, max_length=3)
    assert cut["input_ids"] == trained.encode("Hello world, this is long")[:3]
    assert trained.encode("<s>x</s>") == trained.model.encode("<s>x</s>")  # not matched


@pytest.fixture(scope="module")
def marian_dir(trained, tmp_path_factory):
    directory = tmp_path_factory.mktemp("marian")
    vocab_path = trained.save_marian(directory)[2]
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    vocab[">>de<<"] = len(vocab)                          # a language code token
    with open(vocab_path, "w") as f:
        json.dump(vocab, f)
    return directory


def test_marian_layout(marian_dir):
    tok = SentencePieceTokenizer.from_pretrained(marian_dir)
    assert tok.is_marian and (tok.eos_token_id, tok.unk_token_id) == (0, 1)
    assert tok.pad_token_id == len(tok) - 2               # "<pad>" was last before >>de<<
    ids = tok("Hello world")["input_ids"]
    assert ids[-1] == 0 and tok.decode(ids, skip_special_tokens=True) == "Hello world"
    coded = tok(">>de<< Hello world")["input_ids"]
    assert coded == [tok.vocab[">>de<<"]] + ids
    assert tok("a </s> b")["input_ids"].count(0) == 2     # </s> matched in the text
    batch = tok(["a b c d", "a"], text_target=["x", "x y z"], padding=True)
    assert batch["labels"][0][-1] == tok.pad_token_id
    assert len(batch["input_ids"][1]) == len(batch["input_ids"][0])
    long = tok(["a b c d e f g h"], truncation=True, max_length=4)["input_ids"][0]
    assert len(long) == 4 and long[-1] == 0
    back_dir = marian_dir / "again"
    tok.save_pretrained(back_dir)
    back = SentencePieceTokenizer.from_pretrained(back_dir)
    for line in corpus_lines()[::100] + NON_ASCII:
        assert back(line)["input_ids"] == tok(line)["input_ids"]


def test_from_pretrained_errors(tmp_path, marian_dir):
    with pytest.raises(FileNotFoundError, match="source.spm"):
        SentencePieceTokenizer.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("source.spm", "target.spm"):
        (broken / name).write_bytes((marian_dir / name).read_bytes())
    (broken / "vocab.json").write_text(json.dumps({"a": 0, "</s>": 1, "<pad>": 2}))
    with pytest.raises(ValueError, match="unk_token '<unk>' is not in vocab.json"):
        SentencePieceTokenizer.from_pretrained(broken)
    (broken / "source.spm").write_bytes(b"\x0a\x05ab")
    with pytest.raises(ValueError, match="source.spm"):
        SentencePieceTokenizer.from_pretrained(broken)


# ============================================ against the sentencepiece library

def library_model(lines, **options) -> bytes:
    spm = pytest.importorskip("sentencepiece")
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out,
                                   vocab_size=options.pop("vocab_size", 3000), minloglevel=2,
                                   **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def library_text():
    lines = corpus_lines()
    translations = mo_translations()
    random.Random(0).shuffle(translations)
    train = lines[::2] + translations[:2000] + NON_ASCII * 2
    held = lines[1::2][:2500] + translations[2000:] + NON_ASCII + TRICKY
    return train, held


def assert_same_as_library(data, held, check_decode=True):
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_proto=data)
    ours = SentencePieceModel.from_bytes(data)
    assert ours.serialize() == data
    for line in held:
        ids = sp.encode(line)
        assert ours.encode(line) == ids, repr(line)
        assert ours.encode_as_pieces(line) == sp.encode(line, out_type=str)
        if check_decode:
            assert ours.decode(ids) == sp.decode(ids)
    rng = random.Random(1)
    for _ in range(300):
        ids = [rng.randrange(len(ours)) for _ in range(rng.randint(0, 6))]
        assert ours.decode(ids) == sp.decode(ids)


@pytest.mark.reference
def test_same_ids_as_sentencepiece_nmt_nfkc(library_text):
    """Defaults: unigram, nmt_nfkc; a few thousand held-out lines, non-ASCII included."""
    train, held = library_text
    assert_same_as_library(library_model(train), held)


@pytest.mark.reference
@pytest.mark.parametrize("options", [
    dict(byte_fallback=True, user_defined_symbols=["<sep>", "[MASK]", "ab"],
         control_symbols=["<ctl>"]),
    dict(add_dummy_prefix=False, remove_extra_whitespaces=False),
    dict(normalization_rule_name="identity"),
    dict(normalization_rule_name="nmt_nfkc_cf", treat_whitespace_as_suffix=True),
    dict(model_type="bpe", byte_fallback=True, user_defined_symbols=["<sep>"]),
], ids=["bytes+user", "keep-spaces", "identity", "nfkc_cf+suffix", "bpe"])
def test_same_ids_as_sentencepiece_options(library_text, options):
    train, held = library_text
    assert_same_as_library(library_model(train, vocab_size=2000, **options), held[::4])


@pytest.mark.reference
def test_written_models_load_in_sentencepiece(trained, library_text):
    spm = pytest.importorskip("sentencepiece")
    tie = make_model([("<unk>", 0.0, UNKNOWN), ("a", -1.0, NORMAL), ("b", -1.0, NORMAL),
                      ("ab", -2.0, NORMAL), ("bab", -3.0, NORMAL), ("<x>", 0.0, USER_DEFINED)])
    sp = spm.SentencePieceProcessor(model_proto=tie.serialize())
    for text in ["ab", "abab", "a<x>bab", "bbb☃☃a"]:
        assert sp.encode(text, out_type=str) == tie.encode_as_pieces(text)
    for each in (-0.02, 0.04, 0.06, 0.3):                # the score of a user-defined piece
        for user in ("xy", "xyz", "日本"):
            model = make_model([("<unk>", 0.0, UNKNOWN), (user[0], each, NORMAL),
                                (user[1:], each, NORMAL), (user, 0.0, USER_DEFINED)])
            sp = spm.SentencePieceProcessor(model_proto=model.serialize())
            assert sp.encode(user, out_type=str) == model.encode_as_pieces(user)
    sp = spm.SentencePieceProcessor(model_proto=trained.model.serialize())
    _, held = library_text
    for line in held:
        assert trained.encode(line) == sp.encode(line), repr(line)
        assert trained.decode(trained.encode(line)) == sp.decode(sp.encode(line))


# ============================================ against transformers' MarianTokenizer

@pytest.fixture(scope="module")
def library_marian(tmp_path_factory, library_text):
    """A Marian directory from two library models and a vocab.json with language codes."""
    spm = pytest.importorskip("sentencepiece")
    train, _ = library_text
    directory = tmp_path_factory.mktemp("opus")
    english = [l for l in train if l.isascii()]
    other = [l for l in train if not l.isascii()] + NON_ASCII * 5
    vocab = {"</s>": 0, "<unk>": 1, ">>de<<": 2, ">>fr<<": 3}
    for name, lines in (("source.spm", english), ("target.spm", other)):
        data = library_model(lines, vocab_size=1500)
        (directory / name).write_bytes(data)
        sp = spm.SentencePieceProcessor(model_proto=data)
        for i in range(sp.get_piece_size()):
            if not (sp.is_control(i) or sp.is_unknown(i)):
                vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    return directory


def marian_reference(directory):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.MarianTokenizer(str(directory / "source.spm"),
                                            str(directory / "target.spm"),
                                            str(directory / "vocab.json"))


@pytest.mark.reference
def test_same_ids_as_marian_tokenizer(library_marian, library_text):
    ref = marian_reference(library_marian)
    ours = SentencePieceTokenizer.from_pretrained(library_marian)
    _, held = library_text
    texts = held[::3] + [">>de<< Guten Tag", ">>xx<<foo", "x >>de<< y", "a </s> b<pad>c <unk>"]
    for text in texts:
        assert ours(text)["input_ids"] == ref(text)["input_ids"], repr(text)
    sources, targets = texts[:16], texts[16:32]
    for options in [dict(padding=True), dict(padding="max_length", max_length=12, truncation=True),
                    dict(truncation=True, max_length=5)]:
        assert ours(sources, text_target=targets, **options) == dict(
            ref(sources, text_target=targets, **options))
        assert ours(text_target=targets, **options) == dict(ref(text_target=targets, **options))
    rng = random.Random(2)
    for _ in range(300):
        ids = [rng.randrange(len(ours)) for _ in range(rng.randint(0, 8))]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(
                ids, skip_special_tokens=skip), ids
    for text in texts[:200]:
        ids = ref(text)["input_ids"]
        assert ours.decode(ids) == ref.decode(ids)


@pytest.mark.reference
def test_saved_directories_load_in_marian_tokenizer(library_marian, marian_dir, tmp_path,
                                                    library_text):
    transformers = pytest.importorskip("transformers")
    _, held = library_text
    ours = SentencePieceTokenizer.from_pretrained(library_marian)
    ours.save_pretrained(tmp_path)
    for name in ("source.spm", "target.spm"):
        assert (tmp_path / name).read_bytes() == (library_marian / name).read_bytes()
    import warnings
    for directory, tok in ((tmp_path, ours),
                           (marian_dir, SentencePieceTokenizer.from_pretrained(marian_dir))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = transformers.MarianTokenizer.from_pretrained(str(directory))
        for text in held[::10] + [">>de<< Hallo"]:
            assert tok(text)["input_ids"] == ref(text)["input_ids"], repr(text)
