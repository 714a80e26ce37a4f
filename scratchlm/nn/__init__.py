"""Parameters, modules, and the layers that compose the functional pairs."""

from scratchlm.nn.layers import (
    ACTIVATIONS, Activation, CrossEntropyLoss, Dropout, Embedding, FeedForward, LayerNorm,
    Linear, MultiHeadAttention, MultiHeadSelfAttention, TiedEmbedding, TiedLMHead,
    TransformerBlock,
)
from scratchlm.nn.module import Module, ModuleList
from scratchlm.nn.parameter import Parameter

__all__ = [
    "ACTIVATIONS", "Activation", "CrossEntropyLoss", "Dropout", "Embedding", "FeedForward",
    "LayerNorm", "Linear", "Module", "ModuleList", "MultiHeadAttention", "MultiHeadSelfAttention",
    "Parameter", "TiedEmbedding", "TiedLMHead", "TransformerBlock",
]
