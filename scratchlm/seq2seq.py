"""Generation for the encoder-decoder (Marian): greedy decoding and beam search.

Translation reads the source once and writes the target token by token:

    e = encoder(src)                          once per source     (B, S, C)
    k_l, v_l = cross-attention keys/values    once per source and decoder layer
    y_0 = decoder_start_token_id
    y_t = choose(decoder(y_<t, e)[-1])        one new token per step

Each step feeds only the newest token: the decoder's self-attention keeps
its past keys and values in a KV cache (causal: a later token cannot change
them), and the cross-attention's keys and values, functions of the source
alone, were computed before the first step. ``choose`` is argmax (greedy)
or beam search (``scratchlm.beam``), which keeps the num_beams best partial
translations; each beam is a row of the batch (B * num_beams rows), so the
caches follow the beams by reindexing their rows.

As transformers does for Marian, two rules shape the scores before the
choice (its logits processors): ``bad_words_ids`` of one token from the
config (real Marian checkpoints ban the pad token) are never chosen, and
when the length limit is reached the last token is forced to be
``forced_eos_token_id``.
"""

from __future__ import annotations

import numbers

import numpy as np

from scratchlm import backend
from scratchlm.beam import beam_search, greedy_search
from scratchlm.models._inputs import additive_mask, as_input_ids

DEFAULT_MAX_LENGTH = 20     # transformers' GenerationConfig.max_length, the start token included


def _max_new_tokens(model, max_new_tokens, where):
    cfg = model.config
    if max_new_tokens is None:
        total = cfg.extra.get("max_length", DEFAULT_MAX_LENGTH)
        max_new_tokens = max(int(total) - 1, 0)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) \
            or max_new_tokens < 1:
        raise ValueError(f"{where}: max_new_tokens must be an int >= 1; got {max_new_tokens!r}")
    if max_new_tokens + 1 > cfg.max_position_embeddings:
        raise ValueError(f"{where}: 1 + max_new_tokens = {max_new_tokens + 1} exceeds "
                         f"config.max_position_embeddings={cfg.max_position_embeddings}")
    return int(max_new_tokens)


def _banned_tokens(config, where):
    """Single-token bad_words_ids of the config (a checkpoint's generation rule)."""
    bad = config.extra.get("bad_words_ids") or []
    banned = []
    for seq in bad:
        if len(seq) != 1:
            raise ValueError(f"{where}: bad_words_ids of more than one token are not "
                             f"supported; got {seq}")
        banned.append(int(seq[0]))
    return banned


def generate_seq2seq(model, input_ids, *, attention_mask=None, max_new_tokens=None,
                     num_beams=1, length_penalty=1.0, early_stopping=False):
    """Greedy decoding (num_beams=1) or beam search for a MarianMTModel.

    Args:
        input_ids: (B, S) source ids (right-padded, with attention_mask).
        attention_mask: (B, S) 1 for real tokens, 0 for padding.
        max_new_tokens: tokens to write at most after the start token (None:
            the config's max_length, 20 by default, less the start token).
        num_beams, length_penalty, early_stopping: as transformers' generate.
    Returns: (B, 1 + n) int64 ids starting with decoder_start_token_id, each
        row padded with pad_token_id after its eos.
    """
    where = "MarianMTModel.generate"
    cfg, xp = model.config, model.xp
    max_new = _max_new_tokens(model, max_new_tokens, where)
    if isinstance(num_beams, bool) or not isinstance(num_beams, numbers.Integral) \
            or num_beams < 1:
        raise ValueError(f"{where}: num_beams must be an int >= 1; got {num_beams!r}")
    banned = _banned_tokens(cfg, where)
    src = as_input_ids(where, input_ids, xp, cfg.vocab_size)
    B = src.shape[0]
    mask = additive_mask(where, attention_mask, xp, src.shape, model.dtype)
    forced_eos = cfg.forced_eos_token_id
    max_length = 1 + max_new

    was_training = model.training
    model.eval()
    try:
        memory = model.model.encoder.forward(src, mask)              # once per source
        static_kvs = model.cross_kv(memory)                          # once per source
        rows = B * num_beams
        if num_beams > 1:                                            # beam j of row b is
            static_kvs = [(xp.repeat(k, num_beams, axis=0),          # row b * num_beams + j
                           xp.repeat(v, num_beams, axis=0)) for k, v in static_kvs]
            mask = None if mask is None else xp.repeat(mask, num_beams, axis=0)
        caches = model.new_caches(rows, max_length)

        def step(tokens):
            return model.decode_step(tokens, mask, caches, static_kvs)[:, -1]

        def reorder(rows):
            for cache in caches:                                     # the caches follow
                cache.reorder(rows)                                  # the beams

        def process(ids, scores):
            if banned:
                scores[:, banned] = -xp.inf
            if forced_eos is not None and ids.shape[1] == max_length - 1:
                scores[:, :] = -xp.inf                               # the last place left:
                scores[:, forced_eos] = 0                            # eos
            return scores

        start = xp.full((B, 1), cfg.decoder_start_token_id, dtype=xp.int64)
        if num_beams == 1:
            return greedy_search(step, start, max_new_tokens=max_new,
                                 eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
                                 process=process)
        return beam_search(step, reorder, start, num_beams=num_beams, max_new_tokens=max_new,
                           eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           process=process)
    finally:
        model.train(was_training)


def translate(model, tokenizer, texts, *, num_beams=1, max_new_tokens=None, batch_size=16,
              length_penalty=1.0, progress=False):
    """Translate a list of strings with a MarianMTModel and its tokenizer -> list of strings.

    Sources are cut to the model's positions; max_new_tokens None allows as many
    tokens as the model has positions after the start token.
    """
    cfg = model.config
    if max_new_tokens is None:
        max_new_tokens = cfg.max_position_embeddings - 1
    out = []
    batches = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only for the command line
        batches = tqdm(batches, desc="translate", unit="batch")
    for i in batches:
        enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                        max_length=cfg.max_position_embeddings)
        ids = model.generate(backend.to_backend(np.asarray(enc["input_ids"], dtype=np.int64)),
                             attention_mask=backend.to_backend(
                                 np.asarray(enc["attention_mask"], dtype=np.int64)),
                             max_new_tokens=max_new_tokens, num_beams=num_beams,
                             length_penalty=length_penalty)
        for row in backend.to_numpy(ids).tolist():
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out
