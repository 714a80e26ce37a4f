"""Token files on disk, read back as memory maps (corpora larger than memory train).

A token file is the raw ids in little-endian uint16 (vocabularies up to
65,536) or uint32, like nanoGPT's ``.bin`` files; the dtype is recorded in a
small JSON file beside it (``<name>.json``).
"""

from __future__ import annotations

import json
import os

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of the vocabulary."""
    return np.dtype("<u2") if vocab_size <= 2 ** 16 else np.dtype("<u4")


def write_token_file(path, ids, vocab_size: int) -> None:
    """Write ids to ``path`` (atomically) and their dtype to ``path + '.json'``."""
    dtype = token_dtype(vocab_size)
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"write_token_file: ids must be in [0, {vocab_size}); got "
                         f"[{ids.min()}, {ids.max()}]")
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(ids.astype(dtype).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with open(f"{path}.json", "w") as f:
        json.dump({"dtype": dtype.str, "vocab_size": vocab_size, "n_tokens": int(ids.size)}, f)


def read_token_file(path) -> np.ndarray:
    """A read-only memory map of the ids in ``path`` (see write_token_file)."""
    meta_path = f"{path}.json"
    if not os.path.exists(path) or not os.path.exists(meta_path):
        raise FileNotFoundError(f"read_token_file: {path} (and {meta_path}) must exist")
    with open(meta_path) as f:
        meta = json.load(f)
    dtype = np.dtype(meta["dtype"])
    n = os.path.getsize(path) // dtype.itemsize
    if n != meta["n_tokens"]:
        raise ValueError(f"read_token_file: {path} holds {n} tokens but {meta_path} says "
                         f"{meta['n_tokens']}: truncated or replaced?")
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))
