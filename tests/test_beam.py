"""Beam search: exhaustive on toy chains, a plain loop, greedy with one beam, conventions,
errors, and transformers.

Toy models. A chain over V tokens whose next-token logits depend on the whole
history: ``table[(y_1 + ... + y_t) mod V, y_t]`` (a drawn (V, V, V) table).
Its step function keeps the history of every row, as a model keeps its KV
cache, and follows ``reorder``: a history that did not follow its beam would
give the wrong logits, and the search the wrong answer.

Exhaustive search. With num_beams >= V ** max_new_tokens every prefix stays
among the beams and every ended candidate among the top num_beams, so beam
search (early_stopping False or "never") must return a hypothesis with the
best score over all finished sequences: those ending with an eos id, and
those reaching max_new_tokens. The brute force scores every sequence with the
same float32 arithmetic (log-softmax, running sums, the length penalty) and
compares scores, not tokens, so ties may fall either way.

A plain loop. For fewer beams, ``reference_beam_search`` applies the same rules
to one prompt, one candidate at a time, in plain Python: the vectorised search
over a batch must give the same tokens for every early_stopping.

transformers (``reference``): a tiny random float64 GPT2LMHeadModel, its
weights loaded into scratchlm's GPT, must give the same tokens for every
num_beams, length_penalty and early_stopping, on left-padded batches, under
both kernel modes. The eos id is a token the model's own beams favour, so
hypotheses finish at different lengths; the test checks that they do.
"""

import copy
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scratchlm.beam import beam_search, check_beam_args, greedy_search, log_softmax
from scratchlm.generate import generate, generate_text
from scratchlm.models import GPT, GPTConfig


# --------------------------------------------------------------------------
# A toy model: a chain over the whole history, which keeps its own "cache"
# --------------------------------------------------------------------------
def chain_logits(table, seq):
    """The toy model's next-token logits (V,) after the ids seq."""
    return table[sum(seq) % table.shape[0], seq[-1]]


class Chain:
    """logits(next) = table[sum(history) mod V, last token]; the history plays the KV cache."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float64)
        self.history = None
        self.calls = []                                 # ("step", shape) and ("reorder", rows)

    def step(self, tokens):
        self.calls.append(("step", tokens.shape))
        self.history = tokens.copy() if self.history is None else \
            np.concatenate([self.history, tokens], axis=1)
        V = self.table.shape[0]
        return self.table[self.history.sum(axis=1) % V, self.history[:, -1]]

    def reorder(self, rows):
        self.calls.append(("reorder", rows.copy()))
        self.history = self.history[rows]


def score(table, prompt, continuation, length_penalty):
    """A finished hypothesis' score, in beam search's own float32 arithmetic."""
    seq = list(prompt)
    total = np.float32(0.0)
    for token in continuation:
        logp = log_softmax(chain_logits(table, seq)[None])[0]
        total = np.float32(total + logp[token])
        seq.append(token)
    return total / np.float32(len(continuation) ** float(length_penalty))


def reference_beam_search(table, prompt, K, max_new, eos, alpha, early_stopping):
    """One prompt's beam search in plain Python, transformers' rules one candidate at a time.

    Scores are float32 as in beam_search; sorts are stable (ties: lower index
    first); -1e9 keeps a candidate out of a choice. Returns the generated ids.
    """
    f32, MASK = np.float32, np.float32(-1e9)
    V, T0 = table.shape[0], len(prompt)
    L = T0 + max_new
    n_keep = max(2, 1 + len(eos)) * K

    def best_first(items, k):
        return [items[i] for i in sorted(range(len(items)), key=lambda i: -items[i][0])[:k]]

    running = [(f32(0.0) if k == 0 else MASK, list(prompt)) for k in range(K)]
    finished = [(MASK, None, False)] * K                # (score, ids, a real hypothesis?)
    may_improve = True
    for t in range(T0, L):
        candidates = []                                 # beam-major, then token id
        for s, seq in running:
            logp = log_softmax(chain_logits(table, seq)[None])[0]
            candidates += [(f32(s + logp[v]), seq + [v]) for v in range(V)]
        top = best_first(candidates, n_keep)
        ends = [seq[-1] in eos or t + 1 == L for _, seq in top]
        running = best_first([(s + MASK if e else s, seq) for (s, seq), e in zip(top, ends)], K)
        full = all(real for _, _, real in finished)
        new = []
        for rank, ((s, seq), e) in enumerate(zip(top, ends)):
            h = s / f32((t + 1 - T0) ** alpha)
            if early_stopping is True and full:
                h = h + MASK
            if not may_improve:
                h = h + MASK
            if not (e and rank < K):
                h = h + MASK
            new.append((h, seq, e and rank < K))
        finished = best_first(finished + new, K)
        n_best = max_new if early_stopping == "never" and alpha > 0 else t + 1 - T0
        best_possible = running[0][0] / f32(n_best ** alpha)
        worst = min(s for s, _, _ in finished)
        may_improve = may_improve and any(best_possible > (worst if real else MASK)
                                          for _, _, real in finished)
        if not may_improve or all(ends) or (early_stopping is True
                                            and all(real for _, _, real in finished)):
            break
    return finished[0][1][T0:]


def finished_sequences(V, max_new, eos):
    """Every continuation beam search may return: ended by eos, or max_new long."""
    for n in range(1, max_new + 1):
        for seq in itertools.product(range(V), repeat=n):
            if any(t in eos for t in seq[:-1]):
                continue                                # it ended earlier
            if n == max_new or seq[-1] in eos:
                yield seq


def continuation(row, T0, eos, pad):
    """The generated tokens of an output row, up to and including its first eos."""
    new = [int(t) for t in row[T0:]]
    for i, t in enumerate(new):
        if t in eos:
            assert all(p == pad for p in new[i + 1:]), f"not padded after eos: {new}"
            return new[:i + 1]
    return new


@st.composite
def chain_case(draw, max_V=4, max_new=3, max_beams=64, max_B=2, eos_none=True):
    """A table, prompts, eos ids and a length penalty, with V ** max_new <= max_beams."""
    V = draw(st.integers(2, max_V))
    n = draw(st.integers(1, max_new))
    while V ** n > max_beams:
        n -= 1
    halves = hnp.arrays(np.float64, (V, V, V), elements=st.integers(-6, 6).map(lambda i: i / 2))
    table = draw(halves)
    B = draw(st.integers(1, max_B))
    T0 = draw(st.integers(1, 3))
    prompts = draw(hnp.arrays(np.int64, (B, T0), elements=st.integers(0, V - 1)))
    eos = draw(st.sampled_from([None, 0, V - 1, [0, V - 1]][0 if eos_none else 1:]))
    if isinstance(eos, list) and V == 2:
        eos = [1]                                       # both ids would end everything at once
    if eos is not None:                                 # eos more or less likely
        table[..., eos] += draw(st.sampled_from([0.0, 1.0, 2.0]))
    length_penalty = draw(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]))
    return table, prompts, n, eos, length_penalty


def eos_tuple(eos):
    return () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)


# --------------------------------------------------------------------------
# Exhaustive beams find the best finished hypothesis
# --------------------------------------------------------------------------
@given(chain_case(), st.sampled_from([False, "never"]))
def test_exhaustive_beams_find_the_best_finished_hypothesis(case, early_stopping):
    table, prompts, max_new, eos, alpha = case
    V = table.shape[0]
    K = V ** max_new
    chain = Chain(table)
    out = beam_search(chain.step, chain.reorder, prompts, num_beams=K, max_new_tokens=max_new,
                      eos_token_id=eos, pad_token_id=V, length_penalty=alpha,
                      early_stopping=early_stopping)
    assert out.dtype == np.int64 and out.shape[0] == len(prompts)
    T0 = prompts.shape[1]
    np.testing.assert_array_equal(out[:, :T0], prompts)
    for b, prompt in enumerate(prompts):
        got = tuple(continuation(out[b], T0, eos_tuple(eos), pad=V))
        assert got in list(finished_sequences(V, max_new, eos_tuple(eos)))
        best = max(score(table, prompt, seq, alpha)
                   for seq in finished_sequences(V, max_new, eos_tuple(eos)))
        assert score(table, prompt, got, alpha) == best, (got, best)


def test_exhaustive_example_by_hand():
    """V = 2, eos = 1: the length penalty decides between ending now and going on."""
    # From any history: after token 0, p(0) = 0.6, p(1) = 0.4; after token 1: irrelevant.
    # The prompt ends in 1, where p(0) = 0.45, p(1) = 0.55 (eos).
    table = np.zeros((2, 2, 2))
    table[:, 0] = np.log([0.6, 0.4])
    table[:, 1] = np.log([0.45, 0.55])
    prompt = np.array([[0, 1]])
    # Over two new tokens with alpha = 0 (raw sums): [1] scores log 0.55 = -0.598;
    # [0, 0] log 0.27 = -1.31, [0, 1] log 0.18; so [1] wins. With alpha = 2,
    # [0, 0] scores log(0.27) / 4 = -0.327 and wins.
    for alpha, want in ((0.0, [1]), (2.0, [0, 0])):
        chain = Chain(table)
        out = beam_search(chain.step, chain.reorder, prompt, num_beams=4, max_new_tokens=2,
                          eos_token_id=1, pad_token_id=2, length_penalty=alpha,
                          early_stopping="never")
        np.testing.assert_array_equal(out, [[0, 1] + want])


def test_one_beam_looks_past_an_eos_that_ranks_first():
    """A finished eos does not end the search while the beam behind it might still win.

    V = 3, eos = 2, prompt [1]. After 1: p = (0.4, 0.1, 0.5); after 0: p = (0.98, 0.01, 0.01).
    With alpha = 1: [2] scores log 0.5 = -0.69; [0, 0, 0] scores
    (log 0.4 + 2 log 0.98) / 3 = -0.32. Step 1 keeps 2 candidates: eos (ranked
    first) finishes, token 0 goes on. "never" bounds the running beam at the
    longest length, -0.92 / 3 > -0.69, so it goes on and wins; True (one
    finished hypothesis fills the one slot) and False (-0.92 / 1 < -0.69) stop
    at once, with greedy's answer.
    """
    p = {1: [0.4, 0.1, 0.5], 0: [0.98, 0.01, 0.01], 2: [1 / 3] * 3}

    def step(tokens):                                   # a first-order chain: no cache
        return np.log(np.array([p[int(t)] for t in tokens[:, -1]]))

    prompt = np.array([[1]])
    kw = dict(num_beams=1, max_new_tokens=3, eos_token_id=2, pad_token_id=0, length_penalty=1.0)
    never = beam_search(step, lambda rows: None, prompt, early_stopping="never", **kw)
    np.testing.assert_array_equal(never, [[1, 0, 0, 0]])
    for early_stopping in (True, False):
        out = beam_search(step, lambda rows: None, prompt, early_stopping=early_stopping, **kw)
        np.testing.assert_array_equal(out, [[1, 2]])
    greedy = greedy_search(step, prompt, max_new_tokens=3, eos_token_id=2, pad_token_id=0)
    np.testing.assert_array_equal(greedy, [[1, 2]])


# --------------------------------------------------------------------------
# The vectorised search equals a plain loop over one prompt
# --------------------------------------------------------------------------
@given(chain_case(max_new=5, max_beams=10**9), st.integers(1, 4),
       st.sampled_from([True, False, "never"]))
def test_batch_search_equals_the_plain_loop(case, K, early_stopping):
    table, prompts, max_new, eos, alpha = case
    prompts = np.concatenate([prompts, (prompts[:, ::-1] + 1) % table.shape[0]])
    chain = Chain(table)
    out = beam_search(chain.step, chain.reorder, prompts, num_beams=K, max_new_tokens=max_new,
                      eos_token_id=eos, pad_token_id=table.shape[0], length_penalty=alpha,
                      early_stopping=early_stopping)
    T0 = prompts.shape[1]
    for row, prompt in zip(out, prompts):
        want = reference_beam_search(table, list(prompt), K, max_new, eos_tuple(eos), alpha,
                                     early_stopping)
        assert continuation(row, T0, eos_tuple(eos), pad=table.shape[0]) == want


@given(chain_case(max_new=8, max_beams=10**9, max_B=3, eos_none=False), st.integers(1, 3),
       st.sampled_from([1.0, 2.0, 3.0]))
def test_rows_that_close_early_equal_the_plain_loop(case, K, alpha):
    """early_stopping=False with alpha > 0, longer searches and likely eos: rows close
    (their best beam, finished now, would not enter) while others go on; a closed
    row stays closed and gains no hypothesis, though longer ones might now score better."""
    table, prompts, max_new, eos, _ = case
    prompts = np.concatenate([prompts, (prompts[:, ::-1] + 1) % table.shape[0]])
    chain = Chain(table)
    out = beam_search(chain.step, chain.reorder, prompts, num_beams=K, max_new_tokens=max_new,
                      eos_token_id=eos, pad_token_id=table.shape[0], length_penalty=alpha,
                      early_stopping=False)
    T0 = prompts.shape[1]
    for row, prompt in zip(out, prompts):
        want = reference_beam_search(table, list(prompt), K, max_new, eos_tuple(eos), alpha,
                                     False)
        assert continuation(row, T0, eos_tuple(eos), pad=table.shape[0]) == want


# --------------------------------------------------------------------------
# One beam is greedy search
# --------------------------------------------------------------------------
@given(chain_case(max_new=6, max_beams=10**9), st.integers(1, 3),
       st.sampled_from([(True, 1.0), (True, 2.0), (False, 1.0), (False, -1.0), (False, 2.0),
                        ("never", 0.0), ("never", -1.0)]))
def test_one_beam_equals_greedy_search(case, B, stopping):
    table, prompts, max_new, eos, _ = case
    early_stopping, alpha = stopping
    prompts = np.resize(prompts, (B, prompts.shape[1]))
    a, b = Chain(table), Chain(table)
    pad = table.shape[0] - 1                            # ended rows feed it to the model
    beams = beam_search(a.step, a.reorder, prompts, num_beams=1, max_new_tokens=max_new,
                        eos_token_id=eos, pad_token_id=pad, length_penalty=alpha,
                        early_stopping=early_stopping)
    greedy = greedy_search(b.step, prompts, max_new_tokens=max_new, eos_token_id=eos,
                           pad_token_id=pad)
    np.testing.assert_array_equal(beams, greedy)


def test_greedy_search_is_the_argmax_loop():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((5, 5, 5))
    prompts = np.array([[1, 2], [3, 4], [0, 0]])
    out = greedy_search(Chain(table).step, prompts, max_new_tokens=6, eos_token_id=None,
                        pad_token_id=0)
    seq = prompts.copy()
    for _ in range(6):
        logits = table[seq.sum(axis=1) % 5, seq[:, -1]]
        seq = np.concatenate([seq, logits.argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)
    # With eos: rows end, are padded, and the loop stops once all have ended.
    eos = int(seq[1, 3])                                # row 1's second new token
    out = greedy_search(Chain(table).step, prompts, max_new_tokens=6, eos_token_id=[eos],
                        pad_token_id=4)
    for b in range(3):
        new = continuation(out[b], 2, (eos,), pad=4)
        np.testing.assert_array_equal(new, seq[b, 2:2 + len(new)])
    assert out.shape[1] <= 8 and (out.shape[1] == 8 or (out[:, -1] == eos).any())


# --------------------------------------------------------------------------
# Conventions: shapes, padding, calls, processors, batch rows independent
# --------------------------------------------------------------------------
@given(chain_case(max_new=5, max_beams=10**9), st.integers(2, 4),
       st.sampled_from([True, False, "never"]))
def test_batch_rows_are_searched_independently(case, K, early_stopping):
    """Each row of a batch gets what it gets alone (the batch only adds padding)."""
    table, prompts, max_new, eos, alpha = case
    prompts = np.concatenate([prompts, prompts[:, ::-1]])
    kw = dict(num_beams=K, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=11,
              length_penalty=alpha, early_stopping=early_stopping)
    chain = Chain(table)
    batch = beam_search(chain.step, chain.reorder, prompts, **kw)
    T0 = prompts.shape[1]
    assert batch.shape[1] <= T0 + max_new
    for b, prompt in enumerate(prompts):
        alone_chain = Chain(table)
        alone = beam_search(alone_chain.step, alone_chain.reorder, prompt[None], **kw)
        n = alone.shape[1]
        np.testing.assert_array_equal(batch[b, :n], alone[0])
        assert (batch[b, n:] == 11).all()
    # The answer is as long as its longest row; rows shorter than max_new end in eos.
    lengths = [len(continuation(row, T0, eos_tuple(eos), pad=11)) for row in batch]
    assert batch.shape[1] == T0 + max(lengths)
    for row, n in zip(batch, lengths):
        assert n == max_new or row[T0 + n - 1] in eos_tuple(eos)


def test_step_and_reorder_calls():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((6, 6, 6)) * 2
    prompts = np.array([[1, 2, 3], [4, 5, 0]])
    chain = Chain(table)
    K = 3
    out = beam_search(chain.step, chain.reorder, prompts, num_beams=K, max_new_tokens=5,
                      eos_token_id=None, pad_token_id=0)
    assert out.shape == (2, 8) and out.dtype == np.int64
    steps = [shape for kind, shape in chain.calls if kind == "step"]
    assert steps == [(2 * K, 3)] + [(2 * K, 1)] * 4     # the prompt once, then one token
    assert chain.calls[-1][0] == "step"                 # no reorder after the last step
    assert any(kind == "reorder" for kind, _ in chain.calls)
    for kind, rows in chain.calls:
        if kind == "reorder":                           # within each batch row's block
            assert rows.dtype == np.int64 and rows.shape == (2 * K,)
            np.testing.assert_array_equal(rows // K, np.arange(2 * K) // K)
            assert not np.array_equal(rows, np.arange(2 * K))   # identity: skipped


def test_first_call_repeats_each_prompt():
    seen = []

    def step(tokens):
        seen.append(tokens.copy())
        return np.zeros((tokens.shape[0], 4))

    prompts = np.array([[1, 2], [3, 0]])
    beam_search(step, lambda rows: None, prompts, num_beams=3, max_new_tokens=2,
                eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(seen[0], [[1, 2]] * 3 + [[3, 0]] * 3)


def test_processor_sees_float32_log_probs_and_the_sequences():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((5, 5, 5))
    prompts = np.array([[1, 2], [3, 4]])
    seen = []

    def ban_and_force(ids, scores):
        seen.append((ids.copy(), scores.copy()))
        scores = scores.copy()
        scores[:, 3] = -np.inf                          # token 3 never appears
        if ids.shape[1] == 4:                           # the third new token is eos (4)
            scores[:, :4] = -np.inf
        return scores

    chain = Chain(table)
    out = beam_search(chain.step, chain.reorder, prompts, num_beams=2, max_new_tokens=6,
                      eos_token_id=4, pad_token_id=0, process=ban_and_force)
    ids, scores = seen[0]
    assert scores.dtype == np.float32 and scores.shape == (4, 5)
    np.testing.assert_allclose(np.exp(scores.astype(np.float64)).sum(-1), 1, rtol=1e-6)
    np.testing.assert_array_equal(ids, prompts.repeat(2, 0))
    assert [s[0].shape for s in seen] == [(4, 2), (4, 3), (4, 4)]
    assert out.shape[1] <= 5 and (out[:, 2:] != 3).all()
    for row in out:
        assert 4 in row[2:]


def test_max_new_tokens_zero_returns_the_prompt():
    prompts = np.array([[1, 2, 3]], dtype=np.int32)
    out = beam_search(None, None, prompts, num_beams=2, max_new_tokens=0, eos_token_id=None,
                      pad_token_id=0)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, prompts)
    out = greedy_search(None, prompts, max_new_tokens=0, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(out, prompts)


def test_log_softmax_is_float32_and_normalised():
    z = np.random.default_rng(3).standard_normal((4, 9)) * 5
    out = log_softmax(z)
    assert out.dtype == np.float32
    ref = z - z.max(-1, keepdims=True)
    ref -= np.log(np.exp(ref).sum(-1, keepdims=True))
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6)


# --------------------------------------------------------------------------
# GPT's generate with beams
# --------------------------------------------------------------------------
V = 50
PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]


@pytest.fixture(scope="module")
def gpt64():
    cfg = GPTConfig(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2)
    return GPT(cfg, seed=0, dtype="float64")


def test_generate_beams_cached_equals_uncached_and_rows_alone(gpt64):
    free = generate(gpt64, PROMPTS, 8, do_sample=False, num_beams=3)
    eos = int(free[1, 7])                               # a token row 1's best beam emits
    for es in (True, False, "never"):
        kw = dict(do_sample=False, num_beams=3, eos_token_id=eos, pad_token_id=0,
                  early_stopping=es, length_penalty=1.5)
        cached = generate(gpt64, PROMPTS, 12, **kw)
        uncached = generate(gpt64, PROMPTS, 12, use_cache=False, **kw)
        np.testing.assert_array_equal(cached, uncached)
        T = max(map(len, PROMPTS))
        for b, p in enumerate(PROMPTS):                 # left padding changes nothing
            alone = generate(gpt64, [p], 12, **kw)
            n = alone.shape[1] - len(p)
            np.testing.assert_array_equal(cached[b, T:T + n], alone[0, len(p):])


def test_generate_one_beam_is_the_greedy_path(gpt64):
    np.testing.assert_array_equal(generate(gpt64, PROMPTS, 10, do_sample=False, num_beams=1),
                                  generate(gpt64, PROMPTS, 10, do_sample=False))
    np.testing.assert_array_equal(generate(gpt64, PROMPTS, 0, do_sample=False, num_beams=4),
                                  generate(gpt64, PROMPTS, 0, do_sample=False))


def test_generate_beams_restore_the_mode_and_generate_text_passes_them(gpt64):
    gpt64.train()
    generate(gpt64, PROMPTS, 3, do_sample=False, num_beams=2)
    assert gpt64.training
    gpt64.eval()

    class CharTok:
        eos_token_id = None

        def encode(self, text):
            return [ord(c) - ord("a") for c in text]

        def decode(self, ids):
            return "".join(chr(i + ord("a")) for i in ids)

    tok = CharTok()
    text = generate_text(gpt64, tok, "hello", 6, do_sample=False, num_beams=3)
    ids = generate(gpt64, [tok.encode("hello")], 6, do_sample=False, num_beams=3)
    assert text == tok.decode(ids[0].tolist())


@pytest.mark.gpu
def test_generate_beams_on_cupy_equal_numpy(gpt64):
    from scratchlm import backend, to_numpy

    kw = dict(do_sample=False, num_beams=3, eos_token_id=7, pad_token_id=0, length_penalty=0.5)
    ref = generate(gpt64, PROMPTS, 10, **kw)
    gpu = GPT(gpt64.config, seed=0, dtype="float64").to("cupy")
    out = generate(gpu, PROMPTS, 10, **kw)
    assert backend.is_cupy_array(out)
    np.testing.assert_array_equal(to_numpy(out), ref)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(num_beams=0), "num_beams.*0"),
    (dict(num_beams=2.0), "num_beams.*2.0"),
    (dict(num_beams=True), "num_beams.*True"),
    (dict(length_penalty="1"), "length_penalty.*'1'"),
    (dict(length_penalty=float("nan")), "length_penalty.*nan"),
    (dict(length_penalty=True), "length_penalty.*True"),
    (dict(early_stopping="yes"), "early_stopping.*'yes'"),
    (dict(early_stopping=1), "early_stopping.*1"),
    (dict(early_stopping=None), "early_stopping.*None"),
    (dict(max_new_tokens=-1), "max_new_tokens.*-1"),
    (dict(eos_token_id=-1), "eos_token_id.*-1"),
    (dict(eos_token_id=[]), r"eos_token_id.*\[\]"),
    (dict(eos_token_id=7), r"eos_token_id.*\[0, 5\).*7"),
    (dict(pad_token_id=1.5), "pad_token_id.*1.5"),
    (dict(prompt_length=4), "prompt_length.*T0=2.*4"),
    (dict(start_ids=np.array([1, 2])), r"start_ids.*\(2,\)"),
    (dict(start_ids=np.zeros((1, 0), dtype=np.int64)), r"start_ids.*\(1, 0\)"),
    (dict(start_ids=np.array([[1.0, 2.0]])), "start_ids.*float64"),
    (dict(step=lambda tokens: np.zeros((1, 5))), r"step.*\(4, V\).*\(1, 5\)"),
])
def test_beam_search_errors(kwargs, match):
    args = dict(step=lambda tokens: np.zeros((tokens.shape[0], 5)), reorder=lambda rows: None,
                start_ids=np.array([[1, 2], [3, 4]]), num_beams=2, max_new_tokens=3,
                eos_token_id=None, pad_token_id=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        beam_search(args.pop("step"), args.pop("reorder"), args.pop("start_ids"), **args)


def test_greedy_search_errors():
    with pytest.raises(ValueError, match="greedy_search: max_new_tokens.*-2"):
        greedy_search(None, np.array([[1]]), max_new_tokens=-2, eos_token_id=None,
                      pad_token_id=0)
    with pytest.raises(ValueError, match=r"greedy_search: step.*\(1, V\)"):
        greedy_search(lambda t: np.zeros(3), np.array([[1]]), max_new_tokens=2,
                      eos_token_id=None, pad_token_id=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_beams=2), "num_beams=2.*do_sample=False"),
    (dict(num_beams=0, do_sample=False), "generate: num_beams.*0"),
    (dict(num_beams=2, do_sample=False, length_penalty=None), "generate: length_penalty"),
    (dict(num_beams=2, do_sample=False, early_stopping="sometimes"),
     "generate: early_stopping.*sometimes"),
])
def test_generate_beam_errors(gpt64, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(gpt64, PROMPTS, 4, **kwargs)


def test_check_beam_args_accepts_the_documented_values():
    for es in (True, False, "never"):
        for lp in (-2, 0, 0.5, 1, 2.0):
            check_beam_args("here", 3, lp, es)


# --------------------------------------------------------------------------
# transformers: the same tokens
# --------------------------------------------------------------------------
HF_V = 53
HF_PROMPTS = {"three": [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]],
              "two": [[20, 21, 22, 23], [30]]}
NEW = 10


EOS_PULL = 0.5      # how hard the final LayerNorm's bias pulls towards the eos embedding


@pytest.fixture(scope="module")
def hf_pair():
    """(torch, {dtype: (transformers GPT2LMHeadModel, scratchlm GPT)}, eos, reference cache).

    Both models have the same weights. The eos id is the token the unconstrained
    beams emit most often early on; the final LayerNorm's bias is then pulled a
    little towards its embedding (the LM head is the tied embedding), so that
    hypotheses end at many different lengths.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                            # tiny products: threads only wait
    cfg = transformers.GPT2Config(
        vocab_size=HF_V, n_positions=64, n_embd=24, n_layer=2, n_head=3, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2, bos_token_id=1,
        eos_token_id=1, attn_implementation="eager")
    torch.manual_seed(0)
    hf64 = transformers.GPT2LMHeadModel(cfg).double().eval()
    ids, mask = padded(HF_PROMPTS["three"])
    with torch.no_grad():
        free = hf64.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                             do_sample=False, max_new_tokens=NEW, num_beams=4,
                             eos_token_id=None, pad_token_id=3).numpy()
        values, counts = np.unique(free[:, ids.shape[1] + 1:ids.shape[1] + 6],
                                   return_counts=True)
        eos = int(values[counts.argmax()])
        w = hf64.transformer.wte.weight[eos]
        hf64.transformer.ln_f.bias += EOS_PULL * w / w.norm()
    pairs = {}
    for dtype in ("float64", "float32"):
        hf = hf64 if dtype == "float64" else copy.deepcopy(hf64).float()
        ours = GPT(GPTConfig(vocab_size=HF_V, n_positions=64, n_embd=24, n_layer=2, n_head=3,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), dtype=dtype)
        params = dict(ours.named_parameters())
        for name, tensor in hf.state_dict().items():
            if name.startswith("transformer."):
                params[name[len("transformer."):]].data[...] = tensor.numpy()
        pairs[dtype] = (hf, ours)
    yield torch, pairs, eos, {}
    torch.set_num_threads(threads)


def padded(prompts):
    T = max(map(len, prompts))
    ids = np.array([[0] * (T - len(p)) + p for p in prompts])
    mask = np.array([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def hf_generate(hf_pair, dtype, prompts, **kw):
    torch, pairs, _, cache = hf_pair
    key = (dtype, prompts, tuple(sorted((k, str(v)) for k, v in kw.items())))
    if key not in cache:
        ids, mask = padded(HF_PROMPTS[prompts])
        with torch.no_grad():
            cache[key] = pairs[dtype][0].generate(
                torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                max_new_tokens=NEW, **kw).numpy()
    return cache[key]


def compare(hf_pair, dtype, prompts, **kw):
    ids, mask = padded(HF_PROMPTS[prompts])
    ref = hf_generate(hf_pair, dtype, prompts, **kw)
    out = generate(hf_pair[1][dtype][1], ids, NEW, attention_mask=mask, do_sample=False, **kw)
    assert out.shape == ref.shape, (out, ref)
    np.testing.assert_array_equal(out, ref)
    return out


def ended_early(out, T, eos, pad):
    """How many rows end with eos before max_new_tokens (and are padded after it)."""
    count = 0
    for row in out:
        hits = np.flatnonzero(row[T:] == eos)
        if hits.size and hits[0] < NEW - 1:
            count += 1
            assert (row[T + hits[0] + 1:] == pad).all()
    return count


# One beam is greedy decoding (length_penalty and early_stopping unused), in both libraries.
SETTINGS = [(1, 1.0, False)] + list(itertools.product((2, 3, 4), (0.5, 1.0, 2.0),
                                                      (True, False, "never")))


@pytest.mark.reference
@pytest.mark.parametrize("num_beams, length_penalty, early_stopping", SETTINGS,
                         ids=["-".join(map(str, s)) for s in SETTINGS])
def test_beams_match_transformers(hf_pair, num_beams, length_penalty, early_stopping,
                                  kernels):
    eos = hf_pair[2]
    kw = dict(num_beams=num_beams, eos_token_id=eos, pad_token_id=3,
              length_penalty=length_penalty, early_stopping=early_stopping)
    answers_ended = hypotheses_ended = 0
    for prompts, rows in HF_PROMPTS.items():
        out = compare(hf_pair, "float64", prompts, **kw)
        T = max(map(len, rows))
        answers_ended += ended_early(out, T, eos, pad=3)
        if num_beams > 1:                               # all the finished hypotheses
            every = hf_generate(hf_pair, "float64", prompts, num_return_sequences=num_beams,
                                **kw)
            hypotheses_ended += ended_early(every, T, eos, pad=3)
    # Hypotheses end with eos at different lengths, and some answers are among them.
    # Not with alpha = 2 and "never": the bound, taken at the longest length, keeps
    # every row open to the last step, where num_beams full-length hypotheses
    # finish and outscore every shorter one (S / 10 ** 2 against S / n ** 2).
    if (length_penalty, early_stopping) != (2.0, "never"):
        assert answers_ended >= 1, "no answer ended early: the eos choice exercises nothing"
        assert num_beams == 1 or hypotheses_ended >= 2


@pytest.mark.reference
@pytest.mark.parametrize("eos", ["none", "list2", "list3"])
@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 1.0])
def test_beams_match_transformers_eos_lists_and_other_penalties(hf_pair, eos, length_penalty):
    favoured = hf_pair[2]
    for prompts in HF_PROMPTS:
        eos_ids = {"none": None, "list2": [favoured, 8], "list3": [8, favoured, 26]}[eos]
        for num_beams, early_stopping in itertools.product((2, 4), (True, False, "never")):
            compare(hf_pair, "float64", prompts, num_beams=num_beams, eos_token_id=eos_ids,
                    pad_token_id=3, length_penalty=length_penalty,
                    early_stopping=early_stopping)


@pytest.mark.reference
def test_beams_match_transformers_float32(hf_pair):
    """A float32 model: the logits differ from torch's in the last bits, the tokens do not."""
    eos = hf_pair[2]
    for prompts in HF_PROMPTS:
        for num_beams, length_penalty, early_stopping in itertools.product(
                (2, 4), (0.5, 2.0), (True, False, "never")):
            compare(hf_pair, "float32", prompts, num_beams=num_beams, eos_token_id=eos,
                    pad_token_id=3, length_penalty=length_penalty,
                    early_stopping=early_stopping)


@pytest.mark.reference
def test_pad_token_id_zero_pads_with_zero_where_transformers_pads_with_eos(hf_pair):
    """transformers 5.25 fills its beam buffers with ``pad_token_id or eos_token_id[0]``,
    a truth test on a tensor: a pad id of 0 reads as missing, and ended beams are
    padded with eos. scratchlm pads with the pad id it is given; every other token agrees."""
    prompts, eos = "three", hf_pair[2]
    ids, mask = padded(HF_PROMPTS[prompts])
    ref = hf_generate(hf_pair, "float64", prompts, num_beams=3, eos_token_id=eos,
                      pad_token_id=0)
    out = generate(hf_pair[1]["float64"][1], ids, NEW, attention_mask=mask, do_sample=False,
                   num_beams=3, eos_token_id=eos, pad_token_id=0)
    assert out.shape == ref.shape
    T = ids.shape[1]
    for row, ref_row in zip(out, ref):
        end = T + len(continuation(row, T, (eos,), pad=0))
        np.testing.assert_array_equal(row[:end], ref_row[:end])
        assert (row[end:] == 0).all() and np.isin(ref_row[end:], (0, eos)).all()


@pytest.mark.reference
def test_log_softmax_matches_torch():
    torch = pytest.importorskip("torch")
    z = np.random.default_rng(4).standard_normal((16, 53)) * 4
    ref = torch.log_softmax(torch.from_numpy(z).float(), dim=-1).numpy()
    np.testing.assert_allclose(log_softmax(z), ref, rtol=0, atol=4e-6)
