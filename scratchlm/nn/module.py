"""Module: a tree of named parameters and sub-modules, with train/eval modes.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it under
that name, so a model's parameters are reachable as a flat mapping of dotted
names (``"h.3.attn.c_attn.weight"``) to Parameters. Optimizers and
checkpoints need nothing else.

A module's ``forward`` keeps what its ``backward`` needs in ``self._cache``,
but only in training mode; ``backward`` consumes it. In ``eval()`` mode
nothing is cached, and a backward raises a clear error.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from scratchlm import backend
from scratchlm.nn.parameter import Parameter


class Module:
    """Base class of layers and models (PyTorch-like bookkeeping, explicit backward)."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "rng", None)       # dropout's Generator, set by the model
        object.__setattr__(self, "_cache", None)

    # --- registration -----------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call Module.__init__() before "
                               "assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def named_modules(self, prefix=""):
        """Yield ``(dotted name, module)`` for this module and every descendant."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix=""):
        """Yield ``(dotted name, Parameter)``; a tied parameter appears once, first name."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # --- modes and gradients ----------------------------------------------
    def train(self, mode: bool = True):
        """Training mode: dropout active, forward caches for backward."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        if not mode:
            self.clear_caches()
        return self

    def eval(self):
        """Evaluation mode: no dropout, nothing cached."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def set_attention(self, path: str = "auto", block_size: int | None = None):
        """Choose the path of every attention layer inside: "plain" (every score in
        memory), "blockwise" (one block of scores at a time; memory O(T) per row)
        or "auto" (blockwise for long sequences). All three give the same results."""
        layers = [m for m in self.modules() if m is not self and hasattr(m, "set_attention")
                  and type(m).set_attention is not Module.set_attention]
        if type(self).set_attention is not Module.set_attention:
            layers.append(self)
        for m in layers:
            m.set_attention(path, block_size)
        return self

    def set_rng(self, rng) -> None:
        """Give every sub-module the random Generator that drives dropout."""
        for m in self.modules():
            object.__setattr__(m, "rng", rng)

    def _save(self, cache):
        """Keep ``cache`` for backward, in training mode only."""
        if self.training:
            object.__setattr__(self, "_cache", cache)

    def clear_caches(self) -> None:
        """Drop the cached forward of this module and all its sub-modules."""
        for m in self.modules():
            object.__setattr__(m, "_cache", None)

    def _pop_cache(self):
        """The cache of the last training forward; an error when there is none."""
        cache = self._cache
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: no cached forward pass; call forward "
                "in train() mode (model.train()) before backward, once per forward")
        object.__setattr__(self, "_cache", None)
        return cache

    # --- state ------------------------------------------------------------
    def state_dict(self):
        """Dotted name -> the parameter's array (the live array, not a copy)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict: bool = True):
        """Copy arrays into the parameters, checking every name and shape first.

        All problems are reported in one error. Arrays are cast to each
        parameter's dtype and moved to its backend. With ``strict=False``
        missing and unexpected names are returned instead of raised.
        Returns: (missing names, unexpected names)
        """
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        wrong = [f"{k}: expected {tuple(params[k].shape)}, got {tuple(state[k].shape)}"
                 for k in params if k in state
                 and tuple(np.shape(state[k])) != tuple(params[k].shape)]
        problems = []
        if wrong:
            problems.append("shape mismatches: " + "; ".join(wrong))
        if strict and missing:
            problems.append("missing: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected: " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + " | ".join(problems))
        for name, p in params.items():
            if name in state:
                xp = backend.get_array_module(p.data)
                p.data[...] = xp.asarray(backend.to_numpy(state[name]) if xp is np
                                         else state[name]).astype(p.data.dtype, copy=False)
        return missing, unexpected

    def to(self, name: str):
        """Move every parameter (data and grad) to the backend ``"numpy"`` or ``"cupy"``."""
        for module in self.modules():
            for p in module._parameters.values():
                p.data = backend.to_backend(p.data, name)
                p.grad = backend.to_backend(p.grad, name)
            object.__setattr__(module, "_cache", None)
        rng = self.rng
        if rng is not None and (type(rng).__module__.split(".")[0] == "cupy") != (name == "cupy"):
            # A Generator cannot move between backends: seed a new one on the
            # target backend from the old one, so the result stays deterministic.
            seed = int(backend.to_numpy(rng.integers(0, 2 ** 63 - 1)))
            self.set_rng(backend.default_rng(seed, name))
        return self

    def astype(self, dtype):
        """Cast every parameter (data and grad) to ``dtype``, a floating dtype such as
        ``"float64"`` (anything ``numpy.dtype()`` accepts); returns the module.

        Weights are real numbers: an integer, boolean or complex dtype is refused
        (TypeError), as the models' constructors refuse it, rather than rounding
        every weight silently.
        """
        where = f"{type(self).__name__}.astype"
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{where}: dtype must be a floating dtype such as 'float32'; "
                            f"got {dtype!r}") from None
        if dtype.kind != "f":
            raise TypeError(f"{where}: dtype must be a floating dtype (float16, float32, "
                            f"float64); got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype, copy=False)
            p.grad = p.grad.astype(dtype, copy=False)
        return self

    @property
    def dtype(self):
        first = next(self.named_parameters(), None)     # the first is enough: no full walk
        return first[1].dtype if first else None

    @property
    def xp(self):
        """The array module of this module's parameters."""
        first = next(self.named_parameters(), None)
        return backend.get_array_module(first[1].data) if first else backend.xp()

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")


class ModuleList(Module):
    """A list of sub-modules named "0", "1", ... (so names read ``h.3.attn``)."""

    def __init__(self, modules=()):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        return list(self._modules.values())[i]
