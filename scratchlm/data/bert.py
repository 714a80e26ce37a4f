"""BERT pre-training data: masked-LM corruption and next-sentence pairs.

Masked LM (the 80/10/10 rule of the BERT paper). Choose 15% of the tokens
that are neither special ([CLS], [SEP], ...) nor padding. Of those:
    80% are replaced by [MASK],
    10% by a random token of the vocabulary,
    10% are left unchanged.
The model must predict the original token at every chosen position; the
labels are -100 everywhere else, so the loss counts chosen positions only.

Next-sentence prediction. Pair a segment A with a segment B that follows it
in the same document (label 0, "is next") half the time, and with a segment
from a random other document (label 1, "random") the other half:
    [CLS] A [SEP] B [SEP]  with token_type_ids 0 ... 0 1 ... 1
"""

from __future__ import annotations

import numpy as np


def mask_tokens(input_ids, special_mask, rng, *, mask_token_id, vocab_size,
                mlm_probability=0.15):
    """Corrupt a batch for masked-LM training.

    Args:
        input_ids: (B, T) int array (not modified).
        special_mask: (B, T) bool, True at special tokens and padding (never chosen).
        rng: a NumPy Generator.
    Returns: (inputs, labels): the corrupted ids and the targets (-100 where not chosen).
    """
    input_ids = np.asarray(input_ids)
    chosen = (rng.random(input_ids.shape) < mlm_probability) & ~special_mask
    labels = np.where(chosen, input_ids, -100)
    inputs = input_ids.copy()
    roll = rng.random(input_ids.shape)
    to_mask = chosen & (roll < 0.8)                     # 80%: [MASK]
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)   # 10%: a random token
    inputs[to_mask] = mask_token_id                     # the other 10%: unchanged
    inputs[to_random] = rng.integers(0, vocab_size, int(to_random.sum()))
    return inputs, labels


class BertPretrainingBatches:
    """Batches for BertForPreTraining from documents of token ids.

    Each example: a random document and position give segment A; B is the
    continuation (label 0) or a segment of another document (label 1), with
    probability 1/2 each; the pair is truncated to fit ``max_length``, padded,
    and masked with ``mask_tokens``. The random state is the only data
    position, so ``state_dict`` / ``load_state_dict`` resume exactly.
    """

    def __init__(self, documents, tokenizer, max_length: int, batch_size: int, seed: int = 0,
                 mlm_probability: float = 0.15):
        self.docs = [np.asarray(d, dtype=np.int64) for d in documents if len(d) >= 2]
        if len(self.docs) < 2:
            raise ValueError("BertPretrainingBatches: need at least two documents of two or "
                             "more tokens (next-sentence pairs take B from another document)")
        if max_length < 5:
            raise ValueError(f"BertPretrainingBatches: max_length must be >= 5; got {max_length}")
        for role in ("cls_token_id", "sep_token_id", "pad_token_id", "mask_token_id"):
            if getattr(tokenizer, role) is None:
                raise ValueError(f"BertPretrainingBatches: the tokenizer has no {role[:-3]}")
        self.tok, self.max_length, self.batch_size = tokenizer, max_length, batch_size
        self.mlm_probability = mlm_probability
        self.special_ids = np.array(sorted(tokenizer.all_special_ids), dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def _segment(self, doc, start, length):
        return doc[start:start + length]

    def _pair(self):
        rng, budget = self.rng, self.max_length - 3        # [CLS] A [SEP] B [SEP]
        d = int(rng.integers(len(self.docs)))
        doc = self.docs[d]
        len_a = min(int(rng.integers(1, max(2, budget // 2) + 1)), len(doc) - 1)
        start = int(rng.integers(0, len(doc) - len_a))  # leaves >= 1 token after A
        a = doc[start:start + len_a]
        is_random = rng.random() < 0.5
        len_b = budget - len(a)
        if is_random:
            other = int(rng.integers(len(self.docs) - 1))
            other += other >= d                             # any document but this one
            odoc = self.docs[other]
            s = int(rng.integers(0, max(1, len(odoc) - 1)))
            b, label = odoc[s:s + len_b], 1
        else:
            b, label = doc[start + len(a):start + len(a) + len_b], 0
        return a, b, label

    def next_batch(self):
        """A dict of (B, T) int64 arrays ready for BertForPreTraining, T = max_length."""
        B, T, tok = self.batch_size, self.max_length, self.tok
        ids = np.full((B, T), tok.pad_token_id, dtype=np.int64)
        types = np.zeros((B, T), dtype=np.int64)
        attention = np.zeros((B, T), dtype=np.int64)
        nsp = np.zeros(B, dtype=np.int64)
        for i in range(B):
            a, b, nsp[i] = self._pair()
            row = np.concatenate([[tok.cls_token_id], a, [tok.sep_token_id], b,
                                  [tok.sep_token_id]])
            ids[i, :len(row)] = row
            types[i, len(a) + 2:len(row)] = 1
            attention[i, :len(row)] = 1
        special = np.isin(ids, self.special_ids) | (attention == 0)
        inputs, labels = mask_tokens(ids, special, self.rng, mask_token_id=tok.mask_token_id,
                                     vocab_size=tok.vocab_size,
                                     mlm_probability=self.mlm_probability)
        return {"input_ids": inputs, "token_type_ids": types, "attention_mask": attention,
                "labels": labels, "next_sentence_label": nsp}

    def fixed_batches(self, n_batches: int, seed: int = 1234):
        """A fixed list of batches (for evaluation: the same examples every time)."""
        saved, self.rng = self.rng, np.random.default_rng(seed)
        try:
            return [self.next_batch() for _ in range(n_batches)]
        finally:
            self.rng = saved

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
