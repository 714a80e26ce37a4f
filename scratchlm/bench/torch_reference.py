"""The benchmark's PyTorch side: the reference models scratchlm is measured against.

Imported only by the measurement processes that run PyTorch (``run_worker``
with ``framework="torch"``) and by ``benchmarks/bench_gpu.py``; nothing in
scratchlm imports it otherwise, and it imports torch (and transformers, for
the BERT) only inside its functions.

    torch_gpt_class()      an equivalent GPT-2 in PyTorch: fused QKV, tied head,
                           tanh GELU, scratchlm's parameter names and (in, out)
                           weight layout, attention either through
                           ``scaled_dot_product_attention`` ("sdpa") or the
                           explicit softmax ("math")
    torch_greedy_cached    greedy decoding with that model and its KV cache
    measure_gpt            one measurement process of that GPT: train, forward,
                           generate, peak memory, with scratchlm's own weights
    measure_bert           the same for ``transformers.BertModel`` (the encoder)
"""

from __future__ import annotations

import tempfile

from scratchlm.bench import (
    N_POSITIONS, NEW_TOKENS, PROMPT_LEN, _batch, _bert_config, _gpt_config, _peak_kb, _rss_kb,
    _timed, _trim)


def torch_gpt_class():
    """A GPT-2 in PyTorch with scratchlm's parameter names and (in, out) weight layout."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as TF  # noqa: PLC0415

    class Block(torch.nn.Module):
        def __init__(self, C, H, attention):
            super().__init__()
            self.H, self.attention = H, attention
            self.ln_1 = torch.nn.LayerNorm(C)
            self.ln_2 = torch.nn.LayerNorm(C)
            self.c_attn_w = torch.nn.Parameter(torch.empty(C, 3 * C))
            self.c_attn_b = torch.nn.Parameter(torch.empty(3 * C))
            self.c_proj_w = torch.nn.Parameter(torch.empty(C, C))
            self.c_proj_b = torch.nn.Parameter(torch.empty(C))
            self.fc_w = torch.nn.Parameter(torch.empty(C, 4 * C))
            self.fc_b = torch.nn.Parameter(torch.empty(4 * C))
            self.proj_w = torch.nn.Parameter(torch.empty(4 * C, C))
            self.proj_b = torch.nn.Parameter(torch.empty(C))

        def attend(self, x, cache, past):
            B, T, C = x.shape
            H, D = self.H, C // self.H
            qkv = torch.addmm(self.c_attn_b, x.reshape(-1, C), self.c_attn_w)
            q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
            if cache is not None:                       # decoding: append to the buffers
                cache[0][:, :, past:past + T] = k
                cache[1][:, :, past:past + T] = v
                k, v = cache[0][:, :, :past + T], cache[1][:, :, :past + T]
            causal = T > 1
            if self.attention == "sdpa":
                a = TF.scaled_dot_product_attention(q, k, v, is_causal=causal)
            else:
                s = (q @ k.transpose(-1, -2)) * (1.0 / D ** 0.5)
                if causal:
                    keep = torch.ones(T, k.shape[2], dtype=torch.bool,
                                      device=q.device).tril(k.shape[2] - T)
                    s = s.masked_fill(~keep, float("-inf"))
                a = torch.softmax(s, dim=-1) @ v
            a = a.transpose(1, 2).reshape(-1, C)
            return torch.addmm(self.c_proj_b, a, self.c_proj_w).view(B, T, C)

        def forward(self, x, cache=None, past=0):
            x = x + self.attend(self.ln_1(x), cache, past)
            B, T, C = x.shape
            h = torch.addmm(self.fc_b, self.ln_2(x).reshape(-1, C), self.fc_w)
            h = TF.gelu(h, approximate="tanh")
            return x + torch.addmm(self.proj_b, h, self.proj_w).view(B, T, C)

    class TorchGPT(torch.nn.Module):
        def __init__(self, c, attention):
            super().__init__()
            C = c["n_embd"]
            self.wte = torch.nn.Embedding(c["vocab_size"], C)
            self.wpe = torch.nn.Embedding(c.get("n_positions", N_POSITIONS), C)
            self.h = torch.nn.ModuleList(Block(C, c["n_head"], attention)
                                         for _ in range(c["n_layer"]))
            self.ln_f = torch.nn.LayerNorm(C)

        def forward(self, ids, caches=None, past=0):
            T = ids.shape[1]
            x = self.wte(ids) + self.wpe(torch.arange(past, past + T, device=ids.device))
            for i, block in enumerate(self.h):
                x = block(x, None if caches is None else caches[i], past)
            return self.ln_f(x) @ self.wte.weight.T

    return TorchGPT


# our names -> the TorchGPT names above
TORCH_NAMES = {"attn.c_attn.weight": "c_attn_w", "attn.c_attn.bias": "c_attn_b",
               "attn.c_proj.weight": "c_proj_w", "attn.c_proj.bias": "c_proj_b",
               "mlp.c_fc.weight": "fc_w", "mlp.c_fc.bias": "fc_b",
               "mlp.c_proj.weight": "proj_w", "mlp.c_proj.bias": "proj_b"}


def torch_greedy_cached(torch, model, prompt, c: dict, n: int):
    """Greedy decoding of n tokens with the TorchGPT above and its KV cache buffers
    (on the prompt's device): the prompt followed by the new tokens."""
    D = c["n_embd"] // c["n_head"]
    shape = (prompt.shape[0], c["n_head"], prompt.shape[1] + n, D)
    caches = [(torch.empty(shape, device=prompt.device), torch.empty(shape, device=prompt.device))
              for _ in range(c["n_layer"])]
    tokens, step, past = [prompt], prompt, 0
    for _ in range(n):
        logits = model(step, caches, past)
        past += step.shape[1]
        step = logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(step)
    return torch.cat(tokens, 1)


def torch_optimizer(torch, params, weight_decay):
    """PyTorch's AdamW, fused where the build has it (else foreach), and which one it is."""
    try:
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=weight_decay, fused=True), "fused"
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=weight_decay,
                                 foreach=True), "foreach"


def measure_gpt(c: dict, spec: dict) -> dict:
    """One PyTorch measurement of GPT config ``c``, with the weights scratchlm's GPT starts
    from: train and forward tokens/s, peak memory and (``spec["generate"]``) generation."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as TF  # noqa: PLC0415

    from scratchlm.models import GPT  # noqa: PLC0415

    torch.set_num_threads(spec["threads"])
    ids = torch.from_numpy(_batch(c))
    base = _rss_kb()
    ours = GPT(_gpt_config(c), seed=0)                   # the same weights
    state = {}
    for name, array in ours.state_dict().items():
        for a, b in TORCH_NAMES.items():
            name = name.replace(a, b)
        state[name] = torch.from_numpy(array.copy())
    del ours
    model = torch_gpt_class()(c, spec["attention"])
    model.load_state_dict(state)
    del state
    _trim()
    opt, kind = torch_optimizer(torch, model.parameters(), 0.1)
    V = c["vocab_size"]

    def train_step():
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        loss = TF.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()

    out = {"train": _timed(train_step, spec["warmup"], spec["steps"]), "optimizer": kind}
    out["peak_mb"] = (_peak_kb() - base) / 1024
    opt = None                                          # frees the moments before the forward pass
    for p in model.parameters():
        p.grad = None
    model.eval()
    with torch.inference_mode():
        out["forward"] = _timed(lambda: model(ids), 1, spec["steps"])
        if spec.get("generate"):
            prompt = torch.from_numpy(_batch(c, 1)[:1, :PROMPT_LEN])

            def cached(n=NEW_TOKENS):
                return torch_greedy_cached(torch, model, prompt, c, n)

            def uncached(n=NEW_TOKENS):
                tokens = prompt
                for _ in range(n):
                    nxt = model(tokens)[:, -1].argmax(-1, keepdim=True)
                    tokens = torch.cat([tokens, nxt], 1)
                return tokens

            out["generate_cached"] = _timed(cached, 0, spec["gen_runs"])
            out["generate_uncached"] = _timed(uncached, 0, spec["gen_runs"])
            out["tokens_sample"] = np.asarray(cached(8))[0].tolist()
    return out


def measure_bert(c: dict, spec: dict) -> dict:
    """One measurement of ``transformers.BertModel`` of config ``c``, loaded from the weights
    scratchlm's BertModel starts from: train and forward tokens/s, peak memory."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    from scratchlm.models import BertModel  # noqa: PLC0415

    torch.set_num_threads(spec["threads"])
    ids = torch.from_numpy(_batch(c))
    g = torch.from_numpy(np.random.default_rng(2).standard_normal(
        (c["batch"], c["context"], c["n_embd"])).astype(np.float32))
    base = _rss_kb()
    with tempfile.TemporaryDirectory() as tmp:
        BertModel(_bert_config(c), seed=0).save_pretrained(tmp)   # the same weights
        _trim()
        impl = "sdpa" if spec["attention"] == "sdpa" else "eager"
        model = transformers.BertModel.from_pretrained(tmp, attn_implementation=impl)
    model.train()
    _trim()
    opt, kind = torch_optimizer(torch, model.parameters(), 0.01)

    def train_step():
        opt.zero_grad(set_to_none=True)
        (model(ids).last_hidden_state * g).sum().backward()
        opt.step()

    out = {"train": _timed(train_step, spec["warmup"], spec["steps"]), "optimizer": kind}
    out["peak_mb"] = (_peak_kb() - base) / 1024
    model.eval()
    with torch.inference_mode():
        out["forward"] = _timed(lambda: model(ids), 1, spec["steps"])
    return out
