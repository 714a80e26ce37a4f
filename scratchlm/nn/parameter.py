"""Parameter: a trainable array and its gradient, side by side."""

from __future__ import annotations

from scratchlm.backend import get_array_module


class Parameter:
    """A trainable array ``.data`` and its gradient ``.grad`` (same shape, backend, dtype).

    Gradients accumulate (``+=``) across backward passes until ``zero_grad()``,
    as in PyTorch, so micro-batches add up. ``requires_grad=False`` freezes the
    parameter: layers skip its gradient work and optimizers skip its update.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)
        self.requires_grad = requires_grad

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def accumulate(self, grad) -> None:
        """Add ``grad`` into ``.grad`` (a no-op for a frozen parameter)."""
        if self.requires_grad:
            self.grad += grad

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"
