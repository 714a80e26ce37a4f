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

Importing scratchlm changes nothing outside it: no environment variables, no
allocator settings, no threads; its names load their modules on first use. The ``scratchlm`` command tunes its own
process at start-up (``scratchlm.kernels.cpu.tune_process``).
"""

from scratchlm._lazy import lazy_names

_WHERE = {
    **dict.fromkeys(("get_array_module", "get_backend", "set_backend", "to_numpy"),
                    "scratchlm.backend"),
    **dict.fromkeys(("get_kernels", "use_kernels"), "scratchlm.kernels.tables"),
    **dict.fromkeys(("GPT", "GPTConfig", "BertConfig", "BertModel", "BertForMaskedLM",
                     "BertForNextSentencePrediction", "BertForPreTraining",
                     "BertForQuestionAnswering", "BertForSequenceClassification",
                     "BertForTokenClassification", "MarianConfig", "MarianModel",
                     "MarianMTModel"), "scratchlm.models"),
}
__getattr__ = lazy_names(__name__, _WHERE)     # each name loads its module on first use

__version__ = "0.1.0"

__all__ = [
    "BertConfig", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
    "BertForQuestionAnswering", "BertForSequenceClassification", "BertForTokenClassification",
    "BertModel", "GPT", "GPTConfig", "MarianConfig", "MarianModel", "MarianMTModel",
    "get_array_module", "get_backend", "get_kernels", "use_kernels", "set_backend", "to_numpy", "__version__",
]
