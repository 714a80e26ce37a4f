"""Causal-LM batches: random windows of a token stream."""

from __future__ import annotations

import numpy as np


class CausalLMBatches:
    """Random (B, T) windows of a 1-D token array (a memory map is fine).

    Each batch gives ``input_ids`` and ``labels``, both the window itself: the
    model shifts the labels inside (position t predicts token t+1), as
    transformers' causal-LM models do. The random state is the only data
    position, so ``state_dict`` / ``load_state_dict`` resume exactly.
    """

    def __init__(self, tokens, block_size: int, batch_size: int, seed: int = 0):
        if len(tokens) < block_size + 1:
            raise ValueError(f"CausalLMBatches: the token stream ({len(tokens)} tokens) must be "
                             f"longer than block_size={block_size}; use a smaller --block-size "
                             "or more text")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.rng = np.random.default_rng(seed)

    def next_batch(self):
        """A dict with int64 ``input_ids`` and ``labels`` of shape (B, T)."""
        T = self.block_size
        starts = self.rng.integers(0, len(self.tokens) - T, size=self.batch_size)
        x = np.stack([np.asarray(self.tokens[s:s + T], dtype=np.int64) for s in starts])
        return {"input_ids": x, "labels": x}

    def fixed_batches(self, n_batches: int, seed: int = 1234):
        """A fixed list of batches (for evaluation: the same windows every time)."""
        rng, self_rng = np.random.default_rng(seed), self.rng
        self.rng = rng
        try:
            return [self.next_batch() for _ in range(n_batches)]
        finally:
            self.rng = self_rng

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
