"""Safetensors files, read and written with NumPy and the standard library only.

A safetensors file (https://huggingface.co/docs/safetensors) has three parts:

    bytes [0, 8)          n, the header length: an unsigned 64-bit little-endian integer
    bytes [8, 8 + n)      the header: UTF-8 JSON, padded with spaces
    bytes [8 + n, end)    the byte buffer: every tensor's raw little-endian data

The header is one JSON object with an entry per tensor,

    "h.0.attn.c_attn.weight": {"dtype": "F32", "shape": [768, 2304],
                               "data_offsets": [0, 7077888]}

where data_offsets [begin, end) count bytes from the start of the buffer and

    end - begin = prod(shape) * itemsize(dtype)

The tensors tile the buffer exactly: no gaps, no overlaps, nothing left over.
An optional "__metadata__" entry maps strings to strings ({"format": "pt"}).

Reading a safetensors file runs no code. PyTorch's pickle checkpoints
(pytorch_model.bin) can run arbitrary code when loaded, so they are refused,
with the command that converts them.

Every malformed file raises ValueError naming the file and what is wrong;
OSError is left for files that cannot be opened at all.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from scratchlm.backend import to_numpy

# safetensors dtype name -> the little-endian NumPy dtype its bytes are read as.
# The order is the reference implementation's; its writer puts tensors of later
# dtypes first (widest alignment first) and write_safetensors does the same.
DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # NumPy has no bfloat16: read the bits, then widen
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")

# NumPy (kind, itemsize) -> safetensors name, for writing. BF16 is only read.
_NAME_OF_NUMPY = {(dt.kind, dt.itemsize): name
                  for name, dt in DTYPES.items() if name != "BF16"}
_WRITE_RANK = {name: rank for rank, name in enumerate(DTYPES)}

METADATA_KEY = "__metadata__"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"  # a sharded checkpoint
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")

__all__ = [
    "DTYPES", "WEIGHTS_FILE", "WEIGHTS_INDEX",
    "bfloat16_bits_to_float32", "find_weights_file", "read_safetensors",
    "read_safetensors_dir", "read_safetensors_metadata", "write_safetensors",
]


class TensorEntry(NamedTuple):
    """One tensor's header entry, checked."""
    name: str
    dtype: str                # safetensors name, "F32"
    shape: tuple[int, ...]
    begin: int                # its bytes are buffer[begin:end]
    end: int


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs):
    """json.loads hook: a JSON object, refusing a key given twice.

    Plain json.loads keeps the last of two equal keys; here that would hide
    a tensor silently.
    """
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _is_count(x) -> bool:
    """A JSON integer >= 0 (bool is an int subclass in Python, so exclude it)."""
    return type(x) is int and x >= 0


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def _read_header(f, path, where):
    """Read and check the header of the open file f.

    Returns: entries (list of TensorEntry, in header order), metadata (dict,
    {} when absent) and buffer_start, the file offset of the byte buffer.
    Checks everything that can be checked without reading tensor data,
    including that the file is long enough to hold it.
    """
    def bad(what):
        return ValueError(f"{where}: {path}: {what}")

    file_size = os.fstat(f.fileno()).st_size
    if file_size < 8:
        raise bad(f"file is {file_size} bytes, too short for the 8-byte header "
                  "length; truncated or not a safetensors file")
    n = int.from_bytes(f.read(8), "little")                 # header length, u64 LE
    if n > file_size - 8:
        raise bad(f"header length {n} exceeds the {file_size - 8} bytes that follow "
                  "it; truncated or not a safetensors file")
    try:
        header = json.loads(f.read(n).decode("utf-8"),
                            object_pairs_hook=_object_without_duplicates)
    except _DuplicateKey as exc:
        raise bad(f"header has the key {exc.args[0]!r} twice") from None
    except UnicodeDecodeError as exc:
        raise bad(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:             # JSONDecodeError is a ValueError
        raise bad(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad(f"header must be a JSON object; got {type(header).__name__}")

    metadata = header.pop(METADATA_KEY, None)
    if metadata is None:                      # absent, or null as the reference allows
        metadata = {}
    if not isinstance(metadata, dict):
        raise bad(f"{METADATA_KEY} must be an object; got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise bad(f"{METADATA_KEY} values must be strings; {key!r} is "
                      f"{type(value).__name__}")

    entries = [_check_entry(name, info, bad) for name, info in header.items()]

    # The tensors, taken in buffer order, must tile [0, total) exactly.
    total = 0
    previous = None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin < total:
            raise bad(f"tensors {previous.name!r} [{previous.begin}, {previous.end}) "
                      f"and {e.name!r} [{e.begin}, {e.end}) overlap")
        if e.begin > total:
            raise bad(f"bytes [{total}, {e.begin}) of the buffer belong to no tensor "
                      f"(gap before {e.name!r}); offsets must be contiguous")
        total, previous = e.end, e
    buffer_start = 8 + n
    found = file_size - buffer_start
    if found < total:
        raise bad(f"truncated, expected {total} bytes of tensor data, found {found}")
    if found > total:
        raise bad(f"{found - total} stray bytes after the last tensor: the header "
                  f"accounts for {total} bytes of tensor data, the file holds {found}")
    return entries, metadata, buffer_start


def _check_entry(name, info, bad) -> TensorEntry:
    """Check one header entry: its fields, and that its size fits its shape."""
    fields = {"dtype", "shape", "data_offsets"}
    if not isinstance(info, dict):
        raise bad(f"entry for tensor {name!r} must be an object; got {type(info).__name__}")
    if set(info) != fields:
        missing, extra = sorted(fields - set(info)), sorted(set(info) - fields)
        raise bad(f"entry for tensor {name!r} must have exactly the fields "
                  f"{sorted(fields)}; missing {missing}, unexpected {extra}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise bad(f"tensor {name!r} has unknown dtype {dtype!r}; "
                  f"supported: {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"tensor {name!r}: shape must be a list of integers >= 0; got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
        raise bad(f"tensor {name!r}: data_offsets must be [begin, end] with "
                  f"0 <= begin <= end; got {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPES[dtype].itemsize
    if end - begin != expected:
        raise bad(f"tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes, "
                  f"but data_offsets {offsets} span {end - begin}")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def bfloat16_bits_to_float32(bits):
    """Widen bfloat16 values, given as their uint16 bit patterns, to float32.

    bfloat16 is the top half of a float32 (sign, 8 exponent bits, 7 mantissa
    bits), so the widening is exact: put the 16 bits in the high half of a
    uint32 and read that as float32.
        f32_bits = bf16_bits << 16
    Shapes: bits (...) uint16 -> (...) float32
    """
    wide = np.asarray(bits).astype(np.uint32)
    wide <<= 16                       # in place: stays an array even when 0-d
    return wide.view(np.float32)


def _check_read_dtype(dtype, where):
    """None, or the floating NumPy dtype that float tensors are cast to."""
    if dtype is None:
        return None
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be None or a NumPy floating dtype "
                        f"such as 'float32'; got {dtype!r}") from None
    if dtype.kind != "f":
        raise ValueError(f"{where}: dtype must be a floating dtype (float16, float32, "
                         f"float64); got {dtype}")
    return dtype


def _as_requested(stored, dtype_name, dtype):
    """Turn a tensor as stored into the array returned to the caller.

    Integers and bool are returned as stored. Floats: with dtype None, F32 and
    F64 keep their precision and F16/BF16 are widened to float32 (exact);
    otherwise they are cast to dtype.
    """
    if dtype_name == "BF16":
        array = bfloat16_bits_to_float32(stored)
    else:   # to native byte order: a no-op on little-endian hosts
        array = stored.astype(stored.dtype.newbyteorder("="), copy=False)
    if dtype_name in FLOAT_DTYPES:
        if dtype is None:
            dtype = np.float32 if dtype_name in ("F16", "BF16") else array.dtype
        array = array.astype(dtype, copy=False)
    return array


def read_safetensors(path, dtype=None, *, return_metadata=False):
    """Read every tensor of a safetensors file into NumPy arrays.

    dtype: None keeps F32/F64 as stored and widens F16/BF16 to float32; a
        floating dtype (anything numpy.dtype() accepts, "float64", np.float32)
        casts every float tensor to it. Integer and bool tensors are never cast.
    return_metadata: also return the "__metadata__" dict ({} when absent).

    Each tensor is read straight from the file into a fresh array of its own,
    so the arrays are writable and aligned and nothing keeps the file open
    (a memory map would pin the file and give read-only views).

    Returns: {name: array}, or ({name: array}, metadata).
    Raises: ValueError naming the file for anything malformed.
    """
    where = "read_safetensors"
    dtype = _check_read_dtype(dtype, where)
    tensors = {}
    with open(path, "rb") as f:
        entries, metadata, buffer_start = _read_header(f, path, where)
        for e in entries:
            try:
                stored = np.empty(e.shape, DTYPES[e.dtype])
            except ValueError as exc:   # e.g. shape [0, 2**70]: empty, yet too big for NumPy
                raise ValueError(f"{where}: {path}: tensor {e.name!r}: shape {list(e.shape)} "
                                 f"is not possible for a NumPy array ({exc})") from None
            raw = stored.reshape(-1).view(np.uint8)    # the same memory, as bytes
            f.seek(buffer_start + e.begin)
            if f.readinto(raw) != raw.size:           # the file shrank under us
                raise ValueError(f"{where}: {path}: truncated while reading {e.name!r}")
            tensors[e.name] = _as_requested(stored, e.dtype, dtype)
    return (tensors, metadata) if return_metadata else tensors


def read_safetensors_metadata(path) -> dict[str, str]:
    """The "__metadata__" dict of a safetensors file ({} when absent).

    Reads and checks only the header, never the tensor data.
    """
    with open(path, "rb") as f:
        _, metadata, _ = _read_header(f, path, "read_safetensors_metadata")
    return metadata


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def _check_tensors(tensors, where):
    """{name: (safetensors dtype name, C-contiguous little-endian NumPy array)}."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"{where}: tensors must be a dict of name -> array; "
                        f"got {type(tensors).__name__}")
    checked = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: tensor names must be strings; got {name!r} "
                            f"({type(name).__name__})")
        _check_utf8(name, f"{where}: tensor name {name!r}")
        if name == METADATA_KEY:
            raise ValueError(f"{where}: {METADATA_KEY!r} is reserved for metadata and "
                             "cannot name a tensor; pass metadata=... instead")
        array = to_numpy(value)                       # CuPy arrays come to the host
        if not isinstance(array, (np.ndarray, np.generic)):
            raise TypeError(f"{where}: tensor {name!r} must be a NumPy or CuPy array; "
                            f"got {type(value).__name__}")
        key = (array.dtype.kind, array.dtype.itemsize)
        if key not in _NAME_OF_NUMPY:
            raise TypeError(f"{where}: tensor {name!r} has dtype {array.dtype}, which "
                            "safetensors cannot hold; supported: bool, uint8-64, "
                            "int8-64, float16, float32, float64")
        little = array.dtype.newbyteorder("<")        # the file is little-endian
        checked[name] = (_NAME_OF_NUMPY[key], np.asarray(array, dtype=little, order="C"))
    return checked


def _check_metadata(metadata, where):
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"{where}: metadata must be a dict of str -> str or None; "
                        f"got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: metadata keys must be strings; got {key!r}")
        if not isinstance(value, str):
            raise TypeError(f"{where}: metadata values must be strings; {key!r} is "
                            f"{type(value).__name__} ({value!r}); convert it with str() "
                            "or json.dumps()")
        _check_utf8(key, f"{where}: metadata key {key!r}")
        _check_utf8(value, f"{where}: metadata value of {key!r}")
    return dict(metadata)


def _check_utf8(text, what):
    """JSON in the file is UTF-8; a lone surrogate ('\\ud800') has no encoding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} cannot be encoded as UTF-8") from None


def write_safetensors(path, tensors, metadata=None) -> None:
    """Write a dict of arrays to path as a safetensors file, atomically.

    tensors: {name: NumPy or CuPy array}. Each keeps its dtype (float64 is
        written as F64, float32 as F32, float16 as F16; integers and bool too).
    metadata: None, or {str: str} stored as "__metadata__".

    Layout, as the reference implementation writes it: the header is compact
    JSON ("__metadata__" first), padded with spaces to a multiple of 8 bytes
    so the buffer starts aligned; tensors follow in order of dtype, widest
    first, then of name.

    The bytes go to a temporary file beside path, are flushed to disk
    (os.fsync), and only then renamed onto path (os.replace, atomic), so path
    holds either its old contents or the complete new file, never a part.
    """
    where = "write_safetensors"
    arrays = _check_tensors(tensors, where)
    metadata = _check_metadata(metadata, where)

    order = sorted(arrays, key=lambda name: (-_WRITE_RANK[arrays[name][0]], name))
    header = {} if metadata is None else {METADATA_KEY: metadata}
    offset = 0
    for name in order:
        dtype_name, array = arrays[name]
        header[name] = {"dtype": dtype_name, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # pad: the buffer starts 8-byte aligned

    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    f = open(temp, "xb")                     # "x": never reuse an existing file
    try:
        with f:
            f.write(len(header_bytes).to_bytes(8, "little"))
            f.write(header_bytes)
            for name in order:
                f.write(arrays[name][1].tobytes())
            f.flush()
            os.fsync(f.fileno())             # the data is on disk before the rename
        os.replace(temp, path)
    except BaseException:                    # also KeyboardInterrupt: never leave the temp file
        temp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# Checkpoint directories
# ---------------------------------------------------------------------------

def _conversion_command(directory: Path) -> str:
    """A shell command that rewrites a pickle checkpoint in directory as safetensors.

    The class comes from config.json's "architectures" when it names one, so
    that every tensor (task heads too) is kept; AutoModel otherwise.
    """
    cls = "AutoModel"
    try:
        architectures = json.loads((directory / "config.json").read_text("utf-8"))["architectures"]
        if isinstance(architectures[0], str) and architectures[0].isidentifier():
            cls = architectures[0]           # an identifier: safe to put in a command
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    d = json.dumps(str(directory))          # a double-quoted Python string literal
    code = (f"from transformers import {cls}; "
            f"{cls}.from_pretrained({d}).save_pretrained({d}, safe_serialization=True)")
    return f"python -c {shlex.quote(code)}"


def find_weights_file(directory) -> Path:
    """The weights file of a Hugging Face model directory.

    Returns directory/model.safetensors, or directory/model.safetensors.index.json
    for a sharded checkpoint (read it with read_safetensors_dir).
    Raises ValueError when only pickle checkpoints (*.bin, *.pt, *.pth, *.ckpt)
    are there, since loading one can execute code, with the command that
    converts them; and when there are no weights at all, listing what is there.
    """
    where = "find_weights_file"
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{where}: {directory} is not a directory")
    for name in (WEIGHTS_FILE, WEIGHTS_INDEX):
        if (directory / name).is_file():
            return directory / name
    contents = sorted(p.name for p in directory.iterdir())
    pickles = [name for name in contents if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ValueError(
            f"{where}: {directory} holds PyTorch pickle checkpoints ({', '.join(pickles)}) "
            f"but no {WEIGHTS_FILE}. Pickle files are not read: loading one can execute "
            "arbitrary code. If you trust their source, convert them once with:\n"
            f"    {_conversion_command(directory)}")
    raise ValueError(f"{where}: no {WEIGHTS_FILE} or {WEIGHTS_INDEX} in {directory}; "
                     f"it contains: {', '.join(contents) if contents else 'nothing'}")


def _read_weight_map(index_path: Path) -> dict[str, str]:
    """The index's weight_map, {tensor name: shard file name}, checked."""
    where = "read_safetensors_dir"
    try:
        index = json.loads(index_path.read_text("utf-8"))
    except (ValueError, RecursionError) as exc:   # bad UTF-8 or bad JSON
        raise ValueError(f"{where}: {index_path}: not valid JSON ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise ValueError(f"{where}: {index_path}: expected an object with a "
                         "\"weight_map\" object of tensor name -> shard file")
    for name, shard in weight_map.items():
        # A bare file name in the same directory: "../x" could read any file.
        if not isinstance(shard, str) or shard in ("", ".", "..") or Path(shard).name != shard:
            raise ValueError(f"{where}: {index_path}: tensor {name!r} maps to {shard!r}; "
                             "expected a file name in the same directory")
    return weight_map


def read_safetensors_dir(directory, dtype=None) -> dict:
    """Read all weights of a Hugging Face model directory, sharded or not.

    A single model.safetensors is read with read_safetensors. A sharded
    checkpoint lists its shards in model.safetensors.index.json, as
        {"weight_map": {"h.0.attn.c_attn.weight": "model-00001-of-00002.safetensors", ...}}
    and every shard is read and merged; the shards must hold exactly the
    tensors the index assigns to them, and all disagreements are reported
    together.
    dtype: as for read_safetensors.
    Returns: {name: array}.
    """
    where = "read_safetensors_dir"
    weights = find_weights_file(directory)
    if weights.name == WEIGHTS_FILE:
        return read_safetensors(weights, dtype)

    directory = weights.parent
    weight_map = _read_weight_map(weights)
    shards = list(dict.fromkeys(weight_map.values()))    # unique, in index order
    absent = [shard for shard in shards if not (directory / shard).is_file()]
    if absent:
        raise ValueError(f"{where}: {weights} lists shards that are not in {directory}: "
                         f"{', '.join(absent)}")

    tensors, found_in = {}, {}
    problems = []
    for shard in shards:
        for name, array in read_safetensors(directory / shard, dtype).items():
            if name in found_in:
                problems.append(f"{name!r} is in both {found_in[name]} and {shard}")
                continue
            tensors[name], found_in[name] = array, shard
    for name, shard in weight_map.items():
        if name not in found_in:
            problems.append(f"{name!r} is listed in {shard} but not found there")
        elif found_in[name] != shard:
            problems.append(f"{name!r} is listed in {shard} but found in {found_in[name]}")
    for name in found_in.keys() - weight_map.keys():
        problems.append(f"{name!r} is in {found_in[name]} but not in the index")
    if problems:
        raise ValueError(f"{where}: {weights} and its shards disagree:\n  "
                         + "\n  ".join(sorted(problems)))
    return tensors
