"""from_pretrained / save_pretrained, shared by GPT and the BERT classes.

The work happens in ``scratchlm.checkpoint``, which sits above the models in
the import order (it needs them to map names); so it is imported inside the
methods, when they are called, never at module import.
"""

from __future__ import annotations


class PretrainedMixin:
    """Read and write Hugging Face model directories (config.json + model.safetensors)."""

    @classmethod
    def from_pretrained(cls, directory, dtype=None, num_labels=None):
        """A model with the config and weights of a Hugging Face directory.

        directory: holds config.json and model.safetensors (or its sharded
            index); GPT-2 and BERT names, with or without the base-model prefix.
        dtype: None keeps F32/F64 as stored and reads F16/BF16 as float32;
            a floating dtype casts every parameter to it.
        num_labels: BERT only, the size of a new classification head.
        Returns: the model in eval() mode (call .train() before training).
        A head missing from the checkpoint is initialised and reported with
        warnings.warn; any other missing, unexpected or mis-shaped tensor is
        a ValueError that lists them all.
        """
        from scratchlm.checkpoint import load_pretrained  # noqa: PLC0415 - above models
        return load_pretrained(cls, directory, dtype=dtype, num_labels=num_labels)

    def save_pretrained(self, directory) -> None:
        """Write config.json and model.safetensors with Hugging Face names, atomically."""
        from scratchlm.checkpoint import save_pretrained  # noqa: PLC0415 - above models
        save_pretrained(self, directory)
