"""Train a small GPT on the built-in corpus from Python, then sample from it.

The same steps as ``scratchlm train``, spelled out: tokenizer, token stream,
model, batches, Trainer, generation. Runs in a minute or two on 2 CPU cores.

    python examples/train_gpt_in_python.py
"""

import numpy as np

from scratchlm import GPT, GPTConfig
from scratchlm.data import CausalLMBatches, builtin_corpus, train_val_split
from scratchlm.generate import generate_text
from scratchlm.tokenizers import CharTokenizer
from scratchlm.train import Trainer, TrainingArguments

text = builtin_corpus()
train_text, val_text = train_val_split(text)
tokenizer = CharTokenizer.train(text)
train_ids = np.array(tokenizer.encode(train_text))
val_ids = np.array(tokenizer.encode(val_text))

config = GPTConfig(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=96, n_layer=3,
                   n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
model = GPT(config, seed=0)
args = TrainingArguments(out_dir="out_example", max_steps=300, eval_interval=100,
                         warmup_steps=30, learning_rate=3e-3)
trainer = Trainer(model, args, CausalLMBatches(train_ids, 64, 16, seed=0),
                  CausalLMBatches(val_ids, 64, 16).fixed_batches(4))
final = trainer.train()
print(f"val loss {final['val_loss']:.3f}, perplexity {final['val_ppl']:.2f}")
print(generate_text(model, tokenizer, "The if statement", max_new_tokens=40, top_k=20, seed=0,
                    temperature=0.8))
