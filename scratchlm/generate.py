"""Text generation: greedy decoding, sampling and beam search, with a KV cache.

A causal language model gives, at the last position of a sequence, logits
z in R^V for the next token. Generation repeats three steps:

    z      = model(tokens)[:, -1]            logits of the next token   (B, V)
    next   = argmax(z)  or  a draw from p(z)                            (B,)
    tokens = [tokens, next]                                             (B, T + 1)

Shaping the distribution before the draw (applied in this order, as
transformers' warpers are):

    temperature tau > 0:  p_i = exp(z_i / tau) / sum_j exp(z_j / tau)
        tau < 1 sharpens the distribution, tau > 1 flattens it;
        tau -> 0 tends to argmax (tau == 0 means greedy here).
    top-k:  keep the k largest logits, z_i -> -inf for the others
        (ties with the k-th largest are kept).
    top-p (nucleus):  sort p descending, p_(1) >= p_(2) >= ...; keep the
        smallest prefix whose cumulative probability reaches top_p:
            keep rank r  iff  sum_{s < r} p_(s) < top_p
        so the most probable token is always kept; z_i -> -inf for the rest.
    draw:  u ~ U[0, 1) from the Generator, and the token is the first i with
        cdf_i = sum_{j <= i} p_j > u * cdf_V  (inverse-CDF sampling; one
        uniform per sequence per step, whatever the path).

The KV cache. In layer l the keys and values of position t,

    k_t = h_t W_k + b_k,   v_t = h_t W_v + b_v,   h_t = ln_1(x_t^l),

depend only on tokens 0..t: attention is causal, so nothing a later token
does can reach position t. Appending a token therefore leaves every past
k_t and v_t unchanged. The cached path computes them once (one forward over
the prompt fills a preallocated (B, H, T_max, D) buffer per layer), then
feeds only the newest token, whose query attends to all cached keys:

    out_T = softmax(q_T [k_0 .. k_T]^T / sqrt(D) + mask) [v_0 .. v_T]

This is exactly the last row of the full causal attention, so the logits
equal those of a full forward up to floating-point rounding (a different
order of summation in the matrix products). A step then costs O(T C) in
attention and O(C^2) in the projections instead of O(T C^2 + T^2 C).

At batch 1 a step is some sixty small ops per token, so what surrounds them
matters as much as the arithmetic. The reference path runs the model's own
forward over the new positions, with one KV cache per layer. Under the
"fast" kernels, a GPT instead runs the engine's decoder
(``kernels/decode.py``, tested equal): an inference-only forward that checks
nothing per token, keeps nothing for a backward, and reuses its buffers from
step to step. Here the tokens, mask and positions of every step are laid out
once, before the loop.

Beam search (num_beams > 1, ``scratchlm/beam.py``, which teaches it) keeps
the num_beams best prefixes of each prompt instead of one: B * num_beams rows
run through the model's own forward with one KV cache per layer, and after
each step the cache rows are gathered to follow the beams they belong to
(``cache.k = cache.k[rows]``). The engine's decoder cannot reorder its
buffers, so beams always take the model-forward path.

Left-padded batches. Prompts of different lengths are padded on the left,
so that every sequence's next token lands in the same (last) column. The
attention mask (1 real, 0 padding; it covers past and new positions) hides
the padding from every query, and positions count real tokens only:

    position_ids = max(cumsum(attention_mask) - 1, 0)

which gives a padded prompt the positions 0, 1, ... it would have alone.
Both paths use the same positions and the same draws from the Generator, so
cached and uncached generation give the same tokens.
"""

from __future__ import annotations

import numbers

import numpy as np

from scratchlm import backend
from scratchlm.beam import beam_search, check_beam_args
from scratchlm.functional import KVCache
from scratchlm.kernels.tables import table
from scratchlm.models.gpt import GPT

__all__ = ["generate", "generate_text", "position_ids_from_mask", "top_k_filter",
           "top_p_filter", "sample_from_logits"]


# --------------------------------------------------------------------------
# Shaping and drawing the next token
# --------------------------------------------------------------------------
def _softmax(logits):
    """Row-wise softmax; -inf logits get probability exactly 0."""
    xp = backend.get_array_module(logits)
    z = logits - logits.max(axis=-1, keepdims=True)     # max 0: exp cannot overflow
    p = xp.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def top_k_filter(logits, top_k):
    """Keep the top_k largest logits of each row, set the others to -inf.

    Math: with z_(k) the k-th largest value of the row, z_i -> -inf where
    z_i < z_(k) (values tied with z_(k) stay). top_k >= V keeps everything.
    Shapes: logits (B, V) -> (B, V), a new array of the same dtype.
    """
    xp = backend.get_array_module(logits)
    V = logits.shape[-1]
    if top_k >= V:
        return logits.copy()
    kth = xp.partition(logits, V - top_k, axis=-1)[:, V - top_k:V - top_k + 1]  # (B, 1)
    return xp.where(logits < kth, -xp.inf, logits).astype(logits.dtype, copy=False)


def top_p_filter(logits, top_p):
    """Nucleus filtering: keep the smallest set of most probable tokens whose
    probability adds up to at least top_p; set the others to -inf.

    Math: p = softmax(z); sort p descending, p_(1) >= p_(2) >= ...;
        keep rank r  iff  sum_{s < r} p_(s) < top_p.
    The first rank has an empty sum (0 < top_p), so at least one token stays.
    This is transformers' TopPLogitsWarper (which removes tokens whose
    ascending cumulative probability is <= 1 - top_p) read from the other end.
    Shapes: logits (B, V) -> (B, V), a new array of the same dtype.
    """
    xp = backend.get_array_module(logits)
    B, V = logits.shape
    if top_p >= 1.0:
        return logits.copy()
    # Stable sort of -z: equal logits keep their index order, so rank 1 is argmax.
    order = xp.argsort(-logits, axis=-1, **({"kind": "stable"} if xp is np else {}))
    rows = xp.arange(B)[:, None]
    p_sorted = _softmax(logits[rows, order])            # (B, V) descending
    cum_before = xp.cumsum(p_sorted, axis=-1)           # inclusive sums ...
    cum_before[:, 1:] = cum_before[:, :-1].copy()       # ... shifted: exclusive sums
    cum_before[:, 0] = 0.0
    remove = xp.empty((B, V), dtype=bool)
    remove[rows, order] = cum_before >= top_p           # back to vocabulary order
    return xp.where(remove, -xp.inf, logits).astype(logits.dtype, copy=False)


def sample_from_logits(logits, u):
    """Inverse-CDF draw of one token per row from p = softmax(logits).

    Math: cdf_i = sum_{j <= i} p_j; the token is the first i with
    cdf_i > u * cdf_{V-1}. Tokens with p_i = 0 (filtered, logit -inf) are
    never chosen: cdf does not rise there.
    Shapes: logits (B, V), u (B,) uniforms in [0, 1) -> (B,) int64 ids.
    """
    xp = backend.get_array_module(logits, u)
    probs = _softmax(logits)                            # (B, V)
    cdf = xp.cumsum(probs, axis=-1)
    threshold = u[:, None] * cdf[:, -1:]                # (B, 1)
    ids = (cdf <= threshold).sum(axis=-1)               # first i with cdf_i > threshold
    # u * cdf_{V-1} can round up to cdf_{V-1}; fall back on the last possible token.
    V = probs.shape[-1]
    last = V - 1 - xp.argmax(probs[:, ::-1] > 0, axis=-1)
    return xp.minimum(ids, last).astype(np.int64)


def position_ids_from_mask(attention_mask):
    """Positions that count real tokens only: max(cumsum(mask) - 1, 0).

    For a left-padded row [0 0 1 1 1] this gives [0 0 0 1 2]: the real tokens
    get the positions they would have without padding (the padding's own
    positions do not matter, it is masked). Shapes: (B, T) -> (B, T) int64.
    """
    xp = backend.get_array_module(attention_mask)
    pos = xp.cumsum(attention_mask.astype(np.int64), axis=-1) - 1
    return xp.maximum(pos, 0)


# --------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_args(max_new_tokens, temperature, top_k, top_p, seed, rng):
    where = "generate"
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"{where}: max_new_tokens must be a non-negative int; "
                         f"got {max_new_tokens!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not np.isfinite(temperature) or temperature < 0):
        raise ValueError(f"{where}: temperature must be a finite number >= 0 (0 means "
                         f"greedy); got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"{where}: top_k must be an int >= 1 or None; got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                              or not 0 < top_p <= 1):
        raise ValueError(f"{where}: top_p must be a number in (0, 1] or None; got {top_p!r}")
    if seed is not None and rng is not None:
        raise ValueError(f"{where}: pass seed= or rng=, not both; got seed={seed!r} and "
                         "an rng")


def _check_token_ids(name, value, vocab_size):
    """None, or a tuple of token ids in [0, V) from an int or a sequence of ints."""
    if value is None:
        return None
    ids = (value,) if _is_int(value) else tuple(value) if isinstance(value, (list, tuple)) \
        else None
    if not ids or not all(_is_int(i) and 0 <= i < vocab_size for i in ids):
        raise ValueError(f"generate: {name} must be a token id (or a list of ids) in "
                         f"[0, {vocab_size}); got {value!r}")
    return tuple(int(i) for i in ids)


def _prepare_prompts(input_ids, attention_mask, vocab_size, pad_id):
    """Host arrays ids (B, T) int64 and mask (B, T) int64 (None: no padding); left-pads lists."""
    where = "generate"
    if isinstance(input_ids, (list, tuple)):
        rows = list(input_ids)
        if rows and all(_is_int(t) for t in rows):      # one prompt: a flat list of ids
            rows = [rows]
        if not rows:
            raise ValueError(f"{where}: input_ids is empty; give at least one prompt")
        for b, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) and not (hasattr(row, "ndim")
                                                           and row.ndim == 1):
                raise ValueError(f"{where}: input_ids must be a list of prompts (lists of "
                                 f"ints); input_ids[{b}] is {type(row).__name__}")
            row = backend.to_numpy(row).tolist() if hasattr(row, "ndim") else list(row)
            if not row:
                raise ValueError(f"{where}: input_ids[{b}] is an empty prompt; every prompt "
                                 "needs at least one token")
            bad = [t for t in row if not _is_int(t) or not 0 <= t < vocab_size]
            if bad:
                raise ValueError(f"{where}: input_ids must be ints in [0, {vocab_size}); "
                                 f"input_ids[{b}] holds {bad[0]!r}")
            rows[b] = row
        if attention_mask is not None:
            raise ValueError(f"{where}: attention_mask is built from a list of prompts; pass "
                             "it only with an array of left-padded input_ids")
        T = max(len(r) for r in rows)
        ids = np.full((len(rows), T), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), T), dtype=np.int64)
        for b, row in enumerate(rows):
            ids[b, T - len(row):] = row                 # left padding
            mask[b, T - len(row):] = 1
        return ids, (None if mask.all() else mask)

    if not hasattr(input_ids, "dtype"):
        raise ValueError(f"{where}: input_ids must be an integer array (B, T) or a list of "
                         f"lists of ints; got {type(input_ids).__name__}")
    ids = np.asarray(backend.to_numpy(input_ids))
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{where}: input_ids must hold integers; got dtype {ids.dtype}")
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{where}: input_ids must have shape (B, T) with B, T >= 1; got "
                         f"{tuple(ids.shape)} (an empty prompt?)")
    ids = ids.astype(np.int64)
    mask = None
    if attention_mask is not None:
        mask = np.asarray(backend.to_numpy(attention_mask))
        if mask.ndim == 1:
            mask = mask[None]
        if mask.shape != ids.shape or mask.dtype.kind not in "biu" \
                or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"{where}: attention_mask must be 0/1 of the shape of input_ids "
                             f"{tuple(ids.shape)}; got {mask.dtype} {tuple(mask.shape)}")
        mask = mask.astype(np.int64)
        if not mask[:, -1].all():
            raise ValueError(f"{where}: attention_mask must be left-padded (new tokens are "
                             "appended after the last column, which must be a real token in "
                             f"every row); got last column {mask[:, -1].tolist()}")
        if mask.all():
            mask = None
    if ids.min() < 0 or ids.max() >= vocab_size:       # padding too: it is embedded
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise ValueError(f"{where}: input_ids must be in [0, {vocab_size}); got "
                         f"{'min' if bad < 0 else 'max'} value {int(bad)}")
    return ids, mask


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------
def generate(model, input_ids, max_new_tokens, *, attention_mask=None, temperature=1.0,
             top_k=None, top_p=None, do_sample=True, eos_token_id=None, pad_token_id=None,
             seed=None, rng=None, use_cache=True, num_beams=1, length_penalty=1.0,
             early_stopping=False):
    """Continue each prompt by up to max_new_tokens tokens.

    Args:
        model: a GPT (anything with ``forward(input_ids, attention_mask,
            position_ids, kv_caches)`` and a GPT-2 ``config``; with the KV
            cache under the "fast" kernels, a GPT decodes through the
            engine's ``GPTDecoder``).
        input_ids: an integer array (B, T) (left-padded, with attention_mask),
            or a list of prompts (lists of ints, any lengths; left-padded here,
            the mask and positions built as transformers does for GPT-2), or
            one prompt as a flat list or a 1-D array.
        max_new_tokens: how many tokens to add at most (>= 0).
        attention_mask: (B, T) 1 for real tokens, 0 for left padding; only with
            an array of input_ids.
        temperature: logits are divided by it before sampling; 0 = greedy.
        top_k: keep only the top_k most likely tokens (None: all).
        top_p: nucleus sampling, keep the smallest set of tokens whose
            probability reaches top_p, in (0, 1] (None or 1: all).
        do_sample: draw from the shaped distribution (default); False = greedy
            argmax (temperature, top_k and top_p are then ignored).
        eos_token_id: a token id (or a list of ids) that ends a sequence; after
            it the sequence is padded with pad_token_id, and generation stops
            early once every sequence has ended.
        pad_token_id: the id written after the end of a sequence and into the
            left padding of a list of prompts (default: eos_token_id, else 0).
        seed, rng: the seed of a new Generator on the model's backend, or a
            Generator to draw from (not both); None: fresh entropy.
        use_cache: decode with a KV cache (one forward over the prompt, then
            one token per step); False recomputes the whole sequence each step.
        num_beams: 1 (default) decodes one sequence per prompt; K > 1 runs
            beam search over K beams (``scratchlm.beam.beam_search``, the
            tokens transformers' ``generate(num_beams=K, do_sample=False)``
            gives). Needs do_sample=False (or temperature=0): beam sampling is
            not implemented.
        length_penalty: beam search scores a finished sequence by
            sum of log-probabilities / n ** length_penalty, n its generated
            length (eos included).
        early_stopping: beam search's stopping rule: True (stop a prompt once
            num_beams sequences have finished), False (also stop when the
            best beam cannot enter at its current length) or "never" (stop only
            when no beam can enter at any length).
    Returns: (B, T + n) int64 array on the model's backend, the (left-padded)
        prompt followed by the n <= max_new_tokens generated tokens. With
        beams, each prompt's best sequence, padded after its end to the
        longest of the batch.

    The model runs in eval mode (no dropout); its previous mode is restored.
    Cached and uncached generation draw the same uniforms in the same order,
    so they give the same tokens; only a rounding difference in the logits
    (about 1e-16 in float64) landing on a decision boundary could split them.
    """
    where = "generate"
    _check_args(max_new_tokens, temperature, top_k, top_p, seed, rng)
    check_beam_args(where, num_beams, length_penalty, early_stopping)
    if num_beams > 1 and do_sample and temperature != 0:
        raise ValueError(f"{where}: num_beams={num_beams} runs beam search, which does not "
                         "sample (beam sampling is not implemented); pass do_sample=False")
    cfg = model.config
    V = cfg.vocab_size
    eos = _check_token_ids("eos_token_id", eos_token_id, V)
    if pad_token_id is not None and not _is_int(pad_token_id):
        raise ValueError(f"{where}: pad_token_id must be one token id; got {pad_token_id!r}")
    pad = _check_token_ids("pad_token_id", pad_token_id, V)
    pad = pad[0] if pad is not None else (eos[0] if eos is not None else 0)

    ids, mask = _prepare_prompts(input_ids, attention_mask, V, pad)
    B, T = ids.shape
    if T + max_new_tokens > cfg.n_positions:
        raise ValueError(f"{where}: prompt length T={T} + max_new_tokens={max_new_tokens} = "
                         f"{T + max_new_tokens} exceeds config.n_positions={cfg.n_positions}; "
                         "shorten the prompt or ask for fewer tokens")

    xp = model.xp
    name = "numpy" if xp is np else "cupy"
    if num_beams > 1 and max_new_tokens > 0:
        was_training = model.training
        model.eval()
        try:
            return _beam_generate(model, ids, mask, max_new_tokens, num_beams, eos, pad,
                                  length_penalty, early_stopping, use_cache)
        finally:
            model.train(was_training)
    greedy = not do_sample or temperature == 0
    if rng is None and not greedy:
        rng = backend.default_rng(seed, name)

    N = T + max_new_tokens
    tokens = xp.empty((B, N), dtype=np.int64)           # the prompt, then one column per step
    tokens[:, :T] = backend.to_backend(ids, name)
    positions = None                                    # None: the model's 0, 1, ...
    if mask is not None:                                # the mask of every step at once:
        full = np.ones((B, N), dtype=np.int64)          # generated tokens are real (1)
        full[:, :T] = mask
        mask = backend.to_backend(full, name)
        positions = position_ids_from_mask(mask)        # (B, N), every step's positions too
    eos_ids = None if eos is None else xp.asarray(eos, dtype=np.int64)
    done = xp.zeros(B, dtype=bool)

    was_training = model.training
    model.eval()
    try:
        decoder = caches = None
        if use_cache and max_new_tokens > 0:
            lean = table(model.wte.weight.data).gpt_decoder if isinstance(model, GPT) else None
            if lean is not None:                        # the engine's inference-only forward
                decoder = lean(model, B, N)
                if mask is not None:
                    decoder.set_padding(mask[:, :T])
            else:                                       # the reference: kv_caches=
                D = cfg.n_embd // cfg.n_head
                caches = [KVCache(B, cfg.n_head, N, D, model.dtype, xp)
                          for _ in range(cfg.n_layer)]
        cached = 0                                      # positions whose keys are cached
        end = N
        for t in range(T, N):                           # t tokens so far; the next goes to t
            if decoder is not None:                     # new positions only, past in the cache
                logits = decoder.forward(
                    tokens[:, cached:t], None if positions is None else positions[:, cached:t])
            elif caches is not None:                    # the same, through model.forward
                logits = model.forward(
                    tokens[:, cached:t], attention_mask=None if mask is None else mask[:, :t],
                    position_ids=None if positions is None else positions[:, cached:t],
                    kv_caches=caches).logits[:, -1, :]  # (B, V) next-token logits
            else:                                       # the whole sequence every step
                logits = model.forward(
                    tokens[:, :t], attention_mask=None if mask is None else mask[:, :t],
                    position_ids=None if positions is None else positions[:, :t]
                ).logits[:, -1, :]
            cached = t

            if greedy:
                next_ids = logits.argmax(axis=-1)
            else:
                if temperature != 1:                    # dividing by 1 changes nothing
                    logits = logits / float(temperature)
                if top_k is not None:
                    logits = top_k_filter(logits, top_k)
                if top_p is not None:
                    logits = top_p_filter(logits, float(top_p))
                u = rng.random(B)                       # one uniform per row, every step
                next_ids = sample_from_logits(logits, u)

            if eos_ids is not None:                     # ended rows get padding
                next_ids = xp.where(done, pad, next_ids)
                done |= (next_ids[:, None] == eos_ids[None, :]).any(axis=-1)
            tokens[:, t] = next_ids
            if eos_ids is not None and bool(done.all()):
                end = t + 1
                break
    finally:
        model.train(was_training)
    return tokens if end == N else xp.ascontiguousarray(tokens[:, :end])


def _beam_generate(model, ids, mask, max_new_tokens, num_beams, eos, pad, length_penalty,
                   early_stopping, use_cache):
    """Beam search through model.forward: ids (B, T) and mask (B, T) or None, on the host.

    Every prompt row is repeated num_beams times (row b*K + j: beam j of prompt
    b), and so are its mask and positions, laid out for every step at once.
    The cache rows are gathered after each step to follow their beams; the
    mask and positions need no gather, being the same for a prompt's beams.
    Without the cache, the token history is gathered instead and each step
    runs the whole sequence.
    """
    cfg, xp = model.config, model.xp
    name = "numpy" if xp is np else "cupy"
    B, T = ids.shape
    K, N = num_beams, T + max_new_tokens
    full_mask = positions = None
    if mask is not None:
        full = np.ones((B * K, N), dtype=np.int64)      # generated tokens are real (1)
        full[:, :T] = np.repeat(mask, K, axis=0)
        full_mask = backend.to_backend(full, name)
        positions = position_ids_from_mask(full_mask)   # (B*K, N)

    def forward(tokens, start, stop, caches=None):
        """Next-token logits (B*K, V) for the positions start .. stop-1."""
        return model.forward(
            tokens, attention_mask=None if full_mask is None else full_mask[:, :stop],
            position_ids=None if positions is None else positions[:, start:stop],
            kv_caches=caches).logits[:, -1, :]

    if use_cache:
        D = cfg.n_embd // cfg.n_head
        caches = [KVCache(B * K, cfg.n_head, N, D, model.dtype, xp) for _ in range(cfg.n_layer)]

        def step(tokens):                               # new positions only, past in the cache
            past = caches[0].length
            return forward(tokens, past, past + tokens.shape[1], caches)

        def reorder(rows):                              # cache row i <- old row rows[i]
            for cache in caches:
                cache.reorder(rows)
    else:
        history = xp.empty((B * K, N), dtype=np.int64)
        length = [0]

        def step(tokens):                               # the whole sequence every step
            start, stop = length[0], length[0] + tokens.shape[1]
            history[:, start:stop] = tokens
            length[0] = stop
            return forward(history[:, :stop], 0, stop)

        def reorder(rows):
            history[:, :length[0]] = history[rows, :length[0]]

    return beam_search(step, reorder, backend.to_backend(ids, name), num_beams=K,
                       max_new_tokens=max_new_tokens, eos_token_id=None if eos is None
                       else list(eos), pad_token_id=pad, length_penalty=length_penalty,
                       early_stopping=early_stopping)


def generate_text(model, tokenizer, prompt, max_new_tokens=50, *, return_full_text=True,
                  skip_special_tokens=False, **kwargs):
    """Encode prompt(s), generate, decode: text in, text out.

    Args:
        tokenizer: anything with ``encode(text) -> list[int]`` and
            ``decode(ids) -> str``; its ``eos_token_id`` and ``pad_token_id``
            (when it has them) are the defaults of generate's.
        prompt: a string, or a list of strings (generated as one batch).
        return_full_text: prompt + continuation (default) or the continuation only.
        skip_special_tokens: passed to decode when True.
        **kwargs: generate's keywords (temperature, top_k, top_p, do_sample,
            seed, use_cache, num_beams, length_penalty, early_stopping, ...).
    Returns: a string, or a list of strings for a list of prompts. Each text
        stops after the first end-of-sequence token (kept, unless skipped).
    """
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"generate_text: prompt must be a string or a non-empty list of "
                         f"strings; got {prompt!r}")
    kwargs.setdefault("eos_token_id", getattr(tokenizer, "eos_token_id", None))
    if kwargs["eos_token_id"] is not None:
        kwargs.setdefault("pad_token_id", getattr(tokenizer, "pad_token_id", None))
    encoded = [list(tokenizer.encode(p)) for p in prompts]
    for p, ids in zip(prompts, encoded):
        if not ids:
            raise ValueError(f"generate_text: prompt {p!r} encodes to no tokens")
    out = backend.to_numpy(generate(model, encoded, max_new_tokens, **kwargs))
    eos = _check_token_ids("eos_token_id", kwargs["eos_token_id"], model.config.vocab_size)
    T = max(len(ids) for ids in encoded)
    texts = []
    for ids, row in zip(encoded, out):
        new = row[T:].tolist()
        if eos is not None:
            ends = [i for i, t in enumerate(new) if t in eos]
            new = new[:ends[0] + 1] if ends else new
        keep = ids + new if return_full_text else new
        texts.append(tokenizer.decode(keep, skip_special_tokens=True) if skip_special_tokens
                     else tokenizer.decode(keep))
    return texts[0] if single else texts
