"""The functional core: pure forward/backward pairs, one module per op family.

Every op is ``op_forward(inputs, params...) -> (out, cache)`` and
``op_backward(dout, cache) -> gradients``. The cache is a small NamedTuple
holding what the backward needs; backward returns fresh gradients in the
order documented on it. Nothing here keeps state or knows about modules.

Gradient order per op:
    linear_backward         -> dx, dW, db (db None without bias)
    embedding_backward      -> dW
    layernorm_backward      -> dx, dgamma, dbeta
    gelu/silu/relu/tanh_backward -> dx
    softmax_backward        -> dx;   log_softmax_backward -> dx
    dropout_backward        -> dx
    attention_backward      -> dq, dk, dv   (self- or cross-attention: k, v may come
                               from another sequence, the encoder's output)
    cross_entropy_backward  -> dlogits
    soft_cross_entropy_backward -> dstudent_logits (the teacher's logits are a target)
    cosine_embedding_backward   -> da, db
    mse_backward                -> da, db

Nothing here is threaded or blocked: the faster variants of these ops live
in the engine, ``scratchlm/kernels``, each tested equal to its op here.
"""

from scratchlm.functional.activations import (
    GeluCache, ReluCache, SiluCache, TanhCache, gelu_backward, gelu_forward, relu_backward,
    relu_forward, silu_backward, silu_forward, tanh_backward, tanh_forward,
)
from scratchlm.functional.attention import (
    NO_DROPOUT, AttentionCache, KVCache, attention_backward, attention_forward, causal_keep,
    merge_heads, split_heads,
)
from scratchlm.functional.dropout import DropoutCache, dropout_backward, dropout_forward
from scratchlm.functional.embedding import EmbeddingCache, embedding_backward, embedding_forward
from scratchlm.functional.layernorm import LayerNormCache, layernorm_backward, layernorm_forward
from scratchlm.functional.linear import LinearCache, linear_backward, linear_forward
from scratchlm.functional.losses import (
    CosineEmbeddingCache, CrossEntropyCache, MSECache, SoftCrossEntropyCache,
    cosine_embedding_backward, cosine_embedding_forward, cross_entropy_backward,
    cross_entropy_forward, mse_backward, mse_forward, soft_cross_entropy_backward,
    soft_cross_entropy_forward,
)
from scratchlm.functional.softmax import (
    LogSoftmaxCache, SoftmaxCache, log_softmax_backward, log_softmax_forward,
    softmax_backward, softmax_forward,
)

__all__ = [
    "AttentionCache", "CosineEmbeddingCache", "CrossEntropyCache", "DropoutCache",
    "EmbeddingCache", "GeluCache", "KVCache", "LayerNormCache", "LinearCache",
    "LogSoftmaxCache", "MSECache", "NO_DROPOUT", "ReluCache", "SoftCrossEntropyCache",
    "SoftmaxCache", "TanhCache", "attention_backward", "attention_forward", "causal_keep",
    "cosine_embedding_backward", "cosine_embedding_forward", "cross_entropy_backward",
    "cross_entropy_forward", "dropout_backward", "dropout_forward", "embedding_backward",
    "embedding_forward", "gelu_backward", "gelu_forward", "layernorm_backward",
    "layernorm_forward", "linear_backward", "linear_forward", "log_softmax_backward",
    "log_softmax_forward", "merge_heads", "mse_backward", "mse_forward", "relu_backward",
    "relu_forward", "SiluCache", "silu_backward", "silu_forward",
    "soft_cross_entropy_backward", "soft_cross_entropy_forward",
    "softmax_backward", "softmax_forward", "split_heads", "tanh_backward", "tanh_forward",
]
