"""Character-level tokenizer: one token per character.

The simplest tokenizer there is. The vocabulary is the special tokens, then
the sorted set of characters of a training text:

    CharTokenizer.train("hello")  ->  vocab {"e": 0, "h": 1, "l": 2, "o": 3}
    encode("hole") -> [1, 3, 2, 0]

Sequences are long (one id per character) but the vocabulary is tiny, which
suits small models trained in minutes on the built-in corpus.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from scratchlm.tokenizers.base import (
    SPECIAL_ROLES, Tokenizer, check_directory, iter_texts, read_json, write_json)


class CharTokenizer(Tokenizer):
    """One token per character.

    Args:
        vocab: dict token -> id (ids 0 .. V-1): single characters, and the
            special tokens, which may be longer ("<pad>").
        special_tokens: tokens matched whole in the text.
        unk_token: the token for characters outside the vocabulary; None (the
            default) makes such a character an error.
        pad_token, bos_token, eos_token: tokens for those roles, or None.
    """

    def __init__(self, vocab: dict[str, int], special_tokens: Sequence[str] = (), *,
                 unk_token=None, pad_token=None, bos_token=None, eos_token=None):
        super().__init__(vocab, special_tokens, unk_token=unk_token, pad_token=pad_token,
                         bos_token=bos_token, eos_token=eos_token)
        special = set(self.special_tokens)
        long_tokens = [t for t in self.vocab if len(t) != 1 and t not in special]
        if long_tokens:
            raise ValueError(f"{type(self).__name__}.__init__: tokens other than special "
                             f"tokens must be single characters; got {long_tokens[:3]}")

    @classmethod
    def train(cls, text_or_iterable: str | Iterable[str], special_tokens: Sequence[str] = (),
              *, unk_token=None, pad_token=None, bos_token=None, eos_token=None
              ) -> "CharTokenizer":
        """Build the vocabulary of a text: the special tokens (ids 0, 1, ...),
        then every character of the text, in sorted order.

        Role tokens (unk_token, ...) are special tokens, listed or not:
        ``CharTokenizer.train(text, pad_token="<pad>")`` gives "<pad>" id 0.
        """
        where = f"{cls.__name__}.train"
        characters = set()
        for text in iter_texts(text_or_iterable, where):
            characters.update(text)
        roles = [unk_token, pad_token, bos_token, eos_token]
        specials = list(dict.fromkeys([*special_tokens, *(t for t in roles if t is not None)]))
        tokens = list(dict.fromkeys(specials + sorted(characters)))
        vocab = {token: i for i, token in enumerate(tokens)}
        return cls(vocab, specials, unk_token=unk_token, pad_token=pad_token,
                   bos_token=bos_token, eos_token=eos_token)

    def _tokenize_ordinary(self, text: str, where: str) -> list[str]:
        if self.unk_token is not None:
            return [c if c in self.vocab else self.unk_token for c in text]
        for c in text:
            if c not in self.vocab:
                raise ValueError(f"{where}: character {c!r} (U+{ord(c):04X}) is not in the "
                                 "vocabulary; build it from text that has this character, "
                                 "or give the tokenizer an unk_token")
        return list(text)

    def _tokens_to_text(self, tokens: list[str]) -> str:
        return "".join(tokens)

    # --------------------------------------------------------------------- files

    def save_pretrained(self, directory) -> list[str]:
        """Write vocab.json (token -> id) and tokenizer_config.json (the special
        tokens and their roles) into directory. Returns the paths written."""
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__}.save_pretrained: directory must be a "
                            f"path; got {type(directory).__name__}")
        os.makedirs(directory, exist_ok=True)
        vocab_path = os.path.join(directory, "vocab.json")
        config_path = os.path.join(directory, "tokenizer_config.json")
        write_json(vocab_path, self.vocab)
        write_json(config_path, {"tokenizer_class": "CharTokenizer", **self._role_config()})
        return [vocab_path, config_path]

    @classmethod
    def from_pretrained(cls, directory) -> "CharTokenizer":
        """Read what save_pretrained wrote: vocab.json and tokenizer_config.json."""
        where = f"{cls.__name__}.from_pretrained"
        directory = check_directory(directory, where)
        vocab_path = os.path.join(directory, "vocab.json")
        config_path = os.path.join(directory, "tokenizer_config.json")
        vocab = read_json(vocab_path, where)
        if not isinstance(vocab, dict):
            raise ValueError(f"{where}: {vocab_path!r} must hold a JSON object token -> id; "
                             f"got {type(vocab).__name__}")
        config = read_json(config_path, where)
        if config.get("tokenizer_class") != "CharTokenizer":
            raise ValueError(f"{where}: {config_path!r} describes a "
                             f"{config.get('tokenizer_class')!r}, not a 'CharTokenizer'")
        used = ("unk_token", "pad_token", "bos_token", "eos_token")
        roles = {role: config[role] for role in used if config.get(role)}
        unexpected = [role for role in SPECIAL_ROLES if role not in used and config.get(role)]
        if unexpected:
            raise ValueError(f"{where}: {config_path!r} sets {unexpected}, which a "
                             "CharTokenizer does not use")
        return cls(vocab, config.get("additional_special_tokens", []), **roles)
