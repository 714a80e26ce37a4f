"""Model configurations, with the field names and defaults of transformers.

``GPTConfig`` mirrors ``transformers.GPT2Config`` and ``BertConfig`` mirrors
``transformers.BertConfig``, so a Hugging Face ``config.json`` reads directly
(``from_dict``) and ours is read by transformers (``to_dict``). Keys that
scratchlm does not use are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from scratchlm.nn.layers import ACTIVATIONS


def _check_positive(cls, **values):
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{cls}: {name} must be a positive integer; got {v!r}")


def _check_prob(cls, **values):
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ValueError(f"{cls}: {name} must be a probability in [0, 1); got {v!r}")


class _ConfigDict:
    """to_dict / from_dict shared by both configs."""

    model_type = ""
    _ignored = ("model_type", "architectures", "transformers_version", "torch_dtype", "dtype")

    def to_dict(self, architecture=None) -> dict:
        d = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                d[f.name] = getattr(self, f.name)
        d["model_type"] = self.model_type
        if architecture:
            d["architectures"] = [architecture]
        return d

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__}.from_dict: expected a dict; got {type(d).__name__}")
        model_type = d.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"{cls.__name__}.from_dict: model_type must be "
                             f"{cls.model_type!r}; got {model_type!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and k not in cls._ignored}
        return cls(**known, extra=extra)


@dataclass
class GPTConfig(_ConfigDict):
    """GPT-2 hyper-parameters (names and defaults of transformers' GPT2Config)."""

    vocab_size: int = 50257
    n_positions: int = 1024          # length of the learned position table
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None       # feed-forward width; None means 4 * n_embd
    activation_function: str = "gelu_new"   # GPT-2's tanh-form GELU
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int = 50256
    eos_token_id: int = 50256
    extra: dict = field(default_factory=dict, repr=False)

    model_type = "gpt2"

    def __post_init__(self):
        c = "GPTConfig"
        _check_positive(c, vocab_size=self.vocab_size, n_positions=self.n_positions,
                        n_embd=self.n_embd, n_layer=self.n_layer, n_head=self.n_head)
        if self.n_inner is not None:
            _check_positive(c, n_inner=self.n_inner)
        if self.n_embd % self.n_head:
            raise ValueError(f"{c}: n_embd={self.n_embd} must be divisible by "
                             f"n_head={self.n_head}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"{c}: activation_function must be one of {sorted(ACTIVATIONS)}; "
                             f"got {self.activation_function!r}")
        _check_prob(c, resid_pdrop=self.resid_pdrop, embd_pdrop=self.embd_pdrop,
                    attn_pdrop=self.attn_pdrop)
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if self.extra.get(flag):
                raise ValueError(f"{c}: {flag}=True is not supported")
        if self.extra.get("scale_attn_weights") is False:
            raise ValueError(f"{c}: scale_attn_weights=False is not supported")

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd


@dataclass
class BertConfig(_ConfigDict):
    """BERT hyper-parameters (names and defaults of transformers' BertConfig)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"         # exact (erf) GELU
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    classifier_dropout: float | None = None   # None: use hidden_dropout_prob
    id2label: dict | None = None     # task heads: {0: "LABEL_0", 1: "LABEL_1"} by default
    label2id: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)

    model_type = "bert"

    def __post_init__(self):
        c = "BertConfig"
        _check_positive(c, vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                        num_hidden_layers=self.num_hidden_layers,
                        num_attention_heads=self.num_attention_heads,
                        intermediate_size=self.intermediate_size,
                        max_position_embeddings=self.max_position_embeddings,
                        type_vocab_size=self.type_vocab_size)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{c}: hidden_size={self.hidden_size} must be divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"{c}: hidden_act must be one of {sorted(ACTIVATIONS)}; "
                             f"got {self.hidden_act!r}")
        _check_prob(c, hidden_dropout_prob=self.hidden_dropout_prob,
                    attention_probs_dropout_prob=self.attention_probs_dropout_prob)
        if self.classifier_dropout is not None:
            _check_prob(c, classifier_dropout=self.classifier_dropout)
        if self.extra.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{c}: only position_embedding_type='absolute' is supported; "
                             f"got {self.extra['position_embedding_type']!r}")
        if self.extra.get("is_decoder") or self.extra.get("add_cross_attention"):
            raise ValueError(f"{c}: BERT as a decoder (is_decoder, add_cross_attention) "
                             "is not supported")
        if self.id2label is None:
            self.id2label = {0: "LABEL_0", 1: "LABEL_1"}
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ValueError(f"{c}: id2label keys must be 0..num_labels-1; "
                             f"got {sorted(self.id2label)}")
        self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def with_num_labels(self, num_labels: int) -> "BertConfig":
        """A copy with ``num_labels`` generic labels (LABEL_0 ...), as transformers names them."""
        _check_positive("BertConfig", num_labels=num_labels)
        return dataclasses.replace(
            self, id2label={i: f"LABEL_{i}" for i in range(num_labels)}, label2id=None)


@dataclass
class MarianConfig(_ConfigDict):
    """Marian encoder-decoder hyper-parameters (names and defaults of transformers'
    MarianConfig).

    ``decoder_vocab_size`` None means ``vocab_size``. With
    ``share_encoder_decoder_embeddings`` one table (``shared``) serves the
    encoder, the decoder and (``tie_word_embeddings``) the output head.
    """

    vocab_size: int = 58101
    decoder_vocab_size: int | None = None
    max_position_embeddings: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    activation_function: str = "gelu"
    d_model: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    decoder_start_token_id: int = 58100
    scale_embedding: bool = False
    pad_token_id: int = 58100
    eos_token_id: int = 0
    forced_eos_token_id: int | None = 0
    share_encoder_decoder_embeddings: bool = True
    tie_word_embeddings: bool = True
    extra: dict = field(default_factory=dict, repr=False)

    model_type = "marian"

    def __post_init__(self):
        c = "MarianConfig"
        if self.decoder_vocab_size is None:
            self.decoder_vocab_size = self.vocab_size
        _check_positive(c, vocab_size=self.vocab_size,
                        decoder_vocab_size=self.decoder_vocab_size,
                        max_position_embeddings=self.max_position_embeddings,
                        encoder_layers=self.encoder_layers, decoder_layers=self.decoder_layers,
                        encoder_ffn_dim=self.encoder_ffn_dim,
                        decoder_ffn_dim=self.decoder_ffn_dim, d_model=self.d_model,
                        encoder_attention_heads=self.encoder_attention_heads,
                        decoder_attention_heads=self.decoder_attention_heads)
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"{c}: d_model={self.d_model} must be divisible by "
                                 f"{name}={getattr(self, name)}")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"{c}: activation_function must be one of {sorted(ACTIVATIONS)}; "
                             f"got {self.activation_function!r}")
        _check_prob(c, dropout=self.dropout, attention_dropout=self.attention_dropout,
                    activation_dropout=self.activation_dropout)
        if self.share_encoder_decoder_embeddings and self.decoder_vocab_size != self.vocab_size:
            raise ValueError(f"{c}: shared embeddings need decoder_vocab_size == vocab_size; "
                             f"got {self.decoder_vocab_size} and {self.vocab_size}")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) \
                    or not 0 <= v < self.decoder_vocab_size:
                raise ValueError(f"{c}: {name} must be a token id in [0, "
                                 f"{self.decoder_vocab_size}); got {v!r}")
        for flag in ("encoder_layerdrop", "decoder_layerdrop"):
            if self.extra.get(flag):
                raise ValueError(f"{c}: {flag} > 0 is not supported; got {self.extra[flag]}")
        if self.extra.get("normalize_before") or self.extra.get("add_final_layer_norm"):
            raise ValueError(f"{c}: pre-LN Marian variants (normalize_before, "
                             "add_final_layer_norm) are not supported")
