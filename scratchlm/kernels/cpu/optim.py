"""AdamW over flat buffers for the CPU engine: cache-sized blocks over the threads."""

from __future__ import annotations

import numpy as np

from scratchlm.kernels.cpu.threads import for_blocks, parallel_for

BLOCK = 1 << 17     # elements per block of the flat update: its arrays stay in L2


def adamw_flat_update(update, buffers, amsgrad, **hyper):
    """optim's AdamW ``update`` over the flat buffers, block by block on the CPU threads.

    The same arithmetic, element by element, as one update over the whole
    buffers (the textbook table's): equal bit for bit.
    """
    data = buffers["data"]

    def blocks(lo, hi):
        tmp = np.empty(min(BLOCK, hi - lo), dtype=data.dtype)   # this thread's scratch
        denom = np.empty_like(tmp)
        for a, b in for_blocks(lo, hi, BLOCK):
            update(np, data[a:b], buffers["grad"][a:b], buffers["exp_avg"][a:b],
                   buffers["exp_avg_sq"][a:b],
                   buffers["max_exp_avg_sq"][a:b] if amsgrad else None,
                   tmp[:b - a], denom[:b - a], **hyper)

    parallel_for(data.size, blocks, BLOCK)
