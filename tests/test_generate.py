"""Generation: cached == uncached, greedy == a manual argmax loop, sampling, stops, errors."""

import numpy as np
import pytest

from scratchlm import to_numpy
from scratchlm import functional as F
from scratchlm.generate import (
    generate, generate_text, position_ids_from_mask, sample_from_logits, top_k_filter,
    top_p_filter,
)
from scratchlm.models import GPT, GPTConfig
from scratchlm.kernels.decode import GPTDecoder

V = 50
PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]    # different lengths: left padding


def tiny_config(**kw):
    args = dict(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    args.update(kw)
    return GPTConfig(**args)


def tiny_gpt(dtype="float64", seed=0, std=0.2):
    # A larger init std than GPT-2's 0.02 gives peaked, well-separated logits,
    # so greedy choices and draws are not decided by rounding.
    return GPT(tiny_config(initializer_range=std), seed=seed, dtype=dtype)


@pytest.fixture(scope="module")
def gpt64():
    return tiny_gpt("float64")


@pytest.fixture(scope="module")
def gpt32():
    return tiny_gpt("float32")


# --- cached and uncached generation agree ---------------------------------
SAMPLING = {
    "greedy": dict(do_sample=False),
    "temperature0": dict(temperature=0.0),
    "sample": dict(seed=3),
    "sample_hot": dict(seed=4, temperature=1.7),
    "top_k": dict(seed=5, top_k=5),
    "top_p": dict(seed=6, top_p=0.8),
    "all": dict(seed=7, temperature=0.7, top_k=20, top_p=0.9),
}


@pytest.mark.parametrize("name", list(SAMPLING))
@pytest.mark.parametrize("prompts", [[[1, 2, 3, 4]], [[1, 2, 3], [4, 5, 6]], PROMPTS],
                         ids=["single", "batch", "ragged"])
def test_cached_equals_uncached_float64(gpt64, name, prompts):
    kw = SAMPLING[name]
    cached = generate(gpt64, prompts, 25, use_cache=True, **kw)
    uncached = generate(gpt64, prompts, 25, use_cache=False, **kw)
    assert cached.shape == (len(prompts), max(map(len, prompts)) + 25)
    np.testing.assert_array_equal(cached, uncached)


@pytest.mark.parametrize("prompts", [[[1, 2, 3, 4]], PROMPTS], ids=["single", "ragged"])
def test_cached_equals_uncached_float32_greedy(gpt32, prompts):
    cached = generate(gpt32, prompts, 25, do_sample=False, use_cache=True)
    uncached = generate(gpt32, prompts, 25, do_sample=False, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)


def test_cached_equals_uncached_with_eos(gpt64):
    eos = int(generate(gpt64, PROMPTS, 6, do_sample=False)[1, -1])  # row 1 ends at step 6
    for kw in (dict(do_sample=False), dict(seed=1)):
        a = generate(gpt64, PROMPTS, 20, eos_token_id=eos, pad_token_id=0, use_cache=True, **kw)
        b = generate(gpt64, PROMPTS, 20, eos_token_id=eos, pad_token_id=0, use_cache=False,
                     **kw)
        np.testing.assert_array_equal(a, b)


def test_cached_last_step_logits_equal_full_forward(gpt64):
    """The logits of one cached step equal the full forward's at that position."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=(2, 12))
    T0 = 7
    cfg = gpt64.config
    caches = [F.KVCache(2, cfg.n_head, 12, cfg.n_embd // cfg.n_head, gpt64.dtype)
              for _ in range(cfg.n_layer)]
    full = gpt64.eval()(ids).logits                     # (B, 12, V)
    prompt_logits = gpt64(ids[:, :T0], kv_caches=caches).logits
    np.testing.assert_allclose(prompt_logits, full[:, :T0], rtol=0, atol=1e-12)
    for t in range(T0, 12):
        step = gpt64(ids[:, t:t + 1], kv_caches=caches).logits[:, 0]
        np.testing.assert_allclose(step, full[:, t], rtol=0, atol=1e-12)
    assert caches[0].length == 12


def test_cached_step_logits_with_left_padding(gpt64):
    """Left-padded cached steps: same logits as the uncached forward, positions counted."""
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    ids = np.where(mask == 1, np.arange(6) + 3, 0)
    pos = position_ids_from_mask(mask)
    np.testing.assert_array_equal(pos, [[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])
    cfg = gpt64.config
    caches = [F.KVCache(2, cfg.n_head, 6, cfg.n_embd // cfg.n_head, gpt64.dtype)
              for _ in range(cfg.n_layer)]
    gpt64.eval()
    full = gpt64(ids, attention_mask=mask, position_ids=pos).logits
    gpt64(ids[:, :4], attention_mask=mask[:, :4], position_ids=pos[:, :4], kv_caches=caches)
    for t in (4, 5):
        step = gpt64(ids[:, t:t + 1], attention_mask=mask[:, :t + 1],
                     position_ids=pos[:, t:t + 1], kv_caches=caches).logits[:, 0]
        np.testing.assert_allclose(step, full[:, t], rtol=0, atol=1e-12)
    # The real tokens of the padded row see what they would see alone.
    alone = gpt64(ids[:1, 2:]).logits
    np.testing.assert_allclose(full[:1, 2:], alone, rtol=0, atol=1e-12)


# --- the engine's lean decoder (GPTDecoder) equals GPT.forward with KV caches ----------
class ForwardOnly:
    """A GPT seen as any model: generate's cached path then runs model.forward with KV
    caches (the reference path, as under use_kernels("textbook"))."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)


DECODER_CONFIGS = {
    "gelu_new": dict(),
    "gelu_erf": dict(activation_function="gelu", n_head=2, layer_norm_epsilon=1e-6),
    "relu": dict(activation_function="relu", n_inner=48, n_layer=3),
    "tanh": dict(activation_function="tanh", n_head=8, n_embd=16),
}


def decoder_gpt(name, dtype="float64"):
    return GPT(tiny_config(initializer_range=0.2, **DECODER_CONFIGS[name]), seed=1,
               dtype=dtype)


@pytest.mark.parametrize("name", list(DECODER_CONFIGS))
@pytest.mark.parametrize("padded", [False, True], ids=["full", "left_padded"])
def test_decoder_logits_equal_full_forward(name, padded):
    """Prompt in two chunks, then one token at a time: each step's logits are the full forward's."""
    model = decoder_gpt(name).eval()
    rng = np.random.default_rng(0)
    B, T = 3, 14
    ids = rng.integers(0, V, size=(B, T))
    mask = np.ones((B, T), dtype=np.int64)
    if padded:
        mask[0, :4] = 0
        mask[2, :1] = 0
        ids[mask == 0] = 0
    pos = position_ids_from_mask(mask)
    full = model(ids, attention_mask=mask, position_ids=pos).logits     # (B, T, V)
    dec = GPTDecoder(model, B, T)
    if padded:
        dec.set_padding(mask[:, :6])                    # generated positions are real: the
        assert mask[:, 6:].all()                        # mask past the prompt is all ones
    cuts = [(0, 4), (4, 6)] + [(t, t + 1) for t in range(6, T)]
    for t0, t1 in cuts:
        step = dec.forward(ids[:, t0:t1], pos[:, t0:t1] if padded else None)
        assert step.shape == (B, V) and step.dtype == np.float64
        real = mask[:, t1 - 1] == 1                     # a padding query's output is unused
        np.testing.assert_allclose(step[real], full[real, t1 - 1], rtol=0, atol=1e-10)
    assert dec.length == T
    with pytest.raises(ValueError, match="max_length"):
        dec.forward(ids[:, :1])


@pytest.mark.parametrize("name", ["greedy", "sample", "all"])
@pytest.mark.parametrize("prompts", [[[1, 2, 3, 4]], PROMPTS], ids=["single", "ragged"])
@pytest.mark.parametrize("config", list(DECODER_CONFIGS))
def test_decoder_tokens_equal_forward_path(config, prompts, name):
    """generate through GPTDecoder and through model.forward with KVCaches: the same tokens."""
    model = decoder_gpt(config)
    kw = SAMPLING[name]
    lean = generate(model, prompts, 20, use_cache=True, **kw)
    plain = generate(ForwardOnly(model), prompts, 20, use_cache=True, **kw)
    np.testing.assert_array_equal(lean, plain)


def test_decoder_tokens_equal_forward_path_eos_and_float32(gpt64, gpt32):
    eos = int(generate(gpt64, PROMPTS, 6, do_sample=False)[1, -1])   # row 1 ends at step 6
    for kw in (dict(do_sample=False), dict(seed=1, top_k=10)):
        a = generate(gpt64, PROMPTS, 20, eos_token_id=eos, pad_token_id=0, **kw)
        b = generate(ForwardOnly(gpt64), PROMPTS, 20, eos_token_id=eos, pad_token_id=0, **kw)
        np.testing.assert_array_equal(a, b)
        assert a.flags.c_contiguous
    for prompts in ([[1, 2, 3, 4]], PROMPTS):
        a = generate(gpt32, prompts, 30, do_sample=False)
        b = generate(ForwardOnly(gpt32), prompts, 30, do_sample=False)
        np.testing.assert_array_equal(a, b)


def test_decoder_float32_logits_close_to_forward(gpt32):
    ids = np.random.default_rng(2).integers(0, V, size=(2, 10))
    full = gpt32.eval()(ids).logits
    dec = GPTDecoder(gpt32, 2, 10)
    dec.forward(ids[:, :5])
    for t in range(5, 10):
        step = dec.forward(ids[:, t:t + 1])
        assert step.dtype == np.float32
        np.testing.assert_allclose(step, full[:, t], rtol=0, atol=1e-4)


def test_decoder_fills_the_context_and_checks_its_size(gpt64):
    n = gpt64.config.n_positions
    out = generate(gpt64, [[1, 2, 3]], n - 3, do_sample=False)
    ref = generate(ForwardOnly(gpt64), [[1, 2, 3]], n - 3, do_sample=False)
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="n_positions"):
        GPTDecoder(gpt64, 1, n + 1)
    with pytest.raises(ValueError, match="batch_size"):
        GPTDecoder(gpt64, 0, 4)


@pytest.mark.gpu
def test_decoder_on_cupy_equals_numpy():
    from scratchlm import backend
    ref = generate(decoder_gpt("gelu_new"), PROMPTS, 15, do_sample=False)
    gpu = decoder_gpt("gelu_new").to("cupy")
    out = generate(gpu, PROMPTS, 15, do_sample=False)
    assert backend.is_cupy_array(out)
    np.testing.assert_array_equal(to_numpy(out), ref)
    a = generate(gpu, PROMPTS, 15, seed=3, top_k=10)    # a cupy Generator: compare the
    b = generate(ForwardOnly(gpu), PROMPTS, 15, seed=3, top_k=10)   # two paths on the GPU
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


# --- greedy ------------------------------------------------------------------
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_is_argmax_of_full_forward(gpt64, use_cache):
    ids = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    out = generate(gpt64, ids, 15, do_sample=False, use_cache=use_cache)
    seq = ids
    for _ in range(15):                                 # the textbook loop
        nxt = gpt64.eval()(seq).logits[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)


def test_ragged_batch_rows_equal_single_prompts(gpt64):
    batch = generate(gpt64, PROMPTS, 12, do_sample=False)
    T = max(map(len, PROMPTS))
    for b, p in enumerate(PROMPTS):
        alone = generate(gpt64, [p], 12, do_sample=False)
        np.testing.assert_array_equal(batch[b, T - len(p):], alone[0])
        np.testing.assert_array_equal(batch[b, :T - len(p)], 0)   # left padding


def test_array_with_attention_mask_equals_list(gpt64):
    T = max(map(len, PROMPTS))
    ids = np.array([[0] * (T - len(p)) + p for p in PROMPTS])
    mask = np.array([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    for kw in (dict(do_sample=False), dict(seed=2, top_k=8)):
        a = generate(gpt64, ids, 10, attention_mask=mask, **kw)
        b = generate(gpt64, PROMPTS, 10, **kw)
        np.testing.assert_array_equal(a, b)


def test_top_k_1_and_tiny_top_p_equal_greedy(gpt64):
    greedy = generate(gpt64, PROMPTS, 20, do_sample=False)
    np.testing.assert_array_equal(generate(gpt64, PROMPTS, 20, top_k=1, seed=0), greedy)
    np.testing.assert_array_equal(generate(gpt64, PROMPTS, 20, top_p=1e-9, seed=0), greedy)


def test_flat_prompt_and_zero_new_tokens(gpt64):
    out = generate(gpt64, [1, 2, 3], 4, do_sample=False)
    np.testing.assert_array_equal(out, generate(gpt64, [[1, 2, 3]], 4, do_sample=False))
    np.testing.assert_array_equal(generate(gpt64, [[1, 2, 3]], 0), [[1, 2, 3]])


# --- sampling ----------------------------------------------------------------
def test_seed_reproduces_and_seeds_differ(gpt64):
    a = generate(gpt64, PROMPTS, 20, seed=11)
    np.testing.assert_array_equal(a, generate(gpt64, PROMPTS, 20, seed=11))
    assert not np.array_equal(a, generate(gpt64, PROMPTS, 20, seed=12))
    g = np.random.default_rng(11)
    np.testing.assert_array_equal(a, generate(gpt64, PROMPTS, 20, rng=g))


def test_sampling_follows_the_distribution():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]] * 20000))
    u = np.random.default_rng(0).random(20000)
    counts = np.bincount(sample_from_logits(logits, u), minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    # A filtered (-inf) token is never drawn, even for u close to 1.
    z = np.array([[0.0, 1.0, -np.inf]] * 3)
    np.testing.assert_array_equal(
        sample_from_logits(z, np.array([0.0, 0.5, 1 - 2.0 ** -53])), [0, 1, 1])


def test_top_k_filter():
    z = np.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = top_k_filter(z, 2)
    np.testing.assert_array_equal(out, [[-np.inf, 5.0, -np.inf, 4.0, -np.inf]])
    np.testing.assert_array_equal(top_k_filter(z, 99), z)
    assert top_k_filter(z.astype(np.float32), 2).dtype == np.float32


def test_top_p_filter_matches_definition():
    p = np.array([[0.05, 0.5, 0.25, 0.2]])
    z = np.log(p)
    keep = lambda top_p: np.isfinite(top_p_filter(z, top_p))[0].tolist()
    assert keep(0.5) == [False, True, False, False]    # 0.5 reaches 0.5
    assert keep(0.6) == [False, True, True, False]     # 0.5 + 0.25 >= 0.6
    assert keep(0.9) == [False, True, True, True]
    assert keep(0.99) == [True, True, True, True]
    assert keep(1e-9) == [False, True, False, False]   # at least one token


@pytest.mark.reference
def test_top_p_filter_matches_transformers():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch
    z = np.random.default_rng(1).standard_normal((4, 30)) * 2
    for top_p in (0.1, 0.5, 0.9, 0.999):
        warper = transformers.TopPLogitsWarper(top_p)
        ref = warper(None, torch.from_numpy(z.copy())).numpy()
        np.testing.assert_array_equal(np.isfinite(top_p_filter(z, top_p)), np.isfinite(ref))
        warper = transformers.TopKLogitsWarper(7)
        ref = warper(None, torch.from_numpy(z.copy())).numpy()
        np.testing.assert_array_equal(np.isfinite(top_k_filter(z, 7)), np.isfinite(ref))


# --- stopping ----------------------------------------------------------------
def test_eos_stops_and_pads(gpt64):
    free = generate(gpt64, PROMPTS, 20, do_sample=False)
    T = max(map(len, PROMPTS))
    eos = int(free[1, T + 3])                           # row 1 emits it by step 4
    out = generate(gpt64, PROMPTS, 20, do_sample=False, eos_token_id=eos, pad_token_id=49)
    for b in range(len(PROMPTS)):
        new = out[b, T:]
        hits = np.flatnonzero(free[b, T:] == eos)
        if hits.size and hits[0] < new.size:
            end = hits[0]
            np.testing.assert_array_equal(new[:end + 1], free[b, T:T + end + 1])
            assert (new[end + 1:] == 49).all()
        else:
            np.testing.assert_array_equal(new, free[b, T:T + new.size])
    # Stopping early once every row has ended: one prompt, ended at its first eos.
    end = np.flatnonzero(free[1, T:] == eos)[0]
    one = generate(gpt64, [PROMPTS[1]], 20, do_sample=False, eos_token_id=eos)
    assert one.shape == (1, len(PROMPTS[1]) + end + 1) and one[0, -1] == eos
    # A list of stop ids.
    two = generate(gpt64, [PROMPTS[1]], 20, do_sample=False, eos_token_id=[48, eos])
    np.testing.assert_array_equal(two, one)


def test_mode_restored(gpt64):
    gpt64.train()
    generate(gpt64, PROMPTS, 3, seed=0)
    assert gpt64.training and all(m.training for m in gpt64.modules())
    gpt64.eval()
    generate(gpt64, PROMPTS, 3, seed=0)
    assert not gpt64.training


def test_dropout_model_generates_deterministically():
    m = GPT(tiny_config(resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5), dtype="float64")
    m.train()
    a = generate(m, PROMPTS, 8, do_sample=False)
    b = generate(m, PROMPTS, 8, do_sample=False, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert m.training


# --- generate_text -----------------------------------------------------------
class CharTok:
    """A duck-typed tokenizer over the characters 'a'..."""

    eos_token_id = None

    def encode(self, text):
        return [ord(c) - ord("a") for c in text]

    def decode(self, ids):
        return "".join(chr(i + ord("a")) for i in ids)


def test_generate_text(gpt64):
    tok = CharTok()
    text = generate_text(gpt64, tok, "hello", 6, do_sample=False)
    ids = generate(gpt64, [tok.encode("hello")], 6, do_sample=False)
    assert text == tok.decode(to_numpy(ids)[0].tolist()) and len(text) == 11
    new = generate_text(gpt64, tok, "hello", 6, do_sample=False, return_full_text=False)
    assert text == "hello" + new
    texts = generate_text(gpt64, tok, ["hello", "hi"], 6, do_sample=False)
    assert texts[0] == text and texts[1].startswith("hi") and len(texts[1]) == 8
    eos = tok.encode(new[2])[0]
    cut = generate_text(gpt64, tok, "hello", 6, do_sample=False, eos_token_id=eos)
    assert cut == "hello" + new[:new.index(new[2]) + 1]


# --- errors ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=-1), "max_new_tokens.*-1"),
    (dict(max_new_tokens=2.0), "max_new_tokens.*2.0"),
    (dict(max_new_tokens=True), "max_new_tokens.*True"),
    (dict(temperature=-0.5), "temperature.*-0.5"),
    (dict(temperature=float("nan")), "temperature.*nan"),
    (dict(top_k=0), "top_k.*0"),
    (dict(top_k=2.5), "top_k.*2.5"),
    (dict(top_p=0.0), "top_p.*0.0"),
    (dict(top_p=1.5), "top_p.*1.5"),
    (dict(input_ids=[[]]), r"input_ids\[0\].*empty"),
    (dict(input_ids=[[1, 2], []]), r"input_ids\[1\].*empty"),
    (dict(input_ids=[]), "input_ids.*empty"),
    (dict(input_ids=np.zeros((1, 0), dtype=np.int64)), r"input_ids.*\(1, 0\)"),
    (dict(input_ids=[[1, 50]]), r"input_ids.*\[0, 50\).*50"),
    (dict(input_ids=[[1, -1]]), r"input_ids.*\[0, 50\).*-1"),
    (dict(input_ids=np.array([[1, 99]])), r"input_ids.*\[0, 50\).*99"),
    (dict(input_ids=np.array([[1.0, 2.0]])), "input_ids.*float64"),
    (dict(max_new_tokens=62), "T=3.*62.*n_positions=64"),
    (dict(eos_token_id=50), "eos_token_id.*50"),
    (dict(pad_token_id=-2), "pad_token_id.*-2"),
    (dict(seed=1, rng=np.random.default_rng(1)), "seed.*rng"),
    (dict(input_ids=np.array([[1, 2]]), attention_mask=np.array([[1, 0]])),
     "attention_mask.*left-padded"),
    (dict(input_ids=np.array([[1, 2]]), attention_mask=np.array([[1, 2]])),
     "attention_mask.*0/1"),
    (dict(attention_mask=np.array([[1, 1, 1]])), "attention_mask.*array"),
])
def test_errors(gpt64, kwargs, match):
    args = dict(input_ids=[[1, 2, 3]], max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate(gpt64, args.pop("input_ids"), args.pop("max_new_tokens"), **args)


# --- transformers reference ---------------------------------------------------
@pytest.mark.reference
def test_greedy_matches_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2, bos_token_id=0,
        eos_token_id=0, pad_token_id=0, attn_implementation="eager")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).double().eval()
    assert hf.config._attn_implementation == "eager"
    ours = GPT(tiny_config(initializer_range=0.2), dtype="float64")
    params = dict(ours.named_parameters())
    for name, tensor in hf.state_dict().items():
        if name.startswith("transformer."):
            params[name[len("transformer."):]].data[...] = tensor.numpy()
    T = max(map(len, PROMPTS))
    ids = np.array([[0] * (T - len(p)) + p for p in PROMPTS])
    mask = np.array([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    ref = hf.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0,
                      eos_token_id=None).numpy()
    for use_cache in (True, False):
        out = generate(ours, ids, 20, attention_mask=mask, do_sample=False,
                       use_cache=use_cache)
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name", ["greedy", "sample"])
def test_textbook_generation_runs_the_models_own_forward_and_gives_the_same_tokens(name):
    """Under "textbook" the table has no lean decoder: generate takes the reference path."""
    import scratchlm
    from scratchlm.kernels import table

    model = decoder_gpt("gelu_new")
    before = scratchlm.get_kernels()
    try:
        scratchlm.use_kernels("textbook")
        assert table(model.wte.weight.data).gpt_decoder is None
        textbook = generate(model, PROMPTS, 12, use_cache=True, **SAMPLING[name])
        scratchlm.use_kernels("fast")
        assert table(model.wte.weight.data).gpt_decoder is GPTDecoder
        fast = generate(model, PROMPTS, 12, use_cache=True, **SAMPLING[name])
    finally:
        scratchlm.use_kernels(before)
    np.testing.assert_array_equal(fast, textbook)
