"""Checks for model inputs: the public boundary, where bad calls fail clearly."""

from __future__ import annotations

import numpy as np

from scratchlm import backend


def check_config(where, config, config_class, dtype):
    """(config, dtype): ``config`` an instance of config_class (None: its defaults) and
    ``dtype`` a floating NumPy dtype, as every model's constructor takes them."""
    config = config_class() if config is None else config
    if not isinstance(config, config_class):
        raise TypeError(f"{where}: config must be a {config_class.__name__}; got "
                        f"{type(config).__name__}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{where}: dtype must be a floating dtype; got {dtype}")
    return config, dtype


def as_ids(where, name, ids, xp, shape=None, high=None, allow=None):
    """An integer array on backend ``xp``, of ``shape``, with values in [0, high) (or == allow)."""
    if ids is None:
        return None
    if isinstance(ids, (list, tuple)):
        ids = np.asarray(ids)
    if not hasattr(ids, "dtype"):
        raise TypeError(f"{where}: {name} must be an integer array; got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{where}: {name} must be an integer array; got dtype {ids.dtype}")
    if shape is not None and tuple(ids.shape) != tuple(shape):
        raise ValueError(f"{where}: {name} must have shape {tuple(shape)}; got {tuple(ids.shape)}")
    ids = backend.to_backend(ids, "cupy" if xp is not np else "numpy")
    if high is not None and ids.size:
        counted = ids if allow is None else ids[ids != allow]
        if counted.size:
            lo, hi = int(counted.min()), int(counted.max())
            if lo < 0 or hi >= high:
                extra = f" or {allow}" if allow is not None else ""
                raise ValueError(f"{where}: {name} must be in [0, {high}){extra}; got "
                                 f"{'min' if lo < 0 else 'max'} value {lo if lo < 0 else hi}")
    return ids


def as_input_ids(where, input_ids, xp, vocab_size):
    if input_ids is None:
        raise ValueError(f"{where}: input_ids is required")
    ids = as_ids(where, "input_ids", input_ids, xp, high=vocab_size)
    if ids.ndim != 2:
        raise ValueError(f"{where}: input_ids must have shape (B, T); got {tuple(ids.shape)}"
                         " (add a batch axis with ids[None])")
    if ids.shape[1] == 0:
        raise ValueError(f"{where}: input_ids must hold at least one position; got "
                         f"{tuple(ids.shape)}")
    return ids


def ids_or_embeds(where, input_ids, inputs_embeds, xp, vocab_size, width, dtype):
    """Exactly one of input_ids (B, T) and inputs_embeds (B, T, C); returns (ids, embeds)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"{where}: pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        return as_input_ids(where, input_ids, xp, vocab_size), None
    if not hasattr(inputs_embeds, "dtype") or inputs_embeds.dtype.kind != "f":
        raise TypeError(f"{where}: inputs_embeds must be a floating array (B, T, C); got "
                        f"{getattr(inputs_embeds, 'dtype', type(inputs_embeds).__name__)}")
    if inputs_embeds.ndim != 3 or inputs_embeds.shape[2] != width or inputs_embeds.shape[1] == 0:
        raise ValueError(f"{where}: inputs_embeds must have shape (B, T, {width}) with T >= 1; "
                         f"got {tuple(inputs_embeds.shape)}")
    if inputs_embeds.dtype != dtype:
        raise TypeError(f"{where}: inputs_embeds must have the model's dtype {dtype}; got "
                        f"{inputs_embeds.dtype} (cast with .astype)")
    return None, backend.to_backend(inputs_embeds, "cupy" if xp is not np else "numpy")


def check_upstream(where, name, grads, shapes):
    """Upstream gradients of returned arrays of the given shapes: a list of len(shapes)
    arrays or None entries, from None or such a sequence; each array of its shape."""
    n = len(shapes)
    if grads is None:
        return [None] * n
    grads = list(grads)
    if len(grads) != n:
        raise ValueError(f"{where}: {name} must hold {n} arrays (or None entries), one per "
                         f"returned array; got {len(grads)}")
    for i, (g, shape) in enumerate(zip(grads, shapes)):
        if g is not None and tuple(getattr(g, "shape", ())) != tuple(shape):
            raise ValueError(f"{where}: {name}[{i}] must have the shape of the array it is "
                             f"the gradient of, {tuple(shape)}; got "
                             f"{tuple(getattr(g, 'shape', ())) or type(g).__name__}")
    return grads


def additive_mask(where, attention_mask, xp, shape, dtype):
    """(B, Tk) 0/1 mask -> (B, 1, 1, Tk) additive: 0 where kept, dtype's most negative where not.

    As transformers does: masked scores become the most negative finite value.
    A boolean mask (True = keep) is accepted too.
    """
    if attention_mask is None:
        return None
    if getattr(attention_mask, "dtype", None) is not None and attention_mask.dtype.kind == "b":
        m = backend.to_backend(attention_mask, "cupy" if xp is not np else "numpy")
        if tuple(m.shape) != tuple(shape):
            raise ValueError(f"{where}: attention_mask must have shape {tuple(shape)}; "
                             f"got {tuple(m.shape)}")
    else:
        m = as_ids(where, "attention_mask", attention_mask, xp, shape=shape, high=2)
    out = xp.zeros(m.shape, dtype=dtype)
    out[m == 0] = xp.finfo(dtype).min
    return out[:, None, None, :]
