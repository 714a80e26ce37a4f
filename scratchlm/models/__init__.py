"""Models: GPT (GPT-2), the BERT family and Marian (encoder-decoder), with their configurations."""

from scratchlm.models.bert import (
    BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining,
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    BertModel,
)
from scratchlm.models.configs import BertConfig, GPTConfig, MarianConfig
from scratchlm.models.gpt import GPT
from scratchlm.models.marian import MarianModel, MarianMTModel
from scratchlm.models.outputs import ModelOutput

__all__ = [
    "BertConfig", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
    "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification",
    "BertModel", "GPT", "GPTConfig", "MarianConfig", "MarianModel", "MarianMTModel",
    "ModelOutput",
]
