"""What every scratchlm tokenizer shares: special tokens, ids, batches, padding.

A tokenizer maps text to integer ids and back. Each concrete class says only
how a stretch of ordinary text becomes tokens (``_tokenize_ordinary``) and how
tokens become text again (``_tokens_to_text``); this base class does the rest,
the same way for all of them:

    text  --split out special tokens-->  ordinary pieces and special tokens
          --tokenize each piece------->  ids                      (encode)
    ids_a, ids_b --add special tokens--> input_ids, token_type_ids (build_inputs)
    many texts --truncate, pad--------> input_ids, attention_mask  (__call__)

Special tokens (``<|endoftext|>``, ``[CLS]``, ``[MASK]``, ...) are whole
vocabulary entries. Where one appears in the input text it becomes its own id
and is never cut into pieces; the text between special tokens is tokenized as
if the special token were not there. Some special tokens also have a *role*
(``pad_token``, ``eos_token``, ...), read by the models and the data collators.

The vocabulary is a dict ``token -> id`` whose ids are exactly 0 .. V-1.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

# The roles a special token can play, as `transformers` names them.
SPECIAL_ROLES = ("unk_token", "pad_token", "bos_token", "eos_token",
                 "cls_token", "sep_token", "mask_token")


class Tokenizer:
    """Base class: a vocabulary, special tokens, and the shared encode/decode API.

    Args:
        vocab: dict token -> id, with ids exactly 0 .. V-1.
        special_tokens: tokens matched whole in the input text and dropped by
            ``decode(..., skip_special_tokens=True)``. Tokens given a role below
            are special too, whether listed here or not.
        unk_token, pad_token, bos_token, eos_token, cls_token, sep_token,
        mask_token: the token playing each role, or None. Each must be in vocab.

    Subclasses implement ``_tokenize_ordinary(text, where)`` (text with no
    special token in it -> list of tokens) and ``_tokens_to_text(tokens)``, and
    may override ``build_inputs`` to add special tokens around the ids.
    """

    # The keys __call__ returns, as in `transformers`.
    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    def __init__(self, vocab: dict[str, int], special_tokens: Sequence[str] = (), *,
                 unk_token=None, pad_token=None, bos_token=None, eos_token=None,
                 cls_token=None, sep_token=None, mask_token=None):
        where = f"{type(self).__name__}.__init__"
        self.vocab = _checked_vocab(vocab, where)
        self.ids_to_tokens = [""] * len(self.vocab)          # the inverse map, id -> token
        for token, i in self.vocab.items():
            self.ids_to_tokens[i] = token

        roles = dict(unk_token=unk_token, pad_token=pad_token, bos_token=bos_token,
                     eos_token=eos_token, cls_token=cls_token, sep_token=sep_token,
                     mask_token=mask_token)
        if isinstance(special_tokens, str):
            raise TypeError(f"{where}: special_tokens must be a list of strings; "
                            f"got the string {special_tokens!r}")
        # Ordered and without repeats: the listed special tokens, then the role tokens.
        specials = list(dict.fromkeys([*special_tokens,
                                       *(t for t in roles.values() if t is not None)]))
        for token in specials:
            if not isinstance(token, str) or token == "":
                raise TypeError(f"{where}: special tokens must be non-empty strings; "
                                f"got {token!r}")
            if token not in self.vocab:
                raise ValueError(f"{where}: special token {token!r} is not in the "
                                 f"vocabulary of {len(self.vocab)} tokens (pass None for a "
                                 "role the vocabulary has no token for)")
        self.special_tokens = specials
        self._special_ids = {self.vocab[t] for t in specials}

        self._special_pattern = special_tokens_pattern(specials)

        self.unk_token = unk_token
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.cls_token = cls_token
        self.sep_token = sep_token
        self.mask_token = mask_token
        self.pad_token = pad_token
        # Which end of a row __call__ pads: "right" (the default, as in
        # `transformers`) or "left" (for batched generation with a decoder).
        self.padding_side = "right"

    # ----------------------------------------------------------------- vocabulary

    @property
    def vocab_size(self) -> int:
        """V, the number of tokens, special tokens included."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        """A copy of the vocabulary, token -> id."""
        return dict(self.vocab)

    @property
    def pad_token(self):
        """The padding token, or None. It may be set to any token of the vocabulary
        (GPT-2 has none; ``tokenizer.pad_token = tokenizer.eos_token`` is usual)."""
        return self._pad_token

    @pad_token.setter
    def pad_token(self, token):
        if token is not None and token not in self.vocab:
            raise ValueError(f"{type(self).__name__}.pad_token: the padding token must be "
                             f"in the vocabulary; got {token!r}")
        self._pad_token = token

    def _id_or_none(self, token):
        return None if token is None else self.vocab[token]

    @property
    def pad_token_id(self):
        return self._id_or_none(self.pad_token)

    @property
    def unk_token_id(self):
        return self._id_or_none(self.unk_token)

    @property
    def bos_token_id(self):
        return self._id_or_none(self.bos_token)

    @property
    def eos_token_id(self):
        return self._id_or_none(self.eos_token)

    @property
    def cls_token_id(self):
        return self._id_or_none(self.cls_token)

    @property
    def sep_token_id(self):
        return self._id_or_none(self.sep_token)

    @property
    def mask_token_id(self):
        return self._id_or_none(self.mask_token)

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of the special tokens, in the order of ``special_tokens``."""
        return [self.vocab[t] for t in self.special_tokens]

    def convert_tokens_to_ids(self, tokens):
        """A token -> its id; a list of tokens -> a list of ids.

        A token outside the vocabulary gives the unknown token's id, or a
        ValueError where there is no unknown token.
        """
        where = f"{type(self).__name__}.convert_tokens_to_ids"
        if isinstance(tokens, str):
            return self._token_to_id(tokens, where)
        if not isinstance(tokens, (list, tuple)):
            raise TypeError(f"{where}: tokens must be a str or a list of str; "
                            f"got {type(tokens).__name__}")
        return [self._token_to_id(t, where) for t in tokens]

    def _token_to_id(self, token, where):
        if not isinstance(token, str):
            raise TypeError(f"{where}: tokens must be str; got {type(token).__name__}")
        if token in self.vocab:
            return self.vocab[token]
        if self.unk_token is not None:
            return self.vocab[self.unk_token]
        raise ValueError(f"{where}: token {token!r} is not in the vocabulary and this "
                         "tokenizer has no unk_token")

    def convert_ids_to_tokens(self, ids):
        """An id -> its token; a sequence of ids -> a list of tokens."""
        where = f"{type(self).__name__}.convert_ids_to_tokens"
        if _is_int(ids):
            return self.ids_to_tokens[self._checked_ids([ids], where)[0]]
        return [self.ids_to_tokens[i] for i in self._checked_ids(ids, where)]

    def _checked_ids(self, ids, where) -> list[int]:
        """ids as a list of Python ints, each checked to be in [0, V)."""
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or ids.dtype.kind not in "iu":
                raise TypeError(f"{where}: ids must be a 1-D integer array; got shape "
                                f"{ids.shape} and dtype {ids.dtype}")
            ids = ids.tolist()
        if not isinstance(ids, (list, tuple)):
            raise TypeError(f"{where}: ids must be a list of int or a 1-D integer array; "
                            f"got {type(ids).__name__}")
        checked = []
        for position, i in enumerate(ids):
            if not _is_int(i):
                raise TypeError(f"{where}: ids must be integers; got {type(i).__name__} "
                                f"{i!r} at position {position}")
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"{where}: ids must be in [0, {len(self.vocab)}); "
                                 f"got {int(i)} at position {position}")
            checked.append(int(i))
        return checked

    # ------------------------------------------------------------------ encoding

    def _tokenize_ordinary(self, text: str, where: str) -> list[str]:
        """Tokens of text that holds no special token (each subclass's own rule)."""
        raise NotImplementedError

    def _tokens_to_text(self, tokens: list[str]) -> str:
        """The text that a list of tokens stands for (each subclass's own rule)."""
        raise NotImplementedError

    def _tokenize(self, text, where: str, argument: str = "text") -> list[str]:
        _check_text(text, where, argument)
        tokens = []
        for piece, is_special in split_on_special_tokens(text, self._special_pattern):
            if is_special:
                tokens.append(piece)
            else:
                tokens.extend(self._tokenize_ordinary(piece, where))
        return tokens

    def tokenize(self, text: str) -> list[str]:
        """The tokens of text, with no special tokens added around them."""
        return self._tokenize(text, f"{type(self).__name__}.tokenize")

    def _tokenize_ordinary_with_offsets(self, text: str, where: str
                                        ) -> list[tuple[str, int, int]]:
        """(token, start, end) for text that holds no special token; where a
        subclass can say which characters each token comes from."""
        raise NotImplementedError(f"{where}: character offsets are not available for "
                                  f"{type(self).__name__} (WordPieceTokenizer has them)")

    def tokenize_with_offsets(self, text: str) -> list[tuple[str, int, int]]:
        """The tokens of text with the characters each comes from.

        Returns (token, start, end) triples, text[start:end] being the original
        characters of the token (before lower-casing or accent stripping), as
        the offset mapping of the `tokenizers` library gives them.
        """
        where = f"{type(self).__name__}.tokenize_with_offsets"
        return self._tokenize_with_offsets(text, where, "text")

    def _tokenize_with_offsets(self, text, where, argument):
        _check_text(text, where, argument)
        tokens, position = [], 0
        for piece, is_special in split_on_special_tokens(text, self._special_pattern):
            if is_special:
                tokens.append((piece, position, position + len(piece)))
            else:
                tokens.extend((token, position + start, position + end) for token, start, end
                              in self._tokenize_ordinary_with_offsets(piece, where))
            position += len(piece)
        return tokens

    def _text_to_ids(self, text, where: str, argument: str = "text") -> list[int]:
        vocab = self.vocab
        return [vocab[token] for token in self._tokenize(text, where, argument)]

    def build_inputs(self, ids_a: list[int], ids_b: list[int] | None = None):
        """Add the special tokens that mark a sequence (or a pair) for the model.

        Returns (input_ids, token_type_ids). Here the ids are just joined, as
        GPT-2 does: a then b, with type 0 for a and 1 for b.
        """
        ids_b = ids_b or []
        return ids_a + ids_b, [0] * len(ids_a) + [1] * len(ids_b)

    def build_offsets(self, offsets_a: list, offsets_b: list | None = None) -> list:
        """The character offsets that go with build_inputs' ids: each text's own
        offsets, and (0, 0) for every special token build_inputs adds. Here
        nothing is added, as in build_inputs."""
        return list(offsets_a) + list(offsets_b or [])

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many ids build_inputs adds to one sequence (pair=False) or a pair."""
        return len(self.build_inputs([], [] if pair else None)[0])

    def encode(self, text: str, text_pair: str | None = None,
               add_special_tokens: bool = True) -> list[int]:
        """The ids of text (and of text_pair after it), special tokens added.

        Example: a BERT vocabulary encodes ("a b", "c") as [CLS] a b [SEP] c [SEP].
        """
        where = f"{type(self).__name__}.encode"
        ids_a = self._text_to_ids(text, where, "text")
        ids_b = None if text_pair is None else self._text_to_ids(text_pair, where, "text_pair")
        if not add_special_tokens:
            return ids_a + (ids_b or [])
        return self.build_inputs(ids_a, ids_b)[0]

    # ------------------------------------------------------------------ decoding

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """The text of a list of ids (or a 1-D integer array).

        skip_special_tokens: drop the special tokens ([CLS], [PAD], <|endoftext|>, ...).
        """
        where = f"{type(self).__name__}.decode"
        ids = self._checked_ids(ids, where)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self._tokens_to_text([self.ids_to_tokens[i] for i in ids])

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        """decode() of each row of a list of id lists (or of a 2-D integer array)."""
        if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
            sequences = list(sequences)
        if not isinstance(sequences, (list, tuple)):
            raise TypeError(f"{type(self).__name__}.batch_decode: sequences must be a list "
                            f"of id lists or a 2-D integer array; got {type(sequences).__name__}")
        return [self.decode(ids, skip_special_tokens) for ids in sequences]

    # --------------------------------------------------------- batches: __call__

    def __call__(self, text, text_pair=None, padding=False, truncation=False,
                 max_length: int | None = None, return_tensors: str | None = None,
                 return_offsets_mapping: bool = False):
        """Encode one text or a batch, with truncation and padding, as `transformers` does.

        Args:
            text: a str, or a list of str (a batch).
            text_pair: None, or the second text of each pair (a str for a str,
                a list as long as text for a list).
            padding: False (no padding); True or "longest" (pad every row to
                the longest row); "max_length" (pad to max_length).
            truncation: False, or True / "longest_first": cut rows to max_length
                ids in all, special tokens included; for a pair, the longer
                text loses tokens first (see truncate_pair).
            max_length: the length used by truncation and by padding="max_length".
            return_tensors: None (Python lists) or "np" (int64 arrays of shape (B, T)).
            return_offsets_mapping: also return "offset_mapping", the (start, end)
                characters of each token in its own text (text or text_pair),
                (0, 0) for special tokens and padding; (B, T, 2) with "np".

        Returns: a dict with "input_ids", "attention_mask" (1 for a real token,
        0 for padding) and, where the model takes them ("token_type_ids" in
        model_input_names), "token_type_ids". For a single str without
        return_tensors each value is one list; for a batch, a list of lists.
        """
        where = f"{type(self).__name__}.__call__"
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        if text_pair is None:
            pairs = [None] * len(texts)
        elif batched:
            if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(texts):
                got = (f"a list of {len(text_pair)}" if isinstance(text_pair, (list, tuple))
                       else type(text_pair).__name__)
                raise ValueError(f"{where}: text_pair must be a list as long as text "
                                 f"({len(texts)}); got {got}")
            pairs = list(text_pair)
        else:
            pairs = [text_pair]
        pad_to = _padding_strategy(padding, max_length, where)
        truncate = _truncation_strategy(truncation, max_length, where)
        if return_tensors not in (None, "np"):
            raise ValueError(f"{where}: return_tensors must be None or 'np'; "
                             f"got {return_tensors!r}")
        if pad_to is not None and self.pad_token is None:
            raise ValueError(f"{where}: padding needs a pad token, and this tokenizer has "
                             "none; set one first, e.g. tokenizer.pad_token = "
                             "tokenizer.eos_token")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"{where}: padding_side must be 'right' or 'left'; "
                             f"got {self.padding_side!r}")

        rows_ids, rows_types, rows_offsets = [], [], []
        for a, b in zip(texts, pairs):
            if return_offsets_mapping:
                tokens_a = self._tokenize_with_offsets(a, where, "text")
                tokens_b = None if b is None else self._tokenize_with_offsets(
                    b, where, "text_pair")
                ids_a = [self.vocab[token] for token, _, _ in tokens_a]
                ids_b = None if b is None else [self.vocab[token] for token, _, _ in tokens_b]
            else:
                ids_a = self._text_to_ids(a, where, "text")
                ids_b = None if b is None else self._text_to_ids(b, where, "text_pair")
            if truncate:
                budget = max_length - self.num_special_tokens_to_add(pair=b is not None)
                if budget < 0:
                    raise ValueError(f"{where}: max_length={max_length} leaves no room for "
                                     f"the {max_length - budget} special tokens of each row")
                ids_a, ids_b = truncate_pair(ids_a, ids_b, budget)
            input_ids, token_type_ids = self.build_inputs(ids_a, ids_b)
            rows_ids.append(input_ids)
            rows_types.append(token_type_ids)
            if return_offsets_mapping:              # cut the offsets as the ids were cut
                offsets_a = [(s, e) for _, s, e in tokens_a[:len(ids_a)]]
                offsets_b = None if b is None else [(s, e) for _, s, e in
                                                    tokens_b[:len(ids_b)]]
                rows_offsets.append(self.build_offsets(offsets_a, offsets_b))
        rows_mask = [[1] * len(ids) for ids in rows_ids]

        if pad_to is not None:
            longest = max((len(ids) for ids in rows_ids), default=0)
            # As in `transformers`, padding="max_length" never cuts a longer row.
            length = longest if pad_to == "longest" else max(max_length, longest)
            rows_ids = [self._pad(ids, length, self.pad_token_id) for ids in rows_ids]
            rows_types = [self._pad(types, length, 0) for types in rows_types]
            rows_mask = [self._pad(mask, length, 0) for mask in rows_mask]
            rows_offsets = [self._pad(offsets, length, (0, 0)) for offsets in rows_offsets]

        columns = {"input_ids": rows_ids, "token_type_ids": rows_types,
                   "attention_mask": rows_mask}
        encoded = {name: columns[name] for name in self.model_input_names}
        if return_offsets_mapping:
            encoded["offset_mapping"] = rows_offsets
        if return_tensors == "np":
            lengths = sorted({len(ids) for ids in rows_ids})
            if len(lengths) > 1:
                raise ValueError(f"{where}: rows have different lengths {lengths}, so they "
                                 "make no array; pass padding=True (or truncation with "
                                 "padding='max_length')")
            width = lengths[0] if lengths else 0
            return {name: np.array(rows, dtype=np.int64).reshape(
                        (len(rows), width) + ((2,) if name == "offset_mapping" else ()))
                    for name, rows in encoded.items()}                  # (B, T), (B, T, 2)
        if not batched:
            return {name: rows[0] for name, rows in encoded.items()}
        return encoded

    def _pad(self, row: list[int], length: int, value: int) -> list[int]:
        padding = [value] * (length - len(row))
        return row + padding if self.padding_side == "right" else padding + row

    # --------------------------------------------------------------- files

    def _role_config(self) -> dict:
        """The special-token entries of tokenizer_config.json, as `transformers` writes them."""
        config = {role: getattr(self, role) for role in SPECIAL_ROLES
                  if getattr(self, role) is not None}
        with_role = set(config.values())
        config["additional_special_tokens"] = [t for t in self.special_tokens
                                               if t not in with_role]
        return config


# ------------------------------------------- truncation, padding, files

def truncate_pair(ids_a: list[int], ids_b: list[int] | None, budget: int):
    """Cut ids_a (and ids_b) to at most budget ids in all, "longest first".

    A single sequence keeps its first ``budget`` ids. A pair is cut as the
    `tokenizers` library cuts it: each side is entitled to half the budget;
    a side shorter than its half keeps all its ids and leaves the rest to the
    other side; an odd id left over goes to the longer side (to the second
    on a tie). E.g. lengths (5, 5), budget 7 -> (3, 4); (8, 3), budget 6 -> (3, 3).
    """
    if ids_b is None:
        return ids_a[:budget], None
    n_a, n_b = len(ids_a), len(ids_b)
    if n_a + n_b <= budget:
        return ids_a, ids_b
    swap = n_a > n_b                         # work with n_short <= n_long
    n_short, n_long = (n_b, n_a) if swap else (n_a, n_b)
    n_long = max(n_short, budget - n_short) if n_short <= budget else n_short
    if n_short + n_long > budget:            # both sides are longer than half the budget
        n_short = budget // 2
        n_long = n_short + budget % 2
    keep_a, keep_b = (n_long, n_short) if swap else (n_short, n_long)
    return ids_a[:keep_a], ids_b[:keep_b]


def special_tokens_pattern(special_tokens: Sequence[str]) -> re.Pattern | None:
    """A regex matching any of the special tokens, or None where there are none.

    Longest first, so that of two special tokens starting at the same place
    the longer wins; the regex scans left to right, so the leftmost wins first.
    """
    if not special_tokens:
        return None
    alternatives = sorted(special_tokens, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")


def split_on_special_tokens(text: str, pattern: re.Pattern | None) -> list[tuple[str, bool]]:
    """Cut text at the special tokens: a list of (piece, is_special_token).

    E.g. "a<|endoftext|>b" -> [("a", False), ("<|endoftext|>", True), ("b", False)].
    """
    if pattern is None:
        return [(text, False)] if text else []
    # With one group in the pattern, re.split alternates: text, match, text, ...
    parts = pattern.split(text)
    return [(part, i % 2 == 1) for i, part in enumerate(parts) if part]


def _padding_strategy(padding, max_length, where):
    """None (no padding), "longest" or "max_length"."""
    if padding is False or padding is None or padding == "do_not_pad":
        return None
    if padding is True or padding == "longest":
        return "longest"
    if padding == "max_length":
        _check_max_length(max_length, where, 'padding="max_length"')
        return "max_length"
    raise ValueError(f"{where}: padding must be False, True, 'longest' or 'max_length'; "
                     f"got {padding!r}")


def _truncation_strategy(truncation, max_length, where) -> bool:
    if truncation is False or truncation is None or truncation == "do_not_truncate":
        return False
    if truncation is True or truncation == "longest_first":
        _check_max_length(max_length, where, "truncation")
        return True
    raise ValueError(f"{where}: truncation must be False, True or 'longest_first'; "
                     f"got {truncation!r}")


def _check_max_length(max_length, where, needed_by):
    if max_length is None:
        raise ValueError(f"{where}: {needed_by} needs max_length; got max_length=None")
    if not _is_int(max_length) or max_length < 1:
        raise ValueError(f"{where}: max_length must be a positive int; got {max_length!r}")


def _is_int(x) -> bool:
    """An integer, but not a bool (True is an int in Python, never an id here)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_text(text, where, argument):
    if not isinstance(text, str):
        raise TypeError(f"{where}: {argument} must be a str; got {type(text).__name__}")


def _checked_vocab(vocab, where) -> dict[str, int]:
    """A copy of vocab, checked to map distinct str tokens to exactly the ids 0 .. V-1."""
    if not isinstance(vocab, dict):
        raise TypeError(f"{where}: vocab must be a dict token -> id; got {type(vocab).__name__}")
    for token, i in vocab.items():
        if not isinstance(token, str) or not _is_int(i):
            raise TypeError(f"{where}: vocab must map str to int; got {token!r} -> {i!r}")
    ids = sorted(int(i) for i in vocab.values())
    if ids != list(range(len(ids))):
        missing = sorted(set(range(len(ids))) - set(ids))[:5]
        raise ValueError(f"{where}: vocab ids must be exactly 0 .. {len(ids) - 1}, each once; "
                         f"ids {missing} are missing (repeated or out-of-range ids?)")
    return {token: int(i) for token, i in vocab.items()}


def iter_texts(text_or_iterable, where) -> Iterable[str]:
    """The texts of a training corpus: one str, or an iterable of str (documents)."""
    if isinstance(text_or_iterable, str):
        yield text_or_iterable
        return
    try:
        iterator = iter(text_or_iterable)
    except TypeError:
        raise TypeError(f"{where}: text_or_iterable must be a str or an iterable of str; "
                        f"got {type(text_or_iterable).__name__}") from None
    for position, text in enumerate(iterator):
        if not isinstance(text, str):
            raise TypeError(f"{where}: text_or_iterable must hold str; got "
                            f"{type(text).__name__} at position {position}")
        yield text


def read_json(path: str, where: str):
    """The JSON object in the file at path; a clear error when it is missing or broken."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: no file {path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: {path!r} is not valid JSON: {error}") from None


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def check_directory(directory, where: str) -> str:
    """directory as a str path; a clear error when it is not an existing directory."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{where}: directory must be a path; got {type(directory).__name__}")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{where}: no directory {directory!r}")
    return directory


def role_tokens_from_config(config: dict, where: str, path: str) -> dict:
    """The role tokens in a tokenizer_config.json (str, or {"content": str} as older
    `transformers` versions write them). Only roles present in the file are returned."""
    roles = {}
    for role in SPECIAL_ROLES:
        if role not in config or config[role] is None:
            continue
        value = config[role]
        if isinstance(value, dict) and isinstance(value.get("content"), str):
            value = value["content"]
        if not isinstance(value, str):
            raise ValueError(f"{where}: {role} in {path!r} must be a string; got {value!r}")
        roles[role] = value
    return roles


def additional_special_tokens_from_config(config: dict, where: str, path: str) -> list[str]:
    """Special tokens without a role in a tokenizer_config.json: the list
    "additional_special_tokens" and the entries of "added_tokens_decoder" marked special."""
    tokens = []
    for value in config.get("additional_special_tokens") or []:
        if isinstance(value, dict):
            value = value.get("content")
        if not isinstance(value, str):
            raise ValueError(f"{where}: additional_special_tokens in {path!r} must hold "
                             f"strings; got {value!r}")
        tokens.append(value)
    for entry in (config.get("added_tokens_decoder") or {}).values():
        if isinstance(entry, dict) and entry.get("special"):
            if not isinstance(entry.get("content"), str):
                raise ValueError(f"{where}: added_tokens_decoder in {path!r} has a special "
                                 f"token without content: {entry!r}")
            tokens.append(entry["content"])
    return tokens
