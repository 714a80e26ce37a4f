"""Data: the built-in corpus, token files on disk, and batches for pre-training.

Task files for fine-tuning (classification, NER, QA) are read in
``scratchlm.finetune.tasks``.
"""

from scratchlm.data.bert import BertPretrainingBatches, mask_tokens
from scratchlm.data.causal import CausalLMBatches
from scratchlm.data.corpus import builtin_corpus, builtin_documents, train_val_split
from scratchlm.data.tokens import read_token_file, token_dtype, write_token_file

__all__ = ["BertPretrainingBatches", "CausalLMBatches", "mask_tokens", "builtin_corpus",
           "builtin_documents", "read_token_file", "token_dtype", "train_val_split",
           "write_token_file"]
