"""Tokenizers: text <-> integer ids.

    CharTokenizer          one token per character; for small experiments
    ByteLevelBPETokenizer  GPT-2's byte-level byte-pair encoding (vocab.json + merges.txt)
    WordPieceTokenizer     BERT's WordPiece (vocab.txt), with BERT's basic tokenizer
    SentencePieceTokenizer SentencePiece (.model files, Marian's source.spm / target.spm
                           / vocab.json), unigram encoding and training

All of them share the interface of Tokenizer (base.py): ``encode``, ``decode``,
``__call__`` with padding and truncation, ``save_pretrained`` /
``from_pretrained``, and special tokens matched whole in the text. On the
same vocabulary files the encodings equal those of the `tokenizers` library
(and, for SentencePiece, of the `sentencepiece` library and MarianTokenizer).
"""

from scratchlm.tokenizers.base import Tokenizer, truncate_pair
from scratchlm.tokenizers.bpe import (
    ByteLevelBPETokenizer, bytes_to_unicode, gpt2_pre_tokenize, learn_merges)
from scratchlm.tokenizers.char import CharTokenizer
from scratchlm.tokenizers.sentencepiece import (
    SentencePieceModel, SentencePieceTokenizer, train_unigram)
from scratchlm.tokenizers.wordpiece import WordPieceTokenizer, bert_basic_tokenize

__all__ = ["Tokenizer", "CharTokenizer", "ByteLevelBPETokenizer", "WordPieceTokenizer",
           "bytes_to_unicode", "gpt2_pre_tokenize", "bert_basic_tokenize", "learn_merges",
           "truncate_pair", "SentencePieceTokenizer", "SentencePieceModel", "train_unigram"]
