"""AdamW over flat buffers on the GPU, in large blocks."""

from __future__ import annotations

from scratchlm.backend import get_array_module
from scratchlm.kernels.cpu.threads import for_blocks

BLOCK = 1 << 24     # elements per block: blocks only bound the scratch (64 MB in float32);
                    # each block is some fifteen kernel launches


def adamw_flat_update(update, buffers, amsgrad, **hyper):
    """optim's AdamW ``update`` over the flat buffers, one block of BLOCK elements at a time."""
    data = buffers["data"]
    xp = get_array_module(data)
    tmp = xp.empty(min(BLOCK, data.size), dtype=data.dtype)
    denom = xp.empty_like(tmp)
    for a, b in for_blocks(0, data.size, BLOCK):
        update(xp, data[a:b], buffers["grad"][a:b], buffers["exp_avg"][a:b],
               buffers["exp_avg_sq"][a:b], buffers["max_exp_avg_sq"][a:b] if amsgrad else None,
               tmp[:b - a], denom[:b - a], **hyper)
