"""BERT: the encoder and its task heads, each with a hand-written backward.

    x = LN(word[input_ids] + position[position_ids] + token_type[token_type_ids])
    x = dropout(x)
    x = block_l(x)  for l = 0 .. L-1        post-LN blocks, bidirectional attention
    pooled = tanh(x[:, 0] W_pool + b_pool)  the [CLS] position (where there is a pooler)

Heads: masked-LM (transform = dense, GELU, LN; decoder tied to the word
embeddings, with its own bias), next-sentence prediction, sequence
classification, token classification and extractive question answering, named
and behaving as in transformers.

Parameter names follow transformers (``embeddings.word_embeddings``,
``pooler.dense``, ``cls.predictions.transform``, ``classifier``, ...), except
inside the encoder layers, which reuse the shared TransformerBlock:
``encoder.layer.i.attn.c_attn`` holds query, key and value side by side
(C, 3C), ``attn.c_proj`` is ``attention.output.dense``, ``ln_1`` is
``attention.output.LayerNorm``, ``mlp.c_fc``/``mlp.c_proj`` are
``intermediate.dense``/``output.dense`` and ``ln_2`` is ``output.LayerNorm``.
``scratchlm.checkpoint`` maps these to and from Hugging Face tensors.
"""

from __future__ import annotations

import numpy as np

from scratchlm import backend
from scratchlm.models._inputs import (
    additive_mask, as_ids, check_config, check_upstream, ids_or_embeds)
from scratchlm.models.configs import BertConfig
from scratchlm.models.outputs import ModelOutput
from scratchlm.models.pretrained import PretrainedMixin
from scratchlm.nn import (
    Activation, CrossEntropyLoss, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList,
    Parameter, TiedLMHead, TransformerBlock,
)



class BertEmbeddings(Module):
    """Sum of word, position and token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig, rng, dtype):
        super().__init__()
        std = config.initializer_range
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, std=std,
                                         rng=rng, dtype=dtype, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings,
                                             config.hidden_size, std=std, rng=rng, dtype=dtype)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size,
                                               std=std, rng=rng, dtype=dtype)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps, dtype=dtype)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds=None):
        """inputs_embeds (B, T, C), if given, take the place of word_embeddings[input_ids]."""
        x = self.word_embeddings.forward(input_ids) if inputs_embeds is None \
            else inputs_embeds.copy()                             # (1) (B, T, C)
        self._save(inputs_embeds is not None)
        x += self.position_embeddings.forward(position_ids)       # (2)
        x += self.token_type_embeddings.forward(token_type_ids)   # (3)
        x = self.LayerNorm.forward(x)                             # (4)
        return self.dropout.forward(x)                            # (5)

    def backward(self, dout):
        """Fills the tables' gradients; returns the gradient of inputs_embeds, or None."""
        from_embeds = self._pop_cache()
        dx = self.dropout.backward(dout)                          # back through (5)
        dx = self.LayerNorm.backward(dx)                          # back through (4)
        self.token_type_embeddings.backward(dx)                   # back through (3)
        self.position_embeddings.backward(dx)                     # back through (2)
        if from_embeds:                                           # back through (1)
            return dx
        self.word_embeddings.backward(dx)
        return None


class BertEncoder(Module):
    """A stack of post-LN TransformerBlocks, ``encoder.layer.0`` ... ``encoder.layer.L-1``."""

    def __init__(self, config: BertConfig, rng, dtype):
        super().__init__()
        self.layer = ModuleList([
            TransformerBlock(config.hidden_size, config.num_attention_heads,
                             config.intermediate_size, config.hidden_act, pre_ln=False,
                             causal=False, layer_norm_eps=config.layer_norm_eps,
                             attn_pdrop=config.attention_probs_dropout_prob,
                             resid_pdrop=config.hidden_dropout_prob,
                             std=config.initializer_range, rng=rng, dtype=dtype)
            for _ in range(config.num_hidden_layers)])

    def forward(self, x, mask, output_attentions=False):
        """x (B, T, C) -> (last hidden state, [x, each layer's output], [each layer's attention])."""
        hidden_states, attentions = [x], []
        for block in self.layer:
            x = block.forward(x, mask, output_attentions=output_attentions)
            if output_attentions:
                x, att = x
                attentions.append(att)
            hidden_states.append(x)
        return x, hidden_states, attentions

    def backward(self, dout, d_hidden_states, d_attentions):
        """d_hidden_states: L + 1 upstream gradients (or None) of the returned hidden states,
        the last one already in dout; d_attentions: L (or None)."""
        for layer in reversed(range(len(self.layer))):
            dout = self.layer[layer].backward(dout, d_attentions[layer])
            if d_hidden_states[layer] is not None:
                dout = dout + d_hidden_states[layer]    # a returned hidden state: gradients add
        return dout


class BertPooler(Module):
    """pooled = tanh(x[:, 0] W + b): the first ([CLS]) position, through a dense layer."""

    def __init__(self, config: BertConfig, rng, dtype):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size,
                            std=config.initializer_range, rng=rng, dtype=dtype)
        self.activation = Activation("tanh")

    def forward(self, x):
        h = self.dense.forward(x[:, 0])                 # (1) (B, C)
        return self.activation.forward(h)               # (2)

    def backward(self, dout, T):
        dh = self.activation.backward(dout)             # back through (2)
        dcls = self.dense.backward(dh)                  # back through (1)
        dx = self.xp.zeros((dcls.shape[0], T, dcls.shape[1]), dtype=dcls.dtype)
        dx[:, 0] = dcls                                 # only position 0 was read
        return dx


class BertModel(PretrainedMixin, Module):
    """The BERT encoder: last hidden states, and the pooled [CLS] vector."""

    config_class = BertConfig

    def __init__(self, config: BertConfig | None = None, seed: int = 0, dtype="float32",
                 add_pooling_layer: bool = True, *, rng=None):
        super().__init__()
        config, dtype = check_config(type(self).__name__, config, BertConfig, dtype)
        self.config = config
        rng = np.random.default_rng(seed) if rng is None else rng
        self.embeddings = BertEmbeddings(config, rng, dtype)
        self.encoder = BertEncoder(config, rng, dtype)
        self.pooler = BertPooler(config, rng, dtype) if add_pooling_layer else None
        self.inputs_embeds_grad = None                  # after a backward from inputs_embeds
        self.set_rng(backend.default_rng(seed))

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                position_ids=None, inputs_embeds=None, output_attentions=False,
                output_hidden_states=False):
        """Encode a batch.

        Args:
            input_ids: (B, T) ids in [0, V); or, instead,
            inputs_embeds: (B, T, C) word embeddings in the model's dtype (then
                backward leaves their gradient in ``self.inputs_embeds_grad``).
            token_type_ids: (B, T) segment ids in [0, type_vocab_size); default 0.
            attention_mask: (B, T) 1 for real tokens, 0 for padding; default all 1.
            position_ids: (B, T); default 0 .. T-1.
            output_attentions, output_hidden_states: add .attentions (one
                (B, H, T, T) array per layer) and .hidden_states (the embeddings'
                output, then each layer's).
        Returns: ModelOutput with .last_hidden_state (B, T, C) and .pooler_output
            (B, C) (None without a pooler).
        """
        where, cfg, xp = f"{type(self).__name__}.forward", self.config, self.xp
        ids, embeds = ids_or_embeds(where, input_ids, inputs_embeds, xp, cfg.vocab_size,
                                    cfg.hidden_size, self.dtype)
        B, T = (ids if embeds is None else embeds).shape[:2]
        if T > cfg.max_position_embeddings:
            raise ValueError(f"{where}: sequence length T={T} exceeds "
                             f"config.max_position_embeddings={cfg.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = xp.zeros((B, T), dtype=np.int64)
        token_type_ids = as_ids(where, "token_type_ids", token_type_ids, xp, shape=(B, T),
                                high=cfg.type_vocab_size)
        if position_ids is None:
            position_ids = xp.broadcast_to(xp.arange(T), (B, T))
        position_ids = as_ids(where, "position_ids", position_ids, xp, shape=(B, T),
                              high=cfg.max_position_embeddings)
        mask = additive_mask(where, attention_mask, xp, (B, T), self.dtype)

        x = self.embeddings.forward(ids, token_type_ids, position_ids, embeds)  # (1)
        x, hidden_states, attentions = self.encoder.forward(x, mask, output_attentions)  # (2)
        pooled = self.pooler.forward(x) if self.pooler is not None else None  # (3)
        self._save((T, x.shape, (B, cfg.num_attention_heads, T, T)))
        return ModelOutput(last_hidden_state=x, pooler_output=pooled,
                           hidden_states=tuple(hidden_states) if output_hidden_states else None,
                           attentions=tuple(attentions) if output_attentions else None)

    def check_upstream(self, d_hidden_states=None, d_attentions=None):
        """The upstream gradients of .hidden_states and .attentions, checked against the last
        training forward (their count and shapes): two lists, None entries where none."""
        where, L = "BertModel.backward", len(self.encoder.layer)
        if self._cache is None:
            return [None] * (L + 1), [None] * L         # (the backward raises its own error)
        _, shape, att_shape = self._cache
        return (check_upstream(where, "d_hidden_states", d_hidden_states, [shape] * (L + 1)),
                check_upstream(where, "d_attentions", d_attentions, [att_shape] * L))

    def backward(self, d_last_hidden_state=None, d_pooler_output=None, d_hidden_states=None,
                 d_attentions=None):
        """Gradients from the upstream gradients of the outputs (any of them may be None).

        ``d_hidden_states``: L + 1 arrays (or None entries) for .hidden_states,
        ``d_attentions``: L for .attentions (a loss on those outputs, such as a
        distillation loss). After a forward with ``inputs_embeds``, their
        gradient is left in ``self.inputs_embeds_grad``.
        """
        L = len(self.encoder.layer)
        dhs, datts = self.check_upstream(d_hidden_states, d_attentions)
        if d_last_hidden_state is None and d_pooler_output is None \
                and all(d is None for d in dhs + datts):
            raise ValueError("BertModel.backward: pass d_last_hidden_state, d_pooler_output, "
                             "d_hidden_states and/or d_attentions")
        T, shape, _ = self._pop_cache()
        dx = d_last_hidden_state
        if dhs[L] is not None:                          # the last hidden state, returned twice
            dx = dhs[L] if dx is None else dx + dhs[L]
        if d_pooler_output is not None:
            if self.pooler is None:
                raise ValueError("BertModel.backward: this model has no pooler; "
                                 "d_pooler_output must be None")
            dpool = self.pooler.backward(d_pooler_output, T)  # back through (3)
            dx = dpool if dx is None else dx + dpool    # gradients add at the fork
        elif self.pooler is not None:
            self.pooler.clear_caches()                  # the pooler ran but feeds no loss
        if dx is None:
            dx = self.xp.zeros(shape, dtype=self.dtype)
        dx = self.encoder.backward(dx, dhs, datts)      # back through (2)
        self.inputs_embeds_grad = self.embeddings.backward(dx)  # back through (1)


def _classifier_head(config, rng, dtype):
    """Dropout (classifier_dropout, else hidden_dropout_prob) and a Linear to num_labels."""
    p = config.classifier_dropout if config.classifier_dropout is not None \
        else config.hidden_dropout_prob
    return Dropout(p), Linear(config.hidden_size, config.num_labels,
                              std=config.initializer_range, rng=rng, dtype=dtype)


class _BertWithHead(PretrainedMixin, Module):
    """Common set-up of the task models: ``self.bert`` plus heads built by the subclass."""

    config_class = BertConfig
    add_pooling_layer = True

    def __init__(self, config: BertConfig | None = None, seed: int = 0, dtype="float32"):
        super().__init__()
        config, dtype = check_config(type(self).__name__, config, BertConfig, dtype)
        self.config = config
        rng = np.random.default_rng(seed)
        self.bert = BertModel(config, dtype=dtype, add_pooling_layer=self.add_pooling_layer,
                              rng=rng)
        self._build_heads(config, rng, dtype)
        self.set_rng(backend.default_rng(seed))

    def _build_heads(self, config, rng, dtype):
        raise NotImplementedError

    def _encode(self, input_ids, token_type_ids, attention_mask, position_ids, inputs_embeds,
                output_attentions, output_hidden_states):
        """The encoder's output (last hidden state, pooled, and what was asked for)."""
        return self.bert.forward(input_ids, token_type_ids, attention_mask, position_ids,
                                 inputs_embeds, output_attentions, output_hidden_states)

    @property
    def inputs_embeds_grad(self):
        """After a forward with ``inputs_embeds`` and a backward: their gradient (B, T, C)."""
        return getattr(self.bert, "inputs_embeds_grad", None)

    def _labels(self, name, labels, shape, high, allow=-100):
        return as_ids(f"{type(self).__name__}.forward", name, labels, self.xp, shape=shape,
                      high=high, allow=allow)

    def _backward_encoder(self, d_last_hidden_state=None, d_pooler_output=None,
                          d_hidden_states=None, d_attentions=None):
        """Back through ``self.bert``, unless every one of its parameters is frozen.

        Fine-tuning with a frozen encoder trains the head alone: no encoder
        parameter takes a gradient and nothing below the encoder needs one, so
        its backward (about two thirds of a training step) is skipped and its
        forward caches are dropped instead.
        """
        if not any(p.requires_grad for p in self.bert.parameters()) \
                and self.bert.embeddings._cache is not True:   # (True: from inputs_embeds)
            self.bert.clear_caches()
            return
        self.bert.backward(d_last_hidden_state, d_pooler_output, d_hidden_states, d_attentions)

    def _need_loss(self):
        """What the last training forward saved (True: it computed a loss); an error if none."""
        had_loss = self._pop_cache() if self._cache is not None else False
        if not had_loss:
            raise RuntimeError(f"{type(self).__name__}.backward: the forward computed no "
                               "loss; pass labels to forward")

    def _dlogits(self, loss_fn, dloss, dlogits):
        """The gradient of the logits: ``dlogits`` when given (the upstream gradient of
        any function of the logits, as GPT.backward takes it), else the loss's."""
        if dlogits is None:
            self._need_loss()
            return loss_fn.backward(dloss)
        if self._pop_cache():                           # a loss was computed but is not used
            loss_fn.clear_caches()
        return dlogits


class BertLMPredictionHead(Module):
    """MLM head: h = LN(act(x W + b)); logits = h W_word^T + bias (decoder tied to the words)."""

    def __init__(self, config: BertConfig, word_embeddings: Embedding, rng, dtype):
        super().__init__()
        self.transform = _Transform(config, rng, dtype)
        self.bias = Parameter(backend.to_backend(np.zeros(config.vocab_size, dtype=dtype)))
        self.decoder = TiedLMHead(word_embeddings, bias=self.bias)  # W_word^T, + bias

    def forward(self, x):
        h = self.transform.forward(x)                   # (1) (B, T, C)
        return self.decoder.forward(h)                  # (2) (B, T, V)

    def backward(self, dlogits):
        dh = self.decoder.backward(dlogits)             # back through (2); adds into W_word
        return self.transform.backward(dh)              # back through (1)


class _Transform(Module):
    """cls.predictions.transform: dense, activation, LayerNorm."""

    def __init__(self, config, rng, dtype):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size,
                            std=config.initializer_range, rng=rng, dtype=dtype)
        self.act = Activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps, dtype=dtype)

    def forward(self, x):
        return self.LayerNorm.forward(self.act.forward(self.dense.forward(x)))

    def backward(self, dout):
        return self.dense.backward(self.act.backward(self.LayerNorm.backward(dout)))


class _Heads(Module):
    """``cls``: holds ``predictions`` and/or ``seq_relationship`` as transformers names them."""


class BertForPreTraining(_BertWithHead):
    """BERT with the masked-LM and next-sentence heads; loss = MLM + NSP."""

    def _build_heads(self, config, rng, dtype):
        self.cls = _Heads()
        self.cls.predictions = BertLMPredictionHead(
            config, self.bert.embeddings.word_embeddings, rng, dtype)
        self.cls.seq_relationship = Linear(config.hidden_size, 2,
                                           std=config.initializer_range, rng=rng, dtype=dtype)
        self.mlm_loss_fn, self.nsp_loss_fn = CrossEntropyLoss(), CrossEntropyLoss()

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                position_ids=None, labels=None, next_sentence_label=None, inputs_embeds=None,
                output_attentions=False, output_hidden_states=False):
        """labels (B, T): MLM targets, -100 where not masked; next_sentence_label (B,): 0 = is next."""
        enc = self._encode(input_ids, token_type_ids, attention_mask, position_ids,
                           inputs_embeds, output_attentions, output_hidden_states)
        x, pooled = enc.last_hidden_state, enc.pooler_output
        B, T = x.shape[:2]
        labels = self._labels("labels", labels, (B, T), self.config.vocab_size)
        nsl = self._labels("next_sentence_label", next_sentence_label, (B,), 2)
        prediction_logits = self.cls.predictions.forward(x)       # (1)
        nsp_logits = self.cls.seq_relationship.forward(pooled)    # (2)
        loss = None
        if labels is not None and nsl is not None:                # as transformers: both or none
            mlm_loss = self.mlm_loss_fn.forward(prediction_logits, labels)  # (3)
            nsp_loss = self.nsp_loss_fn.forward(nsp_logits, nsl)            # (4)
            loss = mlm_loss + nsp_loss                             # (5)
        self._save(loss is not None)
        return ModelOutput(loss=loss, prediction_logits=prediction_logits,
                           seq_relationship_logits=nsp_logits,
                           hidden_states=enc.hidden_states, attentions=enc.attentions)

    def backward(self, dloss=1.0, d_hidden_states=None, d_attentions=None):
        self.bert.check_upstream(d_hidden_states, d_attentions)   # before any change
        self._need_loss()
        dpred = self.mlm_loss_fn.backward(dloss)                  # back through (5), (3)
        dnsp = self.nsp_loss_fn.backward(dloss)                   # back through (5), (4)
        dpooled = self.cls.seq_relationship.backward(dnsp)        # back through (2)
        dx = self.cls.predictions.backward(dpred)                 # back through (1)
        self._backward_encoder(dx, dpooled, d_hidden_states, d_attentions)


class BertForMaskedLM(_BertWithHead):
    """BERT with the masked-LM head (no pooler)."""

    add_pooling_layer = False

    def _build_heads(self, config, rng, dtype):
        self.cls = _Heads()
        self.cls.predictions = BertLMPredictionHead(
            config, self.bert.embeddings.word_embeddings, rng, dtype)
        self.loss_fn = CrossEntropyLoss()

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                position_ids=None, labels=None, inputs_embeds=None,
                output_attentions=False, output_hidden_states=False):
        """labels (B, T): original ids at masked positions, -100 elsewhere."""
        enc = self._encode(input_ids, token_type_ids, attention_mask, position_ids,
                           inputs_embeds, output_attentions, output_hidden_states)
        x = enc.last_hidden_state
        labels = self._labels("labels", labels, x.shape[:2], self.config.vocab_size)
        logits = self.cls.predictions.forward(x)                  # (1)
        loss = None
        if labels is not None:
            loss = self.loss_fn.forward(logits, labels)             # (2)
        self._save(loss is not None)
        return ModelOutput(loss=loss, logits=logits,
                           hidden_states=enc.hidden_states, attentions=enc.attentions)

    def backward(self, dloss=1.0, d_hidden_states=None, d_attentions=None, dlogits=None):
        """From the loss (gradient ``dloss``), or from ``dlogits`` (B, T, V) without one."""
        self.bert.check_upstream(d_hidden_states, d_attentions)   # before any change
        dlogits = self._dlogits(self.loss_fn, dloss, dlogits)     # back through (2)
        dx = self.cls.predictions.backward(dlogits)               # back through (1)
        self._backward_encoder(dx, None, d_hidden_states, d_attentions)


class BertForNextSentencePrediction(_BertWithHead):
    """BERT with the next-sentence head on the pooled output."""

    def _build_heads(self, config, rng, dtype):
        self.cls = _Heads()
        self.cls.seq_relationship = Linear(config.hidden_size, 2,
                                           std=config.initializer_range, rng=rng, dtype=dtype)
        self.loss_fn = CrossEntropyLoss()

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                position_ids=None, labels=None, inputs_embeds=None,
                output_attentions=False, output_hidden_states=False):
        """labels (B,): 0 when sentence B follows sentence A, 1 when it is random."""
        enc = self._encode(input_ids, token_type_ids, attention_mask, position_ids,
                           inputs_embeds, output_attentions, output_hidden_states)
        pooled = enc.pooler_output
        labels = self._labels("labels", labels, (pooled.shape[0],), 2)
        logits = self.cls.seq_relationship.forward(pooled)        # (1)
        loss = None
        if labels is not None:
            loss = self.loss_fn.forward(logits, labels)             # (2)
        self._save(loss is not None)
        return ModelOutput(loss=loss, logits=logits,
                           hidden_states=enc.hidden_states, attentions=enc.attentions)

    def backward(self, dloss=1.0, d_hidden_states=None, d_attentions=None, dlogits=None):
        """From the loss (gradient ``dloss``), or from ``dlogits`` (B, 2) without one."""
        self.bert.check_upstream(d_hidden_states, d_attentions)   # before any change
        dpooled = self.cls.seq_relationship.backward(
            self._dlogits(self.loss_fn, dloss, dlogits))          # back through (2), (1)
        self._backward_encoder(None, dpooled, d_hidden_states, d_attentions)


class BertForSequenceClassification(_BertWithHead):
    """BERT with dropout and a linear classifier on the pooled output."""

    def _build_heads(self, config, rng, dtype):
        self.dropout, self.classifier = _classifier_head(config, rng, dtype)
        self.loss_fn = CrossEntropyLoss()

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                position_ids=None, labels=None, inputs_embeds=None,
                output_attentions=False, output_hidden_states=False):
        """labels (B,) in [0, num_labels): cross-entropy over the classes."""
        enc = self._encode(input_ids, token_type_ids, attention_mask, position_ids,
                           inputs_embeds, output_attentions, output_hidden_states)
        pooled = enc.pooler_output
        if labels is not None and self.config.num_labels == 1:
            raise ValueError("BertForSequenceClassification.forward: num_labels=1 "
                             "(regression) is not supported; use num_labels >= 2")
        labels = self._labels("labels", labels, (pooled.shape[0],), self.config.num_labels)
        h = self.dropout.forward(pooled)                          # (1)
        logits = self.classifier.forward(h)                       # (2) (B, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_fn.forward(logits, labels)             # (3)
        self._save(loss is not None)
        return ModelOutput(loss=loss, logits=logits,
                           hidden_states=enc.hidden_states, attentions=enc.attentions)

    def backward(self, dloss=1.0, d_hidden_states=None, d_attentions=None, dlogits=None):
        """From the loss (gradient ``dloss``), or from ``dlogits`` (B, num_labels) without one."""
        self.bert.check_upstream(d_hidden_states, d_attentions)   # before any change
        dh = self.classifier.backward(
            self._dlogits(self.loss_fn, dloss, dlogits))          # back through (3), (2)
        dpooled = self.dropout.backward(dh)                       # back through (1)
        self._backward_encoder(None, dpooled, d_hidden_states, d_attentions)


class BertForTokenClassification(_BertWithHead):
    """BERT with dropout and a linear classifier on every position (no pooler)."""

    add_pooling_layer = False

    def _build_heads(self, config, rng, dtype):
        self.dropout, self.classifier = _classifier_head(config, rng, dtype)
        self.loss_fn = CrossEntropyLoss()

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                position_ids=None, labels=None, inputs_embeds=None,
                output_attentions=False, output_hidden_states=False):
        """labels (B, T) in [0, num_labels), -100 where ignored (padding, later sub-words)."""
        enc = self._encode(input_ids, token_type_ids, attention_mask, position_ids,
                           inputs_embeds, output_attentions, output_hidden_states)
        x = enc.last_hidden_state
        labels = self._labels("labels", labels, x.shape[:2], self.config.num_labels)
        h = self.dropout.forward(x)                               # (1)
        logits = self.classifier.forward(h)                       # (2) (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_fn.forward(logits, labels)             # (3)
        self._save(loss is not None)
        return ModelOutput(loss=loss, logits=logits,
                           hidden_states=enc.hidden_states, attentions=enc.attentions)

    def backward(self, dloss=1.0, d_hidden_states=None, d_attentions=None, dlogits=None):
        """From the loss (gradient ``dloss``), or from ``dlogits`` (B, T, num_labels)."""
        self.bert.check_upstream(d_hidden_states, d_attentions)   # before any change
        dh = self.classifier.backward(
            self._dlogits(self.loss_fn, dloss, dlogits))          # back through (3), (2)
        dx = self.dropout.backward(dh)                            # back through (1)
        self._backward_encoder(dx, None, d_hidden_states, d_attentions)


class BertForQuestionAnswering(_BertWithHead):
    """BERT with a start/end span classifier on every position (no pooler)."""

    add_pooling_layer = False

    def _build_heads(self, config, rng, dtype):
        self.qa_outputs = Linear(config.hidden_size, 2, std=config.initializer_range,
                                 rng=rng, dtype=dtype)
        self.start_loss_fn, self.end_loss_fn = CrossEntropyLoss(), CrossEntropyLoss()

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                position_ids=None, start_positions=None, end_positions=None, inputs_embeds=None,
                output_attentions=False, output_hidden_states=False):
        """start_positions, end_positions (B,): answer span; loss = (CE_start + CE_end) / 2.

        As transformers does, positions outside [0, T) are clamped to T and ignored.
        """
        where = "BertForQuestionAnswering.forward"
        enc = self._encode(input_ids, token_type_ids, attention_mask, position_ids,
                           inputs_embeds, output_attentions, output_hidden_states)
        x = enc.last_hidden_state
        B, T = x.shape[:2]
        logits = self.qa_outputs.forward(x)                       # (1) (B, T, 2)
        start_logits = logits[..., 0]                             # (2) (B, T) views
        end_logits = logits[..., 1]
        loss = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError(f"{where}: pass both start_positions and end_positions, or neither")
        if start_positions is not None:
            losses = []
            for name, pos, lg, loss_fn in (
                    ("start_positions", start_positions, start_logits, self.start_loss_fn),
                    ("end_positions", end_positions, end_logits, self.end_loss_fn)):
                pos = as_ids(where, name, pos, self.xp, shape=(B,))
                pos = self.xp.clip(pos, 0, T)                      # out of range -> T, ignored
                losses.append(loss_fn.forward(self.xp.ascontiguousarray(lg), pos,
                                              ignore_index=T))    # (3)
            loss = (losses[0] + losses[1]) / 2                    # (4)
        self._save(loss is not None)
        return ModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                           hidden_states=enc.hidden_states, attentions=enc.attentions)

    def backward(self, dloss=1.0, d_hidden_states=None, d_attentions=None):
        self.bert.check_upstream(d_hidden_states, d_attentions)   # before any change
        self._need_loss()
        half = 0.5 * dloss                                        # back through (4)
        dstart = self.start_loss_fn.backward(half)                # back through (3)
        dend = self.end_loss_fn.backward(half)
        dlogits = self.xp.stack([dstart, dend], axis=-1)          # back through (2)
        dx = self.qa_outputs.backward(dlogits)                    # back through (1)
        self._backward_encoder(dx, None, d_hidden_states, d_attentions)
