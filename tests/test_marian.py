"""Marian (encoder-decoder): gradients by finite differences, cross-attention, caches,
generation, checkpoints and errors. No PyTorch needed; the transformers parity is in
test_marian_parity.py.

The finite-difference cases keep the pad id out of every input whose output
reaches the loss: as torch.nn.Embedding(padding_idx) does, the pad row of a
table gets no gradient from a lookup, which a finite difference would see.
So the decoder starts with an id other than pad here, padded source positions
hold ordinary ids (the mask hides them), and ignored labels (-100, read as pad
by the shift) are a suffix of each row, or come with explicit decoder inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import scratchlm
from scratchlm.functional import KVCache
from scratchlm.gradcheck import directional_derivative
from scratchlm.models.configs import MarianConfig
from scratchlm.models.marian import (
    MarianModel, MarianMTModel, shift_tokens_right, sinusoidal_positions,
)
from scratchlm.nn import MultiHeadAttention
from test_model_gradients import assert_directional_derivatives, jitter

V = 23              # source vocabulary (and target, when shared)
V_DEC = 17          # target vocabulary when not shared
PAD = 3
START = 5           # != PAD in the finite-difference cases (see the module docstring)
T_LONG = (65, 72)   # past the fast attention's first block of 64 query rows

checks = settings(max_examples=25, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.function_scoped_fixture])


class Case(NamedTuple):
    S: int                  # source length
    T: int                  # target length
    src_pad: tuple          # right padding of each source row; len = B
    tgt_pad: tuple          # ignored label suffix of each target row
    activation: str
    scale_embedding: bool
    share: bool
    tie: bool
    explicit_decoder_inputs: bool   # pass decoder_input_ids, labels with -100 anywhere
    seed: int


@st.composite
def cases(draw):
    """ReLU is left to the transformers parity: its kink breaks finite differences."""
    S = draw(st.integers(1, 9) | st.integers(*T_LONG))
    T = draw(st.integers(1, 8) | st.integers(*T_LONG))
    B = draw(st.integers(1, 3))
    share = draw(st.booleans())
    return Case(S, T, tuple(draw(st.integers(0, S - 1)) for _ in range(B)),
                tuple(draw(st.integers(0, T - 1)) for _ in range(B)),
                draw(st.sampled_from(["swish", "gelu"])), draw(st.booleans()),
                share, draw(st.booleans()), draw(st.booleans()),
                draw(st.integers(0, 2**32 - 1)))


LONG = Case(S=70, T=67, src_pad=(0, 12, 69), tgt_pad=(3, 0, 66), activation="swish",
            scale_embedding=True, share=True, tie=True, explicit_decoder_inputs=False, seed=1)
UNSHARED = Case(S=5, T=6, src_pad=(2, 0), tgt_pad=(0, 4), activation="gelu",
                scale_embedding=False, share=False, tie=False, explicit_decoder_inputs=True,
                seed=2)


def tiny_config(case=None, **kw):
    share = True if case is None else case.share
    base = dict(vocab_size=V, decoder_vocab_size=V if share else V_DEC, d_model=8,
                encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=12, decoder_ffn_dim=10,
                max_position_embeddings=80, pad_token_id=PAD, eos_token_id=0,
                decoder_start_token_id=START, dropout=0.0, init_std=0.3)
    if case is not None:
        base.update(activation_function=case.activation, scale_embedding=case.scale_embedding,
                    share_encoder_decoder_embeddings=case.share, tie_word_embeddings=case.tie)
    base.update(kw)
    return MarianConfig(**base)


def ordinary_ids(rng, high, shape):
    """Ids in [0, high) other than PAD and START."""
    ids = rng.integers(0, high - 2, shape)
    return ids + (ids >= min(PAD, START)) + (ids + (ids >= min(PAD, START)) >= max(PAD, START))


def make(case):
    rng = np.random.default_rng(case.seed)
    cfg = tiny_config(case)
    model = jitter(MarianMTModel(cfg, seed=case.seed % 1000, dtype="float64"), rng)
    B = len(case.src_pad)
    src = ordinary_ids(rng, V, (B, case.S))
    mask = (np.arange(case.S)[None, :] < case.S - np.array(case.src_pad)[:, None])
    labels = ordinary_ids(rng, cfg.decoder_vocab_size, (B, case.T))
    batch = dict(input_ids=src, attention_mask=mask.astype(np.int64))
    if case.explicit_decoder_inputs:
        batch["decoder_input_ids"] = ordinary_ids(rng, cfg.decoder_vocab_size, (B, case.T))
        labels[rng.random((B, case.T)) < 0.3] = -100
    else:
        for b, p in enumerate(case.tgt_pad):
            labels[b, case.T - p:] = -100
    labels[0, 0] = ordinary_ids(rng, cfg.decoder_vocab_size, ())   # one counted target
    batch["labels"] = labels
    return model, lambda m: m(**batch).loss, lambda m: m.backward()


@checks
@given(case=cases())
@example(case=LONG)
@example(case=UNSHARED)
def test_marian_gradients_match_finite_differences(kernels, case):
    assert scratchlm.get_kernels() == kernels
    model, loss, backward = make(case)
    assert_directional_derivatives(model, loss, backward, case.seed)


@checks
@given(case=cases())
def test_marian_model_gradients_from_both_outputs(kernels, case):
    """MarianModel's backward takes upstream gradients of the decoder's and the encoder's output."""
    rng = np.random.default_rng(case.seed)
    model = jitter(MarianModel(tiny_config(case), seed=1, dtype="float64"), rng)
    B = len(case.src_pad)
    src = ordinary_ids(rng, V, (B, case.S))
    tgt = ordinary_ids(rng, model.config.decoder_vocab_size, (B, case.T))
    mask = (np.arange(case.S)[None, :] < case.S - np.array(case.src_pad)[:, None])
    # Upstream gradients of size 1/N keep the summed loss O(1): its rounding then
    # stays far below the tolerance of a zero gradient (k_proj's bias).
    dy = rng.standard_normal((B, case.T, 8)) / (B * case.T * 8)
    de = rng.standard_normal((B, case.S, 8)) / (B * case.S * 8) if case.seed % 2 else None

    def loss(m):
        out = m(src, mask.astype(np.int64), tgt)
        total = (out.last_hidden_state * dy).sum()
        return total if de is None else total + (out.encoder_last_hidden_state * de).sum()

    assert_directional_derivatives(model, loss, lambda m: m.backward(dy, de), case.seed)


# --- cross-attention on its own ----------------------------------------------------

@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(Tq=st.integers(1, 7), Tk=st.integers(1, 9), B=st.integers(1, 3),
       heads=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**32 - 1))
def test_cross_attention_gradients(kernels, Tq, Tk, B, heads, seed):
    """dx, dmemory and every projection's gradient, with the memory's padding mask."""
    rng = np.random.default_rng(seed)
    attn = MultiHeadAttention(8, heads, rng=rng, std=0.5, dtype="float64").train()
    for p in attn.parameters():
        p.data += 0.1 * rng.standard_normal(p.data.shape)
    x = rng.standard_normal((B, Tq, 8))
    memory = rng.standard_normal((B, Tk, 8))
    keep = rng.random((B, Tk)) < 0.7
    keep[:, 0] = True                                   # every query sees a key
    dy = rng.standard_normal((B, Tq, 8))

    def f():
        return float((attn.forward(x, memory, mask=keep) * dy).sum())

    attn.zero_grad()
    f()
    dx, dm = attn.backward(dy)
    for name, arr, grad in [("x", x, dx), ("memory", memory, dm),
                            *[(n, p.data, p.grad.copy()) for n, p in attn.named_parameters()]]:
        u = rng.standard_normal(arr.shape)
        u /= np.linalg.norm(u)
        numeric = directional_derivative(f, arr, u, 1e-6)
        analytic = float((grad * u).sum())
        assert abs(analytic - numeric) <= 1e-8 + 1e-6 * abs(numeric), name
        attn.forward(x, memory, mask=keep)              # leave no stale cache
        attn.backward(dy)


def test_cross_attention_static_kv_equals_projection():
    rng = np.random.default_rng(0)
    attn = MultiHeadAttention(8, 2, rng=rng, dtype="float64").eval()
    x, m = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, 8))
    np.testing.assert_allclose(attn.forward(x, static_kv=attn.project_memory(m)),
                               attn.forward(x, m), rtol=1e-13, atol=1e-15)


# --- the pieces of the model ---------------------------------------------------------

def test_sinusoidal_positions_layout():
    P = sinusoidal_positions(50, 6)
    p, j = 7, 1
    angle = p / 10000 ** (2 * j / 6)
    assert P[p, j] == pytest.approx(np.sin(angle), abs=1e-7)       # sin: first half
    assert P[p, 3 + j] == pytest.approx(np.cos(angle), abs=1e-7)   # cos: second half
    assert np.all(P[0, :3] == 0) and np.all(P[0, 3:] == 1)
    assert np.array_equal(P, P.astype(np.float32).astype(np.float64))  # float32 values


def test_shift_tokens_right():
    labels = np.array([[7, 8, 9], [4, -100, -100]])
    np.testing.assert_array_equal(shift_tokens_right(labels, 3, 5), [[5, 7, 8], [5, 4, 3]])


def test_labels_alone_equal_explicit_shifted_inputs():
    model = MarianMTModel(tiny_config(), dtype="float64").eval()
    rng = np.random.default_rng(0)
    src, labels = ordinary_ids(rng, V, (2, 4)), ordinary_ids(rng, V, (2, 5))
    labels[1, 3:] = -100
    a = model(src, labels=labels)
    b = model(src, decoder_input_ids=shift_tokens_right(labels, PAD, START), labels=labels)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert float(a.loss) == float(b.loss)


def test_shared_table_is_one_parameter_with_every_use():
    model = MarianMTModel(tiny_config(), dtype="float64")
    tables = [n for n, p in model.named_parameters() if p.data.shape == (V, 8)]
    assert tables == ["model.shared.weight"]
    assert model.final_logits_bias.requires_grad is False


def test_kv_cached_decoding_equals_full_forward(kernels):
    rng = np.random.default_rng(1)
    model = jitter(MarianMTModel(tiny_config(), dtype="float64"), rng).eval()
    src = ordinary_ids(rng, V, (2, 6))
    mask = np.ones((2, 6), dtype=np.int64)
    mask[1, 4:] = 0
    tgt = ordinary_ids(rng, V, (2, 7))
    full = model(src, mask, decoder_input_ids=tgt).logits
    memory, add_mask = model.encode(src, mask)
    caches = model.new_caches(2, 7)
    static = model.cross_kv(memory)
    steps = [model.decode_step(tgt[:, :3], add_mask, caches, static)]      # a prompt, then
    steps += [model.decode_step(tgt[:, t:t + 1], add_mask, caches, static)  # one at a time
              for t in range(3, 7)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-12, atol=1e-13)
    assert isinstance(caches[0], KVCache) and caches[0].length == 7


def _greedy_by_full_forward(model, src, mask, n):
    """Greedy decoding with no cache: the whole prefix through forward at every step."""
    cfg = model.config
    out = np.full((src.shape[0], 1), cfg.decoder_start_token_id)
    done = np.zeros(src.shape[0], dtype=bool)
    for t in range(n):
        logits = model(src, mask, decoder_input_ids=out).logits[:, -1].copy()
        if t == n - 1:
            logits[:] = -np.inf
            logits[:, cfg.forced_eos_token_id] = 0
        nxt = np.where(done, cfg.pad_token_id, logits.argmax(-1))
        out = np.concatenate([out, nxt[:, None]], axis=1)
        done |= nxt == cfg.eos_token_id
        if done.all():
            break
    return out


def test_greedy_generation_equals_uncached_argmax(kernels):
    rng = np.random.default_rng(2)
    cfg = tiny_config(eos_token_id=1)
    model = jitter(MarianMTModel(cfg, dtype="float64"), rng).eval()
    model.final_logits_bias.data[0, 1] = 1.5            # eos likely: rows end at different steps
    src = ordinary_ids(rng, V, (4, 6))
    mask = np.ones((4, 6), dtype=np.int64)
    mask[2, 3:] = 0
    got = model.generate(src, attention_mask=mask, max_new_tokens=9)
    np.testing.assert_array_equal(got, _greedy_by_full_forward(model, src, mask, 9))
    assert got[:, 0].tolist() == [START] * 4


def test_beam_search_with_one_beam_is_greedy():
    rng = np.random.default_rng(3)
    model = jitter(MarianMTModel(tiny_config(), dtype="float64"), rng).eval()
    src = ordinary_ids(rng, V, (3, 5))
    greedy = model.generate(src, max_new_tokens=6)
    beams = model.generate(src, max_new_tokens=6, num_beams=3)
    assert beams.shape[0] == 3 and beams[:, 0].tolist() == [START] * 3
    np.testing.assert_array_equal(model.generate(src, max_new_tokens=6, num_beams=1), greedy)


def test_generation_keeps_the_training_mode():
    model = MarianMTModel(tiny_config(), dtype="float64").train()
    model.generate(np.array([[1, 2]]), max_new_tokens=2)
    assert model.training


# --- checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize("share,tie", [(True, True), (False, True), (False, False)])
def test_save_and_load_round_trip(tmp_path, share, tie):
    case = UNSHARED._replace(share=share, tie=tie)
    model = jitter(MarianMTModel(tiny_config(case), dtype="float64"), np.random.default_rng(0))
    model.final_logits_bias.data[...] = np.random.default_rng(1).standard_normal((1, 1))
    model.save_pretrained(tmp_path)
    back = MarianMTModel.from_pretrained(tmp_path)
    assert back.config == model.config
    for (n, p), (n2, q) in zip(model.named_parameters(), back.named_parameters()):
        assert n == n2 and np.array_equal(p.data, q.data), n
    src = np.array([[1, 2, 4]])
    np.testing.assert_array_equal(back(src, decoder_input_ids=src).logits,
                                  model(src, decoder_input_ids=src).logits)


def test_half_precision_checkpoints_load(tmp_path):
    from scratchlm.safetensors_io import read_safetensors, write_safetensors
    from test_checkpoint import bfloat16_bits, write_bf16
    model = MarianMTModel(tiny_config(), dtype="float32")
    model.save_pretrained(tmp_path)
    tensors = read_safetensors(tmp_path / "model.safetensors")
    for dtype in ("float16", "bfloat16"):
        if dtype == "bfloat16":
            write_bf16(tmp_path / "model.safetensors",
                       {k: bfloat16_bits(v) for k, v in tensors.items()})
        else:
            write_safetensors(tmp_path / "model.safetensors",
                              {k: v.astype(np.float16) for k, v in tensors.items()},
                              metadata={"format": "pt"})
        back = MarianMTModel.from_pretrained(tmp_path)
        assert back.dtype == np.float32, dtype
        np.testing.assert_allclose(back.model.shared.weight.data,
                                   model.model.shared.weight.data, rtol=1e-2, atol=1e-3)
        src = np.array([[1, 2, 4]])
        np.testing.assert_allclose(back(src, decoder_input_ids=src).logits,
                                   model(src, decoder_input_ids=src).logits, atol=0.05)


def test_stored_position_tables_are_checked(tmp_path):
    from scratchlm.safetensors_io import read_safetensors, write_safetensors
    cfg = tiny_config()
    model = MarianMTModel(cfg, dtype="float32")
    model.save_pretrained(tmp_path)
    tensors = read_safetensors(tmp_path / "model.safetensors")
    table = sinusoidal_positions(cfg.max_position_embeddings, cfg.d_model).astype(np.float32)
    for stack in ("encoder", "decoder"):
        tensors[f"model.{stack}.embed_positions.weight"] = table
    write_safetensors(tmp_path / "model.safetensors", tensors, metadata={"format": "pt"})
    MarianMTModel.from_pretrained(tmp_path)             # the right table: accepted
    write_safetensors(tmp_path / "model.safetensors",
                      {k: v.astype(np.float16) for k, v in tensors.items()},
                      metadata={"format": "pt"})
    MarianMTModel.from_pretrained(tmp_path)             # and rounded to float16
    tensors["model.decoder.embed_positions.weight"] = table[:, ::-1].copy()
    write_safetensors(tmp_path / "model.safetensors", tensors, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="decoder.embed_positions.weight.*not Marian's"):
        MarianMTModel.from_pretrained(tmp_path)


# --- errors ------------------------------------------------------------------------

def test_clear_errors():
    model = MarianMTModel(tiny_config(), dtype="float64")
    src = np.array([[1, 2, 4]])
    with pytest.raises(ValueError, match="decoder_input_ids, or labels"):
        model(src)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 23\) or -100; got max value 30"):
        model(src, labels=np.array([[1, 30]]))
    with pytest.raises(ValueError, match=r"decoder_input_ids must have shape \(B, T\) = \(1, T\)"):
        model(src, decoder_input_ids=np.array([[1], [2]]))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(src, np.ones((1, 4), dtype=np.int64), decoder_input_ids=src)
    with pytest.raises(ValueError, match="max_position_embeddings=80"):
        model(np.ones((1, 81), dtype=np.int64), decoder_input_ids=src)
    with pytest.raises(ValueError, match="num_beams must be an int >= 1"):
        model.generate(src, num_beams=0)
    with pytest.raises(ValueError, match="shared embeddings need decoder_vocab_size"):
        tiny_config(decoder_vocab_size=V_DEC)
    with pytest.raises(ValueError, match="activation_function must be one of"):
        tiny_config(activation_function="softplus")
