"""GPT: the GPT-2 decoder, with its forward and its hand-written backward.

    x      = wte[input_ids] + wpe[position_ids]      token + learned position embeddings
    x      = dropout(x)
    x      = block_l(x)  for l = 0 .. L-1            pre-LN blocks, causal attention
    x      = ln_f(x)
    logits = x @ wte^T                               LM head tied to the token embedding
    loss   = CE(logits[:, t], labels[:, t+1])        labels shifted inside, -100 ignored

Parameter names are those of transformers' GPT2Model (``wte``, ``wpe``,
``h.0.ln_1``, ``h.0.attn.c_attn``, ..., ``ln_f``), and projections are stored
(in, out) as GPT-2's Conv1D stores them, so checkpoints map one to one.
"""

from __future__ import annotations

import math

import numpy as np

from scratchlm import backend
from scratchlm.models._inputs import (
    additive_mask, as_ids, check_config, check_upstream, ids_or_embeds)
from scratchlm.models.configs import GPTConfig
from scratchlm.models.outputs import ModelOutput
from scratchlm.models.pretrained import PretrainedMixin
from scratchlm.nn import (
    CrossEntropyLoss, Dropout, Embedding, LayerNorm, Module, ModuleList, TiedLMHead,
    TransformerBlock,
)


class GPT(PretrainedMixin, Module):
    """GPT-2 language model (GPT2LMHeadModel in transformers)."""

    config_class = GPTConfig

    def __init__(self, config: GPTConfig | None = None, seed: int = 0, dtype="float32"):
        super().__init__()
        config, dtype = check_config("GPT", config, GPTConfig, dtype)
        self.config = config
        rng = np.random.default_rng(seed)               # initial weights, on the host
        std = config.initializer_range
        # GPT-2 scales the residual projections by 1/sqrt(2 L): each block adds
        # two of them to the residual stream.
        proj_std = std / math.sqrt(2 * config.n_layer)
        self.wte = Embedding(config.vocab_size, config.n_embd, std=std, rng=rng, dtype=dtype)
        self.wpe = Embedding(config.n_positions, config.n_embd, std=std, rng=rng, dtype=dtype)
        self.drop = Dropout(config.embd_pdrop)
        self.h = ModuleList([
            TransformerBlock(config.n_embd, config.n_head, config.inner_dim,
                             config.activation_function, pre_ln=True, causal=True,
                             layer_norm_eps=config.layer_norm_epsilon,
                             attn_pdrop=config.attn_pdrop, resid_pdrop=config.resid_pdrop,
                             std=std, proj_std=proj_std, rng=rng, dtype=dtype)
            for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon, dtype=dtype)
        self.lm_head = TiedLMHead(self.wte)             # logits = x wte^T: no parameter of its own
        self.loss_fn = CrossEntropyLoss(ignore_index=-100)
        self.inputs_embeds_grad = None                  # after a backward from inputs_embeds
        self.set_rng(backend.default_rng(seed))         # dropout masks

    # ---------------------------------------------------------------------
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None,
                kv_caches=None, inputs_embeds=None, output_attentions=False,
                output_hidden_states=False):
        """Logits for every position, and the causal-LM loss when labels are given.

        Args:
            input_ids: (B, T) integer ids in [0, V); or, instead,
            inputs_embeds: (B, T, C) token embeddings, in the model's dtype (they
                take the place of wte[input_ids]; backward then leaves their
                gradient in ``self.inputs_embeds_grad``).
            attention_mask: (B, T_past + T) 1 for real tokens, 0 for padding
                (left-padded batches), or None.
            position_ids: (B, T) positions in [0, n_positions); default
                T_past, ..., T_past + T - 1.
            labels: (B, T) target ids, -100 where ignored; the shift by one
                happens inside: position t predicts labels[:, t + 1].
            kv_caches: one functional.KVCache per layer, for decoding (eval).
            output_attentions, output_hidden_states: add .attentions (one
                (B, H, T, T_past + T) array per layer) and .hidden_states (the
                embeddings' output, then each block's, the last after ln_f).
        Returns: ModelOutput with .logits (B, T, V) and .loss (0-d) or None.
        """
        where, cfg, xp = "GPT.forward", self.config, self.xp
        ids, embeds = ids_or_embeds(where, input_ids, inputs_embeds, xp, cfg.vocab_size,
                                    cfg.n_embd, self.dtype)
        B, T = (ids if embeds is None else embeds).shape[:2]
        past = 0 if kv_caches is None else kv_caches[0].length
        if past + T > cfg.n_positions:
            raise ValueError(f"{where}: sequence length {past + T} exceeds "
                             f"config.n_positions={cfg.n_positions}")
        if position_ids is None:
            position_ids = xp.broadcast_to(xp.arange(past, past + T), (B, T))
        else:
            position_ids = as_ids(where, "position_ids", position_ids, xp, shape=(B, T),
                                  high=cfg.n_positions)
        mask = additive_mask(where, attention_mask, xp, (B, past + T), self.dtype)
        if labels is not None:
            labels = as_ids(where, "labels", labels, xp, shape=(B, T), high=cfg.vocab_size,
                            allow=-100)

        x = self.wte.forward(ids) if embeds is None else embeds.copy()  # (1) (B, T, C)
        x += self.wpe.forward(position_ids)             # (2) + positions
        x = self.drop.forward(x)                        # (3)
        hidden_states, attentions = [], []
        for layer, block in enumerate(self.h):          # (4)
            hidden_states.append(x)
            x = block.forward(x, mask, None if kv_caches is None else kv_caches[layer],
                              output_attentions=output_attentions)
            if output_attentions:
                x, att = x
                attentions.append(att)
        x = self.ln_f.forward(x)                        # (5)
        hidden_states.append(x)
        logits = self.lm_head.forward(x)                # (6) tied head, (B, T, V)
        loss = None
        if labels is not None:
            # Shift: position t predicts token t+1. Shifting the labels left (the
            # last position gets -100) instead of slicing the logits keeps the
            # logits contiguous; the mean over counted targets is the same.
            targets = xp.full_like(labels, -100)
            targets[:, :-1] = labels[:, 1:]
            loss = self.loss_fn.forward(logits, targets)  # (7)
        self._save((loss is not None, embeds is not None, x.shape,      # what backward
                    (B, cfg.n_head, T, past + T)))                      # starts from
        return ModelOutput(loss=loss, logits=logits,
                           hidden_states=tuple(hidden_states) if output_hidden_states else None,
                           attentions=tuple(attentions) if output_attentions else None)

    def backward(self, dloss=1.0, dlogits=None, d_hidden_states=None, d_attentions=None):
        """Fill every parameter's .grad from the last training forward.

        With a loss, its gradient is ``dloss`` (1.0 by default); without one,
        pass the upstream gradient of the logits as ``dlogits``. A loss on the
        outputs of ``output_hidden_states`` / ``output_attentions`` (a
        distillation loss) passes their gradients too: ``d_hidden_states``, a
        sequence of L + 1 arrays (or None entries), ``d_attentions``, L
        arrays (or None); they add to the gradients from the logits. After a
        forward with ``inputs_embeds``, their gradient is left in
        ``self.inputs_embeds_grad``.
        """
        L = len(self.h)
        if self._cache is not None:                     # checked before anything changes
            _, _, shape, att_shape = self._cache
            dhs = check_upstream("GPT.backward", "d_hidden_states", d_hidden_states,
                                 [shape] * (L + 1))
            datts = check_upstream("GPT.backward", "d_attentions", d_attentions, [att_shape] * L)
        had_loss, from_embeds, shape, _ = self._pop_cache()
        if dlogits is None and had_loss:
            dlogits = self.loss_fn.backward(dloss)      # back through (7)
        elif had_loss:
            self.loss_fn.clear_caches()
        if dlogits is None and all(d is None for d in dhs + datts):
            raise RuntimeError("GPT.backward: the forward computed no loss; pass labels= "
                               "to forward, or dlogits= (or d_hidden_states=, d_attentions=) "
                               "to backward")
        if dlogits is not None:
            dx = self.lm_head.backward(dlogits)         # back through (6); adds into wte.grad
        else:
            self.lm_head.clear_caches()
            dx = self.xp.zeros(shape, dtype=self.dtype)
        if dhs[L] is not None:
            dx = dx + dhs[L]                            # the last hidden state's second use
        dx = self.ln_f.backward(dx)                     # back through (5)
        for layer in reversed(range(L)):                # back through (4)
            dx = self.h[layer].backward(dx, datts[layer])
            if dhs[layer] is not None:
                dx = dx + dhs[layer]                    # a returned hidden state: gradients add
        dx = self.drop.backward(dx)                     # back through (3)
        self.wpe.backward(dx)                           # back through (2)
        if from_embeds:                                 # back through (1)
            self.inputs_embeds_grad = dx
        else:
            self.inputs_embeds_grad = None
            self.wte.backward(dx)                       # wte's second use (the head's first)
