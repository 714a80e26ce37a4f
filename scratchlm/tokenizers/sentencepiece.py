"""SentencePiece, by hand: read and write ``.model`` files, normalise, encode, decode, train.

SentencePiece (Kudo & Richardson 2018) treats text as a plain sequence of
Unicode characters, white space included, so that it needs no language-specific
pre-tokenizer and decoding is exact. Four steps turn text into ids:

1. Normalise. Each stretch of the input that the model's *character map* knows
   is replaced (NFKC: "ﬁ" -> "fi", "①" -> "1", full-width "Ａ" -> "A"; tabs
   and newlines -> " "); runs of white space collapse to one and the ends are
   trimmed; a space is put in front ("dummy prefix"); every space becomes the
   visible meta symbol U+2581 "▁":

       "  Hello\tworld " -> "▁Hello▁world"

   The character map is stored in the model as a double-array trie over UTF-8
   bytes (``DoubleArray``), followed by the replacement strings.

2. Segment. A *unigram* model gives every piece x of the vocabulary a log
   probability log p(x) (its score). Of all the ways to cut the normalised
   text into vocabulary pieces x_1 .. x_M, Viterbi picks the most probable:

       x* = argmax_{x_1..x_M}  sum_m log p(x_m)

   dynamic programming over the *lattice* of pieces that start at each
   character (``SentencePieceModel._viterbi``). A character that no piece
   covers becomes the unknown piece, with the score min_x log p(x) - 10; a run
   of unknown characters is one unknown piece. Models trained with
   ``byte_fallback`` write an unknown character as its UTF-8 bytes instead,
   pieces "<0x00>" .. "<0xFF>". *User-defined* pieces are never cut or
   normalised; they win wherever they appear.

   BPE models (``model_type: BPE``) are read too: they merge the adjacent pair
   of symbols whose merged piece scores highest, again and again.

3. Ids are the positions of the pieces in the model: "<unk>" 0, "<s>" 1, ...

4. Decode: join the pieces, "▁" -> " ", drop the dummy space at the start.

``SentencePieceTokenizer`` wraps one model (``from_file``, ``spiece.model``)
or the two models and the shared ``vocab.json`` of a Marian translation model
(``source.spm``, ``target.spm``), with ids equal to those of the
``sentencepiece`` library and of ``transformers``' ``MarianTokenizer``.
``train_unigram`` learns a unigram model from text by EM with pruning, as the
SentencePiece paper does (Kudo 2018, "Subword Regularization").

Supported model types: UNIGRAM (reading, encoding, training) and BPE (reading
and encoding). WORD and CHAR models are refused with a clear error.
"""

from __future__ import annotations

import heapq
import os
import re
import unicodedata
from array import array
from collections import Counter, deque
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from scratchlm.tokenizers import _protobuf as pb
from scratchlm.tokenizers.base import (
    Tokenizer, additional_special_tokens_from_config, check_directory, iter_texts,
    read_json, role_tokens_from_config, write_json)
from scratchlm.tokenizers.wordpiece import clean_up_tokenization

SPACE = "\u2581"            # "▁", the meta symbol that stands for a space in pieces

# Piece types (ModelProto.SentencePiece.Type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# Model types (TrainerSpec.ModelType)
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4
MODEL_TYPE_NAMES = {UNIGRAM: "UNIGRAM", BPE: "BPE", WORD: "WORD", CHAR: "CHAR"}

UNK_PENALTY = 10.0          # an unknown character scores min log p - 10, as in sentencepiece
FLT_MAX = float(np.finfo(np.float32).max)


# ======================================================= 1. the .model file format
#
# A .model file is one serialized ModelProto (sentencepiece_model.proto):
#
#   ModelProto      1 pieces (repeated SentencePiece)   2 trainer_spec
#                   3 normalizer_spec   4 self_test_data   5 denormalizer_spec
#   SentencePiece   1 piece (string)   2 score (float)   3 type (enum, NORMAL)
#   NormalizerSpec  1 name   2 precompiled_charsmap (bytes)   3 add_dummy_prefix
#                   4 remove_extra_whitespaces   5 escape_whitespaces
#                   6 normalization_rule_tsv
#   TrainerSpec     the training options (model_type 3, vocab_size 4, the ids
#                   and pieces of <unk> <s> </s> <pad> 40-48, byte_fallback 35,
#                   treat_whitespace_as_suffix 24, ...), numbered below.

_PIECE = pb.Message("SentencePiece", {
    1: pb.Field("piece", "string"), 2: pb.Field("score", "float"), 3: pb.Field("type", "enum")},
    defaults={"piece": "", "score": 0.0, "type": NORMAL})

_TRAINER_SPEC = pb.Message("TrainerSpec", {
    1: pb.Field("input", "string", repeated=True), 2: pb.Field("model_prefix", "string"),
    3: pb.Field("model_type", "enum"), 4: pb.Field("vocab_size", "int32"),
    5: pb.Field("accept_language", "string", repeated=True),
    6: pb.Field("self_test_sample_size", "int32"), 7: pb.Field("input_format", "string"),
    10: pb.Field("character_coverage", "float"), 11: pb.Field("input_sentence_size", "uint64"),
    12: pb.Field("mining_sentence_size", "int32"), 13: pb.Field("training_sentence_size", "int32"),
    14: pb.Field("seed_sentencepiece_size", "int32"), 15: pb.Field("shrinking_factor", "float"),
    16: pb.Field("num_threads", "int32"), 17: pb.Field("num_sub_iterations", "int32"),
    18: pb.Field("max_sentence_length", "int32"), 19: pb.Field("shuffle_input_sentence", "bool"),
    20: pb.Field("max_sentencepiece_length", "int32"),
    21: pb.Field("split_by_unicode_script", "bool"), 22: pb.Field("split_by_whitespace", "bool"),
    23: pb.Field("split_by_number", "bool"), 24: pb.Field("treat_whitespace_as_suffix", "bool"),
    25: pb.Field("split_digits", "bool"), 26: pb.Field("allow_whitespace_only_pieces", "bool"),
    30: pb.Field("control_symbols", "string", repeated=True),
    31: pb.Field("user_defined_symbols", "string", repeated=True),
    32: pb.Field("vocabulary_output_piece_score", "bool"), 33: pb.Field("hard_vocab_limit", "bool"),
    34: pb.Field("use_all_vocab", "bool"), 35: pb.Field("byte_fallback", "bool"),
    36: pb.Field("required_chars", "string"),
    40: pb.Field("unk_id", "int32"), 41: pb.Field("bos_id", "int32"),
    42: pb.Field("eos_id", "int32"), 43: pb.Field("pad_id", "int32"),
    44: pb.Field("unk_surface", "string"), 45: pb.Field("unk_piece", "string"),
    46: pb.Field("bos_piece", "string"), 47: pb.Field("eos_piece", "string"),
    48: pb.Field("pad_piece", "string"), 49: pb.Field("train_extremely_large_corpus", "bool")},
    defaults={"model_type": UNIGRAM, "vocab_size": 8000, "byte_fallback": False,
              "treat_whitespace_as_suffix": False, "unk_id": 0, "bos_id": 1, "eos_id": 2,
              "pad_id": -1, "unk_piece": "<unk>", "bos_piece": "<s>", "eos_piece": "</s>",
              "pad_piece": "<pad>", "unk_surface": " \u2047 "})

_NORMALIZER_SPEC = pb.Message("NormalizerSpec", {
    1: pb.Field("name", "string"), 2: pb.Field("precompiled_charsmap", "bytes"),
    3: pb.Field("add_dummy_prefix", "bool"), 4: pb.Field("remove_extra_whitespaces", "bool"),
    5: pb.Field("escape_whitespaces", "bool"), 6: pb.Field("normalization_rule_tsv", "string")},
    defaults={"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": True,
              "remove_extra_whitespaces": True, "escape_whitespaces": True,
              "normalization_rule_tsv": ""})

_SELF_TEST_DATA = pb.Message("SelfTestData", {1: pb.Field("samples", pb.Message(
    "Sample", {1: pb.Field("input", "string"), 2: pb.Field("expected", "string")}),
    repeated=True)})

_MODEL_PROTO = pb.Message("ModelProto", {
    1: pb.Field("pieces", _PIECE, repeated=True), 2: pb.Field("trainer_spec", _TRAINER_SPEC),
    3: pb.Field("normalizer_spec", _NORMALIZER_SPEC),
    4: pb.Field("self_test_data", _SELF_TEST_DATA),
    5: pb.Field("denormalizer_spec", _NORMALIZER_SPEC)})


def parse_model_proto(data: bytes, source: str = "<bytes>") -> dict:
    """A serialized ModelProto -> dict (see _protobuf). source names the file in errors."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_model_proto: data must be bytes; got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError(f"{source}: the file is empty; a SentencePiece .model file holds a "
                         "serialized ModelProto")
    try:
        proto = pb.decode(data, _MODEL_PROTO)
    except pb.ProtobufError as error:
        raise ValueError(f"{source}: not a SentencePiece model (a serialized ModelProto "
                         f"protocol buffer): {error}") from None
    if not proto.get("pieces"):
        raise ValueError(f"{source}: the model has no pieces (field 1 of ModelProto); is this "
                         "a SentencePiece .model file?")
    return proto


def serialize_model_proto(proto: dict) -> bytes:
    """dict -> the bytes of a .model file (the inverse of parse_model_proto)."""
    return pb.encode(proto, _MODEL_PROTO)


def _spec(proto: dict, name: str) -> dict:
    return proto.get(name, {})


def _trainer(proto: dict, key: str):
    return pb.get(_spec(proto, "trainer_spec"), key, _TRAINER_SPEC)


# ============================================= 2. the double-array trie (Darts-clone)
#
# The character map of a normaliser is a trie over UTF-8 bytes, stored as the
# Darts-clone *double array*: a flat array of 32-bit units, each unit a node.
# From the node at position `pos`, the child along byte c sits at
#
#     child = pos ^ offset(unit[pos]) ^ c,   and it is a child iff label(unit[child]) == c
#
# so one xor and one comparison follow an edge. A node where a key ends has
# has_leaf set; its value unit sits at pos ^ offset (the child along label 0).
#
#   bits of a unit:  0-7 label | 8 has_leaf | 9 offset shifted by 8 | 10-31 offset
#   value unit:      bit 31 set, bits 0-30 the value (so its label never matches)

def _unit_offset(unit: int) -> int:
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


def _unit_label(unit: int) -> int:
    return unit & ((1 << 31) | 0xFF)


class DoubleArray:
    """A Darts-clone double-array trie: lookup, listing and building.

    Args:
        units: the array of 32-bit units (a sequence of int or a uint32 array).
    """

    def __init__(self, units):
        self.units = np.asarray(units, dtype=np.uint32)
        self._list = self.units.tolist()          # Python ints: fast indexing in lookups

    @classmethod
    def from_bytes(cls, blob: bytes) -> "DoubleArray":
        """The units stored as little-endian uint32 (as in a precompiled charsmap)."""
        if len(blob) % 4:
            raise ValueError(f"DoubleArray.from_bytes: {len(blob)} bytes is not a whole "
                             "number of 4-byte units")
        return cls(np.frombuffer(blob, dtype="<u4"))

    def to_bytes(self) -> bytes:
        return self.units.astype("<u4").tobytes()

    def __len__(self) -> int:
        return len(self._list)

    def common_prefix_search(self, key: bytes, start: int = 0) -> list[tuple[int, int]]:
        """Every key of the trie that is a prefix of key[start:]: (value, length) pairs,
        shortest first (Darts-clone's commonPrefixSearch)."""
        units, size = self._list, len(self._list)
        results = []
        if size == 0:
            return results
        pos = _unit_offset(units[0])                # the root is unit 0
        for i in range(start, len(key)):
            c = key[i]
            pos ^= c
            if pos >= size or _unit_label(units[pos]) != c:
                break
            unit = units[pos]
            pos ^= _unit_offset(unit)
            if (unit >> 8) & 1:                     # has_leaf: a key ends here
                if pos >= size:
                    break
                results.append((units[pos] & 0x7FFFFFFF, i + 1 - start))
        return results

    def items(self) -> list[tuple[bytes, int]]:
        """Every (key, value) of the trie, found by walking it from the root.

        A unit at position p with label c (1..255) is a child of every node
        whose base (pos ^ offset) is p ^ c: the edge test read backwards. So
        the children of all nodes are found at once by sorting the units by
        p ^ label(p); the walk then goes one level of the trie at a time.
        """
        units = self.units.astype(np.int64)
        size = len(units)
        if size == 0:
            return []
        positions = np.arange(size, dtype=np.int64)
        labels = units & ((1 << 31) | 0xFF)
        offsets = (units >> 10) << ((units & (1 << 9)) >> 6)
        real = (labels >= 1) & (labels <= 0xFF)            # units that can be children
        child_pos = positions[real]
        parent_base = child_pos ^ labels[real]
        order = np.argsort(parent_base, kind="stable")
        child_pos, parent_base = child_pos[order], parent_base[order]
        frontier, keys = np.array([0], dtype=np.int64), [b""]
        found = []
        for _depth in range(1024):
            if frontier.size == 0:
                return found
            bases = frontier ^ offsets[frontier]
            has_leaf = ((units[frontier] >> 8) & 1).astype(bool)
            leaf_rows = np.flatnonzero(has_leaf)
            if leaf_rows.size and bases[leaf_rows].max() >= size:
                raise ValueError("DoubleArray: a value unit lies outside the array")
            values = (units[bases[leaf_rows]] & 0x7FFFFFFF).tolist()
            found.extend(zip([keys[r] for r in leaf_rows.tolist()], values))
            lo = np.searchsorted(parent_base, bases, side="left")
            hi = np.searchsorted(parent_base, bases, side="right")
            counts = hi - lo
            rows = np.repeat(np.arange(frontier.size), counts)     # parent row of each child
            # index of each child in the sorted arrays: lo[row] + rank within its parent
            ranks = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
            frontier = child_pos[np.repeat(lo, counts) + ranks]
            child_labels = (labels[frontier]).tolist()
            keys = [keys[r] + bytes((c,)) for r, c in zip(rows.tolist(), child_labels)]
        raise ValueError("DoubleArray: keys longer than 1024 bytes; the array is malformed")

    @classmethod
    def build(cls, pairs: dict[bytes, int]) -> "DoubleArray":
        """A double array holding the given keys and values.

        Keys: non-empty bytes without NUL (byte 0 is the leaf label); values in
        [0, 2^31). The trie is laid out breadth first; each node gets the
        smallest free *base* b (distinct for every node) such that b ^ c is free
        for each of its labels c (and for 0 when a key ends at the node). Every
        base is distinct, so a unit at b ^ c with label c can only be the child
        of the node whose base is b: no false edges. The array is padded so
        that b | 0xFF lies inside it for every base, as Darts-clone checks.
        The array differs from the one Darts-clone builds (which shares the
        common tails of keys), but every lookup gives the same answer.
        """
        root: dict = {}
        for key, value in pairs.items():
            if not key or 0 in key:
                raise ValueError(f"DoubleArray.build: keys must be non-empty and free of NUL "
                                 f"bytes; got {key!r}")
            if not 0 <= value < 1 << 31:
                raise ValueError(f"DoubleArray.build: values must be in [0, 2^31); got {value}")
            node = root
            for c in key:
                node = node.setdefault(c, {})
            node[-1] = value                        # -1: a key ends here, with this value
        units: list[int] = []
        used = bytearray()
        # next_free[p]: a position >= p that may be free (path-compressed skip list)
        next_free: list[int] = []

        def grow(size):
            while len(used) < size:
                n = len(used)
                used.extend(bytes(n or 1024))
                units.extend([0] * (n or 1024))
                next_free.extend(range(n, len(used)))

        def free_from(p):                           # the first free position >= p
            path = []
            while used[p]:                          # (the arrays reach past every taken p)
                path.append(p)
                p = next_free[p]
            for q in path:
                next_free[q] = p
            return p

        high = [0]                                  # the highest position taken so far

        def take(p):
            used[p] = 1
            next_free[p] = p + 1
            high[0] = max(high[0], p)

        grow(1024)
        take(0)                                     # the root
        used_bases = set()
        queue = deque([(root, 0)])
        while queue:
            node, pos = queue.popleft()
            labels = sorted(c for c in node if c >= 0)
            needed = ([0] if -1 in node else []) + labels
            if not needed:
                continue
            # Holes far behind the end are left unfilled (as Darts-clone closes old
            # blocks): scanning them again for every node would take quadratic time.
            probe = free_from(max(1, high[0] - 4096))
            while True:                             # look for a base that fits every label
                base = probe ^ needed[0]
                if base != pos and base > 0 and base not in used_bases:
                    grow((base | 0xFF) + 2)
                    if all(not used[base ^ c] for c in needed):
                        break
                grow(probe + 2)
                probe = free_from(probe + 1)
            used_bases.add(base)
            offset = pos ^ base
            if offset < 1 << 21:
                units[pos] |= offset << 10
            elif offset < 1 << 29 and offset & 0xFF == 0:
                units[pos] |= (offset << 2) | (1 << 9)
            else:
                raise ValueError("DoubleArray.build: the trie is too large for 32-bit units")
            if -1 in node:
                units[pos] |= 1 << 8
                units[base] = node[-1] | (1 << 31)
                take(base)
            for c in labels:
                units[base ^ c] = c
                take(base ^ c)
                queue.append((node[c], base ^ c))
        size = max([b | 0xFF for b in used_bases] + [255]) + 1
        size = (size + 255) // 256 * 256
        units = units[:size] + [0] * (size - len(units))
        return cls(units)


# ================================================================ 3. the normaliser

def parse_charsmap(blob: bytes, source: str = "precompiled_charsmap") -> dict[str, str]:
    """A precompiled character map -> the rules {key: replacement}.

    Layout: a 4-byte little-endian size S, then S bytes of double-array trie
    units, then the replacement strings, each ending with a NUL byte. The value
    stored in the trie for a key is where its replacement starts.

    The result is cached per map (models usually share one); do not modify it.
    """
    return _parse_charsmap(bytes(blob), source)


@lru_cache(maxsize=8)
def _parse_charsmap(blob: bytes, source: str) -> dict[str, str]:
    if len(blob) <= 4:
        raise ValueError(f"{source}: {len(blob)} bytes is too short for a character map "
                         "(4-byte trie size, trie, replacement strings)")
    trie_size = int.from_bytes(blob[:4], "little")
    if trie_size % 4 or 4 + trie_size > len(blob):
        raise ValueError(f"{source}: the trie size {trie_size} in the first 4 bytes does not "
                         f"fit the {len(blob)}-byte character map")
    trie = DoubleArray.from_bytes(blob[4:4 + trie_size])
    strings = blob[4 + trie_size:]
    rules = {}
    for key, value in trie.items():
        end = strings.find(b"\0", value)
        if value >= len(strings) or end < 0:
            raise ValueError(f"{source}: the rule for {key!r} points at byte {value}, outside "
                             f"the {len(strings)} bytes of replacement strings")
        try:
            rules[key.decode("utf-8")] = strings[value:end].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{source}: the rule {key!r} -> {strings[value:end]!r} is not "
                             "valid UTF-8") from None
    return rules


def compile_charsmap(rules: dict[str, str]) -> bytes:
    """The rules {key: replacement} as a precompiled character map (parse_charsmap's
    inverse): equal replacements are stored once."""
    strings, where = bytearray(), {}
    for replacement in sorted(set(rules.values())):
        where[replacement] = len(strings)
        strings += replacement.encode("utf-8") + b"\0"
    trie = DoubleArray.build({key.encode("utf-8"): where[rep] for key, rep in rules.items()})
    units = trie.to_bytes()
    return len(units).to_bytes(4, "little") + units + bytes(strings)


class Normalizer:
    """SentencePiece's text normaliser: character map, then white space rules.

    Args:
        spec: a NormalizerSpec message (dict): precompiled_charsmap,
            add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces.
        user_defined: pieces copied verbatim, never normalised (the model's
            USER_DEFINED pieces; longest match first, before the map).
        treat_whitespace_as_suffix: put the dummy space at the end, not the start.

    normalize(text), step by step (as sentencepiece's normalizer.cc):
        1. from left to right, replace the longest key of the map that starts
           here by its replacement; a character no key starts is kept;
        2. (remove_extra_whitespaces) drop leading spaces, shrink each run of
           spaces to one, drop trailing spaces;
        3. (add_dummy_prefix) put one space in front;
        4. (escape_whitespaces) write each space as "▁".
    """

    def __init__(self, spec: dict | None = None, user_defined: Sequence[str] = (),
                 treat_whitespace_as_suffix: bool = False, source: str = "normalizer_spec"):
        spec = spec or {}

        def flag(name):
            return pb.get(spec, name, _NORMALIZER_SPEC)

        self.add_dummy_prefix = flag("add_dummy_prefix")
        self.remove_extra_whitespaces = flag("remove_extra_whitespaces")
        self.escape_whitespaces = flag("escape_whitespaces")
        self.treat_whitespace_as_suffix = treat_whitespace_as_suffix
        blob = flag("precompiled_charsmap")
        self.rules = parse_charsmap(blob, source) if blob else {}
        self.user_defined = sorted(set(user_defined), key=len, reverse=True)
        self._trie = DoubleArray.from_bytes(blob[4:4 + int.from_bytes(blob[:4], "little")]) \
            if blob else None
        self._replacements = blob[4 + int.from_bytes(blob[:4], "little"):] if blob else b""
        # For the fast path: the longest key (in characters) starting with each
        # character; the characters that are a whole key or start a user piece
        # (`alone`); and the first and second characters of the longer keys.
        self._longest = {}
        for key in list(self.rules) + self.user_defined:
            self._longest[key[0]] = max(self._longest.get(key[0], 0), len(key))
        self._alone = {k for k in self.rules if len(k) == 1} | {u[0] for u in self.user_defined}
        longer = [k for k in self.rules if len(k) > 1]
        self._first = {k[0] for k in longer}
        self._second = {k[1] for k in longer}
        marked = self._alone | self._second
        # str.translate marks every such character with one of them, in one C loop
        self._marker = min(marked) if marked else None
        self._mark = {ord(c): self._marker for c in marked}
        self._user = set(self.user_defined)
        # The fast path treats white space on the mapped string as a whole; that is
        # exact unless a replacement (or user piece) holds two spaces in a row.
        self._fast = not any("  " in s for s in list(self.rules.values()) + self.user_defined)

    def _candidates(self, text: str):
        """The positions, in order, where a key may start: a character that is a
        key by itself (or starts a user piece), or the first character of a
        longer key when that key's second character follows ("e" before U+0301)."""
        if self._marker is None:
            return
        marked, marker = text.translate(self._mark), self._marker
        alone, first, second = self._alone, self._first, self._second
        i = marked.find(marker)
        while i >= 0:
            ch = text[i]
            if i > 0 and ch in second and text[i - 1] in first and text[i - 1] not in alone:
                yield i - 1
            if ch in alone:
                yield i
            i = marked.find(marker, i + 1)

    def _stretches(self, text: str) -> list[tuple[str, bool]]:
        """Step 1: text cut into (stretch, replaced) pairs: the map's replacements
        and user pieces (replaced=True, one each) and untouched text (False)."""
        out, i = [], 0
        for j in self._candidates(text):
            if j < i:                                # inside a key matched before
                continue
            length = self._match(text, j)
            if length:
                if j > i:
                    out.append((text[i:j], False))
                key = text[j:j + length]
                out.append((key if key in self._user else self.rules[key], True))
                i = j + length
        if i < len(text):
            out.append((text[i:], False))
        return out

    def _units(self, text: str) -> list[str]:
        """Step 1 as normalizer.cc sees it: one unit per replacement, user piece
        or untouched character."""
        units = []
        for stretch, replaced in self._stretches(text):
            if replaced:
                units.append(stretch)
            else:
                units.extend(stretch)
        return units

    def _match(self, text: str, i: int) -> int:
        """Length of the longest user piece at text[i:], else of the longest map key; 0 if none."""
        longest = self._longest.get(text[i], 0)
        for length in range(min(longest, len(text) - i), 0, -1):
            if text[i:i + length] in self._user:
                return length
        for length in range(min(longest, len(text) - i), 0, -1):
            if text[i:i + length] in self.rules:
                return length
        return 0

    def normalize(self, text: str) -> str:
        """The normalised text (see the class docstring)."""
        if not text:
            return ""
        if not self._fast or self.treat_whitespace_as_suffix:
            return self._whitespace(self._units(text))
        # Fast path: steps 2-4 on the mapped string at once. Collapsing runs of
        # spaces in the joined string is what the unit-by-unit loop does, as long
        # as no single replacement holds two spaces in a row (checked in __init__).
        mapped = "".join(s for s, _ in self._stretches(text)) if self._marker else text
        if self.remove_extra_whitespaces:
            mapped = re.sub(" {2,}", " ", mapped).lstrip(" ")
            if not mapped:
                return ""
        space = SPACE if self.escape_whitespaces else " "
        if self.escape_whitespaces:
            mapped = mapped.replace(" ", SPACE)
        if self.add_dummy_prefix:
            mapped = space + mapped
        if self.remove_extra_whitespaces:
            mapped = mapped.rstrip(space)    # as normalizer.cc: every trailing "▁" goes
        return mapped

    def _whitespace(self, units: list[str]) -> str:
        """Steps 2-4 over the units of step 1, one unit at a time (normalizer.cc's loop)."""
        space = SPACE if self.escape_whitespaces else " "
        i = 0
        if self.remove_extra_whitespaces:
            while i < len(units) and units[i] == " ":        # leading spaces
                i += 1
        if i == len(units):
            return ""
        out = [space] if self.add_dummy_prefix and not self.treat_whitespace_as_suffix else []
        is_prev_space = self.remove_extra_whitespaces
        for unit in units[i:]:
            if is_prev_space:
                unit = unit.lstrip(" ")                      # a run of spaces -> one
            if unit:
                out.append(unit.replace(" ", SPACE) if self.escape_whitespaces else unit)
                is_prev_space = unit.endswith(" ")
            if not self.remove_extra_whitespaces:
                is_prev_space = False
        normalized = "".join(out)
        if self.remove_extra_whitespaces:
            normalized = normalized.rstrip(space)              # trailing spaces
        if self.treat_whitespace_as_suffix and self.add_dummy_prefix:
            normalized += space
        return normalized

    def normalize_bytewise(self, text: str) -> str:
        """normalize, the slow and literal way: the trie lookup walks the UTF-8
        bytes (DoubleArray.common_prefix_search), one unit at a time."""
        data = text.encode("utf-8")
        user = [u.encode("utf-8") for u in self.user_defined]
        units, i = [], 0
        while i < len(data):
            match = next((u for u in user if data.startswith(u, i)), None)
            if match is not None:
                units.append(match.decode("utf-8"))
                i += len(match)
                continue
            found = self._trie.common_prefix_search(data, i) if self._trie else []
            if found:
                value, length = max(found, key=lambda vl: vl[1])
                end = self._replacements.index(b"\0", value)
                units.append(self._replacements[value:end].decode("utf-8"))
                i += length
            else:
                length = _utf8_length(data[i])
                units.append(data[i:i + length].decode("utf-8"))
                i += length
        return self._whitespace(units)


def _utf8_length(lead: int) -> int:
    """Bytes in the UTF-8 character that starts with this byte."""
    return 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def _decode_utf8_bytes(data: bytes) -> str:
    """UTF-8 bytes -> text, each byte that does not start a valid character giving
    one U+FFFD (as sentencepiece decodes byte pieces)."""
    out, i = [], 0
    while i < len(data):
        length = _utf8_length(data[i]) if data[i] < 0xF8 else 1
        try:
            out.append(data[i:i + length].decode("utf-8"))
            i += length
        except UnicodeDecodeError:
            out.append("\ufffd")
            i += 1
    return "".join(out)


# ======================================================================= 4. the model

class SentencePieceModel:
    """One SentencePiece model, as a .model file holds it: pieces, scores, normaliser.

    Args:
        proto: a ModelProto as a dict (parse_model_proto), or use from_file /
            from_bytes.
        source: the file it came from, for error messages.

    Attributes:
        pieces, scores, types: per id, the piece string, its score (log p for a
            unigram model) and its type (NORMAL, UNKNOWN, CONTROL, ...).
        unk_id, bos_id, eos_id, pad_id: ids from the trainer spec (-1: none).
        model_type: UNIGRAM or BPE.

    encode(text) gives the ids sentencepiece's ``SentencePieceProcessor.encode``
    gives; encode_as_pieces(text) the pieces (an unknown run as its own
    characters, as sentencepiece's ``out_type=str``); decode(ids) its text.
    """

    def __init__(self, proto: dict, source: str = "SentencePieceModel"):
        self.proto = proto
        self.source = source
        pieces = proto.get("pieces") or []
        if not pieces:
            raise ValueError(f"{source}: the model has no pieces")
        self.model_type = _trainer(proto, "model_type")
        if self.model_type not in (UNIGRAM, BPE):
            name = MODEL_TYPE_NAMES.get(self.model_type, f"unknown type {self.model_type}")
            raise ValueError(f"{source}: model type {name} is not supported; scratchlm reads "
                             "UNIGRAM and BPE SentencePiece models")
        self.pieces = [pb.get(p, "piece", _PIECE) for p in pieces]
        # scores are float32 in the file; an in-memory proto may hold doubles
        self.scores = [float(np.float32(pb.get(p, "score", _PIECE))) for p in pieces]
        self.types = [pb.get(p, "type", _PIECE) for p in pieces]
        self.byte_fallback = _trainer(proto, "byte_fallback")
        self._check_pieces()

        # piece -> id: control, unknown and byte pieces first ("reserved"), as
        # sentencepiece's PieceToId looks them up first
        self._reserved = {p: i for i, (p, t) in enumerate(zip(self.pieces, self.types))
                          if t in (CONTROL, UNKNOWN, BYTE)}
        self._normal = {p: i for i, (p, t) in enumerate(zip(self.pieces, self.types))
                        if t in (NORMAL, USER_DEFINED, UNUSED)}
        self.unk_id = self.types.index(UNKNOWN)
        ids = {role: _trainer(proto, f"{role}_id") for role in ("bos", "eos", "pad")}
        for role, i in ids.items():                 # an id outside the model means "none"
            setattr(self, f"{role}_id", i if 0 <= i < len(self.pieces) else -1)
        self.unk_surface = _trainer(proto, "unk_surface")

        normal_scores = [s for s, t in zip(self.scores, self.types) if t == NORMAL]
        # as sentencepiece: the lowest score of a NORMAL piece (FLT_MAX if none)
        self.min_score = min(normal_scores, default=FLT_MAX)
        self.unk_score = float(np.float32(self.min_score) - np.float32(UNK_PENALTY))

        user_defined = [p for p, t in zip(self.pieces, self.types) if t == USER_DEFINED]
        self.treat_whitespace_as_suffix = _trainer(proto, "treat_whitespace_as_suffix")
        self.normalizer = Normalizer(_spec(proto, "normalizer_spec"), user_defined,
                                     self.treat_whitespace_as_suffix,
                                     f"{source}: normalizer_spec.precompiled_charsmap")
        denormalizer = _spec(proto, "denormalizer_spec")
        self.denormalizer = (Normalizer(denormalizer,
                                        source=f"{source}: denormalizer_spec.precompiled_charsmap")
                             if denormalizer.get("precompiled_charsmap") else None)
        self.add_dummy_prefix = self.normalizer.add_dummy_prefix
        self.remove_extra_whitespaces = self.normalizer.remove_extra_whitespaces
        self._trie = self._build_trie()

    def _check_pieces(self):
        source = self.source
        seen = {}
        for i, piece in enumerate(self.pieces):
            if not piece:
                raise ValueError(f"{source}: piece {i} is empty; pieces must not be empty")
            if "\0" in piece:
                raise ValueError(f"{source}: piece {i} ({piece!r}) holds a NUL character, "
                                 "which sentencepiece refuses")
            if piece in seen:
                raise ValueError(f"{source}: piece {piece!r} appears twice, as ids {seen[piece]} "
                                 f"and {i}")
            seen[piece] = i
        bad = [(i, t) for i, t in enumerate(self.types) if t not in (1, 2, 3, 4, 5, 6)]
        if bad:
            raise ValueError(f"{source}: piece {bad[0][0]} has type {bad[0][1]}; types are "
                             "1 (NORMAL) .. 6 (BYTE)")
        unknown = [i for i, t in enumerate(self.types) if t == UNKNOWN]
        if len(unknown) != 1:
            raise ValueError(f"{source}: a model needs exactly one UNKNOWN piece (<unk>); "
                             f"found {len(unknown)}")
        byte_pieces = [p for p, t in zip(self.pieces, self.types) if t == BYTE]
        if byte_pieces and not self.byte_fallback:
            raise ValueError(f"{source}: byte piece {byte_pieces[0]!r} found although "
                             "trainer_spec.byte_fallback is false")
        if self.byte_fallback:
            expected = {f"<0x{b:02X}>" for b in range(256)}
            if set(byte_pieces) != expected:
                raise ValueError(f"{source}: byte_fallback is true but the model does not have "
                                 "exactly the 256 byte pieces <0x00> .. <0xFF>")

    # ----------------------------------------------------------------- files

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "SentencePieceModel":
        return cls(parse_model_proto(data, source), source)

    @classmethod
    def from_file(cls, path) -> "SentencePieceModel":
        """Read a .model file (sentencepiece's, a Marian .spm, or one written here)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"SentencePieceModel.from_file: path must be a path; "
                            f"got {type(path).__name__}")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"SentencePieceModel.from_file: no file {path!r}")
        with open(path, "rb") as f:
            data = f.read()
        return cls.from_bytes(data, repr(path))

    def serialize(self) -> bytes:
        """The bytes of the .model file (byte for byte what was read, when unchanged)."""
        return serialize_model_proto(self.proto)

    def save(self, path) -> str:
        path = os.fspath(path)
        with open(path, "wb") as f:
            f.write(self.serialize())
        return path

    # -------------------------------------------------------------- vocabulary

    def __len__(self) -> int:
        return len(self.pieces)

    def piece_to_id(self, piece: str) -> int:
        """The id of a piece; the unknown id for a string that is no piece."""
        i = self._reserved.get(piece)
        if i is None:
            i = self._normal.get(piece, self.unk_id)
        return i

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    # ---------------------------------------------------------------- encoding

    def _build_trie(self) -> dict:
        """The pieces a segmentation may use, as a trie of nested dicts over
        characters. The entry of a piece (under the key "") is (id, score).
        A USER_DEFINED piece scores 0.1 * (its UTF-8 bytes - 1) in float32, above
        every log probability, so that it wins wherever it appears (the score
        the sentencepiece 0.2 library gives it, measured against it). An UNUSED
        piece has id -1 (its node stays, for the longer pieces through it)."""
        root: dict = {}
        for i, (piece, t) in enumerate(zip(self.pieces, self.types)):
            if t not in (NORMAL, USER_DEFINED, UNUSED):
                continue
            node = root
            for ch in piece:
                node = node.setdefault(ch, {})
            if t == USER_DEFINED:
                n_bytes = len(piece.encode("utf-8"))
                score = float(np.float32(0.1 * n_bytes - 0.1))
            else:
                score = self.scores[i]
            node[""] = (-1 if t == UNUSED else i, score)
        return root

    def normalize(self, text: str) -> str:
        return self.normalizer.normalize(text)

    def encode_as_pieces_and_ids(self, text: str) -> list[tuple[str, int]]:
        """(piece, id) for each piece of text, as sentencepiece encodes it."""
        if not isinstance(text, str):
            raise TypeError(f"SentencePieceModel.encode: text must be a str; "
                            f"got {type(text).__name__}")
        normalized = self.normalizer.normalize(text)
        if not normalized:
            return []
        segments = self._viterbi(normalized) if self.model_type == UNIGRAM \
            else self._bpe(normalized)
        out = []
        for piece, i in segments:
            if i != self.unk_id:
                out.append((piece, i))
            elif self.byte_fallback:                # an unknown character as its UTF-8 bytes
                out.extend((f"<0x{b:02X}>", self._reserved[f"<0x{b:02X}>"])
                           for b in piece.encode("utf-8"))
            elif out and out[-1][1] == self.unk_id:  # a run of unknowns is one unknown piece
                out[-1] = (out[-1][0] + piece, i)
            else:
                out.append((piece, i))
        return out

    def encode(self, text: str) -> list[int]:
        return [i for _, i in self.encode_as_pieces_and_ids(text)]

    def encode_as_pieces(self, text: str) -> list[str]:
        return [p for p, _ in self.encode_as_pieces_and_ids(text)]

    def _viterbi(self, text: str) -> list[tuple[str, int]]:
        """The best segmentation of normalised text under the unigram model.

        Math: with best[0] = 0, for each end position e (a character boundary)

            best[e] = max over pieces x = text[s:e] in the vocabulary of best[s] + log p(x)

        and the path is read back from the end through the start s of the
        winning last piece. Positions are visited in order of the *start* s:
        every piece starting at s updates the end it reaches, so each
        (start, piece) pair is looked at once, walking the trie of pieces
        from s (sentencepiece's EncodeOptimized).

        A character at s that no single-character piece covers gets an
        unknown piece of that one character, score min log p - 10.

        Exactly as sentencepiece, so that near-ties go the same way: the sums
        are float32 (each candidate best[s] + score is rounded to float32, via
        array "f", before it is compared), and an end keeps its first best on
        an exact tie (the earliest start wins, i.e. the longer last piece).
        Two paths with the same pieces in another order can differ in the last
        bit, so the order of the additions matters too: left to right.
        """
        n = len(text)
        best = array("f", bytes(4 * (n + 1)))       # float32 score of the best path to e
        start = [-1] * (n + 1)                      # where its last piece starts
        ident = [0] * (n + 1)                       # and that piece's id
        rounded = array("f", [0.0])                 # to round a double to float32
        root, unk_id, unk_score = self._trie, self.unk_id, self.unk_score
        for s in range(n):
            base = best[s]
            node, e, has_single = root, s, False
            while e < n:                            # every piece that starts at s
                node = node.get(text[e])
                if node is None:
                    break
                e += 1
                entry = node.get("")
                if entry is None or entry[0] < 0:   # no piece ends here, or an UNUSED one
                    continue
                rounded[0] = entry[1] + base
                candidate = rounded[0]
                if start[e] < 0 or candidate > best[e]:
                    best[e], start[e], ident[e] = candidate, s, entry[0]
                if e == s + 1:
                    has_single = True
            if not has_single:                      # an unknown character
                rounded[0] = unk_score + base
                candidate = rounded[0]
                if start[s + 1] < 0 or candidate > best[s + 1]:
                    best[s + 1], start[s + 1], ident[s + 1] = candidate, s, unk_id
        pieces, e = [], n                           # read the path back from the end
        while e > 0:
            s = start[e]
            pieces.append((text[s:e], ident[e]))
            e = s
        pieces.reverse()
        return pieces

    def _bpe(self, text: str) -> list[tuple[str, int]]:
        """BPE segmentation (sentencepiece's bpe::Model): start from characters
        (user-defined pieces whole, never merged); again and again merge the
        adjacent pair whose concatenation is a piece with the highest score
        (the leftmost on a tie); an UNUSED piece that results is split back
        into the two symbols it was merged from."""
        symbols, i = [], 0                          # [piece, prev, next, frozen]
        user = self.normalizer.user_defined
        while i < len(text):
            match = next((u for u in user if text.startswith(u, i)), None)
            piece = match if match is not None else text[i]
            symbols.append([piece, len(symbols) - 1, len(symbols) + 1, match is not None])
            i += len(piece)
        symbols[-1][2] = -1
        heap, unmerge = [], {}

        def add_pair(left, right):
            if left < 0 or right < 0 or symbols[left][3] or symbols[right][3]:
                return
            merged = symbols[left][0] + symbols[right][0]
            i = self._normal.get(merged)
            if i is None:
                return
            heapq.heappush(heap, (-self.scores[i], left, right, len(merged)))
            if self.types[i] == UNUSED:
                unmerge[merged] = (symbols[left][0], symbols[right][0])

        for k in range(1, len(symbols)):
            add_pair(k - 1, k)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = symbols[left][0], symbols[right][0]
            if not a or not b or len(a) + len(b) != size:
                continue                            # a pair that earlier merges broke up
            symbols[left][0] = a + b
            symbols[left][2] = symbols[right][2]
            if symbols[right][2] >= 0:
                symbols[symbols[right][2]][1] = left
            symbols[right][0] = ""
            add_pair(symbols[left][1], left)
            add_pair(left, symbols[left][2])

        out = []

        def resegment(piece):
            i = self.piece_to_id(piece)
            if self.types[i] == UNUSED and piece in unmerge:
                for part in unmerge[piece]:
                    resegment(part)
            else:
                out.append((piece, i))

        k = 0
        while k >= 0:
            resegment(symbols[k][0])
            k = symbols[k][2]
        return out

    # ---------------------------------------------------------------- decoding

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        """Pieces -> text, as sentencepiece's DecodePieces.

        Each piece becomes its text with "▁" -> " "; control pieces vanish;
        the unknown piece "<unk>" becomes " ⁇ " (unk_surface), another string
        that is no piece stays as it is; runs of byte pieces are decoded as
        UTF-8 (an invalid byte -> U+FFFD). The dummy space goes: while nothing
        has been written, a leading "▁" is dropped (every one, when the model
        removes extra white space; else the first only).
        """
        out: list[str] = []
        pending = bytearray()                       # a run of byte pieces
        is_bos_ws, bos_ws_seen = True, False
        for piece in pieces:
            i = self.piece_to_id(piece)
            if self.types[i] == BYTE:
                pending.append(int(piece[3:5], 16))
                continue
            if pending:
                out.append(_decode_utf8_bytes(bytes(pending)))
                pending.clear()
            if bos_ws_seen or any(out):
                is_bos_ws = False
            text, bos_ws_seen = self._decode_piece(piece, i, is_bos_ws)
            out.append(text)
        if pending:
            out.append(_decode_utf8_bytes(bytes(pending)))
        text = "".join(out)
        if self.denormalizer is not None:
            text = self.denormalizer.normalize(text)
        return text

    def _decode_piece(self, piece: str, i: int, is_bos_ws: bool) -> tuple[str, bool]:
        t = self.types[i]
        if t == CONTROL:
            return "", False
        if t == UNKNOWN:
            return (self.unk_surface, False) if piece == self.pieces[i] else (piece, False)
        has_bos_ws = False
        if is_bos_ws and (self.add_dummy_prefix or self.remove_extra_whitespaces):
            if piece.startswith(SPACE):
                piece, has_bos_ws = piece[1:], True
            if self.remove_extra_whitespaces:
                has_bos_ws = False                  # keep dropping leading spaces
        return piece.replace(SPACE, " "), has_bos_ws

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (decode_pieces of their pieces)."""
        n = len(self.pieces)
        for position, i in enumerate(ids):
            if not 0 <= i < n:
                raise ValueError(f"SentencePieceModel.decode: ids must be in [0, {n}); got "
                                 f"{i} at position {position}")
        return self.decode_pieces([self.pieces[i] for i in ids])


# ================================================= 5. training a unigram model
#
# The unigram language model (Kudo 2018): a sentence X is a sequence of pieces
# x_1 .. x_M drawn independently, P(X) = prod_m p(x_m), and the likelihood of a
# text sums over all segmentations S(X) of each sentence:
#
#     L = sum_sentences log sum_{x in S(X)} prod_m p(x_m)
#
# Training (the paper's Algorithm, as sentencepiece runs it):
#   1. seed: every single character, and frequent substrings of the words
#      (here: every substring of at most 16 characters, seen at least twice,
#      that does not mix scripts; the most frequent by count * length);
#   2. EM: the E step runs forward-backward over each word's lattice to get the
#      expected count c(x) of every piece; the M step sets
#          log p(x) = digamma(c(x)) - digamma(sum_y c(y))
#      (the Bayesian update sentencepiece uses; it pushes rare pieces down)
#      and drops pieces expected less than 0.5 times;
#   3. prune: for each piece x, the loss of removing it: how much L drops when
#      its occurrences (in the Viterbi segmentations) are taken over by its best
#      segmentation without itself; keep the pieces with the largest losses,
#      75% of them per round (shrinking_factor), and every single character;
#   4. repeat 2-3 until at most 1.1 * vocab_size pieces are left; keep the
#      vocab_size most probable.
#
# Words are the unit of training: a normalised sentence "▁the▁cat" has the
# words "▁the" and "▁cat", no piece crosses a word boundary, and each distinct
# word is one lattice, weighted by its count. All lattices are processed at once
# in flat NumPy arrays (_Lattices).

# The white space and control characters sentencepiece's "nmt_nfkc" rules add
# to NFKC: these become a space ...
_NMT_SPACES = "\t\n\x0c\r\u1680\u200b\u200c\u200e\u200f\u2028\u2029\u2581\ufeff\ufffd"
# ... and these are dropped
_NMT_DELETED = ("".join(chr(c) for c in range(0x01, 0x20) if chr(c) not in "\t\n\x0c\r")
                + "\x7f\x8f\x9f")


@lru_cache(maxsize=1)
def nfkc_rules() -> dict[str, str]:
    """The character map of models trained here: NFKC, plus NMT white space rules.

    Rules, from Python's unicodedata (its Unicode version):
      * each character that NFKC changes -> its NFKC form ("ﬁ" -> "fi", "①" -> "1");
      * each canonical decomposition of a composed character -> that character,
        so that "e" + U+0301 -> "é" (also the decomposition with all but its
        last mark composed: "ü" + U+0304 -> "ǖ");
      * tab, newline, other breaks and zero-width spaces -> " "; ASCII control
        characters -> "" (sentencepiece's nmt_nfkc additions).
    This is NFKC character by character, plus the compositions above: it is
    not full NFKC (which would also reorder stacked combining marks), but the
    map is stored in the model, so sentencepiece applies exactly the same one.
    """
    rules = {}
    for cp in range(1, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:                   # surrogates are not characters
            continue
        ch = chr(cp)
        nfkc = unicodedata.normalize("NFKC", ch)
        if nfkc != ch:
            rules[ch] = nfkc
        nfd = unicodedata.normalize("NFD", ch)
        if len(nfd) >= 2 and unicodedata.normalize("NFC", nfd) == ch:
            rules[nfd] = nfkc
            if len(nfd) >= 3:
                partial = unicodedata.normalize("NFC", nfd[:-1])
                if len(partial) == 1:
                    rules[partial + nfd[-1]] = nfkc
    for ch in _NMT_SPACES:
        rules[ch] = " "
    for ch in _NMT_DELETED:
        rules[ch] = ""
    return {k: v for k, v in rules.items() if k != v}


@lru_cache(maxsize=1)
def nfkc_charsmap() -> bytes:
    """nfkc_rules compiled into a precompiled_charsmap (built once per process)."""
    return compile_charsmap(nfkc_rules())


@lru_cache(maxsize=65536)
def _script(ch: str) -> str:
    """A stand-in for the Unicode script of a character (Python has no script
    table): for letters and marks the first word of the character's name
    ("LATIN", "CYRILLIC", "GREEK", "ARABIC", ...; CJK ideographs, Hiragana and
    Katakana are one script, "Han", as in sentencepiece; "COMBINING" marks are
    "Inherited"); every other character (digits, punctuation, symbols) is
    "Common". A piece may not mix two scripts."""
    if unicodedata.category(ch)[0] not in "LM":
        return "Common"
    name = unicodedata.name(ch, "")
    first = name.split(" ", 1)[0] if name else "Unknown"
    if first in ("CJK", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC", "KANGXI") or ch == "\u30fc":
        return "Han"
    return "Inherited" if first == "COMBINING" else first


def _digamma(x: np.ndarray) -> np.ndarray:
    """The digamma function psi(x) = d/dx log Gamma(x), x > 0.

    Math: psi(x) = psi(x + 1) - 1/x moves x above 6, then the asymptotic series
        psi(x) ~ log x - 1/(2x) - 1/(12x^2) + 1/(120x^4) - 1/(252x^6) + ...
    """
    x = np.asarray(x, dtype=np.float64).copy()
    result = np.zeros_like(x)
    for _ in range(6):                               # recurrence: psi(x) = psi(x+1) - 1/x
        small = x < 6.0
        if not small.any():
            break
        result[small] -= 1.0 / x[small]
        x[small] += 1.0
    f = 1.0 / (x * x)
    series = f * (-1 / 12.0 + f * (1 / 120.0 + f * (-1 / 252.0 + f * (1 / 240.0 - f / 132.0))))
    return result + np.log(x) - 0.5 / x + series


class _Lattices:
    """Many small lattices side by side, in flat arrays, for training.

    Lattice k spans n_k characters; its positions 0 .. n_k are the flat
    positions offset[k] .. offset[k] + n_k. Edge e runs from local position
    start[e] to end[e] of lattice sent[e] and stands for piece pid[e].

    The passes go over all lattices at once, one local position t at a time:
    the edges ending at t (sorted by lattice) feed each lattice's value at t,
    with np.maximum.reduceat / np.add.reduceat doing the per-lattice max and
    sum. ``use(mask)`` restricts the passes to some edges (the living pieces);
    the edge order is sorted once, and a mask keeps it.
    """

    def __init__(self, lengths, sent, start, end, pid):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.sent = np.asarray(sent, dtype=np.int64)
        self.start_local = np.asarray(start, dtype=np.int64)
        self.end_local = np.asarray(end, dtype=np.int64)
        self.pid = np.asarray(pid, dtype=np.int64)
        self.offset = np.cumsum(self.lengths + 1) - (self.lengths + 1)   # where each starts
        self.first = self.offset                                 # flat position 0 of each
        self.last = self.offset + self.lengths                   # flat position n_k
        self.start = self.offset[self.sent] + self.start_local   # flat positions of edges
        self.end = self.offset[self.sent] + self.end_local
        self.n_positions = int(self.last[-1] + 1) if len(self.lengths) else 0
        self._order_fwd = np.lexsort((self.sent, self.end_local))    # by end, then lattice
        self._order_bwd = np.lexsort((self.sent, self.start_local))  # by start, then lattice
        self.use(None)

    def use(self, edge_mask):
        """Run the passes over the edges where edge_mask is true (None: all)."""
        self._fwd = self._groups(self._order_fwd, self.end_local, edge_mask)
        self._bwd = self._groups(self._order_bwd, self.start_local, edge_mask)[::-1]

    def _groups(self, order, local, edge_mask):
        """Per local position t: (edges, segment starts, segment sizes, lattices)."""
        idx = order if edge_mask is None else order[edge_mask[order]]
        if idx.size == 0:
            return []
        t, k = local[idx], self.sent[idx]
        new_t = np.flatnonzero(np.diff(t)) + 1
        new_seg = np.flatnonzero((np.diff(t) != 0) | (np.diff(k) != 0)) + 1
        t_bounds = np.concatenate([[0], new_t, [idx.size]])
        seg_bounds = np.concatenate([[0], new_seg, [idx.size]])
        groups = []
        for lo, hi in zip(t_bounds[:-1].tolist(), t_bounds[1:].tolist()):
            a, b = np.searchsorted(seg_bounds, [lo, hi])
            starts = seg_bounds[a:b + 1]
            groups.append((int(t[lo]), idx[lo:hi], starts[:-1] - lo, np.diff(starts),
                           k[starts[:-1]]))
        return groups

    def forward(self, logp) -> np.ndarray:
        """alpha[position] = log of the summed probability of all paths from the
        start of its lattice to it (log-sum-exp over the edges ending there)."""
        alpha = np.full(self.n_positions, -np.inf)
        alpha[self.first] = 0.0
        for t, edges, seg, counts, lattices in self._fwd:
            vals = alpha[self.start[edges]] + logp[self.pid[edges]]
            m = np.maximum.reduceat(vals, seg)
            total = np.add.reduceat(np.exp(vals - np.repeat(m, counts)), seg)
            alpha[self.offset[lattices] + t] = m + np.log(total)
        return alpha

    def backward(self, logp) -> np.ndarray:
        """beta[position] = log of the summed probability of all paths from it to
        the end of its lattice."""
        beta = np.full(self.n_positions, -np.inf)
        beta[self.last] = 0.0
        for t, edges, seg, counts, lattices in self._bwd:
            vals = beta[self.end[edges]] + logp[self.pid[edges]]
            m = np.maximum.reduceat(vals, seg)
            total = np.add.reduceat(np.exp(vals - np.repeat(m, counts)), seg)
            beta[self.offset[lattices] + t] = m + np.log(total)
        return beta

    def expected_counts(self, logp, weights, n_pieces):
        """E step: (expected count of each piece, log-likelihood).

        Math: an edge e of lattice k is used with posterior probability
            P(e | X_k) = exp(alpha[start e] + log p(piece e) + beta[end e] - log Z_k)
        with log Z_k = alpha[end of k]; c(x) = sum_k weight_k sum_{e of x} P(e | X_k).
        """
        alpha, beta = self.forward(logp), self.backward(logp)
        log_z = alpha[self.last]
        active = np.concatenate([g[1] for g in self._fwd]) if self._fwd else np.zeros(0, int)
        post = np.exp(alpha[self.start[active]] + logp[self.pid[active]]
                      + beta[self.end[active]] - log_z[self.sent[active]])
        counts = np.bincount(self.pid[active], weights=post * weights[self.sent[active]],
                             minlength=n_pieces)
        return counts, float((weights * log_z).sum())

    def viterbi(self, logp):
        """The best path of every lattice: (its edges, their lattices, best scores)."""
        best = np.full(self.n_positions, -np.inf)
        best[self.first] = 0.0
        back = np.full(self.n_positions, -1, dtype=np.int64)
        for t, edges, seg, counts, lattices in self._fwd:
            vals = best[self.start[edges]] + logp[self.pid[edges]]
            m = np.maximum.reduceat(vals, seg)
            hits = np.flatnonzero(vals == np.repeat(m, counts))
            owner = np.searchsorted(seg, hits, side="right") - 1     # segment of each hit
            first_hit = hits[np.concatenate([[True], owner[1:] != owner[:-1]])]
            target = self.offset[lattices] + t
            best[target] = m
            back[target] = edges[first_hit]
        path_edges, path_lattices = [], []
        lattices = np.flatnonzero(self.lengths > 0)
        position = self.last[lattices]
        while lattices.size:                         # walk every path back at once
            e = back[position]
            path_edges.append(e)
            path_lattices.append(lattices)
            position = self.start[e]
            more = position != self.first[lattices]
            lattices, position = lattices[more], position[more]
        if not path_edges:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), best[self.last]
        return np.concatenate(path_edges), np.concatenate(path_lattices), best[self.last]


def _m_step(counts: np.ndarray, alive: np.ndarray, is_char: np.ndarray):
    """The M step: new log probabilities from expected counts c(x).

    Math (sentencepiece's Bayesian EM, a Dirichlet-process flavoured update):
        log p(x) = digamma(c(x)) - digamma(sum_y c(y))
    over the pieces that stay: those expected at least 0.5 times, and every
    character (its count floored at 0.5, so that every word keeps a path).
    Since digamma(c) ~ log(c - 1/2), rare pieces lose more than in plain EM.
    Returns: (log p, with -inf for dropped pieces; the new alive mask).
    """
    alive = alive & ((counts >= 0.5) | is_char)
    counts = np.where(is_char, np.maximum(counts, 0.5), counts)
    logp = np.full(len(counts), -np.inf)
    logp[alive] = _digamma(counts[alive]) - _digamma(np.array([counts[alive].sum()]))[0]
    return logp, alive


def _split_words(normalized: str) -> list[str]:
    """A normalised sentence -> its words, each starting at a "▁" (as
    sentencepiece's SplitIntoWords): "▁the▁cat" -> ["▁the", "▁cat"]."""
    return re.findall(SPACE + "[^" + SPACE + "]*|[^" + SPACE + "]+", normalized)


def _split_at_unknown(word: str, known: set) -> list[str]:
    """The parts of word between characters outside known: ("ab☃c", {a,b,c}) -> ["ab", "c"]."""
    if all(c in known for c in word):
        return [word]
    parts, start = [], 0
    for i, c in enumerate(word):
        if c not in known:
            if i > start:
                parts.append(word[start:i])
            start = i + 1
    if start < len(word):
        parts.append(word[start:])
    return parts


def _valid_ends(word: str, max_length: int) -> list[int]:
    """For each start i, the furthest end j such that word[i:j] may be a piece:
    at most max_length characters of one script, after an optional leading "▁"
    (a word holds "▁" only at its start)."""
    n = len(word)
    scripts = [_script(c) for c in word]
    run_end = [n] * n                                # end of the one-script run from i
    for i in range(n - 2, -1, -1):
        run_end[i] = run_end[i + 1] if scripts[i] == scripts[i + 1] else i + 1
    ends = []
    for i in range(n):
        k = i + 1 if word[i] == SPACE else i         # "▁" may lead a piece
        ends.append(min(run_end[k] if k < n else n, i + max_length))
    return ends


def train_unigram(texts: str | Iterable[str], vocab_size: int, *,
                  character_coverage: float = 0.9995, max_piece_length: int = 16,
                  seed_size: int = 1_000_000, shrinking_factor: float = 0.75,
                  num_sub_iterations: int = 2, normalization: str = "nfkc",
                  add_dummy_prefix: bool = True, remove_extra_whitespaces: bool = True,
                  unk_id: int = 0, bos_id: int = 1, eos_id: int = 2, pad_id: int = -1,
                  unk_piece: str = "<unk>", bos_piece: str = "<s>", eos_piece: str = "</s>",
                  pad_piece: str = "<pad>", control_symbols: Sequence[str] = (),
                  user_defined_symbols: Sequence[str] = ()) -> SentencePieceModel:
    """Learn a unigram SentencePiece model from text (see the comment above).

    Args:
        texts: a str, or an iterable of str (documents); each line is a sentence.
        vocab_size: the number of pieces, special pieces included.
        character_coverage: keep the most frequent characters covering this
            share of the text (sentencepiece's default 0.9995); the others are
            unknown.
        max_piece_length: the longest piece, in characters.
        seed_size: the most substrings in the seed vocabulary.
        shrinking_factor: the share of pieces each pruning round keeps.
        num_sub_iterations: EM iterations between two prunings.
        normalization: "nfkc" (nfkc_rules, stored in the model) or "identity".
        add_dummy_prefix, remove_extra_whitespaces: the normaliser's white space
            rules (stored in the model).
        unk_id, bos_id, eos_id, pad_id: ids of the special pieces (-1: no such
            piece; unk is required). With the defaults: <unk> 0, <s> 1, </s> 2.
        unk_piece, bos_piece, eos_piece, pad_piece: their strings.
        control_symbols: more control pieces (never produced by encode).
        user_defined_symbols: pieces never cut nor normalised.

    Returns: a SentencePieceModel; ``.save(path)`` writes a .model file that the
    ``sentencepiece`` library reads and segments the same way.
    """
    where = "train_unigram"
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"{where}: vocab_size must be an int; got {type(vocab_size).__name__}")
    if normalization not in ("nfkc", "identity"):
        raise ValueError(f"{where}: normalization must be 'nfkc' or 'identity'; "
                         f"got {normalization!r}")
    if not 0.0 < character_coverage <= 1.0:
        raise ValueError(f"{where}: character_coverage must be in (0, 1]; got "
                         f"{character_coverage}")
    if not 0.0 < shrinking_factor < 1.0:
        raise ValueError(f"{where}: shrinking_factor must be in (0, 1); got {shrinking_factor}")

    # ------------------------------------------------------------ special pieces
    meta = {}                                        # id -> (piece, type)
    for role, i, piece, kind in (("unk", unk_id, unk_piece, UNKNOWN),
                                 ("bos", bos_id, bos_piece, CONTROL),
                                 ("eos", eos_id, eos_piece, CONTROL),
                                 ("pad", pad_id, pad_piece, CONTROL)):
        if i == -1:
            if role == "unk":
                raise ValueError(f"{where}: unk_id must be a valid id; a model needs <unk>")
            continue
        if not 0 <= i < vocab_size:
            raise ValueError(f"{where}: {role}_id={i} is outside [0, vocab_size={vocab_size})")
        if i in meta:
            raise ValueError(f"{where}: {role}_id={i} is also the id of {meta[i][0]!r}")
        meta[i] = (piece, kind)
    extra = [(p, CONTROL) for p in control_symbols] + [(p, USER_DEFINED)
                                                        for p in user_defined_symbols]
    names = [p for p, _ in meta.values()] + [p for p, _ in extra]
    if len(set(names)) != len(names) or any(not p for p in names):
        raise ValueError(f"{where}: special pieces must be distinct and non-empty; got {names}")
    n_special = len(meta) + len(extra)

    # ---------------------------------------------------------- words of the text
    spec = {"name": "nfkc_scratchlm" if normalization == "nfkc" else "identity",
            "add_dummy_prefix": add_dummy_prefix,
            "remove_extra_whitespaces": remove_extra_whitespaces,
            "escape_whitespaces": True}
    if normalization == "nfkc":
        spec["precompiled_charsmap"] = nfkc_charsmap()
    normalizer = Normalizer(spec, list(user_defined_symbols))
    user_pattern = (re.compile("|".join(re.escape(u) for u in sorted(
        user_defined_symbols, key=len, reverse=True))) if user_defined_symbols else None)
    words: Counter = Counter()
    for text in iter_texts(texts, where):
        for line in text.split("\n"):
            normalized = normalizer.normalize(line)
            if user_pattern is not None:             # user pieces are never part of others:
                normalized = user_pattern.sub("\0", normalized)   # cut there (NUL: below)
            words.update(_split_words(normalized))
    words.pop(SPACE, None)
    if not words:
        raise ValueError(f"{where}: the text is empty (after normalisation)")

    # -------------------------------------------- alphabet (character coverage)
    char_counts: Counter = Counter()
    for word, count in words.items():
        for ch in word:
            char_counts[ch] += count
    char_counts.pop("\0", None)            # sentencepiece refuses NUL in a piece: unknown
    total, covered, alphabet = sum(char_counts.values()), 0, []
    for ch, count in sorted(char_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if alphabet and covered / total >= character_coverage:
            break
        alphabet.append(ch)
        covered += count
    known = set(alphabet)
    # a word is cut at unknown characters: pieces never hold them
    segments: Counter = Counter()
    for word, count in words.items():
        for part in _split_at_unknown(word, known):
            segments[part] += count

    # -------------------------------------------------------------- seed pieces
    substrings: Counter = Counter()
    seg_list = list(segments.items())
    seg_ends = []
    for word, count in seg_list:
        ends = _valid_ends(word, max_piece_length)
        seg_ends.append(ends)
        for i, end in enumerate(ends):
            for j in range(i + 2, end + 1):
                substrings[word[i:j]] += count
    seeds = sorted(((count * len(s), s) for s, count in substrings.items() if count >= 2),
                   key=lambda cs: (-cs[0], cs[1]))[:seed_size]
    pieces = list(alphabet) + [s for _, s in seeds]
    index = {p: i for i, p in enumerate(pieces)}
    n_chars = len(alphabet)
    score0 = np.array([char_counts[c] for c in alphabet] + [c for c, _ in seeds], dtype=np.float64)
    logp = np.log(score0) - np.log(score0.sum())
    is_char = np.zeros(len(pieces), dtype=bool)
    is_char[:n_chars] = True
    n_target = vocab_size - n_special
    if n_target < n_chars:
        raise ValueError(f"{where}: vocab_size={vocab_size} leaves {n_target} pieces after the "
                         f"{n_special} special ones, fewer than the {n_chars} characters of the "
                         "text; raise vocab_size or lower character_coverage")
    if len(pieces) < n_target:
        raise ValueError(f"{where}: the text yields only {len(pieces)} candidate pieces, fewer "
                         f"than the {n_target} asked for; lower vocab_size (or give more text)")

    # ---------------------------------------------------- the lattice of each word
    sent, starts, ends_, pids = [], [], [], []
    for k, ((word, _), ends) in enumerate(zip(seg_list, seg_ends)):
        for i, end in enumerate(ends):
            sent.append(k), starts.append(i), ends_.append(i + 1), pids.append(index[word[i]])
            for j in range(i + 2, end + 1):
                p = index.get(word[i:j])
                if p is not None:
                    sent.append(k), starts.append(i), ends_.append(j), pids.append(p)
    lattices = _Lattices([len(w) for w, _ in seg_list], sent, starts, ends_, pids)
    weights = np.array([c for _, c in seg_list], dtype=np.float64)
    alive = np.ones(len(pieces), dtype=bool)
    desired = int(n_target * 1.1)
    sub_lattice_cache: dict[int, list] = {}

    # -------------------------------------------------------- EM, then prune
    while True:
        for _ in range(num_sub_iterations):
            lattices.use(alive[lattices.pid])
            counts, _ = lattices.expected_counts(logp, weights, len(pieces))
            logp, alive = _m_step(counts, alive, is_char)
        if alive.sum() <= desired:
            break
        alive = _prune(pieces, index, alive, is_char, logp, lattices, weights,
                       max(desired, int(shrinking_factor * alive.sum())), n_target,
                       sub_lattice_cache)

    # ------------------------------------------------------------------ finalize
    multi = [i for i in np.flatnonzero(alive & ~is_char)]
    multi.sort(key=lambda i: (-logp[i], pieces[i]))
    chosen = list(range(n_chars)) + multi[:n_target - n_chars]
    if len(chosen) < n_target:
        raise ValueError(f"{where}: training kept only {len(chosen)} pieces, fewer than the "
                         f"{n_target} asked for; lower vocab_size (or give more text)")
    chosen.sort(key=lambda i: (-logp[i], pieces[i]))
    normal = iter([(pieces[i], float(np.float32(logp[i])), NORMAL) for i in chosen])
    rest = iter(extra)
    proto_pieces = []
    for i in range(vocab_size):
        if i in meta:
            piece, kind = meta[i]
            proto_pieces.append({"piece": piece, "score": 0.0, "type": kind})
            continue
        nxt = next(rest, None)
        if nxt is not None:
            proto_pieces.append({"piece": nxt[0], "score": 0.0, "type": nxt[1]})
        else:
            piece, score, kind = next(normal)
            proto_pieces.append({"piece": piece, "score": score, "type": kind})
    trainer_spec = {"model_type": UNIGRAM, "vocab_size": vocab_size,
                    "character_coverage": character_coverage,
                    "max_sentencepiece_length": max_piece_length,
                    "control_symbols": list(control_symbols),
                    "user_defined_symbols": list(user_defined_symbols),
                    "unk_id": unk_id, "bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id,
                    "unk_piece": unk_piece, "bos_piece": bos_piece, "eos_piece": eos_piece,
                    "pad_piece": pad_piece}
    proto = {"pieces": proto_pieces, "trainer_spec": trainer_spec, "normalizer_spec": spec}
    return SentencePieceModel(proto, where)


def _prune(pieces, index, alive, is_char, logp, lattices, weights, keep, n_target, cache):
    """One pruning round: which pieces stay alive (step 3 of the training comment).

    For piece x (with Viterbi count freq[x] in the words, whose counts sum to
    N) and its best segmentation without itself, alt(x):
        loss(x) = freq[x] / N * (log p'(x) - sum_{y in alt(x)} log p''(y))
    where p' and p'' are the Viterbi frequencies normalised before and after x's
    count moves to the pieces of alt(x), as sentencepiece computes it. A piece
    that its own Viterbi segmentation does not use (or no word does) goes; a
    character stays; of the rest, those with the largest loss, up to keep.
    """
    lattices.use(alive[lattices.pid])
    path_edges, path_lattices, _ = lattices.viterbi(logp)
    pid = lattices.pid[path_edges]
    freq = np.bincount(pid, weights=weights[path_lattices], minlength=len(pieces))

    # the best segmentation of each used multi-character piece without itself
    used = np.flatnonzero((freq > 0) & alive & ~is_char)
    sent, start, end, sub = [], [], [], []
    for k, p in enumerate(used.tolist()):
        if p not in cache:
            s, found = pieces[p], []
            for i in range(len(s)):
                for j in range(i + 1, len(s) + 1):
                    q = index.get(s[i:j]) if (i, j) != (0, len(s)) else None
                    if q is not None:
                        found.append((i, j, q))
            cache[p] = found
        for i, j, q in cache[p]:
            sent.append(k), start.append(i), end.append(j), sub.append(q)
    own = _Lattices([len(pieces[p]) for p in used], sent, start, end, sub)
    own.use(alive[own.pid])
    alt_edges, alt_owner, alt_score = own.viterbi(logp)
    removable = logp[used] < alt_score               # its own best segmentation is not itself

    total = freq.sum()
    n_alt = np.bincount(alt_owner, minlength=used.size)
    f = freq[used]
    logsum_alt = np.log(total + f * (n_alt - 1))
    alt_sum = np.bincount(alt_owner, weights=np.log(freq[own.pid[alt_edges]] + f[alt_owner]),
                          minlength=used.size)
    loss = f / weights.sum() * ((np.log(f) - np.log(total)) - (alt_sum - n_alt * logsum_alt))
    new_alive = is_char & alive
    order = np.argsort(-loss, kind="stable")
    candidates = used[order][~removable[order]]
    room = max(0, keep - int(new_alive.sum()))
    new_alive[candidates[:room]] = True
    if new_alive.sum() < n_target:                   # a small text: keep the best of the rest
        rest = np.flatnonzero(alive & ~new_alive)
        rest = rest[np.argsort(-logp[rest], kind="stable")]
        new_alive[rest[:n_target - int(new_alive.sum())]] = True
    return new_alive


# ================================================================ 6. the tokenizer

MARIAN_FILES = ("source.spm", "target.spm", "vocab.json")


def _split_language_code(text: str) -> tuple[list[str], str]:
    """A leading language code such as ">>de<<" and the rest of the text, as
    MarianTokenizer.remove_language_code: (">>de<< Hallo" -> [">>de<<"], " Hallo")."""
    if text.startswith(">>"):
        end = text.find("<<")
        if end != -1:
            return [text[:end + 2]], text[end + 2:]
    return [], text


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece behind the shared Tokenizer interface (encode, decode, __call__).

    Two layouts:

    * One model (``from_file(path)``, a directory with ``spiece.model``, or
      ``train``): the ids are the model's piece ids; encode(text) gives what
      sentencepiece's ``encode(text)`` gives (nothing added, and control pieces
      such as "<s>" typed in the text are not matched, as in the library);
      decode(ids) gives its ``decode(ids)``. Special tokens: the unknown
      piece and the control pieces (<s>, </s>, <pad>, ...).
    * Marian (a directory with ``source.spm``, ``target.spm`` and
      ``vocab.json``): the source model cuts text into pieces and vocab.json
      maps them to ids (a piece it lacks -> <unk>); "</s>" is appended; a
      leading language code ">>de<<" is one token; the special tokens
      (</s>, <unk>, <pad>, and any additional ones) are matched whole in the
      text. ``text_target=`` is cut by the target model. Ids and decoded text
      equal those of ``transformers``' MarianTokenizer on the same files.

    Args:
        model: the SentencePieceModel (Marian: the source model).
        vocab: None (ids = piece ids), or Marian's vocab.json as a dict.
        target_model: Marian's target model (default: model).
        unk_token, bos_token, eos_token, pad_token: role tokens; None takes the
            model's own (one model) or Marian's "<unk>", "</s>", "<pad>".
        additional_special_tokens: more special tokens (Marian).
        add_eos_token: append eos_token to each encoding (default: True for
            Marian, False for one model, as sentencepiece).
        source_lang, target_lang: kept in tokenizer_config.json (Marian).
        model_max_length: the max_length that truncation=True uses when none is
            given (512 for Marian, as in transformers; None: must be given).
        clean_up_tokenization_spaces: decode() removes the space before
            punctuation, as transformers does when a tokenizer_config.json asks
            for it (default False, as in transformers 5).
    """

    def __init__(self, model: SentencePieceModel, vocab: dict[str, int] | None = None, *,
                 target_model: SentencePieceModel | None = None, unk_token=None,
                 bos_token=None, eos_token=None, pad_token=None,
                 additional_special_tokens: Sequence[str] = (), add_eos_token=None,
                 source_lang=None, target_lang=None, model_max_length=None,
                 clean_up_tokenization_spaces: bool = False):
        where = f"{type(self).__name__}.__init__"
        if not isinstance(model, SentencePieceModel):
            raise TypeError(f"{where}: model must be a SentencePieceModel; "
                            f"got {type(model).__name__}")
        self.model = model
        self.target_model = target_model or model
        self.is_marian = vocab is not None
        self.source_lang, self.target_lang = source_lang, target_lang
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._target_side = False                 # True while encoding text_target
        if self.is_marian:
            roles = dict(unk_token=unk_token or "<unk>", eos_token=eos_token or "</s>",
                         pad_token=pad_token or "<pad>", bos_token=bos_token)
            for role in ("unk_token", "eos_token", "pad_token"):
                if roles[role] not in vocab:
                    raise ValueError(f"{where}: the Marian {role} {roles[role]!r} is not in "
                                     f"vocab.json ({len(vocab)} tokens)")
            specials = list(additional_special_tokens)
            self.add_eos_token = True if add_eos_token is None else add_eos_token
            self.model_max_length = 512 if model_max_length is None else model_max_length
        else:
            vocab = {piece: i for i, piece in enumerate(model.pieces)}
            own = {"bos_token": model.bos_id, "eos_token": model.eos_id,
                   "pad_token": model.pad_id}
            roles = {"unk_token": unk_token or model.pieces[model.unk_id]}
            for role, i in own.items():
                given = {"bos_token": bos_token, "eos_token": eos_token,
                         "pad_token": pad_token}[role]
                roles[role] = given or (model.pieces[i] if i >= 0 else None)
            specials = [p for p, t in zip(model.pieces, model.types) if t == CONTROL]
            specials += list(additional_special_tokens)
            self.add_eos_token = bool(add_eos_token)
            if self.add_eos_token and roles["eos_token"] is None:
                raise ValueError(f"{where}: add_eos_token=True, but the model has no eos piece")
            self.model_max_length = model_max_length
        super().__init__(vocab, specials, **roles)
        if not self.is_marian:
            # sentencepiece segments "<s>" typed in the text like any other text
            self._special_pattern = None

    # ------------------------------------------------------------------ encoding

    def _side_model(self) -> SentencePieceModel:
        return self.target_model if self._target_side else self.model

    def _tokenize_ordinary(self, text: str, where: str) -> list[str]:
        model = self._side_model()
        if self.is_marian:
            code, text = _split_language_code(text)
            return code + model.encode_as_pieces(text)
        return model.encode_as_pieces(text)

    def _text_to_ids(self, text, where: str, argument: str = "text") -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"{where}: {argument} must be a str; got {type(text).__name__}")
        if not self.is_marian:                    # the model's own ids (unknown runs included)
            return self._side_model().encode(text)
        unk = self.unk_token_id
        return [self.vocab.get(token, unk) for token in self._tokenize(text, where, argument)]

    def build_inputs(self, ids_a: list[int], ids_b: list[int] | None = None):
        """a (+ b) (+ </s> where add_eos_token, as Marian); token types all 0."""
        input_ids = ids_a + (ids_b or [])
        if self.add_eos_token:
            input_ids = input_ids + [self.eos_token_id]
        return input_ids, [0] * len(input_ids)

    def __call__(self, text=None, text_pair=None, text_target=None, padding=False,
                 truncation=False, max_length: int | None = None,
                 return_tensors: str | None = None):
        """Encode a text or a batch (see Tokenizer.__call__), and the targets.

        text_target: the target text(s) of a translation pair, encoded with the
            target model; returned as "labels" (padded with the pad id, as
            transformers does), or alone as "input_ids" when text is None.
        truncation=True or padding="max_length" without max_length use
        model_max_length, as in transformers.
        """
        where = f"{type(self).__name__}.__call__"
        if text is None and text_target is None:
            raise ValueError(f"{where}: give text, text_target, or both")
        if max_length is None and self.model_max_length is not None and (
                truncation not in (False, None, "do_not_truncate") or padding == "max_length"):
            max_length = self.model_max_length
        encoded = None
        if text is not None:
            encoded = super().__call__(text, text_pair, padding=padding, truncation=truncation,
                                       max_length=max_length, return_tensors=return_tensors)
        if text_target is None:
            return encoded
        self._target_side = True
        try:
            target = super().__call__(text_target, None, padding=padding, truncation=truncation,
                                      max_length=max_length, return_tensors=return_tensors)
        finally:
            self._target_side = False
        if encoded is None:
            return target
        encoded["labels"] = target["input_ids"]
        return encoded

    # ------------------------------------------------------------------ decoding

    def _tokens_to_text(self, tokens: list[str]) -> str:
        text = self._join_tokens(tokens)
        return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def _join_tokens(self, tokens: list[str]) -> str:
        if not self.is_marian:
            return self.model.decode_pieces(tokens)
        # MarianTokenizer.convert_tokens_to_string: the pieces between special
        # tokens go through the model's decoder, the special tokens are kept as
        # they are, followed by a space. With one vocabulary for both sides
        # (Marian's usual layout) transformers decodes with the *source* model.
        specials = set(self.special_tokens)
        model, out, run = self.model, [], []
        for token in tokens:
            if token in specials:
                out.append(model.decode_pieces(run) + token + " ")
                run = []
            else:
                run.append(token)
        out.append(model.decode_pieces(run))
        return "".join(out).replace(SPACE, " ").strip()

    # --------------------------------------------------------------------- files

    @classmethod
    def from_file(cls, path, **options) -> "SentencePieceTokenizer":
        """One .model file; options as for the constructor."""
        return cls(SentencePieceModel.from_file(path), **options)

    @classmethod
    def from_pretrained(cls, directory) -> "SentencePieceTokenizer":
        """A directory with spiece.model, or Marian's source.spm, target.spm and
        vocab.json (and tokenizer_config.json, optional, in both)."""
        where = f"{cls.__name__}.from_pretrained"
        directory = check_directory(directory, where)
        config_path = os.path.join(directory, "tokenizer_config.json")
        config = read_json(config_path, where) if os.path.isfile(config_path) else {}
        if not isinstance(config, dict):
            raise ValueError(f"{where}: {config_path!r} must hold a JSON object")
        roles = role_tokens_from_config(config, where, config_path)
        extra = [t for t in additional_special_tokens_from_config(config, where, config_path)
                 if t not in roles.values()]
        spiece = os.path.join(directory, "spiece.model")
        if os.path.isfile(spiece):
            model = SentencePieceModel.from_file(spiece)
            extra = [t for t in extra if t not in model.pieces or
                     model.types[model.piece_to_id(t)] != CONTROL]
            return cls(model, **roles, additional_special_tokens=extra,
                       add_eos_token=bool(config.get("add_eos_token", False)),
                       model_max_length=config.get("model_max_length"),
                       clean_up_tokenization_spaces=bool(
                           config.get("clean_up_tokenization_spaces", False)))
        paths = [os.path.join(directory, name) for name in MARIAN_FILES]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{where}: {directory!r} holds neither spiece.model nor a "
                                    f"Marian tokenizer ({', '.join(MARIAN_FILES)}); missing "
                                    f"{', '.join(map(repr, missing))}")
        if config.get("separate_vocabs"):
            raise ValueError(f"{where}: separate_vocabs=true in {config_path!r} (a target_vocab"
                             ".json of its own) is not supported; one shared vocab.json is")
        source, target = (SentencePieceModel.from_file(p) for p in paths[:2])
        vocab = read_json(paths[2], where)
        if not isinstance(vocab, dict):
            raise ValueError(f"{where}: {paths[2]!r} must hold a JSON object token -> id")
        max_length = config.get("model_max_length", 512)
        if not isinstance(max_length, int) or max_length > 10**9:     # transformers' "infinity"
            max_length = 512
        return cls(source, vocab, target_model=target, **roles,
                   additional_special_tokens=extra, source_lang=config.get("source_lang"),
                   target_lang=config.get("target_lang"), model_max_length=max_length,
                   clean_up_tokenization_spaces=bool(
                       config.get("clean_up_tokenization_spaces", False)))

    def save_pretrained(self, directory) -> list[str]:
        """Write the files from_pretrained reads: spiece.model (one model) or
        source.spm, target.spm, vocab.json (Marian); and tokenizer_config.json.
        Returns the paths written."""
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__}.save_pretrained: directory must be a "
                            f"path; got {type(directory).__name__}")
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        config = self._role_config()
        config["clean_up_tokenization_spaces"] = self.clean_up_tokenization_spaces
        if not self.is_marian:
            paths = [self.model.save(os.path.join(directory, "spiece.model"))]
            config.update(add_eos_token=self.add_eos_token,
                          model_max_length=self.model_max_length)
        else:
            paths = [self.model.save(os.path.join(directory, "source.spm")),
                     self.target_model.save(os.path.join(directory, "target.spm"))]
            paths.append(os.path.join(directory, "vocab.json"))
            write_json(paths[-1], self.vocab)
            # "MarianTokenizer" lets transformers' AutoTokenizer read the directory too
            config.update(tokenizer_class="MarianTokenizer", separate_vocabs=False,
                          source_lang=self.source_lang, target_lang=self.target_lang,
                          model_max_length=self.model_max_length)
        paths.append(os.path.join(directory, "tokenizer_config.json"))
        write_json(paths[-1], config)
        return paths

    def save_marian(self, directory) -> list[str]:
        """Write this one-model tokenizer as a Marian tokenizer directory.

        The model serves as both source.spm and target.spm (a shared vocabulary,
        as most opus-mt models); vocab.json follows Marian's convention: "</s>"
        is 0, "<unk>" 1, then the model's other pieces in order (control pieces
        such as <s> left out), and "<pad>" last. A MarianMTModel config for it:
        eos_token_id=0, pad_token_id = decoder_start_token_id = V - 1.
        ``from_pretrained(directory)`` then reads it as a Marian tokenizer.
        """
        where = f"{type(self).__name__}.save_marian"
        if self.is_marian:
            raise ValueError(f"{where}: this tokenizer is already a Marian one; use "
                             "save_pretrained")
        model = self.model
        eos = self.eos_token or "</s>"
        unk = model.pieces[model.unk_id]
        pad = self.pad_token if self.pad_token not in (None, eos) else "<pad>"
        tokens = [eos, unk] + [p for p, t in zip(model.pieces, model.types)
                               if t not in (CONTROL, UNKNOWN) and p not in (eos, pad)]
        tokens.append(pad)
        vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
        marian = SentencePieceTokenizer(model, vocab, unk_token=unk, eos_token=eos,
                                        pad_token=pad)
        return marian.save_pretrained(directory)

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int,
              **options) -> "SentencePieceTokenizer":
        """A unigram model learned from texts (train_unigram, which takes the
        options), as a one-model tokenizer."""
        return cls(train_unigram(texts, vocab_size, **options))
