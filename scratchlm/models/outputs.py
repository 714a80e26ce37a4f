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
    """

    loss: Array | None = None
    logits: Array | None = None
    prediction_logits: Array | None = None
    seq_relationship_logits: Array | None = None
    start_logits: Array | None = None
    end_logits: Array | None = None
    last_hidden_state: Array | None = None
    pooler_output: Array | None = None

    def __getitem__(self, key):
        return getattr(self, key)
