"""Compare scratchlm's unigram SentencePiece with the sentencepiece library's.

    python benchmarks/bench_sentencepiece.py [--vocab-size 4000] [--translations 20000]

Both train a unigram model of the same size on the same text: 90% of the
lines of the built-in corpus, plus translated messages from the system's
compiled gettext catalogs (/usr/share/locale/*/LC_MESSAGES/*.mo) where there
are some. Each is then measured on the held-out lines: tokens per character
(fewer is a better compression of the text), unknown tokens, and encoding
speed. The library's timings come from its C++ code; ours are pure Python.
Also checked: the library, loading the model trained here, gives the same ids.
"""

import argparse
import glob
import io
import random
import struct
import time

from scratchlm.data import builtin_corpus
from scratchlm.tokenizers import SentencePieceModel, train_unigram


def mo_messages(limit: int) -> list[str]:
    """Translated messages from compiled gettext catalogs, a few per catalog."""
    out = []
    paths = sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/*.mo"))
    random.Random(0).shuffle(paths)
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
            order = next(o for o in "<>" if struct.unpack(o + "I", data[:4])[0] == 0x950412DE)
            n, _, table = struct.unpack(order + "3I", data[8:20])
            for k in range(1, min(n, 60)):
                length, offset = struct.unpack(order + "2I", data[table + 8 * k:table + 8 * k + 8])
                out.extend(s for s in data[offset:offset + length].decode("utf-8").split("\0") if s)
        except (OSError, StopIteration, UnicodeDecodeError, struct.error):
            continue
        if len(out) >= limit:
            break
    return out[:limit]


def measure(name, encode, held, unk_id):
    t0 = time.perf_counter()
    ids = [encode(line) for line in held]
    seconds = time.perf_counter() - t0
    chars = sum(map(len, held))
    tokens = sum(map(len, ids))
    unknown = sum(row.count(unk_id) for row in ids)
    print(f"  {name:<14}tokens/char {tokens / chars:.4f}   unknown {unknown:>5}   "
          f"encode {chars / seconds / 1e3:>8.1f} kchar/s")
    return ids


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--translations", type=int, default=20000,
                        help="translated messages to add to the text (0: English only)")
    opts = parser.parse_args()
    lines = builtin_corpus().split("\n")
    cut = int(0.9 * len(lines))
    messages = mo_messages(opts.translations + opts.translations // 9) if opts.translations else []
    random.Random(1).shuffle(messages)
    split = len(messages) * 9 // 10
    train, held = lines[:cut] + messages[:split], lines[cut:] + messages[split:]
    held = [line for line in held if line.strip()]
    print(f"training text: {sum(map(len, train)) / 1e6:.2f} M characters "
          f"({len(messages[:split])} translated messages); held out: "
          f"{sum(map(len, held)) / 1e3:.0f} k characters; vocab_size {opts.vocab_size}")

    t0 = time.perf_counter()
    ours = train_unigram(train, opts.vocab_size)
    print(f"  scratchlm     trained in {time.perf_counter() - t0:6.1f} s")
    try:
        import sentencepiece as spm
    except ImportError:
        spm = None
        print("  (sentencepiece is not installed: no library figures)")
    if spm is not None:
        model = io.BytesIO()
        t0 = time.perf_counter()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(train), model_writer=model,
                                       vocab_size=opts.vocab_size, minloglevel=2)
        print(f"  sentencepiece trained in {time.perf_counter() - t0:6.1f} s (C++)")
        library = spm.SentencePieceProcessor(model_proto=model.getvalue())

    print("held-out text, each model encoded by its own code:")
    ours_ids = measure("scratchlm", ours.encode, held, ours.unk_id)
    if spm is None:
        return
    library_ids = measure("sentencepiece", library.encode, held, library.unk_id())
    print("the other code on each model:")
    replay = SentencePieceModel.from_bytes(model.getvalue(), "library model")
    replay_ids = measure("scratchlm", replay.encode, held, replay.unk_id)
    same = spm.SentencePieceProcessor(model_proto=ours.serialize())
    agree = sum(same.encode(line) == row for line, row in zip(held, ours_ids))
    print(f"  scratchlm on the library's model: same ids on "
          f"{sum(a == b for a, b in zip(replay_ids, library_ids))}/{len(held)} lines")
    print(f"  the library on the model trained here: same ids on {agree}/{len(held)} lines")


if __name__ == "__main__":
    main()
