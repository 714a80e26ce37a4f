"""Data: the built-in corpus, token files on disk, batches for pre-training, and
sentence pairs and batches for translation.

Task files for fine-tuning (classification, NER, QA) are read in
``scratchlm.finetune.tasks``.
"""

from scratchlm.data.bert import BertPretrainingBatches, mask_tokens
from scratchlm.data.causal import CausalLMBatches
from scratchlm.data.corpus import builtin_corpus, builtin_documents, train_val_split
from scratchlm.data.tokens import read_token_file, token_dtype, write_token_file
from scratchlm.data.translation import (
    NoCatalogsError, TranslationBatches, TranslationDataError, TranslationPairs, builtin_pairs,
    pad_translation_batch, read_mo, read_pairs, split_pairs)

__all__ = ["BertPretrainingBatches", "CausalLMBatches", "NoCatalogsError", "TranslationBatches",
           "TranslationDataError", "TranslationPairs", "builtin_corpus", "builtin_documents",
           "builtin_pairs", "mask_tokens", "pad_translation_batch", "read_mo", "read_pairs",
           "read_token_file", "split_pairs", "token_dtype", "train_val_split",
           "write_token_file"]
