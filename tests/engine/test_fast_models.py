"""Whole models: the fast kernels and the blockwise attention equal the textbook ops.

The same model and batch run under ``use_kernels("textbook")``, under
``"fast"``, and with the blockwise attention path; logits, loss and every
parameter's gradient agree in float64. Every block size of the CPU engine is
shrunk, so that these small models cross every block boundary (attention's
query blocks included) with padding. Flat AdamW equals the per-parameter
AdamW element for element.
"""

import copy

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import scratchlm
from scratchlm import BertConfig, BertForSequenceClassification, GPT, GPTConfig
from scratchlm import functional as F
from scratchlm.kernels import cpu as K
from scratchlm.kernels.cpu import activations, attention, layernorm, losses
from scratchlm.kernels.cpu import optim as cpu_optim
from scratchlm.nn import layers
from scratchlm.nn.parameter import Parameter
from scratchlm.optim import AdamW, param_groups_for_decay


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Small blocks, so that these small models take the fast ops' blocked, threaded
    paths (not their fallback for arrays under two blocks), attention several query
    blocks (and head groups), and flat AdamW many blocks."""
    for module in (activations, layernorm, losses, cpu_optim):
        monkeypatch.setattr(module, "BLOCK", 1 << 9)
    monkeypatch.setattr(attention, "ROW_BLOCK", 8)
    monkeypatch.setattr(attention, "GROUP_SCORES", 8 * 16)
    monkeypatch.setattr(attention, "PER_HEAD_FROM", 16)


@pytest.fixture
def plain_path():
    """``plain_path(True)``: the textbook ops; ``plain_path(False)``: the fast ones."""
    before = scratchlm.get_kernels()
    yield lambda plain: scratchlm.use_kernels("textbook" if plain else "fast")
    scratchlm.use_kernels(before)


def gpt64():
    cfg = GPTConfig(vocab_size=23, n_positions=40, n_embd=12, n_layer=2, n_head=3,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT(cfg, seed=1, dtype="float64")


def run(model, **batch):
    model.zero_grad()
    out = model(**batch)
    model.backward()
    return out, {n: p.grad.copy() for n, p in model.named_parameters()}


def assert_same_run(a, b, rtol=1e-10):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert_allclose(out_a.logits, out_b.logits, rtol=rtol, atol=rtol)
    assert_allclose(float(out_a.loss), float(out_b.loss), rtol=rtol)
    for name in grads_a:
        assert_allclose(grads_a[name], grads_b[name], rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize("padded", [False, True])
def test_gpt_fast_and_blockwise_equal_plain(plain_path, padded):
    model = gpt64()
    ids = np.random.default_rng(0).integers(0, 23, (3, 33))
    batch = dict(input_ids=ids, labels=ids)
    if padded:
        mask = np.ones((3, 33), dtype=np.int64)
        mask[1, :7] = 0                                 # left padding
        batch["attention_mask"] = mask
    plain_path(True)
    plain = run(model, **batch)
    plain_path(False)
    fast = run(model, **batch)
    blockwise = run(model.set_attention("blockwise", block_size=5), **batch)
    model.set_attention("auto")
    assert_same_run(fast, plain)
    assert_same_run(blockwise, plain)


def test_auto_attention_turns_blockwise_past_the_threshold(monkeypatch):
    model = gpt64()
    ids = np.random.default_rng(1).integers(0, 23, (2, 20))
    plain = run(model.set_attention("plain"), input_ids=ids, labels=ids)
    monkeypatch.setattr(layers, "BLOCKWISE_FROM", 16)
    model.set_attention("auto")
    model(input_ids=ids, labels=ids)
    assert isinstance(model.h[0].attn._cache, K.BlockwiseAttentionCache)
    model.backward()
    auto = run(model, input_ids=ids, labels=ids)
    assert_same_run(auto, plain)
    short = ids[:, :10]                                 # below the threshold: scores kept
    model(input_ids=short, labels=short)
    assert isinstance(model.h[0].attn._cache, F.AttentionCache)
    model.clear_caches()


def test_set_attention_checks_its_arguments():
    model = gpt64()
    with pytest.raises(ValueError, match="path must be one of"):
        model.set_attention("flash")
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        model.set_attention("blockwise", block_size=0)
    cfg = GPTConfig(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    dropping = GPT(cfg).set_attention("blockwise")      # attn_pdrop 0.1 in training
    with pytest.raises(ValueError, match="no dropout"):
        dropping(np.zeros((1, 4), dtype=np.int64))


def test_bert_fast_equals_plain_with_padding(plain_path):
    cfg = BertConfig(vocab_size=31, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=24, max_position_embeddings=40,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(cfg, seed=2, dtype="float64")
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 31, (4, 30))
    mask = np.ones((4, 30), dtype=np.int64)
    mask[2, 20:] = 0                                    # right padding
    batch = dict(input_ids=ids, attention_mask=mask, labels=np.array([0, 1, 1, 0]))
    plain_path(True)
    plain = run(model, **batch)
    plain_path(False)
    assert_same_run(run(model, **batch), plain)
    del batch["attention_mask"]                         # no mask: the fast attention itself
    plain_path(True)
    plain = run(model, **batch)
    plain_path(False)
    assert_same_run(run(model, **batch), plain)


def test_gpt_float32_fast_path_stays_float32():
    cfg = GPTConfig(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT(cfg, seed=0)
    ids = np.random.default_rng(0).integers(0, 50, (4, 64))
    out, grads = run(model, input_ids=ids, labels=ids)
    assert out.logits.dtype == np.float32 and out.loss.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


# --- flat AdamW -----------------------------------------------------------------

def parameters(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s).astype(dtype))
            for s in [(), (3,), (40, 50), (2, 3, 4), (7,)]]


def step_all(opt, params, grads_seq):
    for grads in grads_seq:
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.grad += g
        opt.step()


def gradient_sequence(params, n, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(n)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [dict(lr=1e-2), dict(lr=3e-2, betas=(0.3, 0.9),
                                                        weight_decay=0.1, amsgrad=True)])
def test_flat_adamw_equals_per_parameter_adamw(kwargs, dtype):
    each, flat = parameters(dtype=dtype), parameters(dtype=dtype)
    for ps in (each, flat):
        ps[1].requires_grad = False                     # frozen: left out of the buffers
    grads = gradient_sequence(each, 5)
    opt_flat = AdamW([{"params": flat[:3]}, {"params": flat[3:], "weight_decay": 0.0}],
                     flat=True, **kwargs)
    opt_each = AdamW([{"params": each[:3]}, {"params": each[3:], "weight_decay": 0.0}],
                     **kwargs)
    step_all(opt_each, each, grads)
    step_all(opt_flat, flat, grads)
    for a, b in zip(flat, each):
        assert a.data.dtype == dtype
        assert_array_equal(a.data, b.data)
    for p, q in zip(flat, each):
        if p.requires_grad:
            for k in opt_each.state[q]:
                assert_array_equal(np.asarray(opt_flat.state[p][k]),
                                   np.asarray(opt_each.state[q][k]))
    assert flat[1] not in opt_flat.state
    assert flat[0].data.base is not None and flat[1].data.base is None   # views vs frozen


def test_flat_adamw_state_dict_resume_and_zero_grad():
    grads = gradient_sequence(parameters(), 6)
    straight = parameters()
    step_all(AdamW(straight, flat=True), straight, grads)

    first = parameters()
    opt = AdamW([(f"p{i}", p) for i, p in enumerate(first)], flat=True)
    step_all(opt, first, grads[:3])
    saved = copy.deepcopy(opt.state_dict())
    resumed = parameters()
    for p, q in zip(resumed, first):
        p.data[...] = q.data
    fresh = AdamW([(f"p{i}", p) for i, p in enumerate(resumed)], flat=True, lr=0.5)
    fresh.load_state_dict(saved)
    step_all(fresh, resumed, grads[3:])
    for a, b in zip(resumed, straight):
        assert_array_equal(a.data, b.data)
    assert fresh.state[resumed[2]]["exp_avg"].base is not None   # back in the buffers
    fresh.zero_grad()
    assert all(not p.grad.any() for p in resumed)


def test_flat_adamw_trains_a_model_like_the_per_parameter_one():
    a, b = gpt64(), gpt64()
    ids = np.random.default_rng(4).integers(0, 23, (2, 16))
    opt_a = AdamW(param_groups_for_decay(a, 0.1), lr=1e-2)
    opt_b = AdamW(param_groups_for_decay(b, 0.1), lr=1e-2, flat=True)
    for _ in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(input_ids=ids, labels=ids)
            model.backward()
            opt.step()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert_array_equal(p.data, q.data, err_msg=name)


def test_flat_adamw_rejects_mixed_dtypes():
    params = [Parameter(np.zeros(3)), Parameter(np.zeros(3, dtype=np.float32))]
    with pytest.raises(ValueError, match="mixes backends or dtypes"):
        AdamW(params, flat=True)
    with pytest.raises(TypeError, match="flat must be True or False"):
        AdamW(params[:1], flat=1)
