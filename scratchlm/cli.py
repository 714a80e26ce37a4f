"""The ``scratchlm`` command (also ``python -m scratchlm``).

Subcommands:
    train       train a GPT on the built-in corpus (or your own text)
    generate    sample text from a trained model
    gradcheck   check every functional op and model backward against finite differences
    finetune    fine-tune a BERT for classification, NER or extractive QA
    predict     run a fine-tuned model on new text
    bench       scratchlm against PyTorch: throughput, MFU, memory; per-op profile
    distill     teach a smaller student from a frozen teacher (DistilBERT's loss)
    cost        parameters, FLOPs, memory and a measured step's MFU
    explain     attention maps, rollout, saliency and integrated gradients, as pictures
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def _cmd_gradcheck(args) -> int:
    from scratchlm.gradcheck import check_functional, check_models  # noqa: PLC0415

    rows = []
    if args.only in (None, "ops"):
        rows += check_functional(seed=args.seed, rtol=args.rtol)
    if args.only in (None, "models"):
        rows += check_models(seed=args.seed, rtol=args.model_rtol)
    print(f"{'op / model':<34} {'shapes':<40} {'max rel err':>12} {'max abs err':>12}  result")
    print("-" * 110)
    failed = 0
    for op, shapes, report in rows:
        failed += not report.passed
        print(f"{op:<34} {shapes:<40} {report.max_rel_err:12.2e} "
              f"{report.max_abs_err:12.2e}  {'pass' if report.passed else 'FAIL'}")
        if args.verbose or not report.passed:
            print("    " + str(report).replace("\n", "\n    "))
    print("-" * 110)
    print(f"{len(rows) - failed} passed, {failed} failed (float64, central differences; "
          f"ops element-wise or directional, pass at relative error <= {args.rtol:g}; "
          f"models per parameter along random directions, <= {args.model_rtol:g})")
    return 1 if failed else 0


# --- train -------------------------------------------------------------------

TRAIN_DEFAULTS = dict(tokenizer="char", vocab_size=1024, n_layer=4, n_head=4, n_embd=128,
                      block_size=128, batch_size=16, max_steps=1000, lr=2e-3, warmup_steps=50,
                      min_lr_ratio=0.1, weight_decay=0.1, grad_accum=1, dropout=0.0,
                      eval_interval=100, eval_batches=8, seed=0, dtype="float32",
                      text=None, sample_tokens=300)
# BERT pre-training: a WordPiece vocabulary and a higher MLM-friendly learning rate.
BERT_DEFAULTS = dict(vocab_size=4096, block_size=128, lr=1e-3, max_steps=600)
# Translation: a unigram SentencePiece shared by both languages; block_size is the
# longest source or target kept, in tokens.
MARIAN_DEFAULTS = dict(vocab_size=4000, n_layer=3, n_head=4, n_embd=128, block_size=64,
                       batch_size=64, max_steps=4000, lr=1e-3, warmup_steps=100,
                       eval_interval=500, dropout=0.1, sample_tokens=0)
TRANSLATION_DEFAULTS = dict(pairs=None, target_lang="de", bleu_sentences=200)


def _load_tokenizer(directory):
    from scratchlm.tokenizers import (  # noqa: PLC0415
        ByteLevelBPETokenizer, CharTokenizer, WordPieceTokenizer)

    config_path = os.path.join(directory, "tokenizer_config.json")
    kind = None
    if os.path.exists(config_path):
        with open(config_path) as f:
            kind = json.load(f).get("tokenizer_class")
    if kind == "CharTokenizer":
        return CharTokenizer.from_pretrained(directory)
    if os.path.exists(os.path.join(directory, "merges.txt")):
        return ByteLevelBPETokenizer.from_pretrained(directory)
    if os.path.exists(os.path.join(directory, "vocab.txt")):
        return WordPieceTokenizer.from_pretrained(directory)
    raise ValueError(f"no tokenizer in {directory} (expected tokenizer_config.json of a "
                     "CharTokenizer, vocab.json + merges.txt, or a WordPiece vocab.txt)")


def _read_text(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--text: no such file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"--text: {path} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    if not text.strip():
        raise ValueError(f"--text: {path} is empty")
    return text


def _gpt_setup(cfg, text, out, resume):
    """Tokenizer, token files, batches and model for causal-LM training of a GPT."""
    import numpy as np  # noqa: PLC0415

    from scratchlm.data import (  # noqa: PLC0415
        CausalLMBatches, read_token_file, train_val_split, write_token_file)
    from scratchlm.models import GPT, GPTConfig  # noqa: PLC0415
    from scratchlm.tokenizers import ByteLevelBPETokenizer, CharTokenizer  # noqa: PLC0415

    train_text, val_text = train_val_split(text, 0.1)
    if resume:
        tok = _load_tokenizer(out)
    elif cfg["tokenizer"] == "char":
        tok = CharTokenizer.train(text)
    else:
        tok = ByteLevelBPETokenizer.train(train_text, cfg["vocab_size"],
                                          special_tokens=["<|endoftext|>"])
    # Token files on disk, read back as memory maps: corpora larger than memory train.
    paths = {}
    for split, part in (("train", train_text), ("val", val_text)):
        paths[split] = os.path.join(out, f"{split}.bin")
        if not (resume and os.path.exists(paths[split])):
            write_token_file(paths[split], np.asarray(tok.encode(part), dtype=np.int64),
                             tok.vocab_size)
    train_ids, val_ids = read_token_file(paths["train"]), read_token_file(paths["val"])
    if len(val_ids) <= cfg["block_size"]:
        raise ValueError(f"--block-size {cfg['block_size']}: the validation text has only "
                         f"{len(val_ids)} tokens; use a smaller block size or more text")
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    config = GPTConfig(vocab_size=tok.vocab_size, n_positions=cfg["block_size"],
                       n_embd=cfg["n_embd"], n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                       resid_pdrop=cfg["dropout"], embd_pdrop=cfg["dropout"],
                       attn_pdrop=cfg["dropout"], bos_token_id=eos, eos_token_id=eos)
    model = GPT(config, seed=cfg["seed"], dtype=cfg["dtype"])
    train_batches = CausalLMBatches(train_ids, cfg["block_size"], cfg["batch_size"],
                                    seed=cfg["seed"])
    eval_batches = CausalLMBatches(val_ids, cfg["block_size"], cfg["batch_size"]).fixed_batches(
        cfg["eval_batches"])
    shape = (f"{config.n_layer} layers, {config.n_head} heads, width {config.n_embd}, "
             f"context {config.n_positions}")
    sizes = f"{len(train_ids):,} train / {len(val_ids):,} val tokens"
    return tok, model, train_batches, eval_batches, None, shape, sizes, val_text


def _bert_setup(cfg, text, out, resume):
    """WordPiece tokenizer, MLM + NSP batches and model for BERT pre-training."""
    from scratchlm import to_numpy  # noqa: PLC0415
    from scratchlm.data import BertPretrainingBatches  # noqa: PLC0415
    from scratchlm.models import BertConfig, BertForPreTraining  # noqa: PLC0415
    from scratchlm.tokenizers import WordPieceTokenizer  # noqa: PLC0415

    docs = [d for d in text.split("\n\n") if d.strip()]
    n_val = max(2, len(docs) // 10)
    if len(docs) < n_val + 2:
        raise ValueError("--model bert needs a text with several documents separated by "
                         "blank lines (next-sentence pairs come from different documents)")
    train_docs, val_docs = docs[:-n_val], docs[-n_val:]
    tok = _load_tokenizer(out) if resume else WordPieceTokenizer.train(
        "\n".join(train_docs), cfg["vocab_size"])
    encode = lambda ds: [tok.encode(d, add_special_tokens=False) for d in ds]  # noqa: E731
    train_ids, val_ids = encode(train_docs), encode(val_docs)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=cfg["n_embd"],
                        num_hidden_layers=cfg["n_layer"], num_attention_heads=cfg["n_head"],
                        intermediate_size=4 * cfg["n_embd"],
                        max_position_embeddings=cfg["block_size"],
                        hidden_dropout_prob=cfg["dropout"],
                        attention_probs_dropout_prob=cfg["dropout"],
                        pad_token_id=tok.pad_token_id)
    model = BertForPreTraining(config, seed=cfg["seed"], dtype=cfg["dtype"])
    train_batches = BertPretrainingBatches(train_ids, tok, cfg["block_size"], cfg["batch_size"],
                                           seed=cfg["seed"])
    eval_batches = BertPretrainingBatches(val_ids, tok, cfg["block_size"],
                                          cfg["batch_size"]).fixed_batches(cfg["eval_batches"])

    def metrics(batch, output):
        labels = batch["labels"]
        counted = labels != -100
        pred = to_numpy(output.prediction_logits).argmax(-1)
        nsp = to_numpy(output.seq_relationship_logits).argmax(-1)
        return {"mlm_accuracy": float((pred == labels)[counted].mean()) if counted.any()
                else float("nan"),                  # no masked token in this batch: left out
                "nsp_accuracy": float((nsp == batch["next_sentence_label"]).mean())}

    shape = (f"BERT {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
             f"width {config.hidden_size}, max length {config.max_position_embeddings}")
    sizes = (f"{sum(map(len, train_ids)):,} train / {sum(map(len, val_ids)):,} val tokens "
             f"in {len(train_ids)} / {len(val_ids)} documents")
    return tok, model, train_batches, eval_batches, metrics, shape, sizes, None


def _marian_setup(cfg, text, out, resume):
    """SentencePiece, sentence-pair batches and a MarianMTModel for translation."""
    from scratchlm.data import (  # noqa: PLC0415
        TranslationBatches, builtin_pairs, pad_translation_batch, read_pairs, split_pairs)
    from scratchlm.metrics import corpus_bleu  # noqa: PLC0415
    from scratchlm.models import MarianConfig, MarianMTModel  # noqa: PLC0415
    from scratchlm.seq2seq import translate  # noqa: PLC0415
    from scratchlm.tokenizers import SentencePieceTokenizer  # noqa: PLC0415

    if cfg["pairs"]:
        if not os.path.isfile(cfg["pairs"]):
            raise FileNotFoundError(f"--pairs: no such file: {cfg['pairs']}")
        train_pairs, dev_pairs = split_pairs(read_pairs(cfg["pairs"]))
        origin = cfg["pairs"]
    else:
        found = builtin_pairs(cfg["target_lang"])
        train_pairs, dev_pairs = found.train, found.dev
        origin = f"the system's message catalogs, en -> {cfg['target_lang']}, " \
                 f"{len(found.files)} files"
    if len(train_pairs) < 2 or not dev_pairs:
        raise ValueError(f"{origin}: {len(train_pairs)} training and {len(dev_pairs)} dev "
                         "pairs; translation needs more (a TSV of source<TAB>target lines)")
    if not resume:              # one unigram model for both languages, Marian's layout
        SentencePieceTokenizer.train([s for s, _ in train_pairs] + [t for _, t in train_pairs],
                                     cfg["vocab_size"]).save_marian(out)
    tok = SentencePieceTokenizer.from_pretrained(out)
    L = cfg["block_size"]

    def encode(pairs):
        enc = tok([s for s, _ in pairs], text_target=[t for _, t in pairs],
                  truncation=True, max_length=L)
        return enc["input_ids"], enc["labels"]

    train_src, train_tgt = encode(train_pairs)
    config = MarianConfig(
        vocab_size=tok.vocab_size, d_model=cfg["n_embd"], encoder_layers=cfg["n_layer"],
        decoder_layers=cfg["n_layer"], encoder_attention_heads=cfg["n_head"],
        decoder_attention_heads=cfg["n_head"], encoder_ffn_dim=4 * cfg["n_embd"],
        decoder_ffn_dim=4 * cfg["n_embd"], max_position_embeddings=L + 1,
        activation_function="swish", scale_embedding=True, dropout=cfg["dropout"],
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    model = MarianMTModel(config, seed=cfg["seed"], dtype=cfg["dtype"])
    train_batches = TranslationBatches(train_src, train_tgt, cfg["batch_size"],
                                       tok.pad_token_id, seed=cfg["seed"], pool_batches=16)
    eval_pairs = dev_pairs[:cfg["eval_batches"] * cfg["batch_size"]]
    dev_src, dev_tgt = encode(eval_pairs)
    B = cfg["batch_size"]
    eval_batches = [pad_translation_batch(dev_src[i:i + B], dev_tgt[i:i + B], tok.pad_token_id)
                    for i in range(0, len(dev_src), B)]
    bleu_pairs = dev_pairs[:cfg["bleu_sentences"]]

    def bleu(model):
        """Greedy translations of the first dev sentences, scored against their references."""
        hyps = translate(model, tok, [s for s, _ in bleu_pairs], max_new_tokens=L,
                         batch_size=64)
        return {"bleu": corpus_bleu(hyps, [t for _, t in bleu_pairs]).score}

    shape = (f"Marian {config.encoder_layers}+{config.decoder_layers} layers, "
             f"{config.encoder_attention_heads} heads, width {config.d_model}, "
             f"max length {L}")
    sizes = (f"{len(train_pairs):,} train / {len(dev_pairs):,} dev sentence pairs from "
             f"{origin}")
    return tok, model, train_batches, eval_batches, None, shape, sizes, \
        {"dev_pairs": dev_pairs, "bleu_pairs": bleu_pairs, "eval_fn": bleu}


def _marian_report(model, tok, dev, cfg):
    """Dev BLEU next to copying the source, and three example translations."""
    from scratchlm.metrics import corpus_bleu  # noqa: PLC0415
    from scratchlm.seq2seq import translate  # noqa: PLC0415

    pairs = dev["dev_pairs"][:max(cfg["bleu_sentences"], 3)]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    t0 = time.perf_counter()
    greedy = translate(model, tok, sources, max_new_tokens=cfg["block_size"], batch_size=64)
    t1 = time.perf_counter()
    beams = translate(model, tok, sources, max_new_tokens=cfg["block_size"], batch_size=64,
                      num_beams=4)
    t2 = time.perf_counter()
    print(f"\n--- dev BLEU ({len(pairs)} sentences) ---")
    print(f"copy the source      {corpus_bleu(sources, refs).score:6.2f}")
    print(f"greedy               {corpus_bleu(greedy, refs).score:6.2f}   ({t1 - t0:.1f} s)")
    print(f"beam search, 4 beams {corpus_bleu(beams, refs).score:6.2f}   ({t2 - t1:.1f} s)")
    print("\n--- examples (dev) ---")
    for (src, ref), hyp in list(zip(pairs, beams))[:3]:
        print(f"source:      {src}\nreference:   {ref}\ntranslation: {hyp}\n")


def _cmd_train(args) -> int:
    """One process, or one rank of ``mpirun -n N scratchlm train`` (found in the environment)."""
    from scratchlm import backend, distributed  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)           # before the GPU of each rank is chosen
    dist = distributed.init_distributed(timeout=args.dist_timeout)
    if dist is None or dist.world_size == 1:
        return _train(args, dist)
    try:
        return _train(args, dist)
    except BaseException as exc:                    # the other ranks would wait for this one
        print(f"scratchlm train: rank {dist.rank} of {dist.world_size}: error: "
              f"{exc or type(exc).__name__}; stopping every rank", file=sys.stderr, flush=True)
        dist.abort(1)
        raise


def _train(args, dist) -> int:
    import numpy as np  # noqa: PLC0415

    from scratchlm import backend, distributed  # noqa: PLC0415
    from scratchlm.data import builtin_corpus  # noqa: PLC0415
    from scratchlm.generate import generate  # noqa: PLC0415
    from scratchlm.train import Trainer, TrainingArguments, plot_losses  # noqa: PLC0415

    out = args.out
    run_path = os.path.join(out, "run_args.json")
    given = {k: getattr(args, k, None) for k in {**TRAIN_DEFAULTS, **TRANSLATION_DEFAULTS}}
    given["model"] = args.model
    if args.resume:
        if not os.path.exists(run_path):
            raise FileNotFoundError(f"--resume: no run to resume in {out} ({run_path} is missing)")
        with open(run_path) as f:
            saved = json.load(f)
        # A resumed run keeps its settings; only a longer --max-steps may change.
        given = {**saved, "max_steps": max(saved["max_steps"], args.max_steps or 0)}
    defaults = {**TRAIN_DEFAULTS, **TRANSLATION_DEFAULTS,
                **{"bert": BERT_DEFAULTS, "marian": MARIAN_DEFAULTS}.get(given["model"], {})}
    cfg = {k: (defaults.get(k) if v is None else v) for k, v in given.items()}
    if args.backend:
        backend.set_backend(args.backend)
    for key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_steps",
                "eval_interval", "grad_accum"):
        if cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1; got {cfg[key]}")
    if cfg["n_embd"] % cfg["n_head"]:
        raise ValueError(f"--n-embd {cfg['n_embd']} must be divisible by --n-head {cfg['n_head']}")
    if not 0 <= cfg["dropout"] < 1:
        raise ValueError(f"--dropout must be in [0, 1); got {cfg['dropout']}")
    # Data parallel: --batch-size rows per rank, cut from a global batch of N times as many.
    world, main = (1, True) if dist is None else (dist.world_size, dist.is_main)
    if dist is not None:
        dist.check_agreement("the run configuration", {**cfg, "resume": args.resume})

    if cfg["model"] == "marian":
        if cfg["text"]:
            raise ValueError("--text: translation trains on sentence pairs; pass --pairs "
                             "FILE.tsv (source<TAB>target lines) instead")
        text = None
    else:
        for flag in ("pairs", "target_lang"):
            if getattr(args, flag, None) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} applies to --model marian only")
        text = _read_text(cfg["text"]) if cfg["text"] else builtin_corpus()
    os.makedirs(out, exist_ok=True)
    if not main:                                    # rank 0 writes tokenizer and token files
        dist.barrier("rank 0's data preparation")   # first; the others read them back
    t0 = time.perf_counter()
    setup = {"bert": _bert_setup, "marian": _marian_setup}.get(cfg["model"], _gpt_setup)
    # closing: what the end of the run needs: the validation text for GPT's sample, or
    # (Marian) the dev pairs and the BLEU of an evaluation; None for BERT.
    tok, model, train_batches, eval_batches, metrics_fn, shape, sizes, closing = setup(
        {**cfg, "batch_size": cfg["batch_size"] * world}, text, out, args.resume or not main)
    prep_time = time.perf_counter() - t0
    targs = TrainingArguments(
        out_dir=out, max_steps=cfg["max_steps"], grad_accum_steps=cfg["grad_accum"],
        learning_rate=cfg["lr"], warmup_steps=cfg["warmup_steps"],
        min_lr_ratio=cfg["min_lr_ratio"], weight_decay=cfg["weight_decay"],
        eval_interval=cfg["eval_interval"], eval_batches=cfg["eval_batches"],
        seed=cfg["seed"], progress=not args.no_progress)
    if not args.resume and main:
        tok.save_pretrained(out)
        with open(run_path, "w") as f:
            json.dump(cfg, f, indent=2)
        metrics = os.path.join(out, "metrics.jsonl")
        if os.path.exists(metrics):
            os.remove(metrics)
    parallel = None
    if dist is not None:
        if main:
            dist.barrier("rank 0's data preparation")
        train_batches = distributed.ShardedBatches(train_batches, dist.rank, world)
        eval_batches = [distributed.shard_batch(b, dist.rank, world) for b in eval_batches]
        parallel = distributed.DataParallel(dist)
    trainer = Trainer(model, targs, train_batches, eval_batches, metrics_fn=metrics_fn,
                      parallel=parallel,
                      eval_fn=closing["eval_fn"] if cfg["model"] == "marian" else None)
    ranks = ("" if parallel is None else
             f", {world} ranks x batch {cfg['batch_size']} ({parallel.summary()})")
    if main:
        print(f"scratchlm train: {type(model).__name__} {model.num_parameters():,} parameters "
              f"({shape}), {type(tok).__name__} V={tok.vocab_size}, {sizes} (prepared in "
              f"{prep_time:.1f} s), backend {backend.get_backend()}, {cfg['dtype']}{ranks}",
              flush=True)
    t0 = time.perf_counter()
    final = trainer.train(resume=args.resume)
    wall = time.perf_counter() - t0
    if not main:
        return 0
    model.save_pretrained(out)
    plotted = plot_losses(os.path.join(out, "metrics.jsonl"), os.path.join(out, "loss.png"))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("val_"))
    print(f"done in {wall:.0f} s: step {trainer.step}, {shown}; model (Hugging Face format), "
          f"tokenizer and metrics in {out}/" + (", loss curve in loss.png" if plotted else ""))
    if cfg["model"] == "marian":
        _marian_report(model, tok, closing, cfg)
    elif cfg["sample_tokens"] and closing is not None and model.config.n_positions > 1:
        # The prompt (the start of the validation text) takes at most half of the
        # context, so that a short --block-size still leaves room for new tokens.
        n_ctx = model.config.n_positions
        ids = tok.encode(closing[:40])[:n_ctx // 2]
        ids = np.asarray([ids], dtype=np.int64)
        sample = generate(model, ids, max_new_tokens=min(cfg["sample_tokens"],
                                                         n_ctx - ids.shape[1]),
                          do_sample=True, temperature=0.8, top_k=40, seed=cfg["seed"])
        print("\n--- sample ---\n" + tok.decode(backend.to_numpy(sample)[0].tolist()))
    return 0


def _cmd_generate(args) -> int:
    import numpy as np  # noqa: PLC0415

    from scratchlm import backend  # noqa: PLC0415
    from scratchlm.generate import generate  # noqa: PLC0415
    from scratchlm.models import GPT  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)
    if not os.path.isdir(args.checkpoint):
        raise FileNotFoundError(f"--checkpoint: no such directory: {args.checkpoint}")
    model = GPT.from_pretrained(args.checkpoint, dtype=args.dtype)
    tok = _load_tokenizer(args.checkpoint)
    ids = tok.encode(args.prompt)
    if not ids:
        raise ValueError("--prompt: the prompt encodes to no tokens")
    room = model.config.n_positions - len(ids)
    if room <= 0:
        raise ValueError(f"--prompt: {len(ids)} tokens fill the model's context "
                         f"({model.config.n_positions})")
    out = generate(model, np.asarray([ids], dtype=np.int64),
                   max_new_tokens=min(args.max_new_tokens, room),
                   do_sample=args.temperature > 0, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    print(tok.decode(backend.to_numpy(out)[0].tolist()))
    return 0


def _cmd_translate(args) -> int:
    """Translate --text or each line of --file; lines "source<TAB>reference" get BLEU."""
    from scratchlm import backend  # noqa: PLC0415
    from scratchlm.metrics import corpus_bleu  # noqa: PLC0415
    from scratchlm.models import MarianMTModel  # noqa: PLC0415
    from scratchlm.seq2seq import translate  # noqa: PLC0415
    from scratchlm.tokenizers import SentencePieceTokenizer  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)
    if not os.path.isdir(args.checkpoint):
        raise FileNotFoundError(f"--checkpoint: no such directory: {args.checkpoint}")
    refs = None
    if args.text is not None:
        sources = [args.text]
    else:
        lines = [line.rstrip("\n").rstrip("\r") for line in
                 _read_text(args.file).splitlines() if line.strip()]
        tabs = [line.count("\t") for line in lines]
        if any(tabs) and not all(t == 1 for t in tabs):
            bad = next(i for i, t in enumerate(tabs, 1) if t != 1)
            raise ValueError(f"--file: {args.file} line {bad}: lines must all be plain "
                             "sources, or all source<TAB>reference")
        if all(tabs):
            sources, refs = zip(*(line.split("\t") for line in lines))
            sources, refs = list(sources), list(refs)
        else:
            sources = lines
    model = MarianMTModel.from_pretrained(args.checkpoint, dtype=args.dtype)
    tok = SentencePieceTokenizer.from_pretrained(args.checkpoint)
    hyps = translate(model, tok, sources, num_beams=args.num_beams,
                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                     progress=len(sources) > args.batch_size and not args.no_progress)
    for hyp in hyps:
        print(hyp)
    if refs is not None:
        score = corpus_bleu(hyps, refs)
        print(f"BLEU {score.score:.2f} on {len(refs)} sentences ({args.num_beams} beam"
              f"{'s' if args.num_beams > 1 else ''}; 13a tokens, exp smoothing)",
              file=sys.stderr)
    return 0


# --- finetune and predict ----------------------------------------------------------

def _cmd_finetune(args) -> int:
    from scratchlm import backend  # noqa: PLC0415
    from scratchlm.finetune import FinetuneArguments, finetune, format_report  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)
    fargs = FinetuneArguments(
        task=args.task, model=args.model, train_file=args.train, eval_file=args.eval,
        out_dir=args.out, freeze_encoder=args.freeze_encoder, epochs=args.epochs,
        learning_rate=args.lr, batch_size=args.batch_size, max_length=args.max_length,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, seed=args.seed,
        doc_stride=args.doc_stride, max_query_length=args.max_query_length,
        max_answer_length=args.max_answer_length, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column,
        progress=not args.no_progress)
    result = finetune(fargs, log=lambda line: print(f"scratchlm finetune: {line}", flush=True))
    print(format_report(result))
    return 0


def _predict_file(task, model, tok, args):
    """Predictions for every example of a task file; metrics where it has gold labels."""
    from scratchlm import finetune as ft  # noqa: PLC0415
    from scratchlm.finetune import tasks  # noqa: PLC0415
    from scratchlm.metrics import (  # noqa: PLC0415
        accuracy, entity_scores, get_entities, squad_scores)

    rows, report = [], None
    if task == "classify":
        examples = tasks.read_classification(args.file, args.text_column, args.text_pair_column,
                                             args.label_column, require_labels=False)
        preds = ft.predict_labels(model, tok, [e.text for e in examples],
                                  [e.text_pair for e in examples]
                                  if any(e.text_pair for e in examples) else None,
                                  args.max_length)
        for e, (label, p) in zip(examples, preds):
            rows.append({"line": e.line, "label": label, "probability": round(p, 4),
                         "text": e.text})
        if all(e.label is not None for e in examples):
            report = {"accuracy": accuracy([e.label for e in examples], [p for p, _ in preds])}
    elif task == "ner":
        sentences = tasks.read_conll(args.file, require_tags=False)
        tagged = ft.predict_tags(model, tok, [s.words for s in sentences], args.max_length)
        for s, (tags, _) in zip(sentences, tagged):
            rows.append({"line": s.line, "entities": [
                {"type": k, "text": " ".join(s.words[a:b + 1]), "words": [a, b + 1]}
                for k, a, b in get_entities(tags)]})
        if all(s.tags is not None for s in sentences):
            report = entity_scores([s.tags for s in sentences], [t for t, _ in tagged])
            report.pop("per_type")
    else:
        examples = tasks.read_squad(args.file, require_answers=False)
        answers = ft.predict_answers(model, tok, [e.question for e in examples],
                                     [e.context for e in examples], args.max_length,
                                     args.doc_stride, max_answer_length=args.max_answer_length)
        for e, a in zip(examples, answers):
            rows.append({"id": e.id, "answer": a.text, "start": a.start, "end": a.end,
                         "score": round(a.score, 4)})
        scored = [(a.text, [t for t, _ in e.answers]) for e, a in zip(examples, answers)
                  if e.answers]
        if scored:
            report = squad_scores(*zip(*scored))
    return rows, report


def _cmd_predict(args) -> int:
    from scratchlm import backend  # noqa: PLC0415
    from scratchlm import finetune as ft  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"--model: no such directory: {args.model}")
    task, model, tok = ft.load_for_prediction(args.model)
    if args.file:
        rows, report = _predict_file(task, model, tok, args)
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        if report is not None:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in report.items()
                              if isinstance(v, float))
            print(f"scratchlm predict: {len(rows)} examples of {args.file}: {shown}",
                  file=sys.stderr)
        return 0
    if task == "qa":
        if not (args.question and args.context):
            raise ValueError("a question-answering model needs --question and --context "
                             "(or --file with SQuAD JSON)")
        answer = ft.predict_answers(model, tok, [args.question], [args.context],
                                    args.max_length, args.doc_stride,
                                    max_answer_length=args.max_answer_length)[0]
        print(f"answer: {answer.text!r}  (characters {answer.start}-{answer.end} of the "
              f"context, score {answer.score:.3f}, probability {answer.probability:.3f})")
        return 0
    if not args.text:
        raise ValueError("give --text (repeat it for several texts) or --file")
    if task == "classify":
        pairs = args.text_pair if args.text_pair else None
        if pairs is not None and len(pairs) != len(args.text):
            raise ValueError(f"--text-pair: give one per --text ({len(args.text)}); "
                             f"got {len(pairs)}")
        for text, (label, p) in zip(args.text, ft.predict_labels(model, tok, args.text, pairs,
                                                                 args.max_length)):
            print(f"{label}\t{p:.3f}\t{text}")
        return 0
    for text, entities in zip(args.text, ft.predict_entities(model, tok, args.text,
                                                             args.max_length)):
        print(text)
        for e in entities:
            print(f"  {e['type']:<10} {e['text']!r} [{e['start']}:{e['end']}] "
                  f"score {e['score']:.3f}")
        if not entities:
            print("  (no entities)")
    return 0


def _cmd_bench(args) -> int:
    from scratchlm import bench  # noqa: PLC0415

    say = (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True)) if not args.quiet \
        else None
    result = {}
    if args.profile:
        result["profile"] = []
        for fast in ((False, True) if args.compare_plain else (None,)):
            prof = bench.profile_step(args.profile, steps=args.steps, fast=fast)
            result["profile"].append(prof)
            print(bench.format_profile(prof) + "\n")
    if args.memory:
        rows = bench.memory_vs_context(tuple(args.lengths), threads=args.threads)
        result["memory"] = rows
        print(bench.format_memory(rows) + "\n")
    if not (args.profile or args.memory):
        report = bench.run_benchmark(
            args.configs, bert=not args.no_bert, rounds=args.rounds, steps=args.steps,
            warmup=args.warmup, generate=not args.no_generate, threads=args.threads,
            with_torch=not args.no_torch, on_progress=say,
            raw_path=args.json + ".partial" if args.json else None)
        result["benchmark"] = report
        print(bench.format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        partial = args.json + ".partial"                # the measurements kept on the way
        if os.path.exists(partial):
            os.remove(partial)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


# --- explain -----------------------------------------------------------------------

# The architectures `scratchlm explain` reads, and what it explains of each.
EXPLAINED = {"GPT2LMHeadModel": "gpt", "BertForSequenceClassification": "classify",
             "BertForMaskedLM": "mlm", "BertForPreTraining": "mlm"}


def _architecture(directory, flag, command, known):
    """The first of a model directory's config.json "architectures" that ``known`` lists."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: no config.json in {directory}")
    with open(path, encoding="utf-8") as f:
        architectures = json.load(f).get("architectures") or []
    arch = next((a for a in architectures if a in known), None)
    if arch is None:
        raise ValueError(f"{flag}: {path} has architectures {architectures}; {command} "
                         f"works for {sorted(known)}")
    return arch


def _explain_load(directory, dtype):
    """(kind, model, tokenizer) of a model directory: kind "gpt", "classify" or "mlm"."""
    import warnings  # noqa: PLC0415

    from scratchlm.models import (  # noqa: PLC0415
        GPT, BertForMaskedLM, BertForSequenceClassification)

    arch = _architecture(directory, "--model", "explain", EXPLAINED)
    kind = EXPLAINED[arch]
    cls = {"gpt": GPT, "classify": BertForSequenceClassification, "mlm": BertForMaskedLM}[kind]
    with warnings.catch_warnings():
        if arch == "BertForPreTraining":            # the MLM head alone: NSP head and pooler unused
            warnings.filterwarnings("ignore", message=".*not used by BertForMaskedLM")
        model = cls.from_pretrained(directory, dtype=dtype)
    return kind, model, _load_tokenizer(directory)


def _explain_target(kind, model, tok, target):
    """The id of --target: a label (name or index) of a classifier, else a token."""
    if kind == "classify":
        label2id = {v: k for k, v in model.config.id2label.items()}
        if target in label2id:
            return label2id[target]
        if target.isdigit() and int(target) < model.config.num_labels:
            return int(target)
        raise ValueError(f"--target: {target!r} is none of the labels "
                         f"{list(label2id)} (or their indices)")
    vocab = tok.get_vocab()
    if target in vocab:
        return vocab[target]
    ids = tok.encode(target, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tok.unk_token_id:
        raise ValueError(f"--target: {target!r} is not one token of the vocabulary (it "
                         f"encodes to {tok.convert_ids_to_tokens(ids)})")
    return ids[0]


def _explain_pictures(draw, out, name, *args, **kwargs):
    """Write out/name.html, and out/name.png where matplotlib is installed; the paths."""
    import importlib.util  # noqa: PLC0415

    paths = [draw(*args, os.path.join(out, name + ".html"), **kwargs)]
    if importlib.util.find_spec("matplotlib") is not None:
        paths.append(draw(*args, os.path.join(out, name + ".png"), **kwargs))
    return paths


def _cmd_explain(args) -> int:
    import numpy as np  # noqa: PLC0415

    from scratchlm import backend, explain  # noqa: PLC0415
    from scratchlm.generate import generate  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"--model: no such directory: {args.model}")
    kind, model, tok = _explain_load(args.model, args.dtype)
    if args.text_pair is not None and kind != "classify":
        raise ValueError("--text-pair: only for a sequence classifier")
    if kind == "gpt":
        ids = tok.encode(args.text)
        if not ids:
            raise ValueError("--text: the text encodes to no tokens")
        inputs = {"input_ids": np.asarray([ids], dtype=np.int64)}
        tokens = [tok.decode([i]) for i in ids]
    else:
        inputs = {k: v for k, v in tok(args.text, args.text_pair, return_tensors="np").items()
                  if k in ("input_ids", "attention_mask", "token_type_ids")}
        ids = inputs["input_ids"][0].tolist()
        tokens = tok.convert_ids_to_tokens(ids)
    position = None
    if kind == "mlm":
        if tok.mask_token_id not in ids:
            raise ValueError(f"--text: a masked LM explains the token at {tok.mask_token}; "
                             f"put {tok.mask_token} in the text")
        position = ids.index(tok.mask_token_id)
    elif kind == "gpt":
        position = len(ids) - 1

    out = model(**inputs, output_attentions=True)           # eval mode: no dropout
    logits = backend.to_numpy(out.logits)[0]
    logits = logits if position is None else logits[position]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(-probs)[:5]
    target = int(top[0]) if args.target is None else _explain_target(kind, model, tok, args.target)

    def name(i):
        """A class's label, or a token as the vocabulary (BERT) or the text (GPT) writes it."""
        if kind == "classify":
            return model.config.id2label[i]
        return repr(tok.decode([i])) if kind == "gpt" else tok.convert_ids_to_tokens([i])[0]

    where = {"classify": "the sequence", "mlm": f"{tok.mask_token} at position {position}",
             "gpt": "the next token"}[kind]
    print(f"{type(model).__name__}: {len(out.attentions)} layers x "
          f"{out.attentions[0].shape[1]} heads; {len(tokens)} tokens: {' '.join(tokens)}")
    print(f"prediction for {where}: " + ", ".join(f"{name(int(i))} {probs[i]:.3f}" for i in top))
    print(f"explaining: {name(target)} (probability {probs[target]:.3f})")
    os.makedirs(args.out, exist_ok=True)
    written = []

    if args.method in ("ig", "saliency"):
        if args.method == "ig":
            keep = None if kind == "gpt" else [tok.cls_token_id, tok.sep_token_id,
                                               tok.mask_token_id]
            attr = explain.integrated_gradients(
                model, inputs, target, n_steps=args.n_steps, method=args.integration,
                position=position, keep_ids=[i for i in keep or [] if i is not None] or None,
                internal_batch_size=args.batch_size)
            title = f"Integrated gradients of the logit of {name(target)}"
        else:
            attr = explain.saliency(model, inputs, target, position=position)
            title = f"Saliency (gradient x input) of the logit of {name(target)}"
        print(f"\n{'token':<16} {'attribution':>12}")
        for t, a in zip(tokens, attr[0]):
            print(f"{t:<16} {a:>+12.4f}")
        print(f"sum {attr[0].sum():+.6f}; logit F(x) = {attr.score[0]:.6f}", end="")
        if attr.delta is not None:
            print(f", F(baseline) = {attr.baseline_score[0]:.6f}, delta = sum - (F(x) - "
                  f"F(baseline)) = {attr.delta[0]:.2e} ({args.n_steps} steps, "
                  f"{args.integration})")
        else:
            print()
        written += _explain_pictures(explain.plot_attributions, args.out, args.method, tokens,
                                     attr, title=title)
        report = {"method": args.method, "target": name(target), "target_id": target,
                  "position": position, "tokens": tokens,
                  "attributions": [float(a) for a in attr[0]], "score": float(attr.score[0])}
        if attr.delta is not None:
            report.update(baseline_score=float(attr.baseline_score[0]),
                          delta=float(attr.delta[0]), n_steps=args.n_steps,
                          integration=args.integration)
        path = os.path.join(args.out, f"{args.method}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)
        written.append(path)
    elif args.method == "rollout":
        rollout = explain.attention_rollout(out.attentions)[0]       # (T, T)
        row = rollout[0 if position is None else position]
        print(f"\nattention rollout of position {0 if position is None else position} "
              f"({tokens[0 if position is None else position]}):")
        for t, r in zip(tokens, row):
            print(f"{t:<16} {r:>8.4f}")
        written += _explain_pictures(explain.plot_attributions, args.out, "rollout", tokens,
                                     row, title="Attention rollout: the share of each input "
                                     f"token in position {0 if position is None else position}")
        written += _explain_pictures(explain.plot_attention_map, args.out, "rollout_map",
                                     rollout, tokens, title="Attention rollout (all positions)")
    else:
        stats = explain.head_statistics(out.attentions, tokens, inputs.get("attention_mask"))
        print("\n" + stats.table())
        path = os.path.join(args.out, "head_statistics.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(stats.as_dict(), f, indent=1)
        written.append(path)
        L = len(out.attentions)
        layer = args.layer % L if -L <= args.layer < L else None
        if layer is None or args.head >= out.attentions[0].shape[1]:
            raise ValueError(f"--layer/--head: the model has {L} layers and "
                             f"{out.attentions[0].shape[1]} heads; got {args.layer}, {args.head}")
        written += _explain_pictures(explain.plot_attention_grid, args.out, "attention_grid",
                                     out.attentions, tokens)
        att = backend.to_numpy(out.attentions[layer])[0, args.head]
        written += _explain_pictures(explain.plot_attention_map, args.out, "attention_head",
                                     att, tokens, title=f"Layer {layer}, head {args.head}")
        room = model.config.n_positions - len(ids) if kind == "gpt" else 0
        if kind == "gpt" and min(args.max_new_tokens, room) > 0:
            seq = backend.to_numpy(generate(model, inputs["input_ids"],
                                            min(args.max_new_tokens, room), do_sample=False))
            seq_tokens = [tok.decode([i]) for i in seq[0].tolist()]
            print(f"\ngenerated (greedy): {tok.decode(seq[0].tolist())!r}")
            gen = model(input_ids=seq, output_attentions=True)
            written += _explain_pictures(explain.plot_generation_attention, args.out,
                                         "generation", gen.attentions, seq_tokens, len(ids))
    print("\nwrote " + ", ".join(written))
    return 0


# --- distill and cost --------------------------------------------------------------

# The task a teacher directory's architecture is distilled on.
DISTILLED = {"GPT2LMHeadModel": "clm", "BertForMaskedLM": "mlm", "BertForPreTraining": "mlm",
             "BertForSequenceClassification": "classify"}
# The flags a distillation run keeps in distill_args.json (--resume reads them back).
DISTILL_SETTINGS = ("teacher", "student_layers", "student_n_layer", "from_scratch",
                    "temperature", "alpha_ce", "alpha_mlm", "alpha_clm", "alpha_task",
                    "alpha_cos", "alpha_mse", "restrict_ce_to_mask", "text", "train", "eval",
                    "block_size", "max_length", "batch_size", "max_steps", "lr",
                    "warmup_steps", "weight_decay", "eval_interval", "eval_batches", "seed")


def _distill_teacher(directory):
    """(task, teacher in eval mode) of a model directory, by its architecture."""
    import warnings  # noqa: PLC0415

    from scratchlm.distill import STUDENT_CLASS  # noqa: PLC0415

    arch = _architecture(directory, "--teacher", "distill", DISTILLED)
    task = DISTILLED[arch]
    with warnings.catch_warnings():
        if arch == "BertForPreTraining":            # the MLM head alone: no NSP head, no pooler
            warnings.filterwarnings("ignore", message=".*not used by BertForMaskedLM")
        teacher = STUDENT_CLASS[task].from_pretrained(directory)
    return task, teacher


def _distill_data(task, s, teacher, tok):
    """Train batches and the fixed evaluation batches of the task."""
    from scratchlm import distill  # noqa: PLC0415
    from scratchlm.data import builtin_corpus  # noqa: PLC0415

    if task == "classify":
        if not (s.train and s.eval):
            raise ValueError("a classifier teacher needs --train and --eval task files (the "
                             "files scratchlm finetune reads)")
        for path, flag in ((s.train, "--train"), (s.eval, "--eval")):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{flag}: no such file: {path}")
        max_length = min(s.max_length or 128, teacher.config.max_position_embeddings)
        return distill.classify_batches(tok, s.train, s.eval, teacher.config.label2id,
                                        max_length, s.batch_size, s.seed)
    text = _read_text(s.text) if s.text else builtin_corpus()
    n_pos = teacher.config.n_positions if task == "clm" else \
        teacher.config.max_position_embeddings
    block = min(s.block_size or 128, n_pos)
    make = distill.clm_batches if task == "clm" else distill.mlm_batches
    return make(tok, text, block, s.batch_size, s.seed, s.eval_batches)


def _distill_metrics(task):
    """The Trainer's metrics_fn: accuracy at the counted targets (mlm, classify)."""
    if task == "clm":
        return None
    from scratchlm import to_numpy  # noqa: PLC0415

    def metrics(batch, output):
        labels = batch["labels"]
        counted = labels != -100
        pred = to_numpy(output.logits).argmax(-1)
        name = "mlm_accuracy" if task == "mlm" else "accuracy"
        return {name: float((pred == labels)[counted].mean()) if counted.any()
                else float("nan")}

    return metrics


def _cmd_distill(args) -> int:
    import dataclasses  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from scratchlm import backend, distill  # noqa: PLC0415
    from scratchlm.train import TrainingArguments, plot_losses  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)
    out = args.out
    run_path = os.path.join(out, "distill_args.json")
    settings = {k: getattr(args, k) for k in DISTILL_SETTINGS}
    if args.resume:
        if not os.path.exists(run_path):
            raise FileNotFoundError(f"--resume: no run to resume in {out} ({run_path} is missing)")
        with open(run_path) as f:
            saved = json.load(f)
        if os.path.abspath(saved["teacher"]) != os.path.abspath(args.teacher):
            raise ValueError(f"--resume: the run in {out} was distilled from "
                             f"{saved['teacher']}; got --teacher {args.teacher}")
        # A resumed run keeps its settings; only a longer --max-steps may change.
        settings = {**saved, "max_steps": max(saved["max_steps"], args.max_steps)}
    s = argparse.Namespace(**settings)
    task, teacher = _distill_teacher(s.teacher)
    tok = _load_tokenizer(s.teacher)
    layers = None
    if s.student_layers:
        try:
            layers = [int(i) for i in s.student_layers.split(",")]
        except ValueError:
            raise ValueError(f"--student-layers: expected comma-separated layer indices such "
                             f"as 0,2,4; got {s.student_layers!r}") from None
    student, kept = distill.student_from_teacher(teacher, layers, s.student_n_layer,
                                                 s.from_scratch, s.seed)
    config = distill.DistillationConfig(
        task, s.temperature, s.alpha_ce, s.alpha_mlm, s.alpha_clm, s.alpha_task, s.alpha_cos,
        s.alpha_mse, s.restrict_ce_to_mask)
    train_batches, eval_batches = _distill_data(task, s, teacher, tok)
    model = distill.Distiller(student, teacher, config)
    warmup = s.warmup_steps if s.warmup_steps is not None else max(1, s.max_steps // 20)
    targs = TrainingArguments(
        out_dir=out, max_steps=s.max_steps, learning_rate=s.lr, warmup_steps=warmup,
        weight_decay=s.weight_decay, eval_interval=s.eval_interval,
        eval_batches=max(1, len(eval_batches)), seed=s.seed, progress=not args.no_progress)
    os.makedirs(out, exist_ok=True)
    if not args.resume:
        with open(run_path, "w") as f:
            json.dump(settings, f, indent=2)
        metrics = os.path.join(out, "metrics.jsonl")
        if os.path.exists(metrics):
            os.remove(metrics)
    trainer = distill.DistillTrainer(model, targs, train_batches, eval_batches,
                                     metrics_fn=_distill_metrics(task))
    hard = distill.HARD_LOSS[task]
    weights = ", ".join(f"{k} {getattr(config, k):g}" for k in
                        ("alpha_ce", hard, "alpha_cos", "alpha_mse") if getattr(config, k))
    origin = f"the teacher's layers {kept}" if kept is not None else "scratch"
    print(f"scratchlm distill: {task}: teacher {type(teacher).__name__} "
          f"{teacher.num_parameters():,} parameters ({distill.num_layers(teacher)} layers) -> "
          f"student {student.num_parameters():,} parameters ({distill.num_layers(student)} "
          f"layers, from {origin}); loss: {weights}"
          + (f", T {config.temperature:g}" if config.alpha_ce else "")
          + ("" if config.uses_teacher else " (no teacher: the student trains alone)"),
          flush=True)
    t0 = time.perf_counter()
    final = trainer.train(resume=args.resume)
    wall = time.perf_counter() - t0
    student.save_pretrained(out)
    tok.save_pretrained(out)
    plot_losses(os.path.join(out, "metrics.jsonl"), os.path.join(out, "loss.png"))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("val_"))
    rates = [r["tokens_per_s"] for r in trainer.history if "tokens_per_s" in r]
    run_rate = float(np.median(rates)) if rates else float("nan")
    print(f"done in {wall:.0f} s: step {trainer.step}, {shown}; {run_rate:,.0f} tokens/s "
          f"(training{' with the teacher' if config.uses_teacher else ''}); student (Hugging "
          f"Face format) and tokenizer in {out}/", flush=True)
    if args.no_compare:
        return 0
    # Teacher and student side by side: the task metric pooled over the evaluation
    # batches, and tokens/s of each architecture alone on one of them.
    rows = {}
    for name, m in (("teacher", teacher), ("student", student)):
        rows[name] = {"layers": distill.num_layers(m), "parameters": m.num_parameters(),
                      **distill.evaluate(m, task, eval_batches),
                      **distill.throughput(m, eval_batches[0])}
    shown = {"mlm": (("mlm_accuracy", "accuracy"), ("loss", "loss")),
             "classify": (("accuracy", "accuracy"), ("loss", "loss")),
             "clm": (("val_loss", "loss"), ("perplexity", "perplexity"))}[task]
    print(f"{'':<8} {'layers':>6} {'parameters':>11} {'train tok/s':>12} "
          f"{'inference tok/s':>16}" + "".join(f" {label:>13}" for label, _ in shown))
    for name, r in rows.items():
        print(f"{name:<8} {r['layers']:>6} {r['parameters']:>11,} "
              f"{r['train_tokens_per_s']:>12,.0f} {r['inference_tokens_per_s']:>16,.0f}"
              + "".join(f" {r[key]:>13.4f}" for _, key in shown))
    report = {"task": task, "settings": settings, "student_layers": kept,
              "loss_weights": dataclasses.asdict(config), "steps": trainer.step,
              "train_seconds": wall, "run_tokens_per_s": run_rate, "final": final, **rows}
    with open(os.path.join(out, "distill_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return 0


def _cmd_cost(args) -> int:
    from scratchlm import backend, cost  # noqa: PLC0415

    if args.backend:
        backend.set_backend(args.backend)
    sizes = ("n_layer", "n_head", "n_embd", "n_inner", "vocab_size", "n_positions", "dropout")
    if args.model:
        given = [f"--{k.replace('_', '-')}" for k in sizes if getattr(args, k) is not None]
        if given:
            raise ValueError(f"--model reads the sizes from its config.json; drop "
                             f"{', '.join(given)}")
        arch, config = cost.read_model_config(args.model)
    else:
        arch, config = cost.config_from_flags(args.arch, n_layer=args.n_layer,
                                              n_head=args.n_head, n_embd=args.n_embd,
                                              vocab_size=args.vocab_size,
                                              n_positions=args.n_positions, n_inner=args.n_inner,
                                              dropout=args.dropout)
    report = cost.estimate(arch, config, batch_size=args.batch_size,
                           block_size=args.block_size, dtype=args.dtype)
    if args.steps:
        report = cost.measure(report, steps=args.steps, warmup=args.warmup,
                              peak_gflops=args.peak_gflops)
    print(cost.format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def _number(kind, ok, expected: str):
    """An argparse ``type=``: the flag's text read as ``kind`` (int or float), accepted
    when it is finite and ``ok(value)`` holds. Anything else is an argparse error that
    names the flag as the user typed it, e.g. ``argument --lr: must be > 0; got -0.1``
    (exit code 2), before any work starts."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {expected}; got {text}")
        return value

    return parse


# The numeric flags' types, checked as the training and fine-tuning arguments check them.
POSITIVE_INT = _number(int, lambda v: v >= 1, "a positive integer")
NON_NEGATIVE_INT = _number(int, lambda v: v >= 0, "an integer >= 0")
POSITIVE_FLOAT = _number(float, lambda v: v > 0, "> 0")
NON_NEGATIVE_FLOAT = _number(float, lambda v: v >= 0, ">= 0")
FRACTION = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")
MAX_LENGTH = _number(int, lambda v: v >= 8, "at least 8 (special tokens included)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchlm",
        description="Transformer language models from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train", help="train a GPT on the built-in corpus or your own text",
        description="Train a small GPT. With no arguments: the built-in corpus (CPython's "
                    "reference text), a character tokenizer, 4 layers x 128 wide, 1000 steps; "
                    "writes the model (Hugging Face format), tokenizer, metrics and loss plot "
                    "to out/ and prints a sample.")
    p.add_argument("--model", choices=["gpt", "bert", "marian"], default="gpt",
                   help="gpt: causal LM; bert: BertForPreTraining with masked LM + "
                        "next-sentence prediction and a WordPiece tokenizer; marian: "
                        "translation (MarianMTModel, SentencePiece, dev BLEU at each "
                        "evaluation), on --pairs or the system's message catalogs")
    p.add_argument("--pairs", help="--model marian: a UTF-8 TSV file of source<TAB>target "
                   "lines (default: English -> --target-lang pairs read from the compiled "
                   "gettext catalogs the system ships, /usr/share/locale/*/LC_MESSAGES)")
    p.add_argument("--target-lang", help="--model marian without --pairs: the catalogs' "
                   f"language (default {TRANSLATION_DEFAULTS['target_lang']})")
    p.add_argument("--bleu-sentences", dest="bleu_sentences", type=POSITIVE_INT,
                   help="--model marian: dev sentences translated for BLEU at each evaluation "
                        f"(default {TRANSLATION_DEFAULTS['bleu_sentences']})")
    p.add_argument("--text", help="train on this UTF-8 text file instead of the built-in corpus")
    p.add_argument("--tokenizer", choices=["char", "bpe"], help="char or byte-level BPE "
                   f"(default {TRAIN_DEFAULTS['tokenizer']})")
    p.add_argument("--vocab-size", type=POSITIVE_INT, help="BPE vocabulary size "
                   f"(default {TRAIN_DEFAULTS['vocab_size']})")
    for flag, key, kind, what in [
            ("--n-layer", "n_layer", POSITIVE_INT, "transformer blocks"),
            ("--n-head", "n_head", POSITIVE_INT, "attention heads"),
            ("--n-embd", "n_embd", POSITIVE_INT, "model width"),
            ("--block-size", "block_size", POSITIVE_INT, "context length in tokens"),
            ("--batch-size", "batch_size", POSITIVE_INT, "sequences per micro-batch, per rank "
             "under mpirun"),
            ("--grad-accum", "grad_accum", POSITIVE_INT, "micro-batches per optimizer step"),
            ("--max-steps", "max_steps", POSITIVE_INT, "optimizer steps"),
            ("--lr", "lr", POSITIVE_FLOAT, "peak learning rate (AdamW)"),
            ("--warmup-steps", "warmup_steps", NON_NEGATIVE_INT, "linear warmup steps"),
            ("--weight-decay", "weight_decay", NON_NEGATIVE_FLOAT, "AdamW weight decay"),
            ("--dropout", "dropout", FRACTION, "dropout probability"),
            ("--eval-interval", "eval_interval", POSITIVE_INT,
             "steps between evaluations/checkpoints"),
            ("--seed", "seed", NON_NEGATIVE_INT, "random seed (weights, batches, dropout)"),
            ("--sample-tokens", "sample_tokens", NON_NEGATIVE_INT,
             "tokens to sample at the end (0: none)")]:
        p.add_argument(flag, dest=key, type=kind, help=f"{what} (default {TRAIN_DEFAULTS[key]})")
    p.add_argument("--dtype", choices=["float32", "float64"], help="parameter dtype "
                   "(default float32)")
    p.add_argument("--backend", choices=["numpy", "cupy"], help="array backend (default: "
                   "$SCRATCHLM_BACKEND or numpy)")
    p.add_argument("--out", default="out", help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout", type=float, default=600.0,
                   help="under mpirun -n N (data-parallel: each rank takes --batch-size rows "
                        "of a global batch N times larger, gradients are averaged): seconds a "
                        "rank waits for the others in one collective operation before it stops "
                        "the job (default 600)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("translate", help="translate with a trained Marian model",
                       description="Translate --text, or every line of --file with a "
                                   "MarianMTModel directory (from scratchlm train --model "
                                   "marian, or transformers' save_pretrained with Marian "
                                   "tokenizer files). Lines of the form source<TAB>reference "
                                   "also report BLEU (on stderr).")
    p.add_argument("--checkpoint", required=True, help="model and tokenizer directory")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--text", help="one sentence to translate")
    g.add_argument("--file", help="a UTF-8 file: one source per line, or source<TAB>reference")
    p.add_argument("--num-beams", type=POSITIVE_INT, default=4, help="beam width (1: greedy; "
                   "default 4)")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=None,
                   help="tokens per translation at most (default: the model's positions - 1)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32)
    p.add_argument("--dtype", choices=["float32", "float64"], default=None)
    p.add_argument("--backend", choices=["numpy", "cupy"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("generate", help="sample text from a trained model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="out", help="directory written by scratchlm train")
    p.add_argument("--prompt", default="\n", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default=None, help="load the weights as this dtype")
    p.add_argument("--backend", choices=["numpy", "cupy"])
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("gradcheck", help="check every backward against finite differences",
                       description="Check every functional op's and every model's backward "
                                   "against central finite differences in float64 and print "
                                   "a table; exit code 1 if any fails.")
    p.add_argument("--seed", type=int, default=0, help="seed for inputs and directions")
    p.add_argument("--rtol", type=float, default=1e-6,
                   help="largest normwise relative error that passes (default 1e-6)")
    p.add_argument("--model-rtol", type=float, default=1e-5,
                   help="largest relative error that passes for whole models (default 1e-5)")
    p.add_argument("--only", choices=["ops", "models"], help="check only ops or only models")
    p.add_argument("-v", "--verbose", action="store_true", help="show per-input errors")
    p.set_defaults(func=_cmd_gradcheck)

    p = sub.add_parser(
        "finetune", help="fine-tune a BERT for classification, NER or extractive QA",
        description="Fine-tune a BERT directory (from scratchlm train --model bert, or a "
                    "Hugging Face BERT with vocab.txt) on a task: classify (CSV/TSV/JSONL "
                    "with text[, text pair], label; GLUE TSVs read as they are), ner (CoNLL, "
                    "BIO tags) or qa (SQuAD v1.1 JSON). Evaluates after every epoch, keeps "
                    "the best model in --out (Hugging Face format, with id2label) and prints "
                    "a metrics report next to the trivial baseline.")
    p.add_argument("--task", required=True, choices=["classify", "ner", "qa"])
    p.add_argument("--model", required=True, help="BERT directory: config.json, "
                   "model.safetensors, vocab.txt")
    p.add_argument("--train", required=True, help="training file")
    p.add_argument("--eval", required=True, help="evaluation file (labels must be in the "
                   "training file's label set)")
    p.add_argument("--out", required=True, help="output directory for the fine-tuned model")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train the task head only (the encoder's backward is skipped)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=3,
                   help="passes over the training data (default 3)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=None,
                   help="peak learning rate (AdamW, linear warmup and decay; default 5e-5, or "
                        "1e-3 with --freeze-encoder)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16,
                   help="examples per step (default 16)")
    p.add_argument("--max-length", type=MAX_LENGTH, default=None,
                   help="tokens per example, special tokens included (default 128, qa 384; at "
                        "most the model's positions)")
    p.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.01,
                   help="AdamW weight decay (default 0.01)")
    p.add_argument("--warmup-ratio", type=FRACTION, default=0.1,
                   help="share of steps with a rising learning rate (default 0.1)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--doc-stride", type=NON_NEGATIVE_INT, default=None,
                   help="qa: tokens shared by neighbouring windows of a long context (default "
                        "max-length / 4)")
    p.add_argument("--max-query-length", type=POSITIVE_INT, default=64,
                   help="qa: longer questions are cut (default 64)")
    p.add_argument("--max-answer-length", type=POSITIVE_INT, default=30,
                   help="qa: longest answer, in tokens (default 30)")
    p.add_argument("--text-column", help="classify: column of the text (default: found by name)")
    p.add_argument("--text-pair-column", help="classify: column of the second text")
    p.add_argument("--label-column", help="classify: column of the label")
    p.add_argument("--backend", choices=["numpy", "cupy"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser(
        "predict", help="run a fine-tuned model on new text",
        description="Run a model written by scratchlm finetune. A classifier prints the label "
                    "and its probability; a token classifier the entities with their "
                    "character spans; a QA model the answer span and its score. --file runs "
                    "on a whole task file (one JSON line per example) and prints its metrics "
                    "when the file has gold labels.")
    p.add_argument("--model", required=True, help="directory written by scratchlm finetune")
    p.add_argument("--text", action="append", help="text to classify or tag (repeatable)")
    p.add_argument("--text-pair", action="append", help="classify: second text of each pair")
    p.add_argument("--question", help="qa: the question")
    p.add_argument("--context", help="qa: the text that holds the answer")
    p.add_argument("--file", help="a task file in the format of the model's task")
    p.add_argument("--max-length", type=MAX_LENGTH, default=None)
    p.add_argument("--doc-stride", type=NON_NEGATIVE_INT, default=None)
    p.add_argument("--max-answer-length", type=POSITIVE_INT, default=30)
    p.add_argument("--text-column")
    p.add_argument("--text-pair-column")
    p.add_argument("--label-column")
    p.add_argument("--backend", choices=["numpy", "cupy"])
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "bench", help="scratchlm against PyTorch: throughput, MFU and memory",
        description="Measure GPT training, forward and generation tokens/s (and a BERT-base "
                    "encoder) side by side with an equivalent PyTorch model, in alternating "
                    "processes, with MFU against NumPy's sgemm peak and peak memory; or a "
                    "per-op profile of a training step (--profile), or peak memory against "
                    "context length for the plain and blockwise attention (--memory).")
    p.add_argument("--configs", nargs="+", default=["tiny", "small", "gpt2ish"],
                   choices=["tiny", "small", "gpt2ish"], help="GPT configurations to measure")
    p.add_argument("--no-bert", action="store_true", help="skip the BERT-base encoder")
    p.add_argument("--no-generate", action="store_true", help="skip generation")
    p.add_argument("--no-torch", action="store_true", help="scratchlm alone")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="threads for both frameworks "
                   "(default: the number of CPUs)")
    p.add_argument("--profile", choices=["tiny", "small", "gpt2ish"],
                   help="milliseconds per op in a training step of this config")
    p.add_argument("--compare-plain", action="store_true",
                   help="with --profile: profile the plain ops too (fast path off)")
    p.add_argument("--memory", action="store_true",
                   help="peak memory against context length, plain vs blockwise attention")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096],
                   help="context lengths for --memory")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "explain", help="which tokens a prediction rests on, and what each head attends to",
        description="Explain one prediction of a model directory: a sequence classifier "
                    "(its predicted label), a masked LM (the token at [MASK]) or a GPT (the "
                    "next token). --method ig or saliency: per-token attributions of the "
                    "target's logit (integrated gradients from a [PAD] baseline that keeps "
                    "[CLS], [SEP] and [MASK]; a GPT's baseline is zero vectors); rollout: "
                    "attention rollout; attention: per-head statistics and attention maps "
                    "(and for a GPT, what each generated token looked at). Pictures go to "
                    "--out as HTML (always) and PNG (with matplotlib).")
    p.add_argument("--model", required=True, help="model directory (config.json, "
                   "model.safetensors and its tokenizer)")
    p.add_argument("--text", required=True, help="the input text (a masked LM: with [MASK])")
    p.add_argument("--text-pair", help="classifier: the second text of a pair")
    p.add_argument("--target", help="what to explain: a label (name or index) of a classifier, "
                   "or a token; default: the model's prediction")
    p.add_argument("--method", choices=["ig", "saliency", "rollout", "attention"], default="ig",
                   help="default ig")
    p.add_argument("--out", required=True, help="directory for the pictures and JSON")
    p.add_argument("--n-steps", type=POSITIVE_INT, default=50,
                   help="ig: points on the path (default 50)")
    p.add_argument("--integration", default="gauss_legendre",
                   choices=["gauss_legendre", "trapezoid", "riemann_left", "riemann_middle",
                            "riemann_right"], help="ig: quadrature rule (default gauss_legendre)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32,
                   help="ig: path points per forward (default 32)")
    p.add_argument("--layer", type=int, default=-1,
                   help="attention: the layer drawn large (default -1, the last)")
    p.add_argument("--head", type=NON_NEGATIVE_INT, default=0,
                   help="attention: the head drawn large (default 0)")
    p.add_argument("--max-new-tokens", type=NON_NEGATIVE_INT, default=10,
                   help="attention, GPT: tokens to generate greedily and draw (default 10)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                   help="load the weights as this dtype (default float64: the integral's "
                        "delta is then the quadrature's error alone)")
    p.add_argument("--backend", choices=["numpy", "cupy"])
    p.set_defaults(func=_cmd_explain)
    p = sub.add_parser(
        "distill", help="distil a teacher into a smaller student (DistilBERT's loss)",
        description="Train a student with fewer layers to imitate a frozen teacher: the "
                    "weighted sum of the soft-target loss (T^2 KL at temperature T), the "
                    "task's own loss, 1 - cos of the last hidden states and the MSE of the "
                    "logits; DistilBERT's weights by default (T 2, ce 5, task 2, cos 1). The "
                    "teacher's architecture picks the task: GPT2LMHeadModel -> causal LM on "
                    "the built-in corpus (or --text), BertForMaskedLM / BertForPreTraining -> "
                    "masked LM, BertForSequenceClassification -> classification on --train / "
                    "--eval task files. Writes the student (Hugging Face format), metrics and "
                    "checkpoints to --out, then prints teacher and student side by side.")
    p.add_argument("--teacher", required=True, help="the teacher's model directory (with "
                   "its tokenizer), from scratchlm train or scratchlm finetune")
    p.add_argument("--out", required=True, help="output directory for the student")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--student-layers", help="the teacher's layers the student starts from, "
                   "e.g. 0,2,4,7,9,11 (DistilBERT's of 12)")
    g.add_argument("--student-n-layer", type=POSITIVE_INT,
                   help="K evenly spaced layers of the teacher (default: half of them)")
    p.add_argument("--from-scratch", action="store_true",
                   help="a randomly initialised student of that shape, not the teacher's layers")
    p.add_argument("--temperature", type=POSITIVE_FLOAT, default=2.0,
                   help="softmax temperature of the soft targets (default 2)")
    for flag, what in (("--alpha-ce", "soft targets (default 5)"),
                       ("--alpha-mlm", "masked-LM loss, BERT (default 2)"),
                       ("--alpha-clm", "causal-LM loss, GPT (default 2)"),
                       ("--alpha-task", "classification loss on the gold labels (default 2)"),
                       ("--alpha-cos", "1 - cos of the last hidden states (default 1)"),
                       ("--alpha-mse", "MSE of the logits (default 0)")):
        p.add_argument(flag, type=NON_NEGATIVE_FLOAT, default=None, help=f"weight of the {what}")
    p.add_argument("--restrict-ce-to-mask", action="store_true",
                   help="masked LM: soft targets at the masked positions only (default: every "
                        "real token, as DistilBERT)")
    p.add_argument("--text", help="causal / masked LM: a UTF-8 text instead of the built-in "
                   "corpus")
    p.add_argument("--train", help="classification: the training file")
    p.add_argument("--eval", help="classification: the evaluation file")
    p.add_argument("--block-size", type=POSITIVE_INT, default=None,
                   help="causal / masked LM: tokens per sequence (default 128, at most the "
                        "teacher's positions)")
    p.add_argument("--max-length", type=MAX_LENGTH, default=None,
                   help="classification: tokens per example (default 128)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16,
                   help="sequences (or examples) per step (default 16)")
    p.add_argument("--max-steps", type=POSITIVE_INT, default=500,
                   help="optimizer steps (default 500)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=5e-4,
                   help="peak learning rate (AdamW, warmup and cosine decay; default 5e-4)")
    p.add_argument("--warmup-steps", type=NON_NEGATIVE_INT, default=None,
                   help="default: 5%% of the steps")
    p.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.01,
                   help="AdamW weight decay (default 0.01)")
    p.add_argument("--eval-interval", type=POSITIVE_INT, default=100,
                   help="steps between evaluations and checkpoints (default 100)")
    p.add_argument("--eval-batches", type=POSITIVE_INT, default=8,
                   help="causal / masked LM: fixed validation batches (default 8)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                   help="random seed (a student from scratch, batches, dropout)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the final side-by-side of teacher and student")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backend", choices=["numpy", "cupy"])
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser(
        "cost", help="parameters, FLOPs, memory and MFU of a model",
        description="What a model costs: parameters (embeddings and the rest), FLOPs per "
                    "token of a forward and a training step with the formula, the memory of "
                    "weights, gradients, optimizer state and activations at --batch-size x "
                    "--block-size, and a measured training step on this backend with the MFU "
                    "it implies. From a model directory (config.json) or from sizes: GPT-2 "
                    "124M (--arch gpt) and BERT-base (--arch bert) unless given.")
    p.add_argument("--model", help="a model directory (config.json is read; no weights)")
    p.add_argument("--arch", choices=["gpt", "bert"], default="gpt",
                   help="without --model: GPT-2 (GPT2LMHeadModel) or BERT (BertModel with "
                        "its pooler); default gpt")
    for flag, what in (("--n-layer", "layers"), ("--n-head", "attention heads"),
                       ("--n-embd", "width C"), ("--n-inner", "feed-forward width F (4 C)"),
                       ("--vocab-size", "vocabulary"), ("--n-positions", "positions")):
        p.add_argument(flag, type=POSITIVE_INT, default=None, help=what)
    p.add_argument("--dropout", type=FRACTION, default=None,
                   help="every dropout probability (default 0.1, GPT-2's and BERT's); its masks "
                        "are part of the activations' memory")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1, help="default 1")
    p.add_argument("--block-size", type=POSITIVE_INT, default=None,
                   help="context length (default: the model's positions)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--steps", type=NON_NEGATIVE_INT, default=3,
                   help="timed training steps (0: the estimate alone; default 3)")
    p.add_argument("--warmup", type=NON_NEGATIVE_INT, default=1, help="untimed steps first")
    p.add_argument("--peak-gflops", type=POSITIVE_FLOAT, default=None,
                   help="the sgemm peak for MFU (default: measured now)")
    p.add_argument("--json", help="also write the report to this JSON file")
    p.add_argument("--backend", choices=["numpy", "cupy"])
    p.set_defaults(func=_cmd_cost)
    for p in sub.choices.values():
        p.add_argument("--kernels", choices=["textbook", "fast"], default=None,
                       help="the ops every model runs: the textbook ops of functional/, or the "
                            "engine's fastest (default: SCRATCHLM_KERNELS, else fast)")
    return parser


def main(argv=None) -> int:
    """Run the command line; ``argv=None`` (the installed command) also tunes the process."""
    if argv is None:                                    # the command's own process, before
        from scratchlm.kernels.cpu.process import tune_process  # noqa: PLC0415 - NumPy loads
        tune_process()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.kernels is not None:
            from scratchlm.kernels import use_kernels  # noqa: PLC0415
            use_kernels(args.kernels)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"scratchlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        print(f"scratchlm {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
