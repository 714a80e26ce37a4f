"""The CPU engine: the textbook ops cut into cache-sized blocks over scratchlm's threads.

    threads.py      the thread pool (parallel_for), the BLAS single-threaded inside it
    blas.py, mkl.py matrix products: Intel MKL's sgemm over the threads where installed
    linear.py  layernorm.py  activations.py  losses.py  embedding.py  attention.py
                    each op's fast variant, with its textbook op's arguments, cache
                    and gradients (tested equal)
    optim.py        AdamW over flat buffers, block by block
    process.py      tune_process(): process settings for an application to apply

Importing this package starts no thread and changes no setting.
"""

from scratchlm._lazy import lazy_names

_WHERE = {
    "BlockwiseAttentionCache": "scratchlm.kernels.cpu.attention",
    "adamw_flat_update": "scratchlm.kernels.cpu.optim",
    "attention_backward_any": "scratchlm.kernels.cpu.attention",
    "attention_backward_blockwise": "scratchlm.kernels.cpu.attention",
    "attention_backward_fast": "scratchlm.kernels.cpu.attention",
    "attention_forward_blockwise": "scratchlm.kernels.cpu.attention",
    "attention_forward_fast": "scratchlm.kernels.cpu.attention",
    "cross_entropy_backward_fast": "scratchlm.kernels.cpu.losses",
    "cross_entropy_forward_fast": "scratchlm.kernels.cpu.losses",
    "embedding_backward_fast": "scratchlm.kernels.cpu.embedding",
    "gelu_backward_fast": "scratchlm.kernels.cpu.activations",
    "gelu_forward_fast": "scratchlm.kernels.cpu.activations",
    "layernorm_backward_fast": "scratchlm.kernels.cpu.layernorm",
    "layernorm_forward_fast": "scratchlm.kernels.cpu.layernorm",
    "linear_backward_fast": "scratchlm.kernels.cpu.linear",
    "linear_forward_fast": "scratchlm.kernels.cpu.linear",
    "matmul": "scratchlm.kernels.cpu.blas",
    "num_threads": "scratchlm.kernels.cpu.threads",
    "parallel_for": "scratchlm.kernels.cpu.threads",
    "set_num_threads": "scratchlm.kernels.cpu.threads",
    "tune_process": "scratchlm.kernels.cpu.process",
}

__all__ = [
    "BlockwiseAttentionCache", "adamw_flat_update", "attention_backward_any",
    "attention_backward_blockwise", "attention_backward_fast", "attention_forward_blockwise",
    "attention_forward_fast", "cross_entropy_backward_fast", "cross_entropy_forward_fast",
    "embedding_backward_fast", "gelu_backward_fast", "gelu_forward_fast",
    "layernorm_backward_fast", "layernorm_forward_fast", "linear_backward_fast",
    "linear_forward_fast", "matmul", "num_threads", "parallel_for", "set_num_threads",
    "tune_process",
]
__getattr__ = lazy_names(__name__, _WHERE)
