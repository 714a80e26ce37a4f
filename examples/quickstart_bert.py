"""The `transformers` quick-start, in scratchlm: tokenizer -> BERT classifier -> loss and logits,
then a fine-tuning loop with AdamW.

    python examples/quickstart_bert.py [BERT_DIR]

BERT_DIR: a Hugging Face BERT directory (config.json, model.safetensors and
vocab.txt, e.g. a local copy of bert-base-uncased) or one written by
``scratchlm train --model bert``. Without it, a small random BERT with a
WordPiece vocabulary learned from the built-in corpus stands in, so the
script runs offline anywhere.

Side by side with PyTorch + transformers:

    tokenizer = BertTokenizer.from_pretrained(d)     WordPieceTokenizer.from_pretrained(d)
    model = BertForSequenceClassification            BertForSequenceClassification
                .from_pretrained(d, num_labels=2)           .from_pretrained(d, num_labels=2)
    inputs = tokenizer(text, return_tensors="pt")    tokenizer(text, return_tensors="np")
    outputs = model(**inputs, labels=labels)         model(**inputs, labels=labels)
    outputs.loss.backward()                          model.backward()
    optimizer.step(); optimizer.zero_grad()          optimizer.step(); model.zero_grad()
"""

import sys

import numpy as np

from scratchlm import BertConfig, BertForSequenceClassification, to_numpy
from scratchlm.data import builtin_corpus
from scratchlm.optim import AdamW
from scratchlm.tokenizers import WordPieceTokenizer

if len(sys.argv) > 1:
    directory = sys.argv[1]
    tokenizer = WordPieceTokenizer.from_pretrained(directory)
    model = BertForSequenceClassification.from_pretrained(directory, num_labels=2)
    lr = 2e-5
else:
    tokenizer = WordPieceTokenizer.train(builtin_corpus()[:200_000], 3000)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=256,
                        max_position_embeddings=64, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    model = BertForSequenceClassification(config, seed=0)
    lr = 1e-3

# 1. One example: loss and logits.
inputs = tokenizer("Hello, my dog is cute", return_tensors="np")
print("input_ids:", inputs["input_ids"].tolist())
print("tokens:   ", tokenizer.convert_ids_to_tokens(inputs["input_ids"][0]))
labels = np.array([1])                                    # batch size 1
model.eval()
outputs = model(**inputs, labels=labels)
print(f"loss {float(outputs.loss):.4f}, logits {to_numpy(outputs.logits).round(4).tolist()}")

# 2. A fine-tuning loop with AdamW on a toy sentiment set.
texts = ["I love this dog", "what a wonderful day", "a delightful, happy story",
         "this is great", "I hate rainy days", "a terrible, sad film", "this is awful",
         "what a horrible mess"]
labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.01)
model.train()
for step in range(30):
    outputs = model(**batch, labels=labels)
    model.backward()                                      # fills every parameter's .grad
    optimizer.step()
    model.zero_grad()
    if step % 10 == 0 or step == 29:
        print(f"step {step:2d}  loss {float(outputs.loss):.4f}")

model.eval()
probs = to_numpy(model(**tokenizer(["such a happy dog", "a sad, awful day"], padding=True,
                                   return_tensors="np")).logits)
probs = np.exp(probs - probs.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)
for text, p in zip(["such a happy dog", "a sad, awful day"], probs):
    print(f"{text!r}: {model.config.id2label[int(p.argmax())]} ({p.max():.3f})")
