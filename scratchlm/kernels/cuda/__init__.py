"""The GPU engine. Today: AdamW over flat buffers in large blocks; the rest of the
fast-cuda table is the textbook ops (which run on CuPy as they are). Fused CuPy
kernels go here, each beside its textbook op in the table and tested equal."""

from scratchlm.kernels.cuda.optim import adamw_flat_update

__all__ = ["adamw_flat_update"]
