"""Look inside a small BERT pre-trained on the built-in corpus: what each head
attends to, and which tokens a masked-word prediction rests on.

    python examples/explain_bert.py [--out runs/explain] [--steps 4000]

1. Pre-train a 2-layer, 64-wide BERT with 4 heads (masked LM + next sentence,
   ``scratchlm train --model bert``) on CPython's reference text: about three
   minutes on 2 CPU cores, skipped when --out already holds the model.
2. Per-head statistics over sentence pairs from the corpus (Clark et al. 2019):
   the entropy of each head's attention, and its share on [CLS], on [SEP], on
   punctuation, on the previous and on the next token; the table, and the head
   that stands out on each.
3. Pictures of one sentence, as self-contained HTML (and PNG with matplotlib,
   the ``plot`` extra): every head's attention as a grid, the head that most
   attends to neighbouring tokens drawn large, the attention rollout, and the
   integrated gradients and saliency of the word predicted at [MASK], with the
   integral's completeness gap.
4. The same from the command line, ``scratchlm explain``, whose commands are
   printed as they run.
"""

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import warnings

import numpy as np

from scratchlm import BertForMaskedLM, explain, to_numpy
from scratchlm.data import builtin_corpus
from scratchlm.tokenizers import WordPieceTokenizer

SENTENCE = "A class definition defines a class [MASK]."


def scratchlm(*args):
    """Run ``scratchlm ARGS`` (as python -m scratchlm), echoing the command."""
    print("\n$ scratchlm " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run([sys.executable, "-m", "scratchlm", *args], check=True)


def sentence_pairs(n):
    """n pairs of neighbouring sentences from the built-in corpus (40-160 characters each)."""
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.;:])\s+", builtin_corpus())]
    sentences = [s for s in sentences if 40 <= len(s) <= 160 and "*" not in s]
    step = max(1, len(sentences) // (2 * n))
    picked = sentences[::step][:2 * n]
    return picked[0::2], picked[1::2]


def pictures(draw, out, name, *args, **kwargs):
    """out/name.html, and out/name.png where matplotlib is installed."""
    paths = [draw(*args, os.path.join(out, name + ".html"), **kwargs)]
    if importlib.util.find_spec("matplotlib") is not None:
        paths.append(draw(*args, os.path.join(out, name + ".png"), **kwargs))
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/explain", help="where everything is written")
    parser.add_argument("--steps", type=int, default=4000, help="pre-training steps")
    opts = parser.parse_args()
    bert = os.path.join(opts.out, "bert")

    # 1. Pre-train (skipped when the model is there).
    if not os.path.exists(os.path.join(bert, "model.safetensors")):
        scratchlm("train", "--model", "bert", "--n-layer", "2", "--n-embd", "64",
                  "--n-head", "4", "--block-size", "32", "--batch-size", "32",
                  "--vocab-size", "1024", "--lr", "3e-3", "--max-steps", str(opts.steps),
                  "--eval-interval", "1000", "--out", bert, "--no-progress")
    with warnings.catch_warnings():                     # the next-sentence head is not used
        warnings.filterwarnings("ignore", message=".*not used by BertForMaskedLM")
        model = BertForMaskedLM.from_pretrained(bert, dtype="float64")
    tok = WordPieceTokenizer.from_pretrained(bert)

    # 2. What each head attends to, over 48 sentence pairs.
    first, second = sentence_pairs(48)
    batch = tok(first, second, padding=True, truncation=True,
                max_length=model.config.max_position_embeddings, return_tensors="np")
    out = model(**batch, output_attentions=True)        # eval mode: no dropout
    tokens = [tok.convert_ids_to_tokens(row) for row in batch["input_ids"]]
    stats = explain.head_statistics(out.attentions, tokens, batch["attention_mask"])
    print(f"\nWhat each head attends to: {len(first)} sentence pairs, "
          f"{int(batch['attention_mask'].sum())} tokens; entropy in nats, the rest shares "
          "of each query's attention")
    print(stats.table())
    for field, header in zip(stats.FIELDS, stats.HEADERS):
        values = getattr(stats, field)
        pick = values.argmin() if field == "entropy" else values.argmax()
        layer, head = np.unravel_index(pick, values.shape)
        what = "most focused (lowest entropy)" if field == "entropy" else f"most on {header}"
        print(f"  {what:<29}: layer {layer} head {head} ({values[layer, head]:.3f})")

    # 3. One sentence: attention maps, rollout, attributions of the word at [MASK].
    pics = os.path.join(opts.out, "pictures")
    os.makedirs(pics, exist_ok=True)
    enc = tok(SENTENCE, return_tensors="np")
    ids = enc["input_ids"][0].tolist()
    words = tok.convert_ids_to_tokens(ids)
    position = ids.index(tok.mask_token_id)
    one = model(**enc, output_attentions=True)
    logits = to_numpy(one.logits)[0, position]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(-probs)[:5]
    target = int(top[0])
    print(f"\n{SENTENCE!r}: at [MASK] " + ", ".join(
        f"{tok.convert_ids_to_tokens([int(i)])[0]} {probs[i]:.3f}" for i in top))
    neighbour = stats.previous + stats.next
    layer, head = np.unravel_index(neighbour.argmax(), neighbour.shape)
    written = pictures(explain.plot_attention_grid, pics, "attention_grid", one.attentions, words)
    written += pictures(explain.plot_attention_map, pics, "attention_head",
                        to_numpy(one.attentions[layer])[0, head], words,
                        title=f"Layer {layer}, head {head}: the neighbouring tokens")
    rollout = explain.attention_rollout(one.attentions)[0]
    written += pictures(explain.plot_attention_map, pics, "rollout", rollout, words,
                        title="Attention rollout")
    keep = [tok.cls_token_id, tok.sep_token_id, tok.mask_token_id]
    ig = explain.integrated_gradients(model, enc, target, position=position, keep_ids=keep,
                                      n_steps=64)
    sal = explain.saliency(model, enc, target, position=position)
    word = tok.convert_ids_to_tokens([target])[0]
    print(f"\nWhy {word!r}? Attributions of its logit ({len(words)} tokens; integrated "
          "gradients from a [PAD] baseline that keeps [CLS], [SEP] and [MASK]):")
    print(f"{'token':<12} {'IG':>9} {'saliency':>9}")
    for w, a, s in zip(words, ig[0], sal[0]):
        print(f"{w:<12} {a:>+9.4f} {s:>+9.4f}")
    print(f"sum of IG {ig[0].sum():+.6f} = F(x) - F(baseline) = {ig.score[0]:.6f} - "
          f"{ig.baseline_score[0]:.6f} - delta, delta = {ig.delta[0]:.1e} (64 Gauss-Legendre "
          "points)")
    written += pictures(explain.plot_attributions, pics, "attributions",
                        [words, words], np.vstack([np.asarray(ig), np.asarray(sal)]),
                        title=f"Which tokens the prediction {word!r} at [MASK] rests on",
                        labels=[f"integrated gradients (delta {ig.delta[0]:.1e})",
                                "saliency (gradient x input)"])
    print("\nwrote " + ", ".join(written))

    # 4. The command line.
    cli = os.path.join(opts.out, "cli")
    scratchlm("explain", "--model", bert, "--text", SENTENCE, "--method", "ig",
              "--out", cli)
    scratchlm("explain", "--model", bert, "--text", SENTENCE, "--method", "attention",
              "--layer", str(layer), "--head", str(head), "--out", cli)


if __name__ == "__main__":
    main()
