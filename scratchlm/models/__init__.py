"""Models: GPT (GPT-2) and the BERT family, with their configurations."""

from scratchlm.models.bert import (
    BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining,
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    BertModel,
)
from scratchlm.models.configs import BertConfig, GPTConfig
from scratchlm.models.gpt import GPT
from scratchlm.models.outputs import ModelOutput

__all__ = [
    "BertConfig", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
    "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification",
    "BertModel", "GPT", "GPTConfig", "ModelOutput",
]
