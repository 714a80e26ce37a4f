"""Layers: modules that hold parameters and compose the functional pairs.

Each layer's ``forward`` calls functional forwards in order and saves their
caches (training mode only); its ``backward`` calls the matching functional
backwards in reverse order, adds parameter gradients into ``.grad`` and
returns the gradient of the input. Where a value feeds two consumers (the
residual stream), the two gradients are added on a line of their own.

Initial weights are drawn on the host from a NumPy Generator and then moved
to the active backend, so a seed gives the same model on CPU and GPU.

Layers call their ops through the kernel table, ``table(x).linear_forward``
and so on (``scratchlm/kernels/tables.py``): the textbook op of
``functional`` under ``use_kernels("textbook")``, its engine variant (same
arguments, cache and gradients, tested equal) under ``"fast"``. Ops with one
form only (dropout, relu, tanh, head split and merge) are called from
``functional`` directly.
"""

from __future__ import annotations

import numpy as np

from scratchlm import backend
from scratchlm import functional as F
from scratchlm.functional._checks import check_probability
from scratchlm.functional.activations import ACTIVATIONS
from scratchlm.kernels.tables import table
from scratchlm.nn.module import Module
from scratchlm.nn.parameter import Parameter


def _param(array, dtype):
    """A Parameter from a host array, cast to dtype, on the active backend."""
    return Parameter(backend.to_backend(np.asarray(array, dtype=np.dtype(dtype))))


def _normal(rng, std, shape):
    rng = rng if rng is not None else np.random.default_rng(0)
    return rng.normal(0.0, std, size=shape)


class Linear(Module):
    """y = x @ W + b, with ``weight`` W of shape (C_in, C_out) and ``bias`` b (C_out,)."""

    def __init__(self, in_features, out_features, bias=True, *, std=0.02, rng=None,
                 dtype="float32"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param(_normal(rng, std, (in_features, out_features)), dtype)
        self.bias = _param(np.zeros(out_features), dtype) if bias else None

    def forward(self, x):
        y, cache = table(x).linear_forward(x, self.weight.data,
                                           None if self.bias is None else self.bias.data)
        self._save(cache)
        return y

    def backward(self, dout):
        train_b = self.bias is not None and self.bias.requires_grad
        dx, dW, db = table(dout).linear_backward(dout, self._pop_cache(),  # frozen: no dW/db
                                                 need_dW=self.weight.requires_grad,
                                                 need_db=train_b)
        if dW is not None:
            self.weight.accumulate(dW)
        if db is not None:
            self.bias.accumulate(db)
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table ``weight`` of shape (V, C); row ``ids[p]`` for each position p.

    ``padding_idx``, as in torch.nn.Embedding: that row starts at zero and
    receives no gradient from the lookup (the padding token is not learned).
    """

    def __init__(self, num_embeddings, embedding_dim, *, std=0.02, rng=None,
                 dtype="float32", padding_idx=None):
        super().__init__()
        self.padding_idx = padding_idx
        W = _normal(rng, std, (num_embeddings, embedding_dim))
        if padding_idx is not None:
            W[padding_idx] = 0.0                        # as transformers initialises it
        self.weight = _param(W, dtype)

    def forward(self, ids):
        out, cache = table(self.weight.data).embedding_forward(ids, self.weight.data)
        self._save(cache)
        return out

    def backward(self, dout):
        cache = self._pop_cache()
        if not self.weight.requires_grad:
            return                                      # frozen table: no scatter-add at all
        dW = table(dout).embedding_backward(dout, cache)
        if self.padding_idx is not None:
            dW[self.padding_idx] = 0                    # as torch: no gradient for this row
        self.weight.accumulate(dW)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class TiedLMHead(Module):
    """logits = x @ W^T (+ b): a language-model head whose weight is an Embedding's table W (V, C).

    The table is one Parameter used twice, by the lookup and by this head,
    and is registered once (by its Embedding); the head adds its gradient
    into the table's ``.grad`` on a line of its own: gradients add at the
    fork. ``bias``: a Parameter (V,) for the logits (BERT's
    ``cls.predictions.bias``, which the caller owns and registers first), or
    None (GPT-2).
    """

    def __init__(self, embedding, bias=None):
        super().__init__()
        object.__setattr__(self, "embedding", embedding)    # tied: not registered again
        self.bias = bias

    def forward(self, x):
        W = self.embedding.weight.data                  # (V, C)
        logits, cache = table(x).linear_forward(        # (1) x W^T + b, W^T a view
            x, W.T, None if self.bias is None else self.bias.data)
        self._save(cache)
        return logits

    def backward(self, dlogits):
        dx, dWT, db = table(dlogits).linear_backward(   # back through (1)
            dlogits, self._pop_cache(), need_dW=self.embedding.weight.requires_grad,
            need_db=self.bias is not None and self.bias.requires_grad)
        if dWT is not None:
            self.embedding.weight.accumulate(dWT.T)     # tied: gradients add at the fork
        if db is not None:
            self.bias.accumulate(db)
        return dx


class TiedEmbedding(Module):
    """A lookup into another Embedding's table: ``out[p] = W[ids[p]]``, W shared.

    Marian's encoder, decoder and output head read one table (``shared``).
    Each reading keeps its own cache, and each backward adds its scatter-add
    into the one ``.grad`` (gradients add at the fork). As the owner's own
    lookup, the padding row gets no gradient from here.
    """

    def __init__(self, embedding):
        super().__init__()
        object.__setattr__(self, "embedding", embedding)    # tied: not registered again

    def forward(self, ids):
        W = self.embedding.weight.data
        out, cache = table(W).embedding_forward(ids, W)
        self._save(cache)
        return out

    def backward(self, dout):
        cache = self._pop_cache()
        weight = self.embedding.weight
        if not weight.requires_grad:
            return
        dW = table(dout).embedding_backward(dout, cache)
        if self.embedding.padding_idx is not None:
            dW[self.embedding.padding_idx] = 0
        weight.accumulate(dW)                           # tied: gradients add at the fork


class CrossEntropyLoss(Module):
    """The mean cross-entropy of logits (..., V) against targets (...), ignore_index skipped.

    ``forward(logits, targets, ignore_index=None)``: None takes the module's own.
    """

    def __init__(self, ignore_index=-100):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits, targets, ignore_index=None):
        ignore = self.ignore_index if ignore_index is None else ignore_index
        loss, cache = table(logits).cross_entropy_forward(logits, targets, ignore)
        self._save(cache)
        return loss

    def backward(self, dloss=1.0):
        cache = self._pop_cache()
        return table(cache.log_softmax.probs).cross_entropy_backward(dloss, cache)


class LayerNorm(Module):
    """Layer normalization over the last axis: ``weight`` gamma, ``bias`` beta."""

    def __init__(self, normalized_shape, eps=1e-5, *, dtype="float32"):
        super().__init__()
        self.eps = eps
        self.weight = _param(np.ones(normalized_shape), dtype)
        self.bias = _param(np.zeros(normalized_shape), dtype)

    def forward(self, x):
        y, cache = table(x).layernorm_forward(x, self.weight.data, self.bias.data, self.eps)
        self._save(cache)
        return y

    def backward(self, dout):
        dx, dgamma, dbeta = table(dout).layernorm_backward(dout, self._pop_cache())
        self.weight.accumulate(dgamma)
        self.bias.accumulate(dbeta)
        return dx

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout with probability p, active in training mode only."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = check_probability("Dropout", "p", p)

    def forward(self, x):
        y, cache = F.dropout_forward(x, self.p, self.rng, training=self.training)
        self._save(cache)
        return y

    def backward(self, dout):
        return F.dropout_backward(dout, self._pop_cache())

    def extra_repr(self):
        return f"p={self.p}"


class Activation(Module):
    """An element-wise activation named as in transformers (``gelu``, ``gelu_new``, ...)."""

    def __init__(self, name):
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"Activation: unknown activation {name!r}; expected one of "
                             f"{sorted(ACTIVATIONS)}")
        self.name, self.kind = name, ACTIVATIONS[name]

    def forward(self, x):
        if self.kind == "gelu_erf":
            y, cache = table(x).gelu_forward(x, "none")
        elif self.kind == "gelu_tanh":
            y, cache = table(x).gelu_forward(x, "tanh")
        elif self.kind == "silu":
            y, cache = F.silu_forward(x)
        elif self.kind == "relu":
            y, cache = F.relu_forward(x)
        else:
            y, cache = F.tanh_forward(x)
        self._save(cache)
        return y

    def backward(self, dout):
        cache = self._pop_cache()
        if self.kind in ("gelu_erf", "gelu_tanh"):
            return table(dout).gelu_backward(dout, cache)
        if self.kind == "silu":
            return F.silu_backward(dout, cache)
        if self.kind == "relu":
            return F.relu_backward(dout, cache)
        return F.tanh_backward(dout, cache)

    def extra_repr(self):
        return self.name


# Attention paths: "plain" keeps every score (the table's attention_forward);
# "blockwise" keeps one block of scores at a time (memory O(T) per row, the
# backward recomputes the blocks), where the table has that kernel (the fast
# CPU table; under "textbook" every path keeps every score); "auto" is
# blockwise past BLOCKWISE_FROM keys, where the T x T scores of every layer
# would crowd memory.
ATTENTION_PATHS = ("auto", "plain", "blockwise")
BLOCKWISE_FROM = 1024


class MultiHeadSelfAttention(Module):
    """Self-attention over H heads with a fused input projection.

        qkv = x W_qkv + b_qkv            c_attn: (C, 3C), q | k | v side by side
        q, k, v -> (B, H, T, D) heads
        a = attention(q, k, v)           causal or not, masked, dropout on weights
        out = dropout(merge(a) W_o + b_o)   c_proj: (C, C), then residual dropout

    ``attention`` chooses the path ("auto", "plain" or "blockwise", see
    ATTENTION_PATHS); ``block_size`` is the blockwise path's block.
    """

    def __init__(self, n_embd, n_head, *, causal, attn_pdrop=0.0, resid_pdrop=0.0,
                 std=0.02, proj_std=None, rng=None, dtype="float32"):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"MultiHeadSelfAttention: n_embd={n_embd} must be divisible "
                             f"by n_head={n_head}")
        self.n_embd, self.n_head, self.causal = n_embd, n_head, causal
        self.attn_pdrop = attn_pdrop
        self.attention, self.block_size = "auto", 256
        self.c_attn = Linear(n_embd, 3 * n_embd, std=std, rng=rng, dtype=dtype)
        self.c_proj = Linear(n_embd, n_embd, std=std if proj_std is None else proj_std,
                             rng=rng, dtype=dtype)
        self.resid_dropout = Dropout(resid_pdrop)

    def set_attention(self, path="auto", block_size=None):
        """Choose the attention path ("auto", "plain", "blockwise") and the blockwise block."""
        if path not in ATTENTION_PATHS:
            raise ValueError(f"set_attention: path must be one of {ATTENTION_PATHS}; "
                             f"got {path!r}")
        self.attention = path
        if block_size is not None:
            if isinstance(block_size, bool) or not isinstance(block_size, int) \
                    or block_size < 1:
                raise ValueError(f"set_attention: block_size must be a positive int; "
                                 f"got {block_size!r}")
            self.block_size = block_size
        return self

    def _blockwise(self, K, Tk, p):
        """Whether this forward takes the table's blockwise kernel (none under "textbook")."""
        if self.attention == "plain" or K.attention_forward_blockwise is None:
            return False
        if self.attention == "blockwise":
            if p:
                raise ValueError("MultiHeadSelfAttention: the blockwise attention path has no "
                                 f"dropout on the weights; got attn_pdrop={p} in training")
            return True
        return Tk > BLOCKWISE_FROM and p == 0

    def forward(self, x, mask=None, kv_cache=None, output_attentions=False):
        """x (B, T, C), mask as in functional.attention, kv_cache for decoding -> (B, T, C).

        ``output_attentions``: also return the attention weights (B, H, T, Tk)
        (after dropout, as transformers returns them): (y, att). The
        blockwise path keeps no weights, so that forward keeps every score.
        """
        C, H = self.n_embd, self.n_head
        qkv = self.c_attn.forward(x)                    # (1) (B, T, 3C)
        q = F.split_heads(qkv[..., :C], H)              # (2) (B, H, T, D) views
        k = F.split_heads(qkv[..., C:2 * C], H)
        v = F.split_heads(qkv[..., 2 * C:], H)
        if kv_cache is not None:                        #     decoding: past keys too
            k, v = kv_cache.append(k, v)
        p = self.attn_pdrop if self.training else 0.0
        K = table(q)
        if not output_attentions and self._blockwise(K, k.shape[2], p):  # (3) every score,
            a, att_cache = K.attention_forward_blockwise(q, k, v, causal=self.causal,
                                                         mask=mask, block_size=self.block_size)
        else:                                           #     or blocks of them
            a, att_cache = K.attention_forward(q, k, v, causal=self.causal, mask=mask,
                                               dropout_p=p, rng=self.rng)
        y = self.c_proj.forward(F.merge_heads(a))       # (4) (B, T, C)
        y = self.resid_dropout.forward(y)               # (5)
        self._save(att_cache)
        return (y, att_cache.att_dropped) if output_attentions else y

    def backward(self, dout, datt=None):
        """dout (B, T, C) -> dx; ``datt``: an upstream gradient of the returned weights."""
        C, H = self.n_embd, self.n_head
        att_cache = self._pop_cache()
        dy = self.resid_dropout.backward(dout)          # back through (5)
        da = F.split_heads(self.c_proj.backward(dy), H)  # back through (4)
        B, T = da.shape[0], da.shape[2]
        dqkv = self.xp.empty((B, T, 3 * C), dtype=da.dtype)  # back through (2): each head's
        heads = (F.split_heads(dqkv[..., :C], H),       # gradient goes to its slot of the
                 F.split_heads(dqkv[..., C:2 * C], H),  # fused qkv
                 F.split_heads(dqkv[..., 2 * C:], H))
        table(da).attention_backward(da, att_cache, datt, out=heads)  # back through (3)
        return self.c_attn.backward(dqkv)               # back through (1)

    def extra_repr(self):
        return f"n_embd={self.n_embd}, n_head={self.n_head}, causal={self.causal}"


class MultiHeadAttention(Module):
    """Attention with separate query, key and value projections: self- or cross-attention.

        q = x W_q + b_q                      q_proj: (C, C), from the queries' sequence x
        k = m W_k + b_k,  v = m W_v + b_v    k_proj, v_proj: from m, the memory:
                                             m = x (self-attention) or the encoder's
                                             output (cross-attention, in a decoder)
        a = attention(q, k, v)               split into H heads; masked; dropout on weights
        out = merge(a) W_o + b_o             out_proj: (C, C)

    Names as transformers' BART/Marian attention. In cross-attention the
    mask is the source's key-padding mask (B, S), and Tq (target length) and
    Tk (source length) differ. Backward returns dx and, in cross-attention,
    dm: the gradient that flows into the encoder's output from this layer
    (added over every decoder layer by the model).

    Decoding: ``kv_cache`` (functional.KVCache) holds the self-attention's
    past keys and values; ``static_kv``, the (k, v) heads of the memory from
    ``project_memory``, computed once per source and reused at every step.
    """

    def __init__(self, embed_dim, num_heads, *, causal=False, attn_pdrop=0.0, std=0.02,
                 rng=None, dtype="float32"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim={embed_dim} must be divisible "
                             f"by num_heads={num_heads}")
        self.embed_dim, self.num_heads, self.causal = embed_dim, num_heads, causal
        self.attn_pdrop = attn_pdrop
        self.k_proj = Linear(embed_dim, embed_dim, std=std, rng=rng, dtype=dtype)
        self.v_proj = Linear(embed_dim, embed_dim, std=std, rng=rng, dtype=dtype)
        self.q_proj = Linear(embed_dim, embed_dim, std=std, rng=rng, dtype=dtype)
        self.out_proj = Linear(embed_dim, embed_dim, std=std, rng=rng, dtype=dtype)

    def project_memory(self, memory):
        """(k, v) heads (B, H, S, D) of the memory (B, S, C), for ``static_kv`` (no cache)."""
        H = self.num_heads
        k, _ = table(memory).linear_forward(memory, self.k_proj.weight.data,
                                            self.k_proj.bias.data)
        v, _ = table(memory).linear_forward(memory, self.v_proj.weight.data,
                                            self.v_proj.bias.data)
        return F.split_heads(k, H), F.split_heads(v, H)

    def forward(self, x, memory=None, mask=None, kv_cache=None, static_kv=None,
                output_attentions=False):
        """x (B, Tq, C); memory (B, Tk, C) or None (self-attention) -> (B, Tq, C).

        ``output_attentions``: also return the weights (B, H, Tq, Tk): (y, att).
        """
        H = self.num_heads
        cross = memory is not None or static_kv is not None
        q = F.split_heads(self.q_proj.forward(x), H)    # (1) (B, H, Tq, D)
        if static_kv is not None:                       #     decoding: the memory's heads, once
            k, v = static_kv
        else:
            m = memory if cross else x
            k = F.split_heads(self.k_proj.forward(m), H)  # (2) (B, H, Tk, D)
            v = F.split_heads(self.v_proj.forward(m), H)  # (3)
        if kv_cache is not None:                        #     decoding: past keys too
            k, v = kv_cache.append(k, v)
        p = self.attn_pdrop if self.training else 0.0
        a, att_cache = table(q).attention_forward(      # (4)
            q, k, v, causal=self.causal, mask=mask, dropout_p=p, rng=self.rng)
        y = self.out_proj.forward(F.merge_heads(a))     # (5) (B, Tq, C)
        self._save((att_cache, cross))
        return (y, att_cache.att_dropped) if output_attentions else y

    def backward(self, dout, datt=None):
        """dout (B, Tq, C) -> dx, or (dx, dmemory) in cross-attention."""
        H = self.num_heads
        att_cache, cross = self._pop_cache()
        da = F.split_heads(self.out_proj.backward(dout), H)   # back through (5)
        dq, dk, dv = table(da).attention_backward(da, att_cache, datt)  # back through (4)
        dm = self.v_proj.backward(F.merge_heads(dv))    # back through (3)
        dm += self.k_proj.backward(F.merge_heads(dk))   # back through (2): k and v read the
        dx = self.q_proj.backward(F.merge_heads(dq))    # same memory; back through (1)
        if cross:
            return dx, dm
        dx += dm                                        # self-attention: m is x, so the
        return dx                                       # gradients add at the fork

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"causal={self.causal}")


class FeedForward(Module):
    """Position-wise MLP: out = dropout(act(x W_fc + b_fc) W_proj + b_proj)."""

    def __init__(self, n_embd, n_inner, activation, *, pdrop=0.0, std=0.02, proj_std=None,
                 rng=None, dtype="float32"):
        super().__init__()
        self.c_fc = Linear(n_embd, n_inner, std=std, rng=rng, dtype=dtype)
        self.act = Activation(activation)
        self.c_proj = Linear(n_inner, n_embd, std=std if proj_std is None else proj_std,
                             rng=rng, dtype=dtype)
        self.dropout = Dropout(pdrop)

    def forward(self, x):
        h = self.c_fc.forward(x)                        # (1) (B, T, F)
        h = self.act.forward(h)                         # (2)
        h = self.c_proj.forward(h)                      # (3) (B, T, C)
        return self.dropout.forward(h)                  # (4)

    def backward(self, dout):
        dh = self.dropout.backward(dout)                # back through (4)
        dh = self.c_proj.backward(dh)                   # back through (3)
        dh = self.act.backward(dh)                      # back through (2)
        return self.c_fc.backward(dh)                   # back through (1)


class TransformerBlock(Module):
    """Attention and feed-forward sub-layers, each with a residual connection.

    pre-LN (GPT-2):   x = x + attn(ln_1(x));   x = x + mlp(ln_2(x))
    post-LN (BERT):   x = ln_1(x + attn(x));   x = ln_2(x + mlp(x))
    """

    def __init__(self, n_embd, n_head, n_inner, activation, *, pre_ln, causal,
                 layer_norm_eps, attn_pdrop=0.0, resid_pdrop=0.0, std=0.02, proj_std=None,
                 rng=None, dtype="float32"):
        super().__init__()
        self.pre_ln = pre_ln
        self.ln_1 = LayerNorm(n_embd, layer_norm_eps, dtype=dtype)
        self.attn = MultiHeadSelfAttention(n_embd, n_head, causal=causal,
                                           attn_pdrop=attn_pdrop, resid_pdrop=resid_pdrop,
                                           std=std, proj_std=proj_std, rng=rng, dtype=dtype)
        self.ln_2 = LayerNorm(n_embd, layer_norm_eps, dtype=dtype)
        self.mlp = FeedForward(n_embd, n_inner, activation, pdrop=resid_pdrop, std=std,
                               proj_std=proj_std, rng=rng, dtype=dtype)

    def forward(self, x, mask=None, kv_cache=None, output_attentions=False):
        """x (B, T, C) -> (B, T, C); with ``output_attentions``, (out, attention weights)."""
        h = self.ln_1.forward(x) if self.pre_ln else x
        if output_attentions:                           # (1) attn(ln_1(x)), or attn(x)
            a, att = self.attn.forward(h, mask, kv_cache, output_attentions=True)
        else:
            a, att = self.attn.forward(h, mask, kv_cache), None
        if self.pre_ln:
            a += x                                      # (2) residual: x + attn(ln_1(x))
            m = self.mlp.forward(self.ln_2.forward(a))  # (3)
            m += a                                      # (4) residual: a + mlp(ln_2(a))
            return (m, att) if output_attentions else m
        a += x                                          # (2) residual
        a = self.ln_1.forward(a)                        # (3)
        m = self.mlp.forward(a)                         # (4)
        m += a                                          # (5) residual
        out = self.ln_2.forward(m)                      # (6)
        return (out, att) if output_attentions else out

    def backward(self, dout, datt=None):
        """dout (B, T, C) -> dx; ``datt``: an upstream gradient of the attention weights."""
        if self.pre_ln:
            dm = self.ln_2.backward(self.mlp.backward(dout))  # back through (3)
            dm += dout                                  # back through (4): gradients add at the fork
            dx = self.ln_1.backward(self.attn.backward(dm, datt))   # back through (1)
            dx += dm                                    # back through (2): gradients add at the fork
            return dx
        ds = self.ln_2.backward(dout)                   # back through (6)
        da = self.mlp.backward(ds)                      # back through (4)
        da += ds                                        # back through (5): gradients add at the fork
        ds = self.ln_1.backward(da)                     # back through (3)
        dx = self.attn.backward(ds, datt)               # back through (1)
        dx += ds                                        # back through (2): gradients add at the fork
        return dx
