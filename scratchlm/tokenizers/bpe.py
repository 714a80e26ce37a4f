"""Byte-level byte-pair encoding (BPE), compatible with GPT-2's tokenizer.

Byte-pair encoding builds a vocabulary from the bottom up. It starts from the
256 byte values, so that any text can be written, and learns *merges*: the
most frequent adjacent pair of symbols in the training text becomes one new
symbol, again and again, until the vocabulary has the size asked for:

    "l o w e r" --merge (l, o)--> "lo w e r" --merge (lo, w)--> "low e r" ...

Encoding applies the learned merges to new text in the order they were
learned (their *rank*). Three details make it GPT-2's tokenizer:

1. Bytes as characters. Each of the 256 byte values is shown as one printable
   Unicode character (``bytes_to_unicode``), so tokens are ordinary strings
   in ``vocab.json`` and ``merges.txt``: the space byte is "Ġ", newline "Ċ".
2. Pre-tokenization. Text is first cut into words with GPT-2's regex (see
   ``gpt2_pre_tokenize``), and merges never cross a word boundary. A word
   keeps the space before it: " world" -> "Ġworld".
3. Files. ``vocab.json`` maps token -> id; ``merges.txt`` holds one merge
   "a b" per line, in rank order, after an optional "#version" line.

No special token is added to the ids unless the tokenizer was built with some,
as GPT-2: "<|endoftext|>" is in the vocabulary and is matched as one token
where it appears in the text, but encode() never inserts it.
"""

from __future__ import annotations

import heapq
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Callable, Iterable, Sequence

from scratchlm.tokenizers.base import (
    Tokenizer, additional_special_tokens_from_config, check_directory, iter_texts,
    read_json, role_tokens_from_config, special_tokens_pattern, split_on_special_tokens,
    write_json)

ENDOFTEXT = "<|endoftext|>"


# ------------------------------------------------------------ bytes as characters

@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to 256 printable Unicode characters.

    Bytes that already print as themselves in Latin-1 ("!" .. "~", "¡" .. "¬",
    "®" .. "ÿ") keep their own character. The other 68 (control bytes, space,
    DEL, the no-break space 0xA0 and the soft hyphen 0xAD) are shifted, in
    increasing order, to the characters 256, 257, ...: so the space 0x20 is
    chr(256 + 32) = "Ġ" and the newline 0x0A is chr(256 + 10) = "Ċ".
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


@lru_cache(maxsize=None)
def _byte_translation_tables() -> tuple[dict[int, str], dict[int, str]]:
    """str.translate tables between Latin-1 text and the byte characters.

    Decoding UTF-8 bytes as Latin-1 gives one character per byte, chr(b), so
    ``s.encode("utf-8").decode("latin-1").translate(to_bytechars)`` writes the
    bytes of s with the characters of bytes_to_unicode, in one fast pass.
    """
    to_bytechars = dict(bytes_to_unicode())                               # byte -> character
    from_bytechars = {ord(c): chr(b) for b, c in bytes_to_unicode().items()}  # and back
    return to_bytechars, from_bytechars


def text_to_bytechars(text: str) -> str:
    """The UTF-8 bytes of text, one byte character each: "é" -> "Ã©"."""
    to_bytechars, _ = _byte_translation_tables()
    return text.encode("utf-8").decode("latin-1").translate(to_bytechars)


def bytechars_to_text(bytechars: str) -> str:
    """Inverse of text_to_bytechars. Bytes that are not valid UTF-8 (a token
    sequence cut inside a character) become U+FFFD, as in `tokenizers`."""
    _, from_bytechars = _byte_translation_tables()
    return bytechars.translate(from_bytechars).encode("latin-1").decode("utf-8", errors="replace")


# -------------------------------------------------------------- pre-tokenization

@lru_cache(maxsize=None)
def gpt2_pattern() -> re.Pattern:
    """GPT-2's pre-tokenizer regex, written for Python's ``re`` module.

    GPT-2 splits text with (in the `regex` module's syntax)

        's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

    that is: an English contraction; or a run of letters, or of numbers, or of
    other symbols, each with at most one space in front; or a run of white
    space. ``\\s+(?!\\S)`` leaves the last space of a run to the word that
    follows: "a   b" -> "a", "  ", " b".

    ``re`` has no \\p{L} (letters, Unicode category L*) nor \\p{N} (numbers,
    N*), and its near-equivalents are not exact: ``[^\\W\\d_]`` also matches
    "²" and "Ⅷ", which are numbers. So the three classes are written out, code
    point range by code point range, from ``unicodedata.category``:

        L = category L*      N = category N*
        S = white space as `tokenizers` (Oniguruma) counts it: \\t \\n \\v \\f \\r,
            U+0085 and the categories Zs, Zl, Zp. (Python's \\s would also
            take U+001C .. U+001F, which GPT-2 treats as symbols.)

    This is exact for the Unicode version of Python's unicodedata; characters
    assigned only in a later version are symbols here.
    """
    letters, numbers, spaces = _unicode_classes()
    L, N, S = f"[{letters}]", f"[{numbers}]", f"[{spaces}]"
    other = f"[^{spaces}{letters}{numbers}]"
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d| ?{L}+| ?{N}+| ?{other}+|{S}+(?![^{spaces}])|{S}+")


def _unicode_classes() -> tuple[str, str, str]:
    """Bodies of the regex classes [...] for letters, numbers and white space."""
    def kind(cp: int) -> str:
        category = unicodedata.category(chr(cp))
        if category in ("Zs", "Zl", "Zp") or cp in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85):
            return "S"
        return category[0] if category[0] in "LN" else "O"

    ranges = {"L": [], "N": [], "S": [], "O": []}     # kind -> list of (first, last)
    start, current = 0, kind(0)
    for cp in range(1, sys.maxunicode + 2):
        k = kind(cp) if cp <= sys.maxunicode else None
        if k != current:
            ranges[current].append((start, cp - 1))
            start, current = cp, k

    def body(pairs):
        return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in pairs)

    return body(ranges["L"]), body(ranges["N"]), body(ranges["S"])


def gpt2_pre_tokenize(text: str) -> list[str]:
    """Cut text into GPT-2's words: "Hello  world's" -> ["Hello", " ", " world", "'s"].

    The words are plain text; their concatenation is text again.
    """
    if not isinstance(text, str):
        raise TypeError(f"gpt2_pre_tokenize: text must be a str; got {type(text).__name__}")
    return gpt2_pattern().findall(text)


# ----------------------------------------------------------------- learning merges

def learn_merges(word_counts: dict[tuple[str, ...], int], num_symbols: int,
                 join: Callable[[str, str], str] = str.__add__,
                 min_frequency: int = 2) -> list[tuple[str, str]]:
    """Learn BPE merges from words split into symbols, until they make num_symbols new symbols.

    Args:
        word_counts: each distinct word as a tuple of its initial symbols,
            with the number of times it occurs.
        num_symbols: how many distinct new symbols to make. (Usually one per
            merge, but two merges can make the same string: (a, bc) and (ab, c).)
        join: the symbol that merging (a, b) makes; a + b for byte-level BPE.
        min_frequency: stop when the most frequent pair occurs fewer times.

    Returns: the merges (a, b) in the order learned, which is their rank.

    Each step merges the most frequent adjacent pair, counting a pair once per
    occurrence in a word times the word's count (ties: the pair that sorts
    first). Recounting every pair at every step would cost O(corpus) per
    merge; instead three structures are kept up to date:

        pair_counts  pair -> its count now
        words_with   pair -> the words it occurs in (may list words it has left)
        heap         (-count, pair) entries; an entry whose count is no longer
                     the pair's count is out of date and skipped when popped

    Merging (a, b) touches only the words that contain it: their old pairs
    are subtracted, the merge is applied, and their new pairs added.
    """
    words = [list(symbols) for symbols in word_counts]
    counts = list(word_counts.values())
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    words_with: dict[tuple[str, str], set[int]] = defaultdict(set)
    for w, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += counts[w]
            words_with[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges, learned, made = [], set(), set()
    while heap and len(made) < num_symbols:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count:
            continue                                    # out of date: the pair changed since
        if -negative_count < min_frequency:
            break
        if pair not in learned:
            # A pair can come back after its merge when another merge makes the
            # same string as a or b; it is merged again but learned only once.
            merges.append(pair)
            learned.add(pair)
        a, b = pair
        merged = join(a, b)
        made.add(merged)
        changed = set()
        for w in words_with.pop(pair):
            symbols, n = words[w], counts[w]
            new_symbols = _merge_pair(symbols, a, b, merged)
            if len(new_symbols) == len(symbols):
                continue                                # listed, but the pair has left this word
            for old in zip(symbols, symbols[1:]):       # the word's old pairs leave ...
                pair_counts[old] -= n
                changed.add(old)
            for new in zip(new_symbols, new_symbols[1:]):  # ... and its new pairs arrive
                pair_counts[new] += n
                words_with[new].add(w)
                changed.add(new)
            words[w] = new_symbols
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    return merges


def _merge_pair(symbols: list[str], a: str, b: str, merged: str) -> list[str]:
    """symbols with every (a, b) side by side replaced by merged, left to right:
    [a, a, a] with the pair (a, a) -> [aa, a]."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


# --------------------------------------------------------------------- tokenizer

class ByteLevelBPETokenizer(Tokenizer):
    """GPT-2's byte-level BPE tokenizer.

    Args:
        vocab: dict token -> id (ids 0 .. V-1); tokens are written with the
            byte characters of bytes_to_unicode, except special tokens, which
            are kept as they read.
        merges: the merges (a, b), in rank order; a, b and a + b must be in vocab.
        special_tokens: tokens matched whole in the text, e.g. ["<|endoftext|>"].
        bos_token, eos_token: default to "<|endoftext|>" where it is a special
            token, as in GPT-2.
        unk_token, pad_token: None by default (byte-level BPE writes any text,
            and GPT-2 has no padding token; set ``tokenizer.pad_token`` to pad).

    Build one with ``train`` or ``from_pretrained``; encode with ``encode`` or
    by calling it (see Tokenizer.__call__).
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                 special_tokens: Sequence[str] = (), *, bos_token=None, eos_token=None,
                 unk_token=None, pad_token=None):
        if ENDOFTEXT in special_tokens:
            bos_token = ENDOFTEXT if bos_token is None else bos_token
            eos_token = ENDOFTEXT if eos_token is None else eos_token
        super().__init__(vocab, special_tokens, unk_token=unk_token, pad_token=pad_token,
                         bos_token=bos_token, eos_token=eos_token)
        where = f"{type(self).__name__}.__init__"
        bytechars = set(bytes_to_unicode().values())
        missing = [c for c in sorted(bytechars) if c not in self.vocab]
        if missing:
            raise ValueError(f"{where}: vocab must hold all 256 byte characters; "
                             f"{len(missing)} are missing, e.g. {missing[:5]}")
        special = set(self.special_tokens)
        strange = [t for t in self.vocab if t not in special and not set(t) <= bytechars]
        if strange:
            raise ValueError(f"{where}: tokens other than special tokens must be written "
                             f"with the byte characters of bytes_to_unicode; got {strange[:3]} "
                             "(list them in special_tokens if they are special)")
        # rank of each merge: lower ranks were learned earlier and apply first
        self.merge_ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            if not (isinstance(merge, (tuple, list)) and len(merge) == 2
                    and all(isinstance(s, str) and s for s in merge)):
                raise ValueError(f"{where}: merge {rank} must be a pair of non-empty "
                                 f"strings; got {merge!r}")
            a, b = merge
            for token in (a, b, a + b):
                if token not in self.vocab:
                    raise ValueError(f"{where}: merge {rank} ({a!r}, {b!r}) uses {token!r}, "
                                     "which is not in the vocabulary")
            if (a, b) in self.merge_ranks:
                raise ValueError(f"{where}: merge {rank} ({a!r}, {b!r}) repeats merge "
                                 f"{self.merge_ranks[a, b]}")
            self.merge_ranks[(a, b)] = rank
        self._cache: dict[str, list[str]] = {}          # word -> its tokens, once computed

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges in rank order."""
        return sorted(self.merge_ranks, key=self.merge_ranks.get)

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, text_or_iterable: str | Iterable[str], vocab_size: int,
              special_tokens: Sequence[str] = (), min_frequency: int = 2
              ) -> "ByteLevelBPETokenizer":
        """Learn a vocabulary of vocab_size tokens from text.

        Args:
            text_or_iterable: a str, or an iterable of str (documents; no word
                runs from one into the next).
            vocab_size: tokens in all: the 256 bytes, the merges, the special tokens.
            special_tokens: e.g. ["<|endoftext|>"]; they get the last ids, as
                in GPT-2, and are not learned from: the text is cut at them.
            min_frequency: learn no merge of a pair seen fewer times; the
                vocabulary is then smaller than vocab_size.

        Steps: cut the text into words (gpt2_pre_tokenize) and count them;
        write each word as byte characters; learn merges on the counts
        (learn_merges); the vocabulary is the bytes, then one token per merge,
        then the special tokens.
        """
        where = f"{cls.__name__}.train"
        special_tokens = list(special_tokens)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) \
                or vocab_size < 256 + len(special_tokens):
            raise ValueError(f"{where}: vocab_size must be an int of at least 256 (the "
                             f"bytes) + {len(special_tokens)} (special tokens); got {vocab_size!r}")
        pattern = special_tokens_pattern(special_tokens)
        word_counts = Counter()
        for text in iter_texts(text_or_iterable, where):
            for piece, is_special in split_on_special_tokens(text, pattern):
                if not is_special:
                    word_counts.update(gpt2_pre_tokenize(piece))
        symbol_counts = Counter()
        for word, count in word_counts.items():
            symbol_counts[tuple(_encode_bytechars(word, where))] += count

        merges = learn_merges(symbol_counts, vocab_size - 256 - len(special_tokens),
                              min_frequency=min_frequency)
        # dict.fromkeys keeps the first of repeated tokens (two merges may make one string)
        tokens = list(bytes_to_unicode().values()) + [a + b for a, b in merges]
        tokens = list(dict.fromkeys(tokens + special_tokens))
        vocab = {token: i for i, token in enumerate(tokens)}
        return cls(vocab, merges, special_tokens)

    # ------------------------------------------------------------------ encoding

    def _bpe(self, word: str) -> list[str]:
        """Tokens of one word (in byte characters): apply merges by rank.

        Repeatedly find the adjacent pair with the lowest rank and merge every
        occurrence of it, until no adjacent pair is a merge:
            "Ġlower" -> Ġ l o w e r -> Ġl o w e r -> Ġl ow e r -> Ġlow e r -> ...
        """
        symbols = list(word)
        ranks = self.merge_ranks
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, len(ranks)))
            if best not in ranks:
                break
            symbols = _merge_pair(symbols, best[0], best[1], best[0] + best[1])
        return symbols

    def _tokenize_ordinary(self, text: str, where: str) -> list[str]:
        tokens = []
        for word in gpt2_pre_tokenize(text):
            if word not in self._cache:
                if len(self._cache) >= 100_000:          # keep memory bounded
                    self._cache.clear()
                self._cache[word] = self._bpe(_encode_bytechars(word, where))
            tokens.extend(self._cache[word])
        return tokens

    # ------------------------------------------------------------------ decoding

    def _tokens_to_text(self, tokens: list[str]) -> str:
        """Join the tokens' bytes and decode them as UTF-8; special tokens read as themselves."""
        special = set(self.special_tokens)
        pieces, run = [], []
        for token in tokens:
            if token in special:
                pieces.append(bytechars_to_text("".join(run)))
                pieces.append(token)
                run = []
            else:
                run.append(token)
        pieces.append(bytechars_to_text("".join(run)))
        return "".join(pieces)

    # --------------------------------------------------------------------- files

    def save_pretrained(self, directory) -> list[str]:
        """Write vocab.json, merges.txt and tokenizer_config.json into directory
        (created if needed), as GPT-2's files. Returns the paths written."""
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__}.save_pretrained: directory must be a "
                            f"path; got {type(directory).__name__}")
        os.makedirs(directory, exist_ok=True)
        vocab_path = os.path.join(directory, "vocab.json")
        merges_path = os.path.join(directory, "merges.txt")
        config_path = os.path.join(directory, "tokenizer_config.json")
        write_json(vocab_path, self.vocab)
        with open(merges_path, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in self.merges:
                f.write(f"{a} {b}\n")
        # "GPT2Tokenizer" lets `transformers`' AutoTokenizer read the directory too.
        config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
                  **self._role_config()}
        write_json(config_path, config)
        return [vocab_path, merges_path, config_path]

    @classmethod
    def from_pretrained(cls, directory) -> "ByteLevelBPETokenizer":
        """Read GPT-2's files from directory: vocab.json, merges.txt and, if
        present, tokenizer_config.json (its special tokens).

        Without tokenizer_config.json, "<|endoftext|>" is the one special token
        where the vocabulary has it, as in GPT-2.
        """
        where = f"{cls.__name__}.from_pretrained"
        directory = check_directory(directory, where)
        vocab_path = os.path.join(directory, "vocab.json")
        vocab = read_json(vocab_path, where)
        if not isinstance(vocab, dict):
            raise ValueError(f"{where}: {vocab_path!r} must hold a JSON object token -> id; "
                             f"got {type(vocab).__name__}")
        merges = read_merges(os.path.join(directory, "merges.txt"), vocab, where)

        config_path = os.path.join(directory, "tokenizer_config.json")
        roles, special_tokens = {}, [ENDOFTEXT] if ENDOFTEXT in vocab else []
        if os.path.isfile(config_path):
            config = read_json(config_path, where)
            if config.get("add_prefix_space"):
                raise ValueError(f"{where}: {config_path!r} asks for add_prefix_space=True, "
                                 "which this tokenizer does not implement")
            roles = role_tokens_from_config(config, where, config_path)
            special_tokens = additional_special_tokens_from_config(config, where, config_path)
        return cls(vocab, merges, special_tokens, **roles)


def read_merges(path: str, vocab: dict, where: str) -> list[tuple[str, str]]:
    """The merges in a merges.txt: one "a b" per line, after an optional "#version" line.

    A malformed line, or a merge whose parts are not in vocab, is an error that
    names the file and the line number.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: no file {path!r}")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    merges = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{where}: line {number} of {path!r} must be two tokens "
                             f"separated by one space, like 'Ġ t'; got {line!r}")
        a, b = parts
        for token in (a, b, a + b):
            if token not in vocab:
                raise ValueError(f"{where}: line {number} of {path!r} merges {a!r} and {b!r}, "
                                 f"but {token!r} is not in the vocabulary")
        merges.append((a, b))
    return merges


def _encode_bytechars(text: str, where: str) -> str:
    """text_to_bytechars, with a clear error for text UTF-8 cannot hold."""
    try:
        return text_to_bytechars(text)
    except UnicodeEncodeError as error:
        bad = text[error.start]
        raise ValueError(f"{where}: text must be valid Unicode; got the lone surrogate "
                         f"U+{ord(bad):04X} (in {text!r}), which UTF-8 cannot encode") from None
