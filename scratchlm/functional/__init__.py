"""The functional core: pure forward/backward pairs, one module per op family.

Every op is ``op_forward(inputs, params...) -> (out, cache)`` and
``op_backward(dout, cache) -> gradients``. The cache is a small NamedTuple
holding what the backward needs; backward returns fresh gradients in the
order documented on it. Nothing here keeps state or knows about modules.

Gradient order per op:
    linear_backward         -> dx, dW, db (db None without bias)
    embedding_backward      -> dW
    layernorm_backward      -> dx, dgamma, dbeta
    gelu/relu/tanh_backward -> dx
    softmax_backward        -> dx;   log_softmax_backward -> dx
    dropout_backward        -> dx
    attention_backward      -> dq, dk, dv
    cross_entropy_backward  -> dlogits

Fast variants live beside their plain ops, with the same arguments, caches
and gradients (each is tested equal to its plain op): ``linear_*_fast``,
``attention_*_fast``, ``gelu_*_fast``, ``layernorm_*_fast``, ``cross_entropy_*_fast``,
``embedding_backward_fast``, and the memory-efficient
``attention_*_blockwise``. Layers choose them (see ``backend.fast_path``);
the plain ops are the reference the docstrings teach.
"""

from scratchlm.functional.activations import (
    GeluCache, ReluCache, TanhCache, gelu_backward, gelu_backward_fast, gelu_forward,
    gelu_forward_fast, relu_backward, relu_forward, tanh_backward, tanh_forward,
)
from scratchlm.functional.attention import (
    AttentionCache, BlockwiseAttentionCache, KVCache, attention_backward,
    attention_backward_blockwise, attention_backward_fast, attention_forward,
    attention_forward_blockwise, attention_forward_fast, causal_keep, merge_heads,
    split_heads,
)
from scratchlm.functional.dropout import DropoutCache, dropout_backward, dropout_forward
from scratchlm.functional.embedding import (
    EmbeddingCache, embedding_backward, embedding_backward_fast, embedding_forward,
)
from scratchlm.functional.layernorm import (
    LayerNormCache, layernorm_backward, layernorm_backward_fast, layernorm_forward,
    layernorm_forward_fast,
)
from scratchlm.functional.linear import (
    LinearCache, linear_backward, linear_backward_fast, linear_forward, linear_forward_fast,
)
from scratchlm.functional.losses import (
    CrossEntropyCache, cross_entropy_backward, cross_entropy_backward_fast,
    cross_entropy_forward, cross_entropy_forward_fast,
)
from scratchlm.functional.softmax import (
    LogSoftmaxCache, SoftmaxCache, log_softmax_backward, log_softmax_forward,
    softmax_backward, softmax_forward,
)

__all__ = [
    "AttentionCache", "BlockwiseAttentionCache", "CrossEntropyCache", "DropoutCache",
    "EmbeddingCache", "GeluCache", "KVCache", "LayerNormCache", "LinearCache",
    "LogSoftmaxCache", "ReluCache", "SoftmaxCache", "TanhCache", "attention_backward",
    "attention_backward_blockwise", "attention_backward_fast", "attention_forward",
    "attention_forward_blockwise", "attention_forward_fast", "causal_keep",
    "cross_entropy_backward", "cross_entropy_backward_fast", "cross_entropy_forward",
    "cross_entropy_forward_fast", "dropout_backward", "dropout_forward",
    "embedding_backward", "embedding_backward_fast", "embedding_forward", "gelu_backward",
    "gelu_backward_fast", "gelu_forward", "gelu_forward_fast", "layernorm_backward",
    "layernorm_backward_fast", "layernorm_forward", "layernorm_forward_fast",
    "linear_backward", "linear_backward_fast", "linear_forward", "linear_forward_fast",
    "log_softmax_backward", "log_softmax_forward", "merge_heads", "relu_backward",
    "relu_forward", "softmax_backward", "softmax_forward", "split_heads", "tanh_backward",
    "tanh_forward",
]
