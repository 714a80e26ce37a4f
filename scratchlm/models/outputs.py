"""Model outputs, named as transformers names them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Array = Any


@dataclass
class ModelOutput:
    """What a model's forward returns; fields that do not apply stay None.

    loss: 0-d array (``float(out.loss)`` works) when labels were given.
    logits: LM / classification / token logits.
    prediction_logits, seq_relationship_logits: BertForPreTraining.
    start_logits, end_logits: BertForQuestionAnswering.
    last_hidden_state, pooler_output: BertModel.
    hidden_states: with output_hidden_states=True, a tuple of L + 1 (B, T, C)
        arrays: the embeddings' output, then each layer's (GPT's last after ln_f).
    encoder_last_hidden_state: Marian, the encoder's output (B, S, C).
    attentions: with output_attentions=True, a tuple of L (B, H, T, T) arrays,
        each layer's attention probabilities (after dropout, as transformers).
    """

    loss: Array | None = None
    logits: Array | None = None
    prediction_logits: Array | None = None
    seq_relationship_logits: Array | None = None
    start_logits: Array | None = None
    end_logits: Array | None = None
    last_hidden_state: Array | None = None
    pooler_output: Array | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    encoder_last_hidden_state: Array | None = None

    def __getitem__(self, key):
        return getattr(self, key)
