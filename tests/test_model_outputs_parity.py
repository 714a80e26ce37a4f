"""Hidden states, attentions and inputs_embeds against transformers.

For GPT (GPT2LMHeadModel) and every BERT class, a tiny float64 transformers
model (eager attention, dropout 0, every parameter perturbed off its init) is
saved with its own ``save_pretrained`` and loaded with scratchlm's
``from_pretrained``; the batch is padded (left for GPT, right with two
segments for BERT). Under both kernel modes:

* ``.hidden_states`` and ``.attentions`` equal transformers' (called with
  output_hidden_states=True, output_attentions=True), tensor by tensor, to
  1e-12 relative to each tensor's largest entry; padded positions included
  (a GPT query that sees padding only attends uniformly to every key, there
  as here);
* ``inputs_embeds = wte[input_ids]`` gives the same outputs as the ids, and
  the gradient of

      L = loss + sum_i <hidden_states[i], G_i> + sum_l <attentions[l], A_l>

  with respect to inputs_embeds (torch autograd on a leaf tensor; ours:
  backward with d_hidden_states=G, d_attentions=A, then
  ``model.inputs_embeds_grad``) agrees to 1e-10, and so does every
  parameter's gradient. BertModel has no loss: random projections of
  last_hidden_state and pooler_output take its place. Each case runs with
  the loss alone (G = A = None) and with the G, A terms.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import scratchlm
from scratchlm import checkpoint

pytestmark = pytest.mark.reference

# The tiny transformers models, their padded batch (rows of 7, 4 and 2 real tokens:
# left padding for GPT, right padding and two segments for BERT) and the error
# measures are those of the other parity tests.
from test_hf_parity import (  # noqa: E402
    OUTPUTS, B, CLASSES, T, V, grad_err, make_hf_model, make_inputs, rel_err, saved,  # noqa: F401
)

C, N_HEAD, N_LAYER = 24, 3, 2   # test_hf_parity's models: width 24, 3 heads, 2 layers
FORWARD_RTOL = 1e-12    # hidden states and attentions, relative to each tensor's largest entry
GRAD_RTOL = 1e-10       # inputs_embeds and parameter gradients


def word_table(model):
    """Our (V, C) word-embedding table as a numpy array."""
    if isinstance(model, scratchlm.GPT):
        return scratchlm.to_numpy(model.wte.weight.data)
    bert = getattr(model, "bert", model)
    return scratchlm.to_numpy(bert.embeddings.word_embeddings.weight.data)


def forward_errors(name, hf, model, inputs):
    """{"hidden_states[i]" / "attentions[l]": relative error} of our forward against theirs."""
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()},
                 output_hidden_states=True, output_attentions=True)
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == N_LAYER + 1
    assert len(out.attentions) == len(ref.attentions) == N_LAYER
    errors = {}
    for field in ("hidden_states", "attentions"):
        for i, (mine, theirs) in enumerate(zip(out[field], ref[field])):
            theirs = theirs.numpy()
            assert mine.shape == theirs.shape, (field, i, mine.shape, theirs.shape)
            errors[f"{field}[{i}]"] = rel_err(scratchlm.to_numpy(mine), theirs)
    return errors


@pytest.mark.parametrize("name", CLASSES)
def test_hidden_states_and_attentions_match_transformers(name, saved, kernels):
    hf, directory = saved[name]
    hf = copy.deepcopy(hf).eval()
    model = getattr(scratchlm, name).from_pretrained(directory)
    assert model.dtype == np.float64
    inputs = make_inputs(name)
    for mode in ("eval", "train"):              # train: dropout 0, the caches kept
        getattr(model, mode)()
        errors = forward_errors(name, hf, model, inputs)
        assert max(errors.values()) <= FORWARD_RTOL, (mode, errors)


def upstream_arrays(name, seed=1):
    """Fixed random G (L + 1 arrays), A (L arrays) and BertModel's two output projections."""
    rng = np.random.default_rng(seed)
    G = [rng.standard_normal((B, T, C)) for _ in range(N_LAYER + 1)]
    A = [rng.standard_normal((B, N_HEAD, T, T)) for _ in range(N_LAYER)]
    heads = (rng.standard_normal((B, T, C)), rng.standard_normal((B, C)))
    return G, A, heads


def hf_embeds_step(name, hf, inputs, embeds, G, A, heads):
    """transformers from an inputs_embeds leaf: L.backward(); returns (outputs, its grad).

    GPT2LMHeadModel's own loss is taken on logits cast to float32, so GPT's
    loss here is the same shifted cross-entropy on its float64 logits.
    """
    leaf = torch.from_numpy(embeds.copy()).requires_grad_(True)
    kw = {k: torch.from_numpy(v) for k, v in inputs.items() if k != "input_ids"}
    if name == "GPT":
        labels = kw.pop("labels")
    out = hf(inputs_embeds=leaf, **kw, output_hidden_states=True, output_attentions=True)
    if name == "GPT":
        loss = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    elif name == "BertModel":
        loss = ((out.last_hidden_state * torch.from_numpy(heads[0])).sum()
                + (out.pooler_output * torch.from_numpy(heads[1])).sum())
    else:
        loss = out.loss
    if G is not None:
        loss = loss + sum((h * torch.from_numpy(g)).sum() for h, g in zip(out.hidden_states, G))
        loss = loss + sum((a * torch.from_numpy(w)).sum() for a, w in zip(out.attentions, A))
    loss.backward()
    return out, leaf.grad.numpy()


def hf_grads(hf):
    return {n: (np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy())
            for n, p in hf.named_parameters()}


def embeds_errors(name, hf, model, upstream):
    """Same outputs from wte[ids] as from ids; inputs_embeds and parameter gradients against
    torch autograd. Returns {what: relative error}."""
    inputs = make_inputs(name)
    G, A, heads = upstream_arrays(name)
    if upstream == "loss":
        G = A = None
    model.train()
    with_ids = model(**inputs, output_hidden_states=True, output_attentions=True)
    embeds = word_table(model)[inputs["input_ids"]]
    feed = {k: v for k, v in inputs.items() if k != "input_ids"}
    model.zero_grad()
    out = model(inputs_embeds=embeds.copy(), **feed, output_hidden_states=True,
                output_attentions=True)
    errors = {}
    for field in OUTPUTS[name] + ("loss",):
        if out[field] is not None:
            errors[f"{field} (embeds vs ids)"] = rel_err(out[field], with_ids[field])
    for field in ("hidden_states", "attentions"):
        errors[f"{field} (embeds vs ids)"] = max(
            rel_err(a, b) for a, b in zip(out[field], with_ids[field]))
    if name == "BertModel":
        model.backward(*heads, d_hidden_states=G, d_attentions=A)
    else:
        model.backward(d_hidden_states=G, d_attentions=A)

    hf.zero_grad()
    _, ref_grad = hf_embeds_step(name, hf, inputs, embeds, G, A, heads)
    ours = model.inputs_embeds_grad
    assert ours is not None and ours.shape == ref_grad.shape
    errors["inputs_embeds_grad"] = rel_err(scratchlm.to_numpy(ours), ref_grad)
    mine = checkpoint.hf_state_dict(model, {n: p.grad for n, p in model.named_parameters()})
    theirs = hf_grads(hf)
    assert set(mine) == set(theirs), set(mine) ^ set(theirs)
    errors["parameter grads"] = grad_err(mine, theirs)
    return errors


@pytest.mark.parametrize("upstream", ["loss", "loss+hidden+attentions"])
@pytest.mark.parametrize("name", CLASSES)
def test_inputs_embeds_gradient_matches_transformers(name, upstream, saved, kernels):
    hf, directory = saved[name]
    hf = copy.deepcopy(hf).train()
    model = getattr(scratchlm, name).from_pretrained(directory)
    errors = embeds_errors(name, hf, model, upstream)
    same = {k: v for k, v in errors.items() if "embeds vs ids" in k}
    grads = {k: v for k, v in errors.items() if k not in same}
    assert max(same.values()) <= 1e-14, same
    assert max(grads.values()) <= GRAD_RTOL, grads
