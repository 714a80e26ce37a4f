"""The kernel table: the one place that picks between the textbook ops and the engine's.

Layers call their ops through ``table(*arrays)``, never by name from
``functional`` or ``kernels``: the table for the arrays' backend under the
mode in force. Each entry has its textbook op's arguments, cache and
gradients, so a layer's code is the same whichever table it gets:

    K = table(x)
    y, cache = K.linear_forward(x, W, b)
    dx, dW, db = K.linear_backward(dout, cache)

Modes: ``"textbook"`` runs the pure functional ops everywhere (a student can
step through them in a debugger); ``"fast"`` (the default) runs the fastest
variant available on each backend: on NumPy the blocked and threaded ops of
``kernels/cpu``, on CuPy those of ``kernels/cuda`` (the textbook op where
there is none yet). ``use_kernels(name)`` or ``SCRATCHLM_KERNELS`` choose.
A table is built once per mode and backend, on first use.

Entries that have no textbook counterpart, because they are a different
algorithm for the same result, are None under "textbook":
``attention_forward_blockwise`` (memory O(T) per row; its backward is
``attention_backward``, which reads the cache's kind) and ``gpt_decoder``
(generation's lean inference-only forward; the reference is the model's
own forward with a KV cache).
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

from scratchlm import functional as F
from scratchlm.backend import is_cupy_array

MODES = ("textbook", "fast")

_mode = None        # the mode in force, resolved from SCRATCHLM_KERNELS on first use
_tables: dict = {}  # (mode, backend name) -> Kernels


class Kernels(NamedTuple):
    """One backend's ops, each with its textbook op's arguments and results."""
    name: str                       # "textbook", "fast-cpu" or "fast-cuda"
    linear_forward: Callable
    linear_backward: Callable
    embedding_forward: Callable
    embedding_backward: Callable
    layernorm_forward: Callable
    layernorm_backward: Callable
    gelu_forward: Callable
    gelu_backward: Callable
    cross_entropy_forward: Callable
    cross_entropy_backward: Callable
    attention_forward: Callable
    attention_backward: Callable    # (dout, cache, datt=None, out=None): either forward's cache
    attention_forward_blockwise: Any    # None: not in this table
    adamw_flat_update: Callable     # AdamW over flat buffers (optim.AdamW(flat=True))
    gpt_decoder: Any                # None: generate through the model's own forward


def _check_mode(name, where):
    if name not in MODES:
        raise ValueError(f"{where}: kernels must be one of {MODES}; got {name!r}")
    return name


def use_kernels(name: str) -> None:
    """Run every model on the textbook ops (``"textbook"``) or the fastest available (``"fast"``)."""
    global _mode
    _mode = _check_mode(name, "use_kernels")


def get_kernels() -> str:
    """The mode in force: ``"textbook"`` or ``"fast"`` (default: ``SCRATCHLM_KERNELS``, else fast)."""
    global _mode
    if _mode is None:
        _mode = _check_mode(os.environ.get("SCRATCHLM_KERNELS", "fast"), "SCRATCHLM_KERNELS")
    return _mode


def table(*arrays) -> Kernels:
    """The ops for these arrays' backend (CuPy if any is a CuPy array) under the mode in force."""
    mode = get_kernels()
    device = "cuda" if any(is_cupy_array(a) for a in arrays if a is not None) else "cpu"
    key = (mode, device)
    if key not in _tables:
        _tables[key] = _textbook() if mode == "textbook" else \
            _fast_cpu() if device == "cpu" else _fast_cuda()
    return _tables[key]


def _adamw_flat_textbook(update, buffers, amsgrad, **hyper):
    """The update over whole flat buffers at once (``update`` is optim's, on array slices)."""
    from scratchlm.backend import get_array_module  # noqa: PLC0415
    data = buffers["data"]
    xp = get_array_module(data)
    update(xp, data, buffers["grad"], buffers["exp_avg"], buffers["exp_avg_sq"],
           buffers.get("max_exp_avg_sq") if amsgrad else None,
           xp.empty_like(data), xp.empty_like(data), **hyper)


def _attention_backward_textbook(dout, cache, datt=None, out=None):
    """functional.attention_backward, its gradients copied into ``out`` when given (the
    fast kernel writes there directly: the layers pass their fused buffer's views)."""
    grads = F.attention_backward(dout, cache, datt)
    if out is None:
        return grads
    for o, g in zip(out, grads):
        o[...] = g
    return out


def _textbook() -> Kernels:
    return Kernels(
        "textbook", F.linear_forward, F.linear_backward, F.embedding_forward,
        F.embedding_backward, F.layernorm_forward, F.layernorm_backward, F.gelu_forward,
        F.gelu_backward, F.cross_entropy_forward, F.cross_entropy_backward,
        F.attention_forward, _attention_backward_textbook, None, _adamw_flat_textbook, None)


def _fast_cpu() -> Kernels:
    from scratchlm.kernels import cpu  # noqa: PLC0415 - the engine loads when first asked for
    from scratchlm.kernels.decode import GPTDecoder  # noqa: PLC0415
    return Kernels(
        "fast-cpu", cpu.linear_forward_fast, cpu.linear_backward_fast, F.embedding_forward,
        cpu.embedding_backward_fast, cpu.layernorm_forward_fast, cpu.layernorm_backward_fast,
        cpu.gelu_forward_fast, cpu.gelu_backward_fast, cpu.cross_entropy_forward_fast,
        cpu.cross_entropy_backward_fast, cpu.attention_forward_fast, cpu.attention_backward_any,
        cpu.attention_forward_blockwise, cpu.adamw_flat_update, GPTDecoder)


def _fast_cuda() -> Kernels:
    from scratchlm.kernels import cuda  # noqa: PLC0415
    from scratchlm.kernels.decode import GPTDecoder  # noqa: PLC0415
    return _textbook()._replace(name="fast-cuda", adamw_flat_update=cuda.adamw_flat_update,
                                gpt_decoder=GPTDecoder)
