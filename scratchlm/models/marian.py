"""Marian: the encoder-decoder Transformer for translation, with a hand-written backward.

The source sentence is read by an encoder; a decoder writes the target one
token at a time, each step looking at what it has written (causal
self-attention) and at the whole source (cross-attention):

    encoder:  e = dropout(s * E[src] + P[0..S))          s = sqrt(C) or 1 (scale_embedding)
              e = enc_layer_l(e, src_mask)   l = 0 .. L_enc-1
    decoder:  y = dropout(s * E'[tgt_in] + P[0..T))
              y = dec_layer_l(y, e, src_mask, tgt_mask)   l = 0 .. L_dec-1
    logits = y W_out^T + final_logits_bias

Both layer kinds are post-LN (LayerNorm after each residual sum, eps 1e-5):

    enc_layer:  x = LN(x + drop(self_attn(x)))
                x = LN(x + drop(fc2(drop_act(act(fc1(x))))))
    dec_layer:  x = LN(x + drop(self_attn(x, causal)))
                x = LN(x + drop(cross_attn(x, e)))       queries from x, keys/values from e
                x = LN(x + drop(fc2(drop_act(act(fc1(x))))))

P is Marian's sinusoidal table: for position p and j < C/2,
P[p, j] = sin(p / 10000^(2j/C)) and P[p, C/2 + j] = cos(p / 10000^(2j/C))
(sin in the first half of the vector, cos in the second; no parameter).

Training feeds the decoder the target shifted right by one, starting with
``decoder_start_token_id``; position t then predicts target token t (teacher
forcing). ``labels`` alone are enough: the shift happens here, as in
transformers, with -100 (ignored by the loss) read as the pad token.

Gradients add at every fork: the encoder's output feeds the cross-attention
of every decoder layer, so its gradient is the sum of theirs; with shared
embeddings one table E = E' = W_out is read three times (encoder lookup,
decoder lookup, output head), so its gradient is the sum of three.

Parameter names are transformers' (``model.shared``,
``model.encoder.layers.{i}.self_attn.q_proj``, ``model.decoder.layers.{i}.
encoder_attn``, ``final_logits_bias``...); only the Linear weights are stored
(in, out), as everywhere in scratchlm.
"""

from __future__ import annotations

import math

import numpy as np

from scratchlm import backend
from scratchlm.functional import KVCache
from scratchlm.models._inputs import additive_mask, as_ids, as_input_ids, check_config
from scratchlm.models.configs import MarianConfig
from scratchlm.models.outputs import ModelOutput
from scratchlm.models.pretrained import PretrainedMixin
from scratchlm.nn import (
    Activation, CrossEntropyLoss, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList,
    MultiHeadAttention, Parameter, TiedEmbedding, TiedLMHead,
)

LAYER_NORM_EPS = 1e-5       # torch.nn.LayerNorm's default, which Marian keeps


def sinusoidal_positions(n_positions, dim):
    """Marian's fixed position table (n_positions, dim), float64 values of float32 numbers.

    Math: angle[p, j] = p / 10000^(2 floor(j/2) / dim); the first ceil(dim/2)
    columns are sin(angle[:, 0::2]), the rest cos(angle[:, 1::2]) (not
    interleaved). transformers builds the table in float64 and stores it
    through a float32 tensor, so every value is a float32 number; the same
    rounding here makes a float64 model agree with it exactly.
    """
    p = np.arange(n_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angle = p / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    half = (dim + 1) // 2
    table = np.empty((n_positions, dim))
    table[:, :half] = np.sin(angle[:, 0::2])
    table[:, half:] = np.cos(angle[:, 1::2])
    return table.astype(np.float32).astype(np.float64)


def shift_tokens_right(labels, pad_token_id, decoder_start_token_id):
    """Decoder inputs from labels: [start, labels[:, :-1]], with -100 read as pad."""
    xp = backend.get_array_module(labels)
    shifted = xp.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    shifted[shifted == -100] = pad_token_id
    return shifted


class _FeedForwardLayer(Module):
    """The position-wise MLP of a Marian layer, its Linears named fc1 and fc2 on the layer:
    h = dropout(fc2(dropout_act(act(fc1(x)))))."""

    def _init_ffn(self, C, F_, config, rng, dtype):
        std = config.init_std
        self.fc1 = Linear(C, F_, std=std, rng=rng, dtype=dtype)
        self.act = Activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.fc2 = Linear(F_, C, std=std, rng=rng, dtype=dtype)
        self.ffn_dropout = Dropout(config.dropout)

    def _ffn(self, x):
        h = self.fc1.forward(x)                         # (f1) (B, T, F)
        h = self.act.forward(h)                         # (f2)
        h = self.activation_dropout.forward(h)          # (f3)
        h = self.fc2.forward(h)                         # (f4) (B, T, C)
        return self.ffn_dropout.forward(h)              # (f5)

    def _ffn_backward(self, dout):
        dh = self.ffn_dropout.backward(dout)            # back through (f5)
        dh = self.fc2.backward(dh)                      # back through (f4)
        dh = self.activation_dropout.backward(dh)       # back through (f3)
        dh = self.act.backward(dh)                      # back through (f2)
        return self.fc1.backward(dh)                    # back through (f1)


class MarianEncoderLayer(_FeedForwardLayer):
    """x = LN(x + drop(self_attn(x)));  x = LN(x + ffn(x))."""

    def __init__(self, config: MarianConfig, rng, dtype):
        super().__init__()
        C, std = config.d_model, config.init_std
        self.self_attn = MultiHeadAttention(C, config.encoder_attention_heads, causal=False,
                                            attn_pdrop=config.attention_dropout, std=std,
                                            rng=rng, dtype=dtype)
        self.dropout = Dropout(config.dropout)
        self.self_attn_layer_norm = LayerNorm(C, LAYER_NORM_EPS, dtype=dtype)
        self._init_ffn(C, config.encoder_ffn_dim, config, rng, dtype)
        self.final_layer_norm = LayerNorm(C, LAYER_NORM_EPS, dtype=dtype)

    def forward(self, x, mask):
        h = self.dropout.forward(self.self_attn.forward(x, mask=mask))  # (1)
        h += x                                          # (2) residual
        x = self.self_attn_layer_norm.forward(h)        # (3)
        h = self._ffn(x)                         # (4)
        h += x                                          # (5) residual
        return self.final_layer_norm.forward(h)         # (6)

    def backward(self, dout):
        dh = self.final_layer_norm.backward(dout)       # back through (6)
        dx = self._ffn_backward(dh)                      # back through (4)
        dx += dh                                        # back through (5): gradients add
        dh = self.self_attn_layer_norm.backward(dx)     # back through (3)
        dx = self.self_attn.backward(self.dropout.backward(dh))  # back through (1)
        dx += dh                                        # back through (2): gradients add
        return dx


class MarianDecoderLayer(_FeedForwardLayer):
    """Causal self-attention, cross-attention to the encoder, feed-forward; post-LN each."""

    def __init__(self, config: MarianConfig, rng, dtype):
        super().__init__()
        C, H, std = config.d_model, config.decoder_attention_heads, config.init_std
        self.self_attn = MultiHeadAttention(C, H, causal=True,
                                            attn_pdrop=config.attention_dropout, std=std,
                                            rng=rng, dtype=dtype)
        self.self_dropout = Dropout(config.dropout)
        self.self_attn_layer_norm = LayerNorm(C, LAYER_NORM_EPS, dtype=dtype)
        self.encoder_attn = MultiHeadAttention(C, H, causal=False,
                                               attn_pdrop=config.attention_dropout, std=std,
                                               rng=rng, dtype=dtype)
        self.cross_dropout = Dropout(config.dropout)
        self.encoder_attn_layer_norm = LayerNorm(C, LAYER_NORM_EPS, dtype=dtype)
        self._init_ffn(C, config.decoder_ffn_dim, config, rng, dtype)
        self.final_layer_norm = LayerNorm(C, LAYER_NORM_EPS, dtype=dtype)

    def forward(self, x, memory, self_mask, memory_mask, kv_cache=None, static_kv=None):
        """x (B, T, C), memory (B, S, C) -> (B, T, C)."""
        h = self.self_attn.forward(x, mask=self_mask, kv_cache=kv_cache)  # (1)
        h = self.self_dropout.forward(h)
        h += x                                          # (2) residual
        x = self.self_attn_layer_norm.forward(h)        # (3)
        h = self.encoder_attn.forward(x, memory, mask=memory_mask,      # (4) cross
                                      static_kv=static_kv)
        h = self.cross_dropout.forward(h)
        h += x                                          # (5) residual
        x = self.encoder_attn_layer_norm.forward(h)     # (6)
        h = self._ffn(x)                         # (7)
        h += x                                          # (8) residual
        return self.final_layer_norm.forward(h)         # (9)

    def backward(self, dout):
        """dout (B, T, C) -> (dx, dmemory)."""
        dh = self.final_layer_norm.backward(dout)       # back through (9)
        dx = self._ffn_backward(dh)                      # back through (7)
        dx += dh                                        # back through (8): gradients add
        dh = self.encoder_attn_layer_norm.backward(dx)  # back through (6)
        dx, dmemory = self.encoder_attn.backward(self.cross_dropout.backward(dh))  # (4)
        dx += dh                                        # back through (5): gradients add
        dh = self.self_attn_layer_norm.backward(dx)     # back through (3)
        dx = self.self_attn.backward(self.self_dropout.backward(dh))   # back through (1)
        dx += dh                                        # back through (2): gradients add
        return dx, dmemory


class _Stack(Module):
    """A stack of layers over dropout(scale * E[ids] + P[positions]), E named embed_tokens."""

    def __init__(self, config, embed_tokens, positions, dropout):
        super().__init__()
        self.embed_tokens = embed_tokens                # an Embedding, or a TiedEmbedding
        object.__setattr__(self, "positions", positions)  # (n_pos, C) host table: no parameter
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.dropout = Dropout(dropout)

    def _embed(self, ids, start=0):
        x = self.embed_tokens.forward(ids)              # (e1) (B, T, C)
        if self.embed_scale != 1.0:
            x *= self.embed_scale                       # (e2)
        xp = backend.get_array_module(x)                # (e3) + P[start .. start + T)
        x += xp.asarray(self.positions[start:start + ids.shape[1]], dtype=x.dtype)
        return self.dropout.forward(x)                  # (e4)

    def _embed_backward(self, dout):
        dx = self.dropout.backward(dout)                # back through (e4); (e3) adds a constant
        if self.embed_scale != 1.0:
            dx = dx * self.embed_scale                  # back through (e2)
        self.embed_tokens.backward(dx)                  # back through (e1)


class MarianEncoder(_Stack):
    def __init__(self, config, embed_tokens, positions, rng, dtype):
        super().__init__(config, embed_tokens, positions, config.dropout)
        self.layers = ModuleList([MarianEncoderLayer(config, rng, dtype)
                                  for _ in range(config.encoder_layers)])

    def forward(self, ids, mask):
        x = self._embed(ids)
        for layer in self.layers:
            x = layer.forward(x, mask)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        self._embed_backward(dout)


class MarianDecoder(_Stack):
    def __init__(self, config, embed_tokens, positions, rng, dtype):
        super().__init__(config, embed_tokens, positions, config.dropout)
        self.layers = ModuleList([MarianDecoderLayer(config, rng, dtype)
                                  for _ in range(config.decoder_layers)])

    def forward(self, ids, memory, self_mask, memory_mask, start=0, kv_caches=None,
                static_kvs=None):
        x = self._embed(ids, start)
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, memory, self_mask, memory_mask,
                              None if kv_caches is None else kv_caches[i],
                              None if static_kvs is None else static_kvs[i])
        return x

    def backward(self, dout):
        """-> the gradient of the encoder's output: the sum over layers (each reads it)."""
        dmemory = None
        for layer in reversed(self.layers):
            dout, dm = layer.backward(dout)
            dmemory = dm if dmemory is None else dmemory + dm  # gradients add at the fork
        self._embed_backward(dout)
        return dmemory


class MarianModel(PretrainedMixin, Module):
    """The encoder and the decoder; forward returns the decoder's last hidden state.

    ``MarianModel(config, seed=0, dtype="float32")``; parameters as
    transformers names them inside ``MarianMTModel.model``.
    """

    config_class = MarianConfig

    def __init__(self, config: MarianConfig | None = None, seed: int = 0, dtype="float32"):
        super().__init__()
        config, dtype = check_config(type(self).__name__, config, MarianConfig, dtype)
        self.config = config
        rng = np.random.default_rng(seed)
        C, std, pad = config.d_model, config.init_std, config.pad_token_id
        positions = sinusoidal_positions(config.max_position_embeddings, C)
        if config.share_encoder_decoder_embeddings:
            self.shared = Embedding(config.vocab_size, C, std=std, rng=rng, dtype=dtype,
                                    padding_idx=pad)
            enc_embed, dec_embed = TiedEmbedding(self.shared), TiedEmbedding(self.shared)
        else:
            enc_embed = Embedding(config.vocab_size, C, std=std, rng=rng, dtype=dtype,
                                  padding_idx=pad if pad < config.vocab_size else None)
            dec_embed = Embedding(config.decoder_vocab_size, C, std=std, rng=rng, dtype=dtype,
                                  padding_idx=pad)
        self.encoder = MarianEncoder(config, enc_embed, positions, rng, dtype)
        self.decoder = MarianDecoder(config, dec_embed, positions, rng, dtype)
        self.set_rng(backend.default_rng(seed))         # dropout masks

    @property
    def decoder_embedding(self):
        """The Embedding whose table the decoder reads (and the output head, when tied)."""
        e = self.decoder.embed_tokens
        return e.embedding if isinstance(e, TiedEmbedding) else e

    # -- inputs ------------------------------------------------------------
    def _inputs(self, where, input_ids, attention_mask, decoder_input_ids,
                decoder_attention_mask, labels):
        cfg, xp = self.config, self.xp
        src = as_input_ids(where, input_ids, xp, cfg.vocab_size)
        B, S = src.shape
        if labels is not None:
            labels = as_ids(where, "labels", labels, xp, high=cfg.decoder_vocab_size,
                            allow=-100)
            if labels.ndim != 2 or labels.shape[0] != B or labels.shape[1] == 0:
                raise ValueError(f"{where}: labels must have shape (B, T) = ({B}, T) with "
                                 f"T >= 1; got {tuple(labels.shape)}")
            if decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(labels, cfg.pad_token_id,
                                                       cfg.decoder_start_token_id)
        if decoder_input_ids is None:
            raise ValueError(f"{where}: pass decoder_input_ids, or labels (the decoder inputs "
                             "are then the labels shifted right)")
        tgt = as_ids(where, "decoder_input_ids", decoder_input_ids, xp,
                     high=cfg.decoder_vocab_size)
        if tgt.ndim != 2 or tgt.shape[0] != B or tgt.shape[1] == 0:
            raise ValueError(f"{where}: decoder_input_ids must have shape (B, T) = ({B}, T) "
                             f"with T >= 1; got {tuple(tgt.shape)}")
        T = tgt.shape[1]
        if labels is not None and labels.shape != tgt.shape:
            raise ValueError(f"{where}: labels must have the shape of decoder_input_ids "
                             f"{tuple(tgt.shape)}; got {tuple(labels.shape)}")
        for name, n in (("input_ids", S), ("decoder_input_ids", T)):
            if n > cfg.max_position_embeddings:
                raise ValueError(f"{where}: {name} has {n} positions; "
                                 f"config.max_position_embeddings={cfg.max_position_embeddings}")
        src_mask = additive_mask(where, attention_mask, xp, (B, S), self.dtype)
        tgt_mask = additive_mask(where, decoder_attention_mask, xp, (B, T), self.dtype)
        return src, tgt, src_mask, tgt_mask, labels

    def _run(self, src, tgt, src_mask, tgt_mask):
        memory = self.encoder.forward(src, src_mask)                     # (1)
        y = self.decoder.forward(tgt, memory, tgt_mask, src_mask)        # (2)
        return memory, y

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None,
                decoder_attention_mask=None):
        """Encode the source and run the decoder over decoder_input_ids.

        Args: input_ids (B, S) source ids; attention_mask (B, S) 1 for real
            tokens, 0 for padding; decoder_input_ids (B, T); decoder_attention_mask
            (B, T) or None.
        Returns: ModelOutput with .last_hidden_state (B, T, C), the decoder's,
            and .encoder_last_hidden_state (B, S, C).
        """
        where = f"{type(self).__name__}.forward"
        src, tgt, src_mask, tgt_mask, _ = self._inputs(
            where, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, None)
        memory, y = self._run(src, tgt, src_mask, tgt_mask)
        self._save(True)
        return ModelOutput(last_hidden_state=y, encoder_last_hidden_state=memory)

    def backward(self, d_last_hidden_state, d_encoder_last_hidden_state=None):
        """Fill every parameter's .grad from upstream gradients of the two outputs."""
        self._pop_cache()
        dmemory = self.decoder.backward(d_last_hidden_state)             # back through (2)
        if d_encoder_last_hidden_state is not None:
            dmemory = dmemory + d_encoder_last_hidden_state              # its second use
        self.encoder.backward(dmemory)                                   # back through (1)


class MarianMTModel(PretrainedMixin, Module):
    """Marian with its output head: logits over the target vocabulary, and the loss.

    ``MarianMTModel(config, seed=0, dtype="float32")``: ``model`` (a
    MarianModel), the head, tied to the decoder's embedding table
    (``tie_word_embeddings``, the default) or a Linear of its own
    (``lm_head``), and ``final_logits_bias`` (1, V), a fixed bias (a buffer
    in transformers): loaded and saved, never trained.
    """

    config_class = MarianConfig

    def __init__(self, config: MarianConfig | None = None, seed: int = 0, dtype="float32"):
        super().__init__()
        self.model = MarianModel(config, seed, dtype)
        config = self.config = self.model.config
        V, dtype = config.decoder_vocab_size, self.model.dtype
        self.final_logits_bias = Parameter(backend.to_backend(np.zeros((1, V), dtype=dtype)),
                                           requires_grad=False)
        if config.tie_word_embeddings:
            self.lm_head = TiedLMHead(self.model.decoder_embedding)
        else:
            self.lm_head = Linear(config.d_model, V, bias=False, std=config.init_std,
                                  rng=np.random.default_rng(seed + 1), dtype=dtype)
        self.loss_fn = CrossEntropyLoss(ignore_index=-100)
        self.set_rng(backend.default_rng(seed))         # dropout masks

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None,
                decoder_attention_mask=None, labels=None):
        """Logits for every target position, and the loss when labels are given.

        Args: input_ids (B, S), attention_mask (B, S); decoder_input_ids (B, T)
            (default: labels shifted right, starting with
            decoder_start_token_id); decoder_attention_mask (B, T) or None;
            labels (B, T) target ids, -100 where ignored.
        Returns: ModelOutput with .logits (B, T, V), .loss (0-d, the mean over
            counted targets) or None, .encoder_last_hidden_state (B, S, C).
        """
        where = "MarianMTModel.forward"
        src, tgt, src_mask, tgt_mask, labels = self.model._inputs(
            where, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
            labels)
        memory, y = self.model._run(src, tgt, src_mask, tgt_mask)        # (1), (2)
        logits = self.lm_head.forward(y)                                 # (3) (B, T, V)
        logits += self.final_logits_bias.data                            # (4) fixed bias
        loss = None
        if labels is not None:
            loss = self.loss_fn.forward(logits, labels)                  # (5)
        self._save((loss is not None, y.shape))
        return ModelOutput(loss=loss, logits=logits, encoder_last_hidden_state=memory)

    def backward(self, dloss=1.0, dlogits=None):
        """Fill every parameter's .grad from the last training forward.

        With a loss, its gradient is ``dloss``; without one, pass the upstream
        gradient of the logits as ``dlogits``.
        """
        had_loss, _ = self._pop_cache()
        if dlogits is None and had_loss:
            dlogits = self.loss_fn.backward(dloss)                       # back through (5)
        elif had_loss:
            self.loss_fn.clear_caches()
        if dlogits is None:
            raise RuntimeError("MarianMTModel.backward: the forward computed no loss; pass "
                               "labels= to forward, or dlogits= to backward")
        dy = self.lm_head.backward(dlogits)                              # back through (3)
        dmemory = self.model.decoder.backward(dy)                        # back through (2)
        self.model.encoder.backward(dmemory)                             # back through (1)

    # -- generation ----------------------------------------------------------
    def encode(self, input_ids, attention_mask=None):
        """The encoder's output (B, S, C) and the source's additive mask (eval, no cache)."""
        where = "MarianMTModel.encode"
        src = as_input_ids(where, input_ids, self.xp, self.config.vocab_size)
        mask = additive_mask(where, attention_mask, self.xp, src.shape, self.dtype)
        return self.model.encoder.forward(src, mask), mask

    def generate(self, input_ids, attention_mask=None, max_new_tokens=None, num_beams=1,
                 length_penalty=1.0, early_stopping=False):
        """Translate: greedy (num_beams=1) or beam search, with the decoder's KV cache.

        Returns (B, T_out) ids starting with decoder_start_token_id, padded with
        pad_token_id after each sequence's eos, the same tokens as transformers'
        ``generate`` with the same settings. See ``scratchlm.seq2seq.generate_seq2seq``.
        """
        from scratchlm.seq2seq import generate_seq2seq  # noqa: PLC0415 - above models
        return generate_seq2seq(self, input_ids, attention_mask=attention_mask,
                                max_new_tokens=max_new_tokens, num_beams=num_beams,
                                length_penalty=length_penalty, early_stopping=early_stopping)

    def new_caches(self, batch, max_length):
        """One KVCache per decoder layer for ``batch`` rows and ``max_length`` positions."""
        cfg = self.config
        H = cfg.decoder_attention_heads
        return [KVCache(batch, H, max_length, cfg.d_model // H, self.dtype, self.xp)
                for _ in range(cfg.decoder_layers)]

    def cross_kv(self, memory):
        """Each decoder layer's cross-attention (k, v) heads of the memory: once per source."""
        return [layer.encoder_attn.project_memory(memory)
                for layer in self.model.decoder.layers]

    def decode_step(self, ids, memory_mask, kv_caches, static_kvs):
        """Logits (B, T_new, V) of the new positions ``ids`` (B, T_new), the past in kv_caches."""
        start = kv_caches[0].length
        y = self.model.decoder.forward(ids, None, None, memory_mask, start=start,
                                 kv_caches=kv_caches, static_kvs=static_kvs)
        logits = self.lm_head.forward(y)
        logits += self.final_logits_bias.data
        return logits
