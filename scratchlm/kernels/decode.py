"""GPT's forward for generation: new positions against a cache of past keys and values.

``GPT.forward`` is written for training: it checks its arguments, keeps what
``backward`` needs, and runs every op through the kernel table; with a KV
cache it is the reference path of generation. A
decoding step needs none of that, and at batch 1 it runs some sixty ops on
one row each, so the Python around the ops costs more than their arithmetic.
``GPTDecoder`` computes the same function for inference only: arguments are
checked once, when it is built; keys and values go to preallocated buffers;
every op writes into a buffer that the next step reuses; the products are
single BLAS calls on the model's own (contiguous) weights, never copied.

Each block, on the N = B * T rows of the T new positions t0 .. t1 - 1
(pre-LN, as GPT.forward):

    h   = LN_1(x)                                 layer norm
    qkv = h W_qkv + b_qkv                         fused projection, q | k | v     (N, 3C)
    K[t0:t1], V[t0:t1] = k, v                     append to the cache        (B, H, T_max, D)
    s   = q K[:t1]^T / sqrt(D) + mask             scores over the cached keys  (B, H, T, t1)
    att = softmax(s)                              along the keys
    a   = att V[:t1]                              weighted values, heads merged   (N, C)
    x   = x + a W_o + b_o                         output projection, residual
    h   = LN_2(x)
    x   = x + act(h W_fc + b_fc) W_pr + b_pr      MLP (GPT-2: GELU, tanh form), residual

and after the last block, at the last new position only:

    logits = LN_f(x_last) W_te^T                  final LN, head tied to the embedding (B, V)

The mask is the causal one among the new positions (none for one token) plus
the padding of left-padded prompts; masked scores get the dtype's most
negative value, as in GPT.forward. The math is GPT.forward's; a few steps are
regrouped to save passes over the data (the layer norm's two sums are matrix
products, keys are cached already divided by sqrt(D), GELU's polynomial is
factored), so the logits equal GPT.forward's up to rounding (about 1e-15
relative in float64).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from scratchlm import backend
from scratchlm.functional.activations import (
    ACTIVATIONS, GELU_CUBIC, INV_SQRT_2, SQRT_2_OVER_PI,
)

Array = Any


class _Block(NamedTuple):
    """One block's weights: the model's own arrays; vectors as (1, n) rows."""
    gamma_1: Array      # (1, C) ln_1
    beta_1: Array
    W_qkv: Array        # (C, 3C) attn.c_attn
    b_qkv: Array        # (1, 3C)
    W_o: Array          # (C, C) attn.c_proj
    b_o: Array
    gamma_2: Array      # (1, C) ln_2
    beta_2: Array
    W_fc: Array         # (C, F) mlp.c_fc
    b_fc: Array
    W_pr: Array         # (F, C) mlp.c_proj
    b_pr: Array


class _Scratch:
    """Buffers for T new positions of B sequences against up to Tk keys.

    Zero-filled, never left empty: a BLAS product may scale its output
    buffer by 0 before adding to it, and 0 * (a NaN left in memory) is NaN.
    """

    def __init__(self, xp, dtype, B, T, C, H, F, Tk, V):
        N, D = B * T, C // H
        self.x = xp.zeros((N, C), dtype=dtype)          # the residual stream
        self.x3 = self.x.reshape(B, T, C)
        self.h = xp.zeros((N, C), dtype=dtype)          # layer-norm output
        self.h_row = self.h.reshape(N, 1, C)            # row-by-row views of h, for the
        self.h_col = self.h.reshape(N, C, 1)            # sum of squares as one product
        self.h_last = self.h.reshape(B, T, C)[:, -1]    # (B, C) last position of each row
        self.y = xp.zeros((N, C), dtype=dtype)          # a sub-layer's output
        self.stat = xp.zeros((N, 1), dtype=dtype)       # LN: the mean, then 1 / std
        self.stat3 = self.stat.reshape(N, 1, 1)
        self.qkv = xp.zeros((N, 3 * C), dtype=dtype)
        heads = self.qkv.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        self.q, self.k, self.v = heads[0], heads[1], heads[2]            # views
        self.scores = xp.zeros((B, H, T, Tk), dtype=dtype)
        self.row = xp.zeros((B, H, T, 1), dtype=dtype)  # softmax: row max, then row sum
        a = xp.zeros((B, T, H, D), dtype=dtype)         # attention output, merged layout:
        self.a_heads = a.transpose(0, 2, 1, 3)          # (B, H, T, D) view to write into,
        self.a = a.reshape(N, C)                        # (N, C) view to read, no copy
        self.f = xp.zeros((N, F), dtype=dtype)          # MLP hidden layer
        self.u = xp.zeros((N, F), dtype=dtype)          # GELU's inner term
        self.logits = xp.zeros((B, V), dtype=dtype)


class GPTDecoder:
    """Inference-only forward of a GPT over new positions, with its own KV cache.

    Built once per generation for B sequences of at most ``max_length``
    positions; each ``forward`` appends the new positions' keys and values
    and returns the next-token logits at the last new position. The weights
    are the model's own arrays (no copy), so the decoder follows the model's
    backend (NumPy or CuPy) and sees its current parameters.
    """

    def __init__(self, model, batch_size, max_length):
        cfg = model.config
        where = "GPTDecoder"
        for name, value in (("batch_size", batch_size), ("max_length", max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: {name} must be a positive int; got {value!r}")
        if max_length > cfg.n_positions:
            raise ValueError(f"{where}: max_length={max_length} exceeds "
                             f"config.n_positions={cfg.n_positions}")
        W_te = model.wte.weight.data
        xp = backend.get_array_module(W_te)
        self.xp, self.dtype = xp, W_te.dtype
        self.B, self.T_max = batch_size, max_length
        self.C, self.H, self.F = cfg.n_embd, cfg.n_head, cfg.inner_dim
        D = self.C // self.H
        c = self.dtype.type                             # constants in the model's dtype: no op
        self.scale = c(1.0 / math.sqrt(D))              # converts a Python float on each call
        self.C_eps, self.sqrt_C = c(self.C * cfg.layer_norm_epsilon), c(math.sqrt(self.C))
        self.gelu_a, self.gelu_b = c(SQRT_2_OVER_PI * GELU_CUBIC), c(SQRT_2_OVER_PI)
        self.one, self.half = c(1.0), c(0.5)
        self.activation = ACTIVATIONS[cfg.activation_function]
        self.lowest = xp.finfo(self.dtype).min          # what masked scores become

        def w(param):                                   # the model's array; a copy only if it
            return xp.ascontiguousarray(param.data)     # is not contiguous (BLAS wants rows)

        def row(param):                                 # (n,) -> (1, n): same shape as the
            return w(param).reshape(1, -1)              # rows it meets (faster than broadcast)

        self.W_te, self.W_pe = w(model.wte.weight), w(model.wpe.weight)
        self.blocks = [_Block(row(b.ln_1.weight), row(b.ln_1.bias),
                              w(b.attn.c_attn.weight), row(b.attn.c_attn.bias),
                              w(b.attn.c_proj.weight), row(b.attn.c_proj.bias),
                              row(b.ln_2.weight), row(b.ln_2.bias),
                              w(b.mlp.c_fc.weight), row(b.mlp.c_fc.bias),
                              w(b.mlp.c_proj.weight), row(b.mlp.c_proj.bias)) for b in model.h]
        self.ln_f = (row(model.ln_f.weight), row(model.ln_f.bias))
        self.mean_col = xp.full((self.C, 1), 1.0 / self.C, dtype=self.dtype)  # x @ it = mean
        # The cache: keys and values of every position so far, (B, H, T_max, D)
        # per layer. Keys are stored times 1/sqrt(D), so scores need no scaling.
        shape = (batch_size, self.H, max_length, D)
        self.k_cache = [xp.zeros(shape, dtype=self.dtype) for _ in self.blocks]
        self.v_cache = [xp.zeros(shape, dtype=self.dtype) for _ in self.blocks]
        self.k_cache_T = [k.swapaxes(-1, -2) for k in self.k_cache]   # (B, H, D, T_max) views
        self.length = 0                                 # positions cached so far
        self.mask = None                                # (B, 1, 1, T_max) additive, or None
        self._step = None                               # _Scratch of one new position

    def set_padding(self, attention_mask):
        """Hide left padding: attention_mask (B, T0) of 0/1, host or backend array.

        Keys where the mask is 0 get the dtype's most negative score in every
        later forward; positions past T0 (the generated tokens) are real.
        """
        xp = self.xp
        m = backend.to_backend(attention_mask, "numpy" if xp is np else "cupy")
        self.mask = xp.zeros((self.B, 1, 1, self.T_max), dtype=self.dtype)
        self.mask[:, 0, 0, :m.shape[1]][m == 0] = self.lowest
        return self

    # ---------------------------------------------------------------------
    def forward(self, ids, position_ids=None):
        """Logits of the next token after T new positions; their keys and values are cached.

        ids: (B, T) token ids, trusted (checked by the caller); position_ids:
        (B, T), or None for length .. length + T - 1.
        Returns: (B, V) logits at the last new position, in a buffer that the
        next one-position call overwrites.
        """
        xp = self.xp
        B, T = ids.shape
        t0, t1 = self.length, self.length + T
        if t1 > self.T_max:
            raise ValueError(f"GPTDecoder.forward: {t0} cached + {T} new positions exceed "
                             f"max_length={self.T_max}")
        if T == 1:                                      # a decoding step: reuse the buffers
            if self._step is None:
                self._step = self._scratch(1, self.T_max)
            s = self._step
        else:                                           # a prompt: buffers for this call
            s = self._scratch(T, t1)
        x = s.x
        x[...] = self.W_te[ids.reshape(-1)]             # token embedding (N, C)
        if position_ids is None:
            s.x3 += self.W_pe[t0:t1]                    # + positions, the same for every row
        else:
            s.x3 += self.W_pe[position_ids]             # + positions per row (padding)
        for layer, p in enumerate(self.blocks):
            h = self._layernorm(x, p.gamma_1, p.beta_1, s)          # LN_1
            self._attention(h, p, layer, t0, t1, T, s)              # -> s.a (N, C)
            xp.dot(s.a, p.W_o, out=s.y)                 # output projection
            s.y += p.b_o
            x += s.y                                    # residual
            h = self._layernorm(x, p.gamma_2, p.beta_2, s)          # LN_2
            self._mlp(h, p, s)                          # -> s.y (N, C)
            x += s.y                                    # residual
        self.length = t1
        self._layernorm(x, *self.ln_f, s)               # final LN (all rows: cheap, simple)
        return xp.dot(s.h_last, self.W_te.T, out=s.logits)   # tied head, last position

    __call__ = forward

    def _scratch(self, T, Tk):
        return _Scratch(self.xp, self.dtype, self.B, T, self.C, self.H, self.F, Tk,
                        self.W_te.shape[0])

    # ---------------------------------------------------------------------
    def _layernorm(self, x, gamma, beta, s):
        """s.h = gamma * (x - mu) / sqrt(var + eps) + beta, row by row (as layernorm_forward).

        The two sums are matrix products: mu = x @ (1/C, ..., 1/C)^T, and
        C var = (x - mu) . (x - mu); then 1 / sqrt(var + eps) = sqrt(C) / sqrt(C var + C eps).
        """
        xp, h, stat = self.xp, s.h, s.stat
        xp.dot(x, self.mean_col, out=stat)              # mu (N, 1)
        xp.subtract(x, stat, out=h)                     # x - mu
        xp.matmul(s.h_row, s.h_col, out=s.stat3)        # C var = sum of squares
        stat += self.C_eps                              # eps keeps a constant row finite
        xp.sqrt(stat, out=stat)
        xp.divide(self.sqrt_C, stat, out=stat)          # rstd = 1 / sqrt(var + eps)
        h *= stat                                       # x_hat
        h *= gamma
        h += beta
        return h

    def _attention(self, h, p, layer, t0, t1, T, s):
        """Causal multi-head attention of the new positions over all cached ones -> s.a (N, C)."""
        xp = self.xp
        xp.dot(h, p.W_qkv, out=s.qkv)                   # fused q | k | v (N, 3C)
        s.qkv += p.b_qkv
        K, V = self.k_cache[layer], self.v_cache[layer]
        xp.multiply(s.k, self.scale, out=K[:, :, t0:t1])   # append to the cache: k / sqrt(D),
        V[:, :, t0:t1] = s.v                            # and v
        scores = s.scores[..., :t1]                     # (B, H, T, t1)
        xp.matmul(s.q, self.k_cache_T[layer][..., :t1], out=scores)  # q K^T / sqrt(D)
        if self.mask is not None:
            scores += self.mask[..., :t1]               # padding -> most negative value
        if T > 1:                                       # new query i sees keys <= t0 + i
            future = ~xp.tri(T, t1, k=t0, dtype=bool)
            xp.copyto(scores, self.lowest, where=future)
        scores.max(axis=-1, keepdims=True, out=s.row)   # softmax along the keys,
        scores -= s.row                                 # max 0: exp cannot overflow
        xp.exp(scores, out=scores)
        scores.sum(axis=-1, keepdims=True, out=s.row)
        scores /= s.row
        xp.matmul(scores, V[:, :, :t1], out=s.a_heads)  # weighted values, heads merged in s.a

    def _mlp(self, h, p, s):
        """s.y = act(h W_fc + b_fc) W_pr + b_pr."""
        xp, f, u = self.xp, s.f, s.u
        xp.dot(h, p.W_fc, out=f)                        # up: (N, F)
        f += p.b_fc
        kind = self.activation
        if kind == "gelu_tanh":                         # x (1 + tanh(u)) / 2,
            xp.multiply(f, f, out=u)                    # u = sqrt(2/pi) x (1 + 0.044715 x^2)
            u *= self.gelu_a
            u += self.gelu_b
            u *= f
            xp.tanh(u, out=u)
            u += self.one
            f *= u
            f *= self.half
        elif kind == "gelu_erf":                        # x Phi(x), Phi(x) = (1 + erf(x/sqrt 2)) / 2
            Phi = backend.erf(f * INV_SQRT_2)
            Phi += 1.0
            Phi *= 0.5
            f *= Phi
        elif kind == "relu":
            xp.maximum(f, 0.0, out=f)
        else:
            xp.tanh(f, out=f)
        xp.dot(f, p.W_pr, out=s.y)                      # down: (N, C)
        s.y += p.b_pr
