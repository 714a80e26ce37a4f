"""Parameters, modules, and the layers that compose the functional pairs."""

from scratchlm.nn.layers import (
    ACTIVATIONS, Activation, Dropout, Embedding, FeedForward, LayerNorm, Linear,
    MultiHeadSelfAttention, TransformerBlock,
)
from scratchlm.nn.module import Module, ModuleList
from scratchlm.nn.parameter import Parameter

__all__ = [
    "ACTIVATIONS", "Activation", "Dropout", "Embedding", "FeedForward", "LayerNorm", "Linear",
    "Module", "ModuleList", "MultiHeadSelfAttention", "Parameter", "TransformerBlock",
]
