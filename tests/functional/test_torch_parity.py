"""Parity with PyTorch: every functional op's forward and backward, in float64.

Each case runs one op here and the same op in PyTorch (autograd for the
gradients) on the same float64 inputs and the same random upstream gradient,
and lists (quantity, ours, torch's) for the output and every gradient; all
must agree to 1e-10. Run it as a test (marker ``reference``; skipped without
torch) or as a script, which prints the largest absolute difference of each:

    python tests/functional/test_torch_parity.py
"""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

from scratchlm import functional as F  # noqa: E402

pytestmark = pytest.mark.reference

TOL = 1e-10


def leaf(a):
    """A float64 torch tensor that collects its gradient."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def run_backward(out_t, dout):
    out_t.backward(torch.as_tensor(dout, dtype=torch.float64))


def rows(out, out_t, grads):
    """[(quantity, ours, torch's)] for the output and each (name, ours, torch leaf)."""
    listed = [("out", out, out_t.detach().numpy())]
    listed += [(f"d{name}", g, t.grad.numpy()) for name, g, t in grads]
    return listed


# --- one function per case: (rng) -> rows --------------------------------------

def linear(rng, bias=True):
    x, W = rng.standard_normal((2, 5, 8)), rng.standard_normal((8, 12))
    b = rng.standard_normal(12) if bias else None
    out, cache = F.linear_forward(x, W, b)
    dout = rng.standard_normal(out.shape)
    dx, dW, db = F.linear_backward(dout, cache)
    xt, Wt = leaf(x), leaf(W)
    bt = leaf(b) if bias else None
    out_t = TF.linear(xt, Wt.T, bt)                     # torch stores (out, in)
    run_backward(out_t, dout)
    grads = [("x", dx, xt), ("W", dW, Wt)] + ([("b", db, bt)] if bias else [])
    return rows(out, out_t, grads)


def embedding(rng):
    W = rng.standard_normal((11, 6))
    ids = rng.integers(0, 11, (3, 7))
    ids[0, :4] = 5                                      # repeated ids add up
    ids[2, -1] = 0
    ids[1, 0] = 10
    out, cache = F.embedding_forward(ids, W)
    dout = rng.standard_normal(out.shape)
    dW = F.embedding_backward(dout, cache)
    Wt = leaf(W)
    out_t = TF.embedding(torch.from_numpy(ids), Wt)
    run_backward(out_t, dout)
    return rows(out, out_t, [("W", dW, Wt)])


def layernorm(rng, eps=1e-5):
    x = 2 * rng.standard_normal((3, 4, 16)) + 1
    gamma, beta = rng.standard_normal(16), rng.standard_normal(16)
    out, cache = F.layernorm_forward(x, gamma, beta, eps)
    dout = rng.standard_normal(out.shape)
    dx, dgamma, dbeta = F.layernorm_backward(dout, cache)
    xt, gt, bt = leaf(x), leaf(gamma), leaf(beta)
    out_t = TF.layer_norm(xt, (16,), gt, bt, eps)
    run_backward(out_t, dout)
    return rows(out, out_t, [("x", dx, xt), ("gamma", dgamma, gt), ("beta", dbeta, bt)])


def activation(rng, name):
    x = 3 * rng.standard_normal((4, 5, 6))
    if name == "relu":
        x = np.where(x >= 0, x + 0.1, x - 0.1)          # no element at the kink
    ours = {"gelu (none)": (lambda a: F.gelu_forward(a, "none"), F.gelu_backward),
            "gelu (tanh)": (lambda a: F.gelu_forward(a, "tanh"), F.gelu_backward),
            "relu": (F.relu_forward, F.relu_backward),
            "tanh": (F.tanh_forward, F.tanh_backward)}[name]
    theirs = {"gelu (none)": lambda t: TF.gelu(t, approximate="none"),
              "gelu (tanh)": lambda t: TF.gelu(t, approximate="tanh"),
              "relu": TF.relu, "tanh": torch.tanh}[name]
    out, cache = ours[0](x)
    dout = rng.standard_normal(x.shape)
    dx = ours[1](dout, cache)
    xt = leaf(x)
    out_t = theirs(xt)
    run_backward(out_t, dout)
    return rows(out, out_t, [("x", dx, xt)])


def softmax_pair(rng, log=False, axis=-1, scale=5.0):
    x = scale * rng.standard_normal((3, 4, 7))
    forward, backward = ((F.log_softmax_forward, F.log_softmax_backward) if log
                         else (F.softmax_forward, F.softmax_backward))
    out, cache = forward(x, axis)
    dout = rng.standard_normal(x.shape)
    dx = backward(dout, cache)
    xt = leaf(x)
    out_t = (TF.log_softmax if log else TF.softmax)(xt, dim=axis)
    run_backward(out_t, dout)
    return rows(out, out_t, [("x", dx, xt)])


def dropout(rng, p=0.3, training=True):
    x = rng.standard_normal((4, 6, 5))
    out, cache = F.dropout_forward(x, p, rng=99, training=training)
    dout = rng.standard_normal(x.shape)
    dx = F.dropout_backward(dout, cache)
    xt = leaf(x)
    if cache.keep is None:                              # identity: torch's own dropout
        out_t = TF.dropout(xt, p, training=training)
    else:                                               # our mask, applied in torch
        out_t = xt * torch.from_numpy(cache.keep) / (1.0 - p)
    run_backward(out_t, dout)
    return rows(out, out_t, [("x", dx, xt)])


def attention(rng, Tq=5, Tk=5, causal=False, mask="none", dropout_p=0.0, scale=None,
              manual=False):
    B, H, D = 2, 3, 4
    q = rng.standard_normal((B, H, Tq, D))
    k, v = rng.standard_normal((B, H, Tk, D)), rng.standard_normal((B, H, Tk, D))
    pad = np.ones((B, Tk), dtype=bool)
    pad[0, -2:] = False
    pad[1, :] = False                                   # batch row 1: every key masked
    if mask == "none":
        m, keep_t = None, None
    elif mask == "padding":
        m = pad
    elif mask == "padding 0/1":
        m = pad.astype(np.int64)
    elif mask == "4-D bool":
        m = rng.random((B, H, Tq, Tk)) < 0.7
        m[0, 1, 2] = False                              # one fully masked row
    elif mask == "additive":
        m = np.where(rng.random((B, 1, Tq, Tk)) < 0.7, -rng.random((B, 1, Tq, Tk)), -np.inf)
        m[1, 0, 0] = -np.inf                            # a row of -inf
    out, cache = F.attention_forward(q, k, v, causal=causal, mask=m, dropout_p=dropout_p,
                                     rng=7, scale=scale)
    dout = rng.standard_normal(out.shape)
    dq, dk, dv = F.attention_backward(dout, cache)

    # the same mask for torch: bool keep (True = attend) or float, as SDPA takes it
    keep = np.ones((B, 1, Tq, Tk), dtype=bool)
    additive = None
    if m is not None and m.dtype.kind == "f":
        additive = m
    elif m is not None:
        keep = keep & (m[:, None, None, :] if m.ndim == 2 else m).astype(bool)
    if causal:
        keep = keep & np.tri(Tq, Tk, Tk - Tq, dtype=bool)
    if additive is not None:
        attn_mask = torch.from_numpy(np.where(keep, additive, -np.inf))
    else:
        attn_mask = torch.from_numpy(keep)
    qt, kt, vt = leaf(q), leaf(k), leaf(v)
    if manual or dropout_p:                             # written out, as HF's eager attention
        d = q.shape[-1]
        s = qt @ kt.transpose(-1, -2) * (d ** -0.5 if scale is None else scale)
        keep_t = torch.from_numpy(keep)
        s = s.masked_fill(~keep_t, torch.finfo(s.dtype).min)
        att = torch.softmax(s, dim=-1) * keep_t.any(dim=-1, keepdim=True)   # no key: zeros
        if dropout_p:
            att = att * torch.from_numpy(cache.dropout.keep) / (1.0 - dropout_p)
        out_t = att @ vt
    elif mask == "none" and causal and Tq == Tk:
        out_t = TF.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale)
    else:
        out_t = TF.scaled_dot_product_attention(qt, kt, vt, attn_mask=attn_mask, scale=scale)
    run_backward(out_t, dout)
    return rows(out, out_t, [("q", dq, qt), ("k", dk, kt), ("v", dv, vt)])


def cross_entropy(rng, scale=5.0, ignore_index=-100):
    B, T, V = 3, 5, 9
    logits = scale * rng.standard_normal((B, T, V))
    targets = rng.integers(0, V, (B, T))
    targets[0, :2] = ignore_index
    targets[2, -1] = ignore_index
    loss, cache = F.cross_entropy_forward(logits, targets, ignore_index=ignore_index)
    dloss = rng.standard_normal()
    dlogits = F.cross_entropy_backward(dloss, cache)
    lt = leaf(logits)
    loss_t = TF.cross_entropy(lt.reshape(-1, V), torch.from_numpy(targets).reshape(-1),
                              ignore_index=ignore_index)
    run_backward(loss_t, dloss)
    return rows(loss, loss_t, [("logits", dlogits, lt)])


CASES = {
    "linear": linear,
    "linear (no bias)": lambda rng: linear(rng, bias=False),
    "embedding (repeated ids)": embedding,
    "layernorm (eps 1e-5)": layernorm,
    "layernorm (eps 1e-12)": lambda rng: layernorm(rng, eps=1e-12),
    "gelu (none)": lambda rng: activation(rng, "gelu (none)"),
    "gelu (tanh)": lambda rng: activation(rng, "gelu (tanh)"),
    "relu": lambda rng: activation(rng, "relu"),
    "tanh": lambda rng: activation(rng, "tanh"),
    "softmax": softmax_pair,
    "softmax (axis 1)": lambda rng: softmax_pair(rng, axis=1),
    "softmax (logits ~1e3)": lambda rng: softmax_pair(rng, scale=1e3),
    "log_softmax": lambda rng: softmax_pair(rng, log=True),
    "log_softmax (axis 0)": lambda rng: softmax_pair(rng, log=True, axis=0),
    "log_softmax (logits ~1e3)": lambda rng: softmax_pair(rng, log=True, scale=1e3),
    "dropout (p=0.3, our mask)": dropout,
    "dropout (p=0)": lambda rng: dropout(rng, p=0.0),
    "dropout (eval)": lambda rng: dropout(rng, p=0.5, training=False),
    "attention": attention,
    "attention (causal)": lambda rng: attention(rng, causal=True),
    "attention (causal, Tq=2 < Tk=6)": lambda rng: attention(rng, Tq=2, Tk=6, causal=True),
    "attention (padding, masked row)": lambda rng: attention(rng, mask="padding"),
    "attention (padding 0/1, causal)": lambda rng: attention(rng, mask="padding 0/1",
                                                             causal=True),
    "attention (4-D bool, masked row)": lambda rng: attention(rng, Tq=4, Tk=6, mask="4-D bool"),
    "attention (additive, -inf row)": lambda rng: attention(rng, mask="additive"),
    "attention (additive, causal)": lambda rng: attention(rng, mask="additive", causal=True),
    "attention (finfo.min, manual)": lambda rng: attention(rng, mask="padding", causal=True,
                                                           manual=True),
    "attention (scale 0.3)": lambda rng: attention(rng, causal=True, scale=0.3),
    "attention (dropout p=0.2)": lambda rng: attention(rng, mask="padding", causal=True,
                                                       dropout_p=0.2),
    "cross_entropy (ignore_index)": cross_entropy,
    "cross_entropy (logits ~1e3)": lambda rng: cross_entropy(rng, scale=1e3),
    "cross_entropy (ignore_index=3)": lambda rng: cross_entropy(rng, ignore_index=3),
}


def max_abs_diff(ours, theirs):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"shapes differ: {ours.shape} vs {theirs.shape}"
    return float(np.max(np.abs(ours - theirs), initial=0.0))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name):
    for quantity, ours, theirs in CASES[name](np.random.default_rng(0)):
        assert np.isfinite(ours).all(), f"{name}: {quantity} is not finite"
        assert max_abs_diff(ours, theirs) <= TOL, f"{name}: {quantity}"


def main():
    print(f"PyTorch {torch.__version__}; float64; max |ours - torch| per quantity "
          f"(pass at <= {TOL:g})")
    print(f"{'op':<34} {'quantity':<10} {'max abs diff':>13}")
    print("-" * 60)
    worst = 0.0
    for name, case in CASES.items():
        for i, (quantity, ours, theirs) in enumerate(case(np.random.default_rng(0))):
            diff = max_abs_diff(ours, theirs)
            worst = max(worst, diff)
            print(f"{name if i == 0 else '':<34} {quantity:<10} {diff:13.2e}")
    print("-" * 60)
    print(f"largest difference {worst:.2e}: {'pass' if worst <= TOL else 'FAIL'}")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
