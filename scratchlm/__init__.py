"""scratchlm: Transformer language models from scratch in NumPy.

Every operation is a pair of pure functions, ``op_forward -> (out, cache)`` and
``op_backward(dout, cache) -> grads``, written so that a reader can follow the
math line by line. The same code runs on NumPy (CPU) or CuPy (GPU).

Shape letters, used in every docstring and comment:

    B  batch                     T  sequence length
    C  model width (n_embd)      H  attention heads
    D  head width, C / H         F  feed-forward width
    V  vocabulary size           L  layers
    N  rows, B * T

Linear weights are stored ``(C_in, C_out)``: ``y = x @ W + b``.

Importing scratchlm tunes two process settings for NumPy's CPU work (idle
BLAS threads sleep at once; freed arrays are kept for reuse): see
``scratchlm/_runtime.py``; ``SCRATCHLM_TUNE_RUNTIME=0`` turns that off.
"""

from scratchlm import _runtime

_runtime.tune()     # before NumPy loads, where it has not loaded yet

from scratchlm.backend import get_array_module, get_backend, set_backend, to_numpy  # noqa: E402
from scratchlm.models import (  # noqa: E402
    GPT, BertConfig, BertForMaskedLM, BertForNextSentencePrediction, BertForPreTraining,
    BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
    BertModel, GPTConfig,
)

__version__ = "0.1.0"

__all__ = [
    "BertConfig", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
    "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification",
    "BertModel", "GPT", "GPTConfig",
    "get_array_module", "get_backend", "set_backend", "to_numpy", "__version__",
]
