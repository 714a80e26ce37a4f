"""Beam search and greedy search: choosing a whole continuation, not one token at a time.

A language model scores a continuation y_1 .. y_n of a prompt x by the sum of
its next-token log-probabilities,

    S(y) = log p(y_1 .. y_n | x) = sum_{s=1..n} log p(y_s | x, y_1 .. y_{s-1}).

Greedy search takes the most likely token at every step. The most likely
*sequence* may begin with a less likely token, so beam search keeps the K
best prefixes found so far (K = num_beams, the "beams") and extends them all.

Per batch row, one step of beam search (K beams with scores S_k, vocabulary V):

    1. Extend.  logp_k = log_softmax(step(beam k))                       (K, V)
                cand[k, v] = S_k + logp_k[v]                               (K * V,)
       every one-token extension of every beam, scored.
    2. Keep the 2K best candidates (K * (1 + number of eos ids) when there
       are several eos ids). Up to K of them may end with eos, so 2K leaves at
       least K that go on.
    3. Finish.  A candidate that ends (its token is an eos id, or it reaches
       the maximum length) becomes a finished hypothesis, scored with the
       length penalty alpha:
                score(y) = S(y) / n ** alpha,     n = generated tokens, eos included
       (the prompt is not counted). Only candidates ranked among the top K of
       step 2 may finish; an eos candidate ranked K+1 .. 2K is dropped. Each
       row keeps its K best finished hypotheses.
       alpha > 0 favours longer sequences (a negative S divided by a larger
       n ** alpha comes closer to 0); alpha < 0 favours shorter ones; alpha = 0
       compares raw sums.
    4. Go on.   The K best candidates that did not end become the next beams.
       A beam's cached keys and values follow it: row i of the next step is
       candidate i's parent beam, so the caller gathers its cache with
       reorder(rows).

At the start all K beams hold the same prompt. Were all their scores 0,
every extension would appear K times; so beam 0 starts at 0 and beams
1 .. K-1 at -1e9, and the first step draws its 2K candidates from beam 0.
The same -1e9 is added to a candidate's score to keep it out of a choice
(an ended candidate out of the running beams; an unfinished one, or one of a
row that may no longer change, out of the finished hypotheses).

When to stop. A row is done when it cannot gain a better finished
hypothesis; the search stops when every row is done (or at max_new_tokens).
With all K finished slots filled and the worst of them scoring W, and the best
running beam at S_best after n tokens:

    early_stopping=False    done when S_best / n ** alpha <= W: the best beam,
                            finished now, would not enter. A heuristic: with
                            alpha > 0 a longer continuation may still score
                            higher, its larger n ** alpha outweighing the
                            log-probabilities still to come.
    early_stopping=True     done as soon as K hypotheses are finished (or by
                            the rule of False, whichever comes first).
    early_stopping="never"  with alpha > 0, the bound uses the longest possible
                            length: S_best / max_new_tokens ** alpha <= W.
                            Log-probabilities are <= 0, so S only decreases as
                            tokens are added, and no continuation of a running
                            beam can score higher: the classic, exact stopping
                            rule. With alpha <= 0 the current length is already
                            that bound, and "never" acts as False.

The answer is each row's best finished hypothesis, padded with pad_token_id
after its end to the longest answer of the batch. (transformers 5.25 pads
with ``pad_token_id or eos_token_id[0]``, a truth test that reads a pad id
of 0 as unset and pads with eos instead; here the given pad id is used.)

Numerics, as transformers does them: the logits are cast to float32 before
the log-softmax, whatever the model's dtype, and the scores are float32
sums; the -1e9 constants are float32, and a length penalty divides a float32
score by float32(n ** alpha). Equal scores rank lower index first (beam-major,
then token id); transformers' ``torch.topk`` leaves the order of ties unspecified.

Greedy search is the same loop with one beam and an argmax: after a row emits
eos it is padded with pad_token_id, and the loop stops once every row has ended.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from scratchlm import backend

__all__ = ["beam_search", "check_beam_args", "greedy_search", "log_softmax"]

MASKED = -1.0e9     # transformers' "no chance" score; exactly representable in float32


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def log_softmax(logits):
    """Row-wise log-probabilities, in float32.

    Math: log p_i = (z_i - m) - log sum_j exp(z_j - m),   m = max_j z_j
    (subtracting m keeps exp from overflowing; the order of the two
    subtractions is torch's). Shapes: (N, V) -> (N, V) float32.
    """
    xp = backend.get_array_module(logits)
    z = logits.astype(np.float32)                       # transformers scores in float32
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


def _top_k(scores, k):
    """Column indices of the k largest scores of each row, largest first.

    Equal scores come lower index first (a stable sort). Shapes: (B, n) -> (B, k).
    """
    xp = backend.get_array_module(scores)
    stable = {"kind": "stable"} if xp is np else {}     # cupy's argsort is stable
    return xp.argsort(-scores, axis=-1, **stable)[:, :k]


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def check_beam_args(where, num_beams, length_penalty, early_stopping):
    """Raise ValueError, naming the argument, unless num_beams is an int >= 1,
    length_penalty a finite real number and early_stopping True, False or "never"."""
    if not _is_int(num_beams) or num_beams < 1:
        raise ValueError(f"{where}: num_beams must be an int >= 1; got {num_beams!r}")
    if (isinstance(length_penalty, (bool, np.bool_))
            or not isinstance(length_penalty, numbers.Real)
            or not math.isfinite(length_penalty)):
        raise ValueError(f"{where}: length_penalty must be a finite real number (1.0: "
                         f"average log-probability per token); got {length_penalty!r}")
    if not (early_stopping is True or early_stopping is False
            or (isinstance(early_stopping, str) and early_stopping == "never")):
        raise ValueError(f"{where}: early_stopping must be True, False or \"never\"; got "
                         f"{early_stopping!r}")


def _check_common(where, start_ids, max_new_tokens, eos_token_id, pad_token_id):
    """(xp, eos tuple (maybe empty), pad) after checking the arguments both searches share."""
    if not hasattr(start_ids, "ndim") or start_ids.ndim != 2 \
            or start_ids.dtype.kind not in "iu" or 0 in start_ids.shape:
        described = (f"{start_ids.dtype} {tuple(start_ids.shape)}" if hasattr(start_ids, "ndim")
                     else type(start_ids).__name__)
        raise ValueError(f"{where}: start_ids must be an integer array (B, T0) with B, T0 >= 1; "
                         f"got {described}")
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"{where}: max_new_tokens must be a non-negative int; got "
                         f"{max_new_tokens!r}")
    if eos_token_id is None:
        eos = ()
    else:
        eos = (eos_token_id,) if _is_int(eos_token_id) else (
            tuple(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else None)
        if not eos or not all(_is_int(i) and i >= 0 for i in eos):
            raise ValueError(f"{where}: eos_token_id must be a token id, a list of ids or "
                             f"None; got {eos_token_id!r}")
        eos = tuple(int(i) for i in eos)
    if pad_token_id is None:                            # transformers' default: the first eos
        pad = eos[0] if eos else 0
    elif _is_int(pad_token_id):
        pad = int(pad_token_id)
    else:
        raise ValueError(f"{where}: pad_token_id must be a token id or None; got "
                         f"{pad_token_id!r}")
    return backend.get_array_module(start_ids), eos, pad


def _check_logits(where, logits, rows, eos):
    if getattr(logits, "ndim", None) != 2 or logits.shape[0] != rows:
        got = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
        raise ValueError(f"{where}: step must return logits of shape ({rows}, V), one row per "
                         f"sequence; got {got}")
    V = logits.shape[1]
    if eos and max(eos) >= V:
        raise ValueError(f"{where}: eos_token_id must be in [0, {V}) (the logits' V); got "
                         f"{max(eos)}")
    return V


# --------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------
def beam_search(step, reorder, start_ids, *, num_beams, max_new_tokens, eos_token_id,
                pad_token_id, length_penalty=1.0, early_stopping=False, process=None,
                prompt_length=None):
    """The best-scoring continuation of each prompt, by beam search (see the module docstring).

    Args:
        step: ``step(tokens) -> logits (B*K, V)``, K = num_beams. The first
            call gets every prompt, each repeated K times (row b*K + j is beam
            j of batch row b), tokens (B*K, T0); later calls get only the
            newest token of each beam, (B*K, 1). The caller keeps its own
            KV cache.
        reorder: ``reorder(rows)``, rows an int64 (B*K,) array: the caller
            makes its cache row i a copy of the old row rows[i]. Called after
            each step's selection when another step follows; skipped when
            rows is the identity. rows[i] always lies in row i's batch block
            (b*K .. b*K + K-1), so per-batch-row state (masks) need not move.
        start_ids: (B, T0) integer array (numpy or cupy): each batch row's
            prompt (a GPT: the left-padded prompt; an encoder-decoder: (B, 1)
            filled with decoder_start_token_id).
        num_beams: K >= 1.
        max_new_tokens: at most this many tokens are added (>= 0).
        eos_token_id: an id, a list of ids, or None (sequences then end only
            at max_new_tokens).
        pad_token_id: written after a sequence's end (None: the first eos id,
            or 0 without one).
        length_penalty: alpha in score = sum_logprobs / n ** alpha.
        early_stopping: True, False or "never" (see "When to stop" above).
        process: ``process(ids, scores) -> scores``, optional logits
            processors applied to the float32 log-probabilities (B*K, V), as
            transformers applies its LogitsProcessorList after the
            log-softmax; ids (B*K, t) are the sequences so far.
        prompt_length: leading tokens of each sequence that the length
            penalty does not count (default T0: n counts generated tokens
            only, as transformers' decoder_prompt_len).
    Returns: (B, T0 + n) int64 on start_ids' array module: each row's best
        finished hypothesis, prompt included, padded with pad_token_id after
        its end; n is the longest generated length among the answers.
    """
    where = "beam_search"
    check_beam_args(where, num_beams, length_penalty, early_stopping)
    xp, eos, pad = _check_common(where, start_ids, max_new_tokens, eos_token_id, pad_token_id)
    B, T0 = start_ids.shape
    if prompt_length is None:
        prompt_length = T0
    elif not _is_int(prompt_length) or not 0 <= prompt_length <= T0:
        raise ValueError(f"{where}: prompt_length must be an int in [0, T0={T0}]; got "
                         f"{prompt_length!r}")
    start_ids = start_ids.astype(np.int64)
    if max_new_tokens == 0:
        return start_ids
    K, L = num_beams, T0 + max_new_tokens               # L: the longest sequence
    alpha = float(length_penalty)
    n_keep = max(2, 1 + len(eos)) * K                   # candidates kept per step
    may_finish = xp.arange(n_keep) < K                  # (n_keep,) only the top K may finish
    eos_ids = xp.asarray(eos, dtype=np.int64) if eos else None
    batch = xp.arange(B)[:, None]                       # (B, 1) for gathers along beams
    no_chance = np.float32(MASKED)

    # Running beams and finished hypotheses: (B, K, L) token buffers (pad past the end).
    running = xp.full((B, K, L), pad, dtype=np.int64)
    running[:, :, :T0] = start_ids[:, None, :]
    finished = running.copy()
    running_scores = xp.zeros((B, K), dtype=np.float32)
    running_scores[:, 1:] = no_chance                   # step 1 extends beam 0 only
    finished_scores = xp.full((B, K), no_chance, dtype=np.float32)
    finished_len = xp.zeros((B, K), dtype=np.int64)     # generated tokens, eos included
    is_finished = xp.zeros((B, K), dtype=bool)          # slot holds a finished hypothesis
    may_improve = xp.ones(B, dtype=bool)                # the row's answer may still change

    tokens = running[:, :, :T0].reshape(B * K, T0)      # step 1: every beam's prompt
    for t in range(T0, L):                              # t tokens so far; the next goes to t
        logits = step(tokens)
        V = _check_logits(where, logits, B * K, eos)
        logp = log_softmax(logits)                      # (B*K, V) float32
        if process is not None:                         # scores stay float32 sums
            logp = process(running[:, :, :t].reshape(B * K, t), logp).astype(np.float32,
                                                                              copy=False)

        # 1-2. Score every extension, keep the n_keep best of each row's K*V.
        cand = (logp.reshape(B, K, V) + running_scores[:, :, None]).reshape(B, K * V)
        top = _top_k(cand, n_keep)                      # (B, n_keep) indices k*V + v
        top_scores = xp.take_along_axis(cand, top, axis=1)
        top_beams, top_tokens = top // V, top % V       # parent beam, new token
        top_seqs = running[batch, top_beams]            # (B, n_keep, L) copies
        top_seqs[:, :, t] = top_tokens
        ends = xp.zeros(top.shape, dtype=bool) if eos_ids is None else \
            (top_tokens[:, :, None] == eos_ids).any(axis=-1)
        if t + 1 == L:                                  # the last step: everything ends
            ends[...] = True

        # 3. Finished hypotheses: the ended among the top K, length-penalised,
        #    merged with the K kept so far; the K best stay.
        n = t + 1 - prompt_length
        hyp_scores = top_scores / np.float32(n ** alpha)
        if early_stopping is True:                      # a full row takes no more
            hyp_scores = xp.where(is_finished.all(axis=1, keepdims=True),
                                  hyp_scores + no_chance, hyp_scores)
        hyp_scores = xp.where(may_improve[:, None], hyp_scores, hyp_scores + no_chance)
        just_finished = ends & may_finish
        hyp_scores = xp.where(just_finished, hyp_scores, hyp_scores + no_chance)
        merged_scores = xp.concatenate([finished_scores, hyp_scores], axis=1)
        best = _top_k(merged_scores, K)                 # (B, K) into K + n_keep
        finished = xp.concatenate([finished, top_seqs], axis=1)[batch, best]
        finished_scores = xp.take_along_axis(merged_scores, best, axis=1)
        finished_len = xp.take_along_axis(xp.concatenate(
            [finished_len, xp.full(top.shape, t + 1 - T0, dtype=np.int64)], axis=1), best, axis=1)
        is_finished = xp.take_along_axis(
            xp.concatenate([is_finished, just_finished], axis=1), best, axis=1)

        # 4. The next beams: the K best candidates that did not end.
        alive_scores = xp.where(ends, top_scores + no_chance, top_scores)
        keep = _top_k(alive_scores, K)                  # (B, K)
        parents = xp.take_along_axis(top_beams, keep, axis=1)
        running = top_seqs[batch, keep]
        running_scores = xp.take_along_axis(alive_scores, keep, axis=1)

        # 5. Can a row still improve? The best running beam, finished at the best
        #    length it could have, against the worst finished hypothesis.
        n_best = (L - prompt_length) if early_stopping == "never" and alpha > 0 else n
        best_possible = running_scores[:, :1] / np.float32(n_best ** alpha)   # (B, 1)
        worst = xp.where(is_finished, finished_scores.min(axis=1, keepdims=True), no_chance)
        may_improve &= (best_possible > worst).any(axis=1)
        if (not bool(may_improve.any()) or bool(ends.all())
                or (early_stopping is True and bool(is_finished.all()))):
            break

        rows = (parents + batch * K).reshape(B * K)     # cache row i <- old row rows[i]
        if not bool((rows == xp.arange(B * K)).all()):
            reorder(rows)
        tokens = running[:, :, t].reshape(B * K, 1)

    out_len = T0 + int(finished_len[:, 0].max())
    return xp.ascontiguousarray(finished[:, 0, :out_len])


# --------------------------------------------------------------------------
# Greedy search
# --------------------------------------------------------------------------
def greedy_search(step, start_ids, *, max_new_tokens, eos_token_id, pad_token_id, process=None):
    """The argmax continuation of each prompt: beam search's conventions with one beam.

    Args:
        step: ``step(tokens) -> logits (B, V)``: first the prompts (B, T0),
            then the newest token (B, 1); the caller keeps its own KV cache.
        start_ids: (B, T0) integer array (numpy or cupy).
        max_new_tokens: at most this many tokens are added (>= 0).
        eos_token_id: an id, a list of ids, or None. After a row emits one it
            is padded with pad_token_id; the loop stops once every row has ended.
        pad_token_id: the id written after a row's end (None: the first eos id,
            or 0 without one). Rows that ended still go through step, fed this
            id, as in transformers, so it must be a token the model accepts.
        process: ``process(ids, scores) -> scores``, optional logits processors
            applied to the float32 logits (B, V) before the argmax, as
            transformers' greedy decoding applies them (to the logits, not to
            log-probabilities); ids (B, t) are the sequences so far.
    Returns: (B, T0 + n) int64 on start_ids' array module, n <= max_new_tokens.
    """
    where = "greedy_search"
    xp, eos, pad = _check_common(where, start_ids, max_new_tokens, eos_token_id, pad_token_id)
    B, T0 = start_ids.shape
    L = T0 + max_new_tokens
    out = xp.full((B, L), pad, dtype=np.int64)
    out[:, :T0] = start_ids
    eos_ids = xp.asarray(eos, dtype=np.int64) if eos else None
    done = xp.zeros(B, dtype=bool)
    end = L
    tokens = out[:, :T0]
    for t in range(T0, L):
        logits = step(tokens)
        _check_logits(where, logits, B, eos)
        scores = logits.astype(np.float32)              # float32, as transformers
        if process is not None:
            scores = process(out[:, :t], scores)
        next_ids = scores.argmax(axis=-1)               # (B,) ties: the lowest id
        if eos_ids is not None:
            next_ids = xp.where(done, pad, next_ids)    # ended rows get padding
            done |= (next_ids[:, None] == eos_ids).any(axis=-1)
        out[:, t] = next_ids
        if eos_ids is not None and bool(done.all()):
            end = t + 1
            break
        tokens = out[:, t:t + 1]
    return out if end == L else xp.ascontiguousarray(out[:, :end])
