"""Marian against transformers' MarianMTModel, in float64.

* logits, loss and every gradient on padded source and target batches, for
  swish / gelu / relu, scale_embedding on and off, shared and unshared
  tables, tied and untied heads, under both kernel modes;
* the weights after 3 AdamW steps;
* directories round trip both ways (transformers -> scratchlm -> transformers);
* greedy and beam generation, token for token, with padded batches and eos
  inside the beams.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from scratchlm import checkpoint  # noqa: E402
from scratchlm.models.marian import MarianMTModel  # noqa: E402
from scratchlm.optim import AdamW  # noqa: E402
from scratchlm.safetensors_io import read_safetensors  # noqa: E402
from test_hf_parity import rel_err  # noqa: E402

pytestmark = pytest.mark.reference

V = 40

# name -> (activation, scale_embedding, share, tie)
CONFIGS = {
    "swish-scaled-shared": ("swish", True, True, True),
    "gelu-unscaled-shared": ("gelu", False, True, True),
    "swish-unshared-tied": ("swish", False, False, True),
    "gelu-unshared-untied": ("gelu", True, False, False),
    "relu-scaled-shared": ("relu", True, True, True),
}


def hf_config(activation, scale, share, tie, **kw):
    v_dec = V if share else 33
    base = dict(vocab_size=V, decoder_vocab_size=v_dec, d_model=16, encoder_layers=2,
                decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=4,
                encoder_ffn_dim=24, decoder_ffn_dim=20, max_position_embeddings=64,
                pad_token_id=v_dec - 1, decoder_start_token_id=v_dec - 1, eos_token_id=0,
                forced_eos_token_id=0, dropout=0.0, activation_function=activation,
                scale_embedding=scale, share_encoder_decoder_embeddings=share,
                tie_word_embeddings=tie, init_std=0.1)
    base.update(kw)
    return transformers.MarianConfig(**base)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each config: a float64 transformers model (random final_logits_bias) and its directory."""
    out = {}
    for i, (name, args) in enumerate(CONFIGS.items()):
        torch.manual_seed(i)
        hf = transformers.MarianMTModel(hf_config(*args)).double()
        with torch.no_grad():
            hf.final_logits_bias.normal_()
        directory = tmp_path_factory.mktemp(name)
        hf.save_pretrained(directory)
        out[name] = (hf, directory)
    return out


def batch(v_dec, seed=0):
    """Padded source rows (right, as MarianTokenizer pads) and labels with -100 suffixes."""
    rng = np.random.default_rng(seed)
    src = rng.integers(1, V - 1, (3, 9))
    mask = np.ones((3, 9), dtype=np.int64)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    src[mask == 0] = V - 1
    labels = rng.integers(0, v_dec - 1, (3, 7))
    labels[1, 5:] = -100
    labels[2, 2:] = -100
    return dict(input_ids=src, attention_mask=mask, labels=labels)


def hf_forward_backward(hf, inputs):
    hf.train()
    hf.zero_grad()
    out = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    out.loss.backward()
    return out


def our_forward_backward(model, inputs):
    model.train()
    model.zero_grad()
    out = model(**inputs)
    model.backward()
    return out


def grad_errors(model, hf):
    """Each of our gradients against transformers', relative to the largest gradient's
    1e-3 (a key bias's gradient is zero in exact arithmetic: rounding noise in both)."""
    ours = checkpoint.hf_state_dict(model, {n: p.grad for n, p in model.named_parameters()
                                            if p.requires_grad} | {
        n: p.data * 0 for n, p in model.named_parameters() if not p.requires_grad})
    theirs = {n: p.grad.numpy() for n, p in hf.named_parameters() if p.requires_grad}
    assert set(theirs) <= set(ours), set(theirs) - set(ours)
    floor = 1e-3 * max(np.abs(g).max() for g in theirs.values())
    return {n: rel_err(ours[n], g, floor) for n, g in theirs.items()}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_loss_and_gradients_float64(name, saved, kernels):
    hf, directory = saved[name]
    model = MarianMTModel.from_pretrained(directory)
    assert model.dtype == np.float64
    inputs = batch(hf.config.decoder_vocab_size)
    ref = hf_forward_backward(hf, inputs)
    out = our_forward_backward(model, inputs)
    assert rel_err(out.logits, ref.logits.detach().numpy()) <= 1e-12
    assert abs(float(out.loss) - ref.loss.item()) <= 1e-12 * abs(ref.loss.item())
    assert rel_err(out.encoder_last_hidden_state,
                   ref.encoder_last_hidden_state.detach().numpy()) <= 1e-12
    errors = grad_errors(model, hf)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-10, (worst, errors[worst])


def test_decoder_inputs_given_and_decoder_padding_mask(saved):
    hf, directory = saved["swish-scaled-shared"]
    model = MarianMTModel.from_pretrained(directory)
    inputs = batch(V, seed=3)
    rng = np.random.default_rng(4)
    inputs["decoder_input_ids"] = rng.integers(0, V, (3, 7))
    inputs["decoder_attention_mask"] = np.ones((3, 7), dtype=np.int64)
    inputs["decoder_attention_mask"][1, 5:] = 0
    ref = hf_forward_backward(hf, inputs)
    out = our_forward_backward(model, inputs)
    counted = inputs["labels"] != -100
    assert rel_err(out.logits[counted], ref.logits.detach().numpy()[counted]) <= 1e-12
    errors = grad_errors(model, hf)
    assert max(errors.values()) <= 1e-10


@pytest.mark.parametrize("name", ["swish-scaled-shared", "gelu-unshared-untied"])
def test_weights_after_three_adamw_steps(name, saved):
    hf, directory = saved[name]
    theirs = copy.deepcopy(hf)
    model = MarianMTModel.from_pretrained(directory)
    kwargs = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05)
    hf_opt = torch.optim.AdamW(theirs.parameters(), foreach=False, **kwargs)
    opt = AdamW(model.named_parameters(), **kwargs)
    inputs = batch(hf.config.decoder_vocab_size, seed=5)
    for _ in range(3):
        hf_forward_backward(theirs, inputs)
        our_forward_backward(model, inputs)
        hf_opt.step()
        opt.step()
    ref = theirs.state_dict()
    ours = checkpoint.hf_state_dict(model)
    # Floor 1e-2: the key biases start at 0 and move by Adam's steps on rounding noise.
    errs = {n: rel_err(a, ref[n].numpy(), floor=1e-2) for n, a in ours.items()}
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-9, (worst, errs[worst])


@pytest.mark.parametrize("name", CONFIGS)
def test_directories_round_trip_both_ways(name, saved, tmp_path):
    hf, directory = saved[name]
    model = MarianMTModel.from_pretrained(directory)
    model.save_pretrained(tmp_path)
    assert set(read_safetensors(tmp_path / "model.safetensors")) == \
        set(read_safetensors(directory / "model.safetensors"))
    loaded, info = transformers.MarianMTModel.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    inputs = batch(hf.config.decoder_vocab_size)
    with torch.no_grad():
        ref = loaded.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    out = model.eval()(**inputs)
    assert rel_err(out.logits, ref.logits.numpy()) <= 1e-12
    assert np.array_equal(loaded.final_logits_bias.numpy(), hf.final_logits_bias.numpy())


def test_older_checkpoint_with_position_tables_loads(saved, tmp_path):
    """An old save that carries embed_positions: checked against the sinusoids, then skipped."""
    hf, _ = saved["swish-scaled-shared"]
    from scratchlm.safetensors_io import write_safetensors
    tensors = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert "model.encoder.embed_positions.weight" in tensors
    hf.config.save_pretrained(tmp_path)
    write_safetensors(tmp_path / "model.safetensors",
                      {k: np.ascontiguousarray(v) for k, v in tensors.items()
                       if k not in ("lm_head.weight", "model.encoder.embed_tokens.weight",
                                    "model.decoder.embed_tokens.weight")},
                      metadata={"format": "pt"})
    model = MarianMTModel.from_pretrained(tmp_path)
    inputs = batch(V)
    with torch.no_grad():
        ref = hf.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    assert rel_err(model(**inputs).logits, ref.logits.numpy()) <= 1e-12


# --- generation ------------------------------------------------------------------------

def generation_model(seed, eos_bias):
    """A float64 pair (transformers, scratchlm) whose eos is likely enough to end beams early."""
    torch.manual_seed(seed)
    hf = transformers.MarianMTModel(hf_config("swish", True, True, True, init_std=0.3)).double()
    with torch.no_grad():
        hf.final_logits_bias.normal_()
        hf.final_logits_bias[0, 0] += eos_bias
    hf.eval()
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    model = MarianMTModel(MarianMTModel.config_class.from_dict(hf.config.to_dict()),
                          dtype="float64")
    checkpoint.load_hf_state_dict(model, state)
    return hf, model.eval()


def sources(seed):
    rng = np.random.default_rng(seed)
    src = rng.integers(1, V - 1, (3, 8))
    mask = np.ones((3, 8), dtype=np.int64)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    src[mask == 0] = V - 1
    return src, mask


@pytest.mark.parametrize("seed,eos_bias", [(0, 2.0), (1, 3.0), (2, 1.0)])
@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", [
    (1, 1.0, False), (2, 1.0, False), (4, 1.0, True), (3, 0.5, "never"), (4, 2.0, False)])
def test_generation_token_equal(seed, eos_bias, num_beams, length_penalty, early_stopping,
                                kernels):
    hf, model = generation_model(seed, eos_bias)
    src, mask = sources(seed)
    with torch.no_grad():
        ref = hf.generate(torch.from_numpy(src), attention_mask=torch.from_numpy(mask),
                          max_new_tokens=10, num_beams=num_beams, do_sample=False,
                          length_penalty=length_penalty, early_stopping=early_stopping)
    got = model.generate(src, attention_mask=mask, max_new_tokens=10, num_beams=num_beams,
                         length_penalty=length_penalty, early_stopping=early_stopping)
    np.testing.assert_array_equal(got, ref.numpy())


def test_generation_parity_cases_end_inside_the_beams():
    """The eos biases above do end some sequences before the length limit."""
    ended_early = 0
    for seed, eos_bias in [(0, 2.0), (1, 3.0), (2, 1.0)]:
        hf, model = generation_model(seed, eos_bias)
        src, mask = sources(seed)
        got = model.generate(src, attention_mask=mask, max_new_tokens=10, num_beams=4)
        ended_early += int(((got[:, 1:-1] == 0).any(axis=1)).sum())
    assert ended_early >= 2
