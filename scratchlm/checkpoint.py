"""Checkpoints: Hugging Face model directories, read and written.

A model directory, as transformers' ``save_pretrained`` writes it, holds

    config.json          the hyper-parameters: GPTConfig / BertConfig.to_dict(),
                         plus "model_type" and "architectures"
    model.safetensors    every parameter, under its Hugging Face name
                         (or model.safetensors.index.json and its shards)

scratchlm's parameter names follow transformers' wherever the layers agree,
so the translation is one short table, ``HF_NAMES`` below. Each row maps one
of our modules to one of theirs and says how the tensors convert:

    COPY       the same tensor. GPT-2's Conv1D stores its weight (in, out),
               as our Linear does, so every GPT-2 tensor is a copy.
    TRANSPOSE  a torch.nn.Linear stores its weight (out, in): W_ours = W_hf^T.
               The bias is a copy.
    QKV        BERT keeps query, key and value in three Linears; our encoder
               layer fuses them side by side into one (C, 3C) projection:
                   W_qkv = [W_q^T | W_k^T | W_v^T],   b_qkv = [b_q | b_k | b_v]

Names are compared in a *canonical* form, relative to the base model: the
prefix of the base model inside a task model (``transformer.`` for
GPT2LMHeadModel, ``bert.`` for the BERT task classes) is taken off. So a
checkpoint of the base model loads into a task model and the other way round,
as in transformers:

* a task head (or the pooler) that the checkpoint lacks entirely keeps its
  fresh initialisation, and is reported with ``warnings.warn``;
* head tensors of the checkpoint that the model has no use for are skipped,
  and reported the same way;
* tied tensors (GPT-2's ``lm_head.weight``, BERT's decoder weight and bias)
  are never written; on load they are accepted when equal to their twin;
* known buffers that are not parameters (``embeddings.position_ids``, GPT-2's
  ``attn.bias`` / ``attn.masked_bias``) are ignored, and the legacy names
  ``LayerNorm.gamma`` / ``LayerNorm.beta`` read as ``weight`` / ``bias``.

Anything else that is missing, unexpected or of the wrong shape is an error
that lists every problem at once.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from scratchlm.backend import to_numpy
from scratchlm.safetensors_io import find_weights_file, read_safetensors_dir, write_safetensors

CONFIG_FILE = "config.json"

COPY, TRANSPOSE, QKV = "copy", "transpose", "qkv"
QKV_PARTS = ("query", "key", "value")


class NameTable(NamedTuple):
    """How one model family's parameters are named in Hugging Face checkpoints.

    base_prefix: the base model's attribute inside the task classes.
    rows: (our module, Hugging Face module, how); ``{i}`` is a layer index.
        Each row covers the module's ``weight`` and ``bias``.
    heads: module prefixes that a checkpoint may lack (initialised and
        reported) or carry without use (skipped and reported).
    tied: Hugging Face name -> the name of the tensor it duplicates.
    buffers: a regular expression of non-parameter tensors to ignore.
    """
    base_prefix: str
    rows: tuple
    heads: tuple
    tied: dict
    buffers: str


HF_NAMES = {
    "gpt2": NameTable(
        base_prefix="transformer.",
        rows=(
            ("wte", "wte", COPY),
            ("wpe", "wpe", COPY),
            ("h.{i}.ln_1", "h.{i}.ln_1", COPY),
            ("h.{i}.attn.c_attn", "h.{i}.attn.c_attn", COPY),     # Conv1D: (in, out)
            ("h.{i}.attn.c_proj", "h.{i}.attn.c_proj", COPY),
            ("h.{i}.ln_2", "h.{i}.ln_2", COPY),
            ("h.{i}.mlp.c_fc", "h.{i}.mlp.c_fc", COPY),
            ("h.{i}.mlp.c_proj", "h.{i}.mlp.c_proj", COPY),
            ("ln_f", "ln_f", COPY),
        ),
        heads=(),
        tied={"lm_head.weight": "wte.weight"},
        buffers=r"h\.\d+\.attn\.(bias|masked_bias)",
    ),
    "bert": NameTable(
        base_prefix="bert.",
        rows=(
            ("embeddings.word_embeddings", "embeddings.word_embeddings", COPY),
            ("embeddings.position_embeddings", "embeddings.position_embeddings", COPY),
            ("embeddings.token_type_embeddings", "embeddings.token_type_embeddings", COPY),
            ("embeddings.LayerNorm", "embeddings.LayerNorm", COPY),
            ("encoder.layer.{i}.attn.c_attn", "encoder.layer.{i}.attention.self", QKV),
            ("encoder.layer.{i}.attn.c_proj", "encoder.layer.{i}.attention.output.dense",
             TRANSPOSE),
            ("encoder.layer.{i}.ln_1", "encoder.layer.{i}.attention.output.LayerNorm", COPY),
            ("encoder.layer.{i}.mlp.c_fc", "encoder.layer.{i}.intermediate.dense", TRANSPOSE),
            ("encoder.layer.{i}.mlp.c_proj", "encoder.layer.{i}.output.dense", TRANSPOSE),
            ("encoder.layer.{i}.ln_2", "encoder.layer.{i}.output.LayerNorm", COPY),
            ("pooler.dense", "pooler.dense", TRANSPOSE),
            ("cls.predictions.transform.dense", "cls.predictions.transform.dense", TRANSPOSE),
            ("cls.predictions.transform.LayerNorm", "cls.predictions.transform.LayerNorm",
             COPY),
            ("cls.predictions", "cls.predictions", COPY),          # its own bias only
            ("cls.seq_relationship", "cls.seq_relationship", TRANSPOSE),
            ("classifier", "classifier", TRANSPOSE),
            ("qa_outputs", "qa_outputs", TRANSPOSE),
        ),
        heads=("pooler", "cls.predictions", "cls.seq_relationship", "classifier",
               "qa_outputs"),
        tied={"cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",
              "cls.predictions.decoder.bias": "cls.predictions.bias"},
        buffers=r"embeddings\.position_ids",
    ),
}



def _marian_rows():
    """Marian's modules carry transformers' names: every Linear transposes, the rest copy."""
    rows = [("shared", "shared", COPY),
            ("encoder.embed_tokens", "encoder.embed_tokens", COPY),
            ("decoder.embed_tokens", "decoder.embed_tokens", COPY)]
    for stack, attns in (("encoder", ("self_attn",)), ("decoder", ("self_attn", "encoder_attn"))):
        layer = f"{stack}.layers.{{i}}"
        for attn in attns:
            rows += [(f"{layer}.{attn}.{p}", f"{layer}.{attn}.{p}", TRANSPOSE)
                     for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
            rows.append((f"{layer}.{attn}_layer_norm", f"{layer}.{attn}_layer_norm", COPY))
        rows += [(f"{layer}.fc1", f"{layer}.fc1", TRANSPOSE),
                 (f"{layer}.fc2", f"{layer}.fc2", TRANSPOSE),
                 (f"{layer}.final_layer_norm", f"{layer}.final_layer_norm", COPY)]
    rows += [("lm_head", "lm_head", TRANSPOSE),       # untied head only
             ("", "", COPY)]                          # final_logits_bias, at the top level
    return tuple(rows)


HF_NAMES["marian"] = NameTable(
    base_prefix="model.",
    rows=_marian_rows(),
    heads=("lm_head", "final_logits_bias"),
    tied={},                                          # depends on the config: _marian_table
    # The sinusoidal tables are no parameters: an older checkpoint that carries
    # them is checked against the recomputed table (_check_marian_positions).
    buffers=r"(encoder|decoder)\.embed_positions\.weight",
)


def _marian_table(config) -> NameTable:
    """Marian's tied tensors follow share_encoder_decoder_embeddings and tie_word_embeddings."""
    if config.share_encoder_decoder_embeddings:
        tied = {"encoder.embed_tokens.weight": "shared.weight",
                "decoder.embed_tokens.weight": "shared.weight"}
        if config.tie_word_embeddings:
            tied["lm_head.weight"] = "shared.weight"
    else:
        tied = ({"lm_head.weight": "decoder.embed_tokens.weight"}
                if config.tie_word_embeddings else {})
    return HF_NAMES["marian"]._replace(tied=tied)


# How far a stored sinusoid (values in [-1, 1]) may be from the recomputed one: the
# rounding of float16 and bfloat16 (at most 2^-9 here) passes, another table does not.
POSITION_TOLERANCE = 4e-3


def _check_marian_positions(model, found):
    """Problems with a checkpoint's embed_positions tables: shape, or values that differ
    from Marian's sinusoids by more than POSITION_TOLERANCE."""
    from scratchlm.models.marian import sinusoidal_positions  # noqa: PLC0415 - above models
    problems = []
    for stack in ("encoder", "decoder"):
        name = f"{stack}.embed_positions.weight"
        if name not in found:
            continue
        array, stored = found[name]
        expected = sinusoidal_positions(model.config.max_position_embeddings,
                                        model.config.d_model)
        a = np.asarray(array, dtype=np.float64)
        if a.shape != expected.shape:
            problems.append(f"{stored!r}: expected the sinusoidal table of shape "
                            f"{expected.shape} (max_position_embeddings, d_model); got {a.shape}")
            continue
        worst = float(np.abs(a - expected).max()) if a.size else 0.0
        if worst > POSITION_TOLERANCE:
            problems.append(f"{stored!r} is not Marian's sinusoidal table (largest difference "
                            f"{worst:.3g}); scratchlm recomputes it and cannot load another")
    return problems


# Our class -> (its transformers class, our base-model prefix, theirs).
ARCHITECTURES = {
    "GPT": ("GPT2LMHeadModel", "", "transformer."),
    "BertModel": ("BertModel", "", ""),
    "BertForPreTraining": ("BertForPreTraining", "bert.", "bert."),
    "BertForMaskedLM": ("BertForMaskedLM", "bert.", "bert."),
    "BertForNextSentencePrediction": ("BertForNextSentencePrediction", "bert.", "bert."),
    "BertForSequenceClassification": ("BertForSequenceClassification", "bert.", "bert."),
    "BertForTokenClassification": ("BertForTokenClassification", "bert.", "bert."),
    "BertForQuestionAnswering": ("BertForQuestionAnswering", "bert.", "bert."),
    "MarianModel": ("MarianModel", "", ""),
    "MarianMTModel": ("MarianMTModel", "model.", "model."),
}

# Pre-2019 checkpoints (TensorFlow conversions) name LayerNorm's parameters thus.
LEGACY_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


class HFTensor(NamedTuple):
    """Where one of our parameters lives in a checkpoint, and how it converts."""
    names: tuple      # canonical Hugging Face names: one, or three for QKV
    how: str          # COPY, TRANSPOSE or QKV
    leaf: str         # "weight" or "bias"
    body: bool        # inside the base model (takes the base prefix when written)


# ---------------------------------------------------------------------------
# The name table, applied to one model
# ---------------------------------------------------------------------------

def _architecture(model, where):
    name = type(model).__name__ if not isinstance(model, type) else model.__name__
    if name not in ARCHITECTURES:
        raise TypeError(f"{where}: no Hugging Face architecture for {name}; expected one of "
                        f"{sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def _table(model) -> NameTable:
    if model.config.model_type == "marian":
        return _marian_table(model.config)
    return HF_NAMES[model.config.model_type]


def _row_patterns(table):
    """Each row as (compiled regex of our module path, Hugging Face template, how)."""
    return [(re.compile(re.escape(ours).replace(r"\{i\}", r"(\d+)") + "$"), theirs, how)
            for ours, theirs, how in table.rows]


def hf_layout(model) -> dict:
    """For each of our parameter names, its HFTensor: canonical names and conversion.

    Raises ValueError for a parameter the table does not cover (a bug, not a
    user error, but said plainly).
    """
    where = "hf_layout"
    _, our_base, _ = _architecture(model, where)
    patterns = _row_patterns(_table(model))
    layout = {}
    for name, _ in model.named_parameters():
        body = name.startswith(our_base)
        canonical = name[len(our_base):] if body else name
        module, _, leaf = canonical.rpartition(".")
        for regex, theirs, how in patterns:
            match = regex.match(module)
            if match:
                hf_module = theirs.replace("{i}", match.group(1)) if match.groups() else theirs
                if how == QKV:
                    names = tuple(f"{hf_module}.{part}.{leaf}" for part in QKV_PARTS)
                else:
                    names = (f"{hf_module}.{leaf}" if hf_module else leaf,)
                layout[name] = HFTensor(names, how, leaf, body)
                break
        else:
            raise ValueError(f"{where}: {type(model).__name__} parameter {name!r} has no "
                             "row in checkpoint.HF_NAMES")
    return layout


def _hf_shapes(shape, t: HFTensor):
    """The shapes the Hugging Face tensors of one of our parameters must have."""
    if t.how == TRANSPOSE and t.leaf == "weight":
        return [tuple(shape[::-1])]
    if t.how == QKV:
        if t.leaf == "weight":                          # (C, 3C) -> three (C, C), (out, in)
            return [(shape[1] // 3, shape[0])] * 3
        return [(shape[0] // 3,)] * 3
    return [tuple(shape)]


def _to_ours(arrays, t: HFTensor):
    """Hugging Face tensors -> our parameter (host arrays)."""
    if t.how == QKV:
        if t.leaf == "weight":
            return np.concatenate([a.T for a in arrays], axis=1)   # [W_q^T | W_k^T | W_v^T]
        return np.concatenate(arrays)                               # [b_q | b_k | b_v]
    if t.how == TRANSPOSE and t.leaf == "weight":
        return arrays[0].T
    return arrays[0]


def _to_hf(array, t: HFTensor):
    """Our parameter (host array) -> its Hugging Face tensors, C-contiguous."""
    if t.how == QKV:
        parts = np.split(array, 3, axis=-1)             # columns of q | k | v
        return [np.ascontiguousarray(p.T if t.leaf == "weight" else p) for p in parts]
    if t.how == TRANSPOSE and t.leaf == "weight":
        return [np.ascontiguousarray(array.T)]
    return [np.ascontiguousarray(array)]


def hf_state_dict(model, arrays=None) -> dict:
    """Our parameters under the names transformers' ``save_pretrained`` writes.

    arrays: optional {our name: array} to convert instead of the parameters'
        values (gradients, optimizer moments); every parameter must be there.
    Returns: {Hugging Face name: NumPy array}, tied tensors once (as
        transformers writes them), with the base prefix of the model's class.
        A tensor that needs no transpose or split may share memory with the
        parameter (copy it before changing it).
    """
    where = "hf_state_dict"
    _, _, hf_base = _architecture(model, where)
    params = dict(model.named_parameters())
    if arrays is None:
        arrays = {name: p.data for name, p in params.items()}
    missing = sorted(set(params) - set(arrays))
    if missing:
        raise ValueError(f"{where}: arrays lacks parameters: {', '.join(missing)}")
    out = {}
    for name, t in hf_layout(model).items():
        for hf_name, a in zip(t.names, _to_hf(to_numpy(arrays[name]), t)):
            out[(hf_base if t.body else "") + hf_name] = a
    return out


# ---------------------------------------------------------------------------
# Loading Hugging Face tensors into a model
# ---------------------------------------------------------------------------

class LoadReport(NamedTuple):
    """What a load did besides copying: heads initialised, tensors left unused."""
    initialised: list     # our parameter names that kept their fresh initialisation
    unused: list          # checkpoint names of head tensors the model has no use for


def _canonical(tensors, table, where):
    """Checkpoint names -> canonical names: base prefix off, legacy LayerNorm names fixed.

    Returns {canonical name: (array, name as stored)}.
    """
    out = {}
    for stored, array in tensors.items():
        name = stored[len(table.base_prefix):] if stored.startswith(table.base_prefix) \
            else stored
        for old, new in LEGACY_NAMES.items():
            if name.endswith(old):
                name = name[:-len(old)] + new
        if name in out:
            raise ValueError(f"{where}: the checkpoint holds {out[name][1]!r} and {stored!r}, "
                             "which name the same tensor")
        out[name] = (array, stored)
    return out


def _shape_hint(expected, got, hf_name):
    if len(expected) == 2 and expected != got and expected == got[::-1]:
        return " (saved transposed?)"
    if hf_name.startswith(("classifier.", "qa_outputs.")) and got[1:] == expected[1:]:
        return (f" (the checkpoint's head has {got[0]} outputs; pass num_labels= or "
                "check id2label in config.json)")
    return ""


def load_hf_state_dict(model, tensors, where="load_hf_state_dict") -> LoadReport:
    """Copy a dict of Hugging Face-named tensors into ``model``, checking everything.

    Names are matched in canonical form (see the module docstring). Checks,
    all made before anything is copied and reported in one ValueError:
    missing tensors, unexpected tensors, shape mismatches, tied tensors that
    differ from their twin. Heads absent from the checkpoint keep their
    initialisation; unused head tensors are skipped; both are returned (the
    caller decides how to report them).
    Returns: LoadReport.
    """
    table = _table(model)
    found = _canonical(tensors, table, where)
    buffers = re.compile(table.buffers + "$")
    problems = []

    # Tied tensors: a duplicate stands in for its twin when the twin is absent,
    # and must equal it when both are there.
    for alias, twin in table.tied.items():
        if alias not in found:
            continue
        array, stored = found.pop(alias)
        if twin not in found:
            found[twin] = (array, stored)
        elif (np.shape(array) != np.shape(found[twin][0])
              or not np.array_equal(array, found[twin][0])):
            problems.append(f"{stored!r} differs from {found[twin][1]!r}, to which it is tied "
                            "(untied weights are not supported)")

    _, _, hf_base = _architecture(model, where)
    layout = hf_layout(model)
    params = dict(model.named_parameters())
    expected, full_name = {}, {}                        # canonical HF name -> shape, name as saved
    for name, t in layout.items():
        for hf_name, shape in zip(t.names, _hf_shapes(params[name].shape, t)):
            expected[hf_name] = shape
            full_name[hf_name] = (hf_base if t.body else "") + hf_name

    def head_of(hf_name):
        return next((h for h in table.heads
                     if hf_name == h or hf_name.startswith(h + ".")), None)

    if model.config.model_type == "marian":
        problems += _check_marian_positions(model, found)

    # Heads the model has but the checkpoint lacks entirely: keep their init.
    absent = [n for n in expected if n not in found]
    initialised_heads = {h for h in {head_of(n) for n in absent} if h is not None
                         and all(n not in found for n in expected if head_of(n) == h)}
    missing = [n for n in absent if head_of(n) not in initialised_heads]
    unexpected, unused = [], []
    for n, (_, stored) in found.items():
        if n in expected or buffers.match(n):
            continue
        (unused if head_of(n) is not None else unexpected).append(stored)
    wrong = []
    for n, shape in expected.items():
        if n in found and tuple(np.shape(found[n][0])) != shape:
            got = tuple(np.shape(found[n][0]))
            wrong.append(f"{found[n][1]!r}: expected {shape}, got {got}"
                         f"{_shape_hint(shape, got, n)}")
    if missing:
        problems.append(f"missing ({len(missing)}): "
                        + ", ".join(sorted(full_name[n] for n in missing)))
    if unexpected:
        problems.append(f"unexpected ({len(unexpected)}): " + ", ".join(sorted(unexpected)))
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): " + "; ".join(wrong))
    if problems:
        raise ValueError(f"{where}: the checkpoint does not fit {type(model).__name__}:\n  "
                         + "\n  ".join(problems))

    state, initialised = {}, []
    for name, t in layout.items():
        if all(n in found for n in t.names):
            state[name] = _to_ours([found[n][0] for n in t.names], t)
        else:
            initialised.append(name)
    model.load_state_dict(state, strict=False)          # casts to the model's dtype and backend
    return LoadReport(initialised, sorted(unused))


# ---------------------------------------------------------------------------
# Directories: from_pretrained and save_pretrained
# ---------------------------------------------------------------------------

def read_config(directory, config_class, where="read_config"):
    """config.json of a model directory, as a ``config_class`` instance."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{where}: {directory} is not a directory")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{where}: {path} not found; a model directory holds {CONFIG_FILE} "
                         "and model.safetensors")
    try:
        d = json.loads(path.read_text("utf-8"))
    except (ValueError, RecursionError) as exc:          # bad UTF-8 or bad JSON
        raise ValueError(f"{where}: {path} is not valid JSON ({exc})") from None
    try:
        return config_class.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {path}: {exc}") from None


def _check_dtype(dtype, where):
    if dtype is None:
        return None
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be None or a floating dtype such as "
                        f"'float32'; got {dtype!r}") from None
    if dtype.kind != "f":
        raise ValueError(f"{where}: dtype must be a floating dtype; got {dtype}")
    return dtype


def load_pretrained(cls, directory, dtype=None, num_labels=None):
    """Build a ``cls`` model from a Hugging Face directory (``cls.from_pretrained``).

    dtype: None keeps F32/F64 as stored and reads F16/BF16 as float32; else
        every parameter is cast to it.
    num_labels: BERT only; the size of a new classification head (the
        checkpoint's own head, when it has one, must have that size).
    Returns: the model, in eval() mode. Heads initialised and checkpoint
    tensors left unused are reported with warnings.warn.
    """
    where = f"{cls.__name__}.from_pretrained"
    _architecture(cls, where)
    dtype = _check_dtype(dtype, where)
    config = read_config(directory, cls.config_class, where)
    if num_labels is not None:
        if not hasattr(config, "with_num_labels"):
            raise ValueError(f"{where}: num_labels applies to BERT classification heads only")
        if num_labels != config.num_labels:
            config = config.with_num_labels(num_labels)
    weights = find_weights_file(directory)
    tensors = read_safetensors_dir(directory)
    if dtype is None:
        floats = [a.dtype for a in tensors.values() if a.dtype.kind == "f"]
        dtype = np.result_type(*floats) if floats else np.dtype(np.float32)

    model = cls(config, dtype=dtype)
    try:
        report = load_hf_state_dict(model, tensors, where)
    except ValueError as exc:
        raise ValueError(f"{exc}\n  (file: {weights})") from None
    if report.initialised:
        warnings.warn(f"{where}: {len(report.initialised)} parameters are not in {weights} "
                      f"and keep their fresh initialisation: "
                      f"{', '.join(report.initialised)}. Train the model before using it.",
                      stacklevel=3)
    if report.unused:
        warnings.warn(f"{where}: {len(report.unused)} tensors of {weights} are not used by "
                      f"{cls.__name__}: {', '.join(report.unused)}", stacklevel=3)
    return model.eval()


def _write_text_atomically(path: Path, text: str) -> None:
    """Write text to path via a temporary file and a rename (never a partial file)."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_pretrained(model, directory) -> None:
    """Write ``model`` as a Hugging Face directory that transformers loads unchanged.

    model.safetensors holds the tensors transformers' own ``save_pretrained``
    writes for the matching class (tied weights once), in the model's dtype;
    config.json holds the config with "model_type", "architectures" and
    "dtype". Both files are written atomically.
    """
    where = f"{type(model).__name__}.save_pretrained"
    architecture, _, _ = _architecture(model, where)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{where}: {directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", hf_state_dict(model),
                      metadata={"format": "pt"})    # transformers checks the format tag
    config = model.config.to_dict(architecture)
    config["dtype"] = str(model.dtype)              # transformers 5 loads in this dtype
    _write_text_atomically(directory / CONFIG_FILE,
                           json.dumps(config, indent=2, sort_keys=True) + "\n")
