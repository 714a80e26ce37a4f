"""Parity with transformers: the same weights give the same numbers.

For GPT (GPT2LMHeadModel) and every BERT class, a tiny randomly initialised
transformers model (eager attention, dropout 0) is saved with its own
``save_pretrained`` and loaded with scratchlm's ``from_pretrained``. On the
same padded batch (left padding for GPT, right padding and two segments for
BERT) both must agree on:

* every output, at every position (padding positions included), and the loss;
* the gradient of every parameter, compared under Hugging Face names through
  the checkpoint table (``checkpoint.hf_state_dict``), so the fused BERT
  query/key/value gradient is checked against torch's three, transposed;
* the weights after several AdamW steps and after several SGD steps;
* and the other way: scratchlm's ``save_pretrained`` directory loads in
  transformers with no missing or unexpected keys, the same tensor names as
  transformers' own save, and the same outputs.

float64 must agree to 1e-9 (relative to the largest entry of each tensor);
float32 to 1e-4 for outputs and losses.

Padding: with an attention mask, transformers' eager attention adds the
dtype's most negative value to every masked score (causal and padding alike).
A left-padded query that sees only padding keys therefore has every score
equal to that value, and its softmax is uniform over all keys; scratchlm
matches this. GPT-2's forward takes positions 0 .. T-1 whatever the mask
(it does not derive them from it), so no position_ids are passed here.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import scratchlm  # noqa: E402
from scratchlm import checkpoint  # noqa: E402
from scratchlm.optim import SGD, AdamW  # noqa: E402
from scratchlm.safetensors_io import read_safetensors  # noqa: E402

pytestmark = pytest.mark.reference

BERT_CLASSES = ["BertModel", "BertForPreTraining", "BertForMaskedLM",
                "BertForNextSentencePrediction", "BertForSequenceClassification",
                "BertForTokenClassification", "BertForQuestionAnswering"]
CLASSES = ["GPT"] + BERT_CLASSES
HF_CLASS = {"GPT": "GPT2LMHeadModel", **{name: name for name in BERT_CLASSES}}
OUTPUTS = {
    "GPT": ("logits",),
    "BertModel": ("last_hidden_state", "pooler_output"),
    "BertForPreTraining": ("prediction_logits", "seq_relationship_logits"),
    "BertForMaskedLM": ("logits",),
    "BertForNextSentencePrediction": ("logits",),
    "BertForSequenceClassification": ("logits",),
    "BertForTokenClassification": ("logits",),
    "BertForQuestionAnswering": ("start_logits", "end_logits"),
}
V, B, T = 53, 3, 7
NUM_LABELS = 3


def hf_config(name):
    """A tiny transformers config: 2 layers, width 24, 3 heads, no dropout, eager attention."""
    if name == "GPT":
        return transformers.GPT2Config(
            vocab_size=V, n_positions=320, n_embd=24, n_layer=2, n_head=3,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1,
            attn_implementation="eager")
    return transformers.BertConfig(
        vocab_size=V, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=40, max_position_embeddings=320, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2 if name == "BertForQuestionAnswering" else NUM_LABELS,
        attn_implementation="eager")


def make_hf_model(name, seed=0):
    """A float64 transformers model whose every parameter is perturbed away from its init.

    Zero biases and unit LayerNorm scales would hide a swapped or dropped
    tensor, so every parameter gets random noise on top of its initialisation.
    """
    torch.manual_seed(seed)
    model = getattr(transformers, HF_CLASS[name])(hf_config(name)).double()
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.train()


def make_inputs(name, seed=0, T=T, left=None):
    """A padded batch with labels: numpy arrays, keyed by forward argument.

    Right padding for BERT and left padding for GPT, unless ``left`` says.
    Past T = 7, one row keeps a third of its tokens and one only two, so that
    whole blocks of queries see nothing but padding.
    """
    rng = np.random.default_rng(seed)
    lengths = np.array([T, T - 3, T - 5] if T == 7 else [T, T // 3, 2])  # one row full
    real = np.arange(T)[None, :] < lengths[:, None]          # right padding
    if (name == "GPT") if left is None else left:
        real = real[:, ::-1]                                 # left padding
    ids = rng.integers(2, V, size=(B, T))
    ids[~real] = 0
    inputs = {"input_ids": ids, "attention_mask": real.astype(np.int64)}
    if name == "GPT":
        inputs["labels"] = np.where(real, ids, -100)
        return inputs
    segment = (np.arange(T)[None, :] >= (lengths[:, None] + 1) // 2) & real
    inputs["token_type_ids"] = segment.astype(np.int64)
    token_labels = np.where(real & (rng.random((B, T)) < 0.5), ids, -100)
    token_labels[:, 1] = ids[:, 1]                            # at least one target per row
    if name in ("BertForPreTraining", "BertForMaskedLM"):
        inputs["labels"] = token_labels
    if name == "BertForPreTraining":
        inputs["next_sentence_label"] = np.array([0, 1, 1])
    if name == "BertForNextSentencePrediction":
        inputs["labels"] = np.array([1, 0, 1])
    if name == "BertForSequenceClassification":
        inputs["labels"] = np.array([2, 0, 1])
    if name == "BertForTokenClassification":
        inputs["labels"] = np.where(token_labels >= 0, ids % NUM_LABELS, -100)
    if name == "BertForQuestionAnswering":
        inputs["start_positions"] = np.array([1, 0, T + 2])   # out of range: ignored
        inputs["end_positions"] = np.array([4, 2, 1])
    return inputs


def upstream(dtype, seed=1, T=T):
    """Fixed upstream gradients for BertModel's two outputs (it has no loss)."""
    rng = np.random.default_rng(seed)
    d_hidden, d_pooled = rng.standard_normal((B, T, 24)), rng.standard_normal((B, 24))
    return d_hidden.astype(dtype), d_pooled.astype(dtype)


def rel_err(ours, ref, floor=1e-30):
    """max |ours - ref| / max(max |ref|, floor): relative to the tensor's scale.

    Some gradients are exactly zero in exact arithmetic (a key bias shifts
    every score of a row alike; a bias feeding a softmax over positions) and
    are rounding noise in both libraries; ``floor`` keeps such a tensor from
    being measured against its own noise.
    """
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), floor))


def grad_err(ours, theirs):
    """The largest rel_err over all gradients, with a floor of 1e-3 of the largest one."""
    floor = 1e-3 * max(np.max(np.abs(g)) for g in theirs.values())
    return max(rel_err(ours[n], theirs[n], floor) for n in theirs)


def hf_step(hf, name, inputs, dtype):
    """Forward and backward on the transformers side; returns (outputs, loss).

    GPT2LMHeadModel computes its loss on logits cast to float32 (its
    ForCausalLMLoss upcasts "for precision", which in float64 rounds), so
    the reference loss here is the same shifted cross-entropy taken on its
    logits in their own dtype; out.loss is checked separately at float32
    precision.
    """
    out = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    if name == "BertModel":
        g_hidden, g_pool = upstream(dtype, T=inputs["input_ids"].shape[1])
        loss = ((out.last_hidden_state * torch.from_numpy(g_hidden)).sum()
                + (out.pooler_output * torch.from_numpy(g_pool)).sum())
    elif name == "GPT":
        labels = torch.from_numpy(inputs["labels"])
        loss = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    else:
        loss = out.loss
    loss.backward()
    return out, loss


def our_step(model, name, inputs, dtype):
    """Forward and backward on the scratchlm side; returns the output object."""
    out = model(**inputs)
    if name == "BertModel":
        model.backward(*upstream(dtype, T=inputs["input_ids"].shape[1]))
    else:
        model.backward()
    return out


def hf_grads(hf):
    return {n: p.grad.numpy() for n, p in hf.named_parameters()}


def our_grads_as_hf(model):
    """Our gradients under Hugging Face names (q/k/v split off the fused projection)."""
    return checkpoint.hf_state_dict(model, {n: p.grad for n, p in model.named_parameters()})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (the float64 transformers model, the directory it saved itself to)."""
    out = {}
    for name in CLASSES:
        hf = make_hf_model(name)
        directory = tmp_path_factory.mktemp(name)
        hf.save_pretrained(directory)
        out[name] = (hf, directory)
    return out


def compare_forward_backward(name, hf, model, dtype, inputs=None):
    """Outputs, loss and every gradient: {what: relative error}."""
    inputs = make_inputs(name) if inputs is None else inputs
    hf.zero_grad()
    model.train()
    model.zero_grad()
    ref, ref_loss = hf_step(hf, name, inputs, dtype)
    out = our_step(model, name, inputs, dtype)
    errors = {}
    for field in OUTPUTS[name]:
        errors[field] = rel_err(scratchlm.to_numpy(out[field]), ref[field].detach().numpy())
    if name != "BertModel":
        errors["loss"] = rel_err(float(out.loss), ref_loss.item())
        # transformers' own loss: float32-rounded for GPT-2 (see hf_step)
        assert rel_err(float(out.loss), ref.loss.item()) <= 1e-6
    ours, theirs = our_grads_as_hf(model), hf_grads(hf)
    assert set(ours) == set(theirs), (set(ours) ^ set(theirs))
    errors["grads"] = grad_err(ours, theirs)
    return errors


@pytest.mark.parametrize("name", CLASSES)
def test_outputs_loss_and_gradients_float64(name, saved, kernels):
    hf, directory = saved[name]
    hf = copy.deepcopy(hf)
    model = getattr(scratchlm, name).from_pretrained(directory)
    assert model.dtype == np.float64 and not model.training
    errors = compare_forward_backward(name, hf, model, np.float64)
    assert max(errors.values()) <= 1e-9, errors


@pytest.mark.parametrize("T_long", [65, 130, 300])
@pytest.mark.parametrize("name", ["GPT", "BertForPreTraining", "BertModel"])
def test_left_padding_past_the_attention_blocks_float64(name, T_long, saved):
    """Left-padded batches longer than the fast attention's query block (64 rows): the
    fast kernels' and the textbook ops' outputs and gradients agree with transformers
    and with each other (the padded rows attend to every key, future ones too)."""
    hf, directory = saved[name]
    inputs = make_inputs(name, T=T_long, left=True)
    results = {}
    for mode in ("textbook", "fast"):
        before = scratchlm.get_kernels()
        scratchlm.use_kernels(mode)
        try:
            model = getattr(scratchlm, name).from_pretrained(directory)
            errors = compare_forward_backward(name, copy.deepcopy(hf), model, np.float64,
                                              inputs)
        finally:
            scratchlm.use_kernels(before)
        assert max(errors.values()) <= 1e-9, (mode, errors)
        results[mode] = our_grads_as_hf(model)
    assert grad_err(results["fast"], results["textbook"]) <= 1e-12


@pytest.mark.parametrize("name", CLASSES)
def test_outputs_and_loss_float32(name, saved):
    hf, directory = saved[name]
    hf = copy.deepcopy(hf).float()
    model = getattr(scratchlm, name).from_pretrained(directory, dtype="float32")
    assert model.dtype == np.float32
    errors = compare_forward_backward(name, hf, model, np.float32)
    grads = errors.pop("grads")
    assert max(errors.values()) <= 1e-4, errors
    assert grads <= 1e-4, grads


def run_steps(name, hf, model, hf_opt, opt, steps=3):
    inputs = make_inputs(name)
    for _ in range(steps):
        hf_opt.zero_grad()
        opt.zero_grad()
        hf_step(hf, name, inputs, np.float64)
        our_step(model, name, inputs, np.float64)
        hf_opt.step()
        opt.step()
    theirs = hf.state_dict()
    ours = checkpoint.hf_state_dict(model)
    assert set(ours) <= set(theirs)
    return max(rel_err(ours[n], theirs[n].numpy()) for n in ours)


@pytest.mark.parametrize("name", CLASSES)
def test_weights_after_adamw_and_sgd_steps(name, saved):
    hf, directory = saved[name]
    settings = [
        # eps 1e-6, not 1e-8: some gradients are zero in exact arithmetic (BERT's key
        # biases) and rounding noise (1e-16) in both libraries; Adam divides them by
        # sqrt(v) + eps, which would turn different noise into updates of lr * 1e-8.
        ("AdamW", dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05)),
        ("SGD", dict(lr=5e-2, momentum=0.9, weight_decay=0.01, nesterov=True)),
    ]
    for opt_name, kwargs in settings:
        theirs = copy.deepcopy(hf)
        model = getattr(scratchlm, name).from_pretrained(directory).train()
        hf_opt = getattr(torch.optim, opt_name)(theirs.parameters(), foreach=False, **kwargs)
        opt = {"AdamW": AdamW, "SGD": SGD}[opt_name](model.named_parameters(), **kwargs)
        err = run_steps(name, theirs, model, hf_opt, opt)
        assert err <= 1e-9, (opt_name, err)


@pytest.mark.parametrize("name", CLASSES)
def test_our_save_loads_in_transformers(name, saved, tmp_path):
    hf, directory = saved[name]
    model = getattr(scratchlm, name).from_pretrained(directory)
    model.save_pretrained(tmp_path)
    # The same tensor names as transformers' own save_pretrained writes.
    assert set(read_safetensors(tmp_path / "model.safetensors")) == \
        set(read_safetensors(directory / "model.safetensors"))
    cls = getattr(transformers, HF_CLASS[name])
    loaded, info = cls.from_pretrained(tmp_path, output_loading_info=True,
                                       attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    assert next(loaded.parameters()).dtype == torch.float64
    inputs = make_inputs(name)
    with torch.no_grad():
        ref = loaded.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    out = model(**inputs)
    for field in OUTPUTS[name]:
        assert rel_err(scratchlm.to_numpy(out[field]), ref[field].numpy()) <= 1e-9, field


def test_gpt_left_padding_with_explicit_positions(saved):
    """Positions counted from each row's first real token (as generation uses) agree too."""
    hf, directory = saved["GPT"]
    hf = copy.deepcopy(hf).eval()
    model = scratchlm.GPT.from_pretrained(directory)
    inputs = make_inputs("GPT")
    inputs["position_ids"] = np.maximum(np.cumsum(inputs["attention_mask"], axis=1) - 1, 0)
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    out = model(**inputs)
    assert rel_err(out.logits, ref.logits.numpy()) <= 1e-9
