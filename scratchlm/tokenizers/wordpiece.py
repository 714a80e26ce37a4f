"""WordPiece, BERT's tokenizer.

Two stages turn text into tokens.

1. The basic tokenizer (``bert_basic_tokenize``) cuts text into words, as
   BERT's BertNormalizer + BertPreTokenizer do:

       clean      drop control characters, U+0000 and U+FFFD; white space -> " "
       CJK        put spaces around each CJK ideograph, so each is a word
       accents    (when lower-casing) decompose (NFD), drop non-spacing marks
       lower      lower-case, character by character
       split      at white space (dropped) and around punctuation (kept, one
                  character per word); ASCII symbols such as $ + < = > ^ ` | ~
                  count as punctuation although Unicode calls them symbols

       "Héllo, WORLD!" -> ["hello", ",", "world", "!"]

2. WordPiece cuts each word into vocabulary entries, greedily, longest match
   first. A piece that continues a word carries the prefix "##":

       "unaffable" -> "un", "##aff", "##able"

   A word that cannot be cut this way, or longer than 100 characters,
   becomes the single token [UNK].

Inputs for BERT are framed by special tokens, with token type ids telling the
two texts of a pair apart:

       [CLS] a [SEP]            token_type_ids 0 ... 0
       [CLS] a [SEP] b [SEP]    token_type_ids 0 ... 0 1 ... 1
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Iterable, Sequence

from scratchlm.tokenizers.base import (
    Tokenizer, additional_special_tokens_from_config, check_directory, iter_texts,
    read_json, role_tokens_from_config, special_tokens_pattern, split_on_special_tokens,
    write_json)
from scratchlm.tokenizers.bpe import learn_merges

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# ---------------------------------------------------------- the basic tokenizer

def _is_control(ch: str) -> bool:
    """A control or format character (Unicode category C*), other than \\t \\n \\r,
    which count as white space."""
    return ch not in "\t\n\r" and unicodedata.category(ch)[0] == "C"


def _is_whitespace(ch: str) -> bool:
    """White space: \\t \\n \\r and the space separators (Zs, Zl, Zp)."""
    return ch in "\t\n\r" or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def _is_punctuation(ch: str) -> bool:
    """Unicode punctuation (P*), or any ASCII character that is not a letter,
    a digit or a space: BERT splits "$5" and "a+b" as it splits "a,b"."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch)[0] == "P"


# The CJK Unified Ideographs blocks and their extensions, as in BERT. Hangul,
# Hiragana and Katakana are not among them: they are written with spaces.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class _CharacterTable(dict):
    """A table for str.translate that works out each character's replacement
    with rule(ch) the first time it meets the character, and keeps it.

    str.translate looks every character up in the table; a character's
    category never changes, so each is classified once, not once per use.
    """

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def __missing__(self, cp: int) -> str:
        replacement = self[cp] = self.rule(chr(cp))
        return replacement


def _clean(ch: str) -> str:
    if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
        return ""
    return " " if _is_whitespace(ch) else ch


_CLEAN = _CharacterTable(_clean)
_SPACE_CJK = _CharacterTable(lambda ch: f" {ch} " if _is_cjk(ch) else ch)
_DROP_NONSPACING_MARKS = _CharacterTable(lambda ch: "" if unicodedata.category(ch) == "Mn" else ch)
_LOWER = _CharacterTable(str.lower)


def bert_normalize(text: str, lowercase: bool = True, strip_accents: bool | None = None,
                   tokenize_chinese_chars: bool = True) -> str:
    """Clean, space out CJK characters, strip accents, lower-case: BERT's normalizer.

    strip_accents=None follows lowercase, as in BERT. The steps run in the
    order of the `tokenizers` library; lower-casing goes character by
    character, so a final capital sigma becomes "σ", never "ς".
    """
    # 1. clean: drop NUL, U+FFFD and control characters; white space -> " "
    text = text.translate(_CLEAN)
    # 2. each CJK ideograph becomes a word of its own
    if tokenize_chinese_chars:
        text = text.translate(_SPACE_CJK)
    # 3. strip accents: "é" = "e" + U+0301 (NFD); U+0301 is a non-spacing mark (Mn)
    if lowercase if strip_accents is None else strip_accents:
        text = unicodedata.normalize("NFD", text).translate(_DROP_NONSPACING_MARKS)
    # 4. lower-case
    if lowercase:
        text = text.translate(_LOWER)
    return text


def bert_pre_tokenize(text: str) -> list[str]:
    """Split normalized text at white space, and around each punctuation mark:
    "hello, world!" -> ["hello", ",", "world", "!"]."""
    words = []
    for chunk in text.split():
        word = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if word:
                    words.append(word)
                words.append(ch)
                word = ""
            else:
                word += ch
        if word:
            words.append(word)
    return words


def bert_basic_tokenize(text: str, lowercase: bool = True, strip_accents: bool | None = None,
                        tokenize_chinese_chars: bool = True) -> list[str]:
    """BERT's basic tokenizer: bert_normalize, then bert_pre_tokenize.

    "Héllo, WORLD!" -> ["hello", ",", "world", "!"] (lowercase=True).
    """
    if not isinstance(text, str):
        raise TypeError(f"bert_basic_tokenize: text must be a str; got {type(text).__name__}")
    return bert_pre_tokenize(bert_normalize(text, lowercase, strip_accents,
                                            tokenize_chinese_chars))


@lru_cache(maxsize=65536)
def _normalize_char(ch: str, lowercase: bool, strip_accents: bool | None,
                    tokenize_chinese_chars: bool) -> str:
    """bert_normalize of one character (what it becomes: "", " ", itself, or more)."""
    return bert_normalize(ch, lowercase, strip_accents, tokenize_chinese_chars)


def bert_basic_tokenize_with_origins(text: str, lowercase: bool = True,
                                     strip_accents: bool | None = None,
                                     tokenize_chinese_chars: bool = True
                                     ) -> list[tuple[str, list[int]]]:
    """bert_basic_tokenize, with where each character of each word comes from.

    Returns (word, origin) pairs: origin[k] is the index in text of the
    character that became word[k]. "Héllo, WORLD!" -> ("hello", [0, 1, 2, 3, 4]),
    (",", [5]), ("world", [7, 8, 9, 10, 11]), ("!", [12]).

    The normalizer is applied one character at a time, each normalized
    character remembering its source. Every step of bert_normalize works
    character by character, so the words equal those of bert_basic_tokenize
    (up to the canonical reordering of stacked combining marks, which accent
    stripping removes anyway).
    """
    if not isinstance(text, str):
        raise TypeError("bert_basic_tokenize_with_origins: text must be a str; "
                        f"got {type(text).__name__}")
    chars, origin = [], []                  # normalized characters, and where each came from
    for i, ch in enumerate(text):
        for c in _normalize_char(ch, lowercase, strip_accents, tokenize_chinese_chars):
            chars.append(c)
            origin.append(i)
    words, start = [], None                 # start: where the current word began in chars
    for j, c in enumerate(chars + [" "]):   # a space at the end closes the last word
        if c.isspace() or _is_punctuation(c):
            if start is not None:
                words.append(("".join(chars[start:j]), origin[start:j]))
                start = None
            if not c.isspace():
                words.append((c, [origin[j]]))           # punctuation: a word of its own
        elif start is None:
            start = j
    return words


def clean_up_tokenization(text: str) -> str:
    """Remove the spaces that joining tokens puts before punctuation and
    English contractions, as `transformers` does: "it 's ." -> "it's."."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                           (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                           (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


# --------------------------------------------------------------------- tokenizer

class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece tokenizer.

    Args:
        vocab: dict token -> id (ids 0 .. V-1), or the list of tokens in id order
            (the lines of vocab.txt).
        do_lower_case: lower-case the text (and strip accents, unless
            strip_accents says otherwise). True for "uncased" BERT models.
        strip_accents: None (follow do_lower_case), True or False.
        tokenize_chinese_chars: make each CJK ideograph a word.
        unk_token, sep_token, pad_token, cls_token, mask_token: BERT's special
            tokens; each must be in the vocabulary (pad and mask may be None).
        max_input_chars_per_word: longer words become unk_token.
        clean_up_tokenization_spaces: decode() removes the space before
            punctuation (clean_up_tokenization), as `transformers` does.
    """

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    prefix = "##"          # marks a piece that continues a word

    def __init__(self, vocab: dict[str, int] | Sequence[str], do_lower_case: bool = True,
                 strip_accents: bool | None = None, tokenize_chinese_chars: bool = True, *,
                 unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                 mask_token="[MASK]", additional_special_tokens: Sequence[str] = (),
                 max_input_chars_per_word: int = 100, clean_up_tokenization_spaces: bool = True):
        where = f"{type(self).__name__}.__init__"
        if isinstance(vocab, (list, tuple)):
            vocab = _vocab_from_list(vocab, where)
        for role, token in (("unk_token", unk_token), ("cls_token", cls_token),
                            ("sep_token", sep_token)):
            if token is None:
                raise ValueError(f"{where}: {role} must be a token of the vocabulary; got None")
        super().__init__(vocab, additional_special_tokens, unk_token=unk_token,
                         pad_token=pad_token, cls_token=cls_token, sep_token=sep_token,
                         mask_token=mask_token)
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.max_input_chars_per_word = max_input_chars_per_word
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._cache: dict[str, list[str]] = {}          # word -> its pieces, once computed

    # ------------------------------------------------------------------ encoding

    def _wordpiece(self, word: str) -> list[str]:
        """Cut one word into vocabulary pieces, longest match first.

        From the start of the word, take the longest prefix that is in the
        vocabulary; from there, the longest "##"-prefixed continuation; and so
        on. If at some point no piece matches, the whole word is unk_token.
        """
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:                    # not even one character matched
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def _tokenize_ordinary(self, text: str, where: str) -> list[str]:
        tokens = []
        for word in bert_basic_tokenize(text, self.do_lower_case, self.strip_accents,
                                        self.tokenize_chinese_chars):
            if word not in self._cache:
                if len(self._cache) >= 100_000:          # keep memory bounded
                    self._cache.clear()
                self._cache[word] = self._wordpiece(word)
            tokens.extend(self._cache[word])
        return tokens

    def _tokenize_ordinary_with_offsets(self, text: str, where: str
                                        ) -> list[tuple[str, int, int]]:
        """Tokens of text with the character span (start, end) of each.

        A word's pieces share out its characters: "unaffable" at 0 ->
        ("un", 0, 2), ("##aff", 2, 5), ("##able", 5, 9); the "##" marker
        takes no room. An [UNK] spans its whole word. Spans are in the
        original text, before lower-casing and accent stripping: "Café" ->
        ("cafe", 0, 4).
        """
        tokens = []
        for word, origin in bert_basic_tokenize_with_origins(
                text, self.do_lower_case, self.strip_accents, self.tokenize_chinese_chars):
            if word not in self._cache:
                if len(self._cache) >= 100_000:          # keep memory bounded
                    self._cache.clear()
                self._cache[word] = self._wordpiece(word)
            pieces = self._cache[word]
            if pieces == [self.unk_token]:
                tokens.append((self.unk_token, origin[0], origin[-1] + 1))
                continue
            k = 0                                        # where the piece starts in word
            for i, piece in enumerate(pieces):
                width = len(piece) - (len(self.prefix) if i > 0 else 0)
                tokens.append((piece, origin[k], origin[k + width - 1] + 1))
                k += width
        return tokens

    def build_offsets(self, offsets_a, offsets_b=None):
        """The offsets of build_inputs' output: (0, 0) for [CLS] and each [SEP]."""
        none = [(0, 0)]
        offsets = none + list(offsets_a) + none
        if offsets_b is not None:
            offsets += list(offsets_b) + none
        return offsets

    def build_inputs(self, ids_a: list[int], ids_b: list[int] | None = None):
        """[CLS] a [SEP] (types 0), then b [SEP] (types 1) for a pair."""
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        input_ids = cls + ids_a + sep
        token_type_ids = [0] * len(input_ids)
        if ids_b is not None:
            input_ids += ids_b + sep
            token_type_ids += [1] * (len(ids_b) + 1)
        return input_ids, token_type_ids

    # ------------------------------------------------------------------ decoding

    def _tokens_to_text(self, tokens: list[str]) -> str:
        """Join the tokens with spaces, gluing each "##" piece to the one before:
        ["un", "##aff", "##able", "!"] -> "unaffable!"."""
        text = " ".join(tokens).replace(" " + self.prefix, "").strip()
        return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, text_or_iterable: str | Iterable[str], vocab_size: int,
              do_lower_case: bool = True, strip_accents: bool | None = None,
              min_frequency: int = 2, special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS
              ) -> "WordPieceTokenizer":
        """Learn a WordPiece vocabulary of (at most) vocab_size tokens from text.

        The words of the basic tokenizer are written as their first character
        and "##" continuations: "low" -> ("l", "##o", "##w"). The vocabulary
        is the special tokens, every such symbol seen, and the symbols made by
        byte-pair merges of the most frequent adjacent pairs (learn_merges),
        where merging ("l", "##o") makes "lo" and ("##o", "##w") makes "##ow".
        This is how the `tokenizers` library trains WordPiece. Every word of
        the training text can then be written with the vocabulary.

        Args:
            text_or_iterable: a str, or an iterable of str (documents).
            vocab_size: the most tokens in all.
            do_lower_case, strip_accents: as for the tokenizer (its basic tokenizer).
            min_frequency: learn no merge of a pair seen fewer times.
            special_tokens: first in the vocabulary, so "[PAD]" is id 0.
        """
        where = f"{cls.__name__}.train"
        special_tokens = list(special_tokens)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"{where}: vocab_size must be an int; got {type(vocab_size).__name__}")
        pattern = special_tokens_pattern(special_tokens)
        word_counts = Counter()
        for text in iter_texts(text_or_iterable, where):
            for piece, is_special in split_on_special_tokens(text, pattern):
                if not is_special:
                    word_counts.update(bert_basic_tokenize(piece, do_lower_case, strip_accents))
        symbol_counts = Counter()
        for word, count in word_counts.items():
            if len(word) <= 100:                 # longer words are [UNK] whatever the vocabulary
                symbol_counts[(word[0], *(cls.prefix + ch for ch in word[1:]))] += count
        alphabet = sorted({symbol for symbols in symbol_counts for symbol in symbols})
        room = vocab_size - len(special_tokens) - len(alphabet)
        if room < 0:
            raise ValueError(f"{where}: vocab_size={vocab_size} is too small for the "
                             f"{len(special_tokens)} special tokens and the {len(alphabet)} "
                             "characters of the text (and their ## forms)")
        merges = learn_merges(symbol_counts, room, join=lambda a, b: a + b[len(cls.prefix):],
                              min_frequency=min_frequency)
        tokens = special_tokens + alphabet + [a + b[len(cls.prefix):] for a, b in merges]
        tokens = list(dict.fromkeys(tokens))    # two merges may make the same token
        # "[PAD]" and "[MASK]" play their roles when listed; other special tokens have none
        optional = {"pad_token": "[PAD]", "mask_token": "[MASK]"}
        roles = {role: (token if token in special_tokens else None)
                 for role, token in optional.items()}
        extra = [t for t in special_tokens if t not in BERT_SPECIAL_TOKENS]
        return cls(tokens, do_lower_case, strip_accents, **roles,
                   additional_special_tokens=extra)

    # --------------------------------------------------------------------- files

    def save_pretrained(self, directory) -> list[str]:
        """Write vocab.txt (one token per line, in id order) and
        tokenizer_config.json into directory. Returns the paths written."""
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__}.save_pretrained: directory must be a "
                            f"path; got {type(directory).__name__}")
        os.makedirs(directory, exist_ok=True)
        vocab_path = os.path.join(directory, "vocab.txt")
        config_path = os.path.join(directory, "tokenizer_config.json")
        with open(vocab_path, "w", encoding="utf-8") as f:
            for token in self.ids_to_tokens:
                f.write(token + "\n")
        # "BertTokenizer" lets `transformers`' AutoTokenizer read the directory too.
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
                  "strip_accents": self.strip_accents,
                  "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
                  **self._role_config()}
        write_json(config_path, config)
        return [vocab_path, config_path]

    @classmethod
    def from_pretrained(cls, directory) -> "WordPieceTokenizer":
        """Read a BERT tokenizer directory: vocab.txt and, if present,
        tokenizer_config.json (do_lower_case, default True; strip_accents;
        tokenize_chinese_chars; the special tokens)."""
        where = f"{cls.__name__}.from_pretrained"
        directory = check_directory(directory, where)
        vocab_path = os.path.join(directory, "vocab.txt")
        if not os.path.isfile(vocab_path):
            raise FileNotFoundError(f"{where}: no file {vocab_path!r}")
        with open(vocab_path, encoding="utf-8") as f:
            text = f.read()
        if not text.strip():
            raise ValueError(f"{where}: {vocab_path!r} is empty; a WordPiece vocab.txt holds "
                             f"one token per line, in id order, with BERT's special tokens "
                             f"({', '.join(BERT_SPECIAL_TOKENS)}) among them")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()                          # the newline that ends the last line
        vocab = _vocab_from_list([line.rstrip("\r") for line in lines], where, vocab_path)

        config_path = os.path.join(directory, "tokenizer_config.json")
        config = read_json(config_path, where) if os.path.isfile(config_path) else {}
        options = {}
        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars",
                    "clean_up_tokenization_spaces"):
            if config.get(key) is not None:
                if not isinstance(config[key], bool):
                    raise ValueError(f"{where}: {key} in {config_path!r} must be true, false "
                                     f"or null; got {config[key]!r}")
                options[key] = config[key]
        roles = role_tokens_from_config(config, where, config_path)
        extra = additional_special_tokens_from_config(config, where, config_path)
        extra = [t for t in extra if t not in roles.values() and t not in BERT_SPECIAL_TOKENS]
        return cls(vocab, **options, **roles, additional_special_tokens=extra)


def _vocab_from_list(tokens: Sequence[str], where: str, path: str | None = None
                     ) -> dict[str, int]:
    """token -> its index, checking that tokens are non-empty and distinct.
    path: the vocab.txt they were read from, for the error messages."""
    def place(i):
        return f"line {i + 1} of {path!r}" if path else f"vocab[{i}]"

    vocab = {}
    for i, token in enumerate(tokens):
        if not isinstance(token, str) or token == "":
            raise ValueError(f"{where}: {place(i)} must be a non-empty token; got {token!r}")
        if token in vocab:
            raise ValueError(f"{where}: token {token!r} appears twice, at {place(vocab[token])} "
                             f"and {place(i)}")
        vocab[token] = i
    return vocab
