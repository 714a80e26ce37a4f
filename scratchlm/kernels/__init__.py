"""The engine: faster variants of the textbook ops, and the one table that picks them.

    kernels/tables.py   the kernel table: use_kernels, get_kernels, table(*arrays)
    kernels/cpu/        blocked and threaded NumPy ops, MKL products, the thread pool,
                        blockwise attention, flat AdamW, process tuning
    kernels/cuda/       GPU variants (flat AdamW in large blocks; fused kernels go here)
    kernels/decode.py   GPT's lean inference-only forward for generation

Every kernel keeps its textbook op's arguments, caches and gradients, and a
test says they are equal. Nothing here runs or starts at import.
"""

from scratchlm._lazy import lazy_names

__all__ = ["MODES", "Kernels", "get_kernels", "table", "use_kernels"]
__getattr__ = lazy_names(__name__, dict.fromkeys(__all__, "scratchlm.kernels.tables"))
