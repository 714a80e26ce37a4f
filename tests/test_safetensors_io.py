"""Tests of the safetensors reader and writer.

Round trips for every dtype and shape, agreement with the reference
`safetensors` package (bytes and values), every kind of malformed file giving
a ValueError that names the file, atomic writes, pickle refusal, shards.
"""

import json
import os
import tempfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import assume, given

from scratchlm import safetensors_io
from scratchlm.safetensors_io import (
    bfloat16_bits_to_float32,
    find_weights_file,
    read_safetensors,
    read_safetensors_dir,
    read_safetensors_metadata,
    write_safetensors,
)

# Every NumPy dtype the writer keeps, with its safetensors name.
NUMPY_DTYPES = {
    np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8", np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
}

def raw_file(path, header, buffer=b"", header_length=None):
    """Write a safetensors file by hand: length, JSON header (or raw bytes), buffer."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(head) if header_length is None else header_length
    Path(path).write_bytes(n.to_bytes(8, "little", signed=n < 0) + head + buffer)
    return path


def expected_read(array):
    """What read_safetensors(dtype=None) returns for an array written as is."""
    return array.astype(np.float32) if array.dtype == np.float16 else array


def assert_same_array(got, want):
    """Same dtype, same shape, same bytes (so NaN payloads and -0.0 count too)."""
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == np.asarray(want).tobytes()


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

names = st.text(max_size=8).filter(lambda s: s != "__metadata__")
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
arrays = st.sampled_from(list(NUMPY_DTYPES)).flatmap(
    lambda dtype: hnp.arrays(dtype, shapes))
metadata = st.none() | st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)


@given(st.dictionaries(names, arrays, max_size=5), metadata)
def test_round_trip_every_dtype_and_shape(tensors, meta):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.safetensors")
        write_safetensors(path, tensors, meta)
        got, got_meta = read_safetensors(path, return_metadata=True)
        assert os.listdir(d) == ["x.safetensors"]
        with np.errstate(over="ignore", invalid="ignore"):    # F64 -> float16 may overflow
            exact = read_safetensors(path, dtype=np.float16)
    assert got_meta == (meta or {})
    assert set(got) == set(tensors)
    for name, array in tensors.items():
        assert_same_array(got[name], expected_read(array))
        assert got[name].flags.writeable and got[name].flags.c_contiguous
        if array.dtype == np.float16:
            assert_same_array(exact[name], array)     # F16 read back as F16 is exact


def test_header_layout_follows_the_format(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"b": np.ones(3, np.float32), "a": np.zeros((), np.int64)},
                      {"format": "np"})
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0 and len(data) == 8 + n + 20
    header = json.loads(data[8:8 + n])
    assert list(header) == ["__metadata__", "a", "b"]          # I64 before F32
    assert header["a"] == {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}
    assert header["b"] == {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}
    assert data[8 + n:] == np.int64(0).tobytes() + np.ones(3, "<f4").tobytes()


def test_big_endian_and_strided_arrays_are_written_little_endian(tmp_path):
    x = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]      # big-endian, not contiguous
    write_safetensors(tmp_path / "m.safetensors", {"x": x})
    got = read_safetensors(tmp_path / "m.safetensors")["x"]
    assert got.dtype == np.float32 and np.array_equal(got, x)


def test_dtype_option_casts_floats_only(tmp_path):
    path = tmp_path / "m.safetensors"
    tensors = {"f16": np.array([1.5, -2.0], np.float16), "f32": np.array([0.1], np.float32),
               "f64": np.array([0.1]), "i": np.array([3], np.int32), "b": np.array([True])}
    write_safetensors(path, tensors)
    kept = read_safetensors(path)
    assert {k: v.dtype for k, v in kept.items()} == {
        "f16": np.float32, "f32": np.float32, "f64": np.float64, "i": np.int32, "b": np.bool_}
    for dtype in ["float64", np.float32, np.dtype("float16")]:
        cast = read_safetensors(path, dtype=dtype)
        for name in ["f16", "f32", "f64"]:
            assert_same_array(cast[name], tensors[name].astype(dtype))
        assert_same_array(cast["i"], tensors["i"])
        assert_same_array(cast["b"], tensors["b"])
    with pytest.raises(ValueError, match="floating"):
        read_safetensors(path, dtype="int32")
    with pytest.raises(TypeError, match="dtype"):
        read_safetensors(path, dtype="not a dtype")


def test_bfloat16_is_widened_exactly(tmp_path):
    # float32 values whose low 16 bits are zero are exactly bfloat16 values.
    values = np.array([1.0, -2.5, 0.0, -0.0, np.inf, -np.inf, 3.0e38, 1e-40, np.nan],
                      np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    values = (bits.astype(np.uint32) << 16).view(np.float32)
    path = raw_file(tmp_path / "bf16.safetensors",
                    {"w": {"dtype": "BF16", "shape": [9], "data_offsets": [0, 18]}},
                    bits.tobytes())
    assert_same_array(read_safetensors(path)["w"], values)
    assert_same_array(read_safetensors(path, dtype="float64")["w"], values.astype(np.float64))
    scalar = bfloat16_bits_to_float32(np.array(0x3F80, np.uint16))
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar == 1.0


def test_metadata_alone(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"x": np.zeros(2)}, {"format": "np", "note": "ü"})
    assert read_safetensors_metadata(path) == {"format": "np", "note": "ü"}
    write_safetensors(path, {"x": np.zeros(2)})
    assert read_safetensors_metadata(path) == {}
    raw_file(path, {"__metadata__": None})               # null: allowed, as absent
    assert read_safetensors_metadata(path) == {}


def test_arrays_are_independent_of_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"x": np.arange(4.0), "y": np.arange(3)})
    got = read_safetensors(path)
    os.remove(path)                                    # nothing holds the file
    for array in got.values():
        assert not isinstance(array, np.memmap) and array.flags.writeable
    got["x"][0] = 7.0
    assert got["x"][0] == 7.0 and got["y"].tolist() == [0, 1, 2]


@pytest.mark.gpu
def test_cupy_arrays_are_written(tmp_path):
    cupy = pytest.importorskip("cupy")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_safetensors(tmp_path / "m.safetensors", {"x": cupy.asarray(x)})
    assert_same_array(read_safetensors(tmp_path / "m.safetensors")["x"], x)


# ---------------------------------------------------------------------------
# The reference implementation
# ---------------------------------------------------------------------------

REFERENCE_DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32,
                    np.int16, np.int8, np.uint8, np.bool_]


def reference_tensors(seed=0):
    rng = np.random.default_rng(seed)
    tensors = {}
    for dtype in REFERENCE_DTYPES:
        name = np.dtype(dtype).name
        tensors[name] = (rng.standard_normal((3, 4)) * 50).astype(dtype)
    tensors["scalar"] = np.array(np.pi)
    tensors["empty"] = np.zeros((0, 5), np.float32)
    return tensors


@pytest.mark.reference
def test_reads_files_written_by_the_reference(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = reference_tensors()
    path = str(tmp_path / "ref.safetensors")
    st_numpy.save_file(tensors, path, metadata={"format": "np"})
    got, meta = read_safetensors(path, return_metadata=True)
    assert meta == {"format": "np"}
    assert set(got) == set(tensors)
    for name, array in tensors.items():
        assert_same_array(got[name], expected_read(array))
    assert_same_array(read_safetensors(path, dtype=np.float16)["float16"], tensors["float16"])


@pytest.mark.reference
def test_reference_reads_our_files(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = reference_tensors(seed=1)
    path = str(tmp_path / "ours.safetensors")
    write_safetensors(path, tensors, {"format": "np"})
    loaded = st_numpy.load_file(path)
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert_same_array(loaded[name], array)


@pytest.mark.reference
@given(st.dictionaries(names, arrays, max_size=4),
       st.none() | st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=1))
def test_bytes_equal_the_reference(tensors, meta):
    # At most one metadata key: the reference keeps metadata in a hash map,
    # so with several keys its order in the header varies from run to run.
    # No tensors with empty metadata: the reference writes '{},"__metadata__":{}}',
    # which is not JSON and which it cannot read back itself.
    assume(tensors or meta != {})
    st_numpy = pytest.importorskip("safetensors.numpy")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.safetensors")
        write_safetensors(path, tensors, meta)
        assert Path(path).read_bytes() == st_numpy.save(tensors, metadata=meta)


@pytest.mark.reference
def test_bfloat16_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(4, 7, generator=gen) * 1e3).to(torch.bfloat16)
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40],
                            dtype=torch.bfloat16)
    path = str(tmp_path / "bf16.safetensors")
    st_torch.save_file({"w": w, "specials": specials, "h": w.half()}, path)
    got = read_safetensors(path)
    for name, t in [("w", w), ("specials", specials), ("h", w.half())]:
        assert_same_array(got[name], t.float().numpy())   # bit for bit, NaN included


# ---------------------------------------------------------------------------
# Malformed files
# ---------------------------------------------------------------------------

GOOD = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
EIGHT = bytes(8)

MALFORMED = {
    "empty file": (b"", None, b"", "too short"),
    "short file": (b"", None, b"\x01\x02\x03", "too short"),
    "header longer than file": ({"w": GOOD}, 10_000, EIGHT, "header length 10000"),
    "negative header length": ({"w": GOOD}, -1, EIGHT, "exceeds"),
    "header not utf-8": (b"\xff\xfe{}", None, b"", "not UTF-8"),
    "bad json": (b'{"w": {"dtype": "F32",', None, EIGHT, "not valid JSON"),
    "json too deep": (b"[" * 100_000, None, b"", "not valid JSON"),
    "json not an object": (b"[1, 2]", None, b"", "must be a JSON object"),
    "duplicate names": (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
                        b' "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
                        None, EIGHT, "the key 'w' twice"),
    "entry not an object": ({"w": [1, 2]}, None, b"", "must be an object"),
    "missing field": ({"w": {"dtype": "F32", "shape": [2]}}, None, EIGHT, "missing"),
    "extra field": ({"w": dict(GOOD, offsets=[0, 8])}, None, EIGHT, "unexpected"),
    "unknown dtype": ({"w": dict(GOOD, dtype="Q7")}, None, EIGHT, "unknown dtype 'Q7'"),
    "negative dim": ({"w": dict(GOOD, shape=[-2])}, None, EIGHT, "shape"),
    "bool dim": ({"w": dict(GOOD, shape=[True, 2])}, None, EIGHT, "shape"),
    "float dim": ({"w": dict(GOOD, shape=[2.0])}, None, EIGHT, "shape"),
    "huge zero-size shape": ({"w": dict(GOOD, shape=[0, 2**70], data_offsets=[0, 0])},
                             None, b"", "shape"),
    "offsets reversed": ({"w": dict(GOOD, data_offsets=[8, 0])}, None, EIGHT, "data_offsets"),
    "offsets not a pair": ({"w": dict(GOOD, data_offsets=[0])}, None, EIGHT, "data_offsets"),
    "size not shape": ({"w": dict(GOOD, shape=[3])}, None, EIGHT, "needs 12 bytes"),
    "offsets past the end": ({"w": dict(GOOD, shape=[4], data_offsets=[0, 16])}, None,
                             EIGHT, "truncated, expected 16 bytes of tensor data, found 8"),
    "overlap": ({"a": GOOD, "b": dict(GOOD, shape=[1], data_offsets=[4, 8])}, None, EIGHT,
                "overlap"),
    "overlap with empty tensor": ({"a": GOOD, "b": dict(GOOD, shape=[0], data_offsets=[4, 4])},
                                  None, EIGHT, "overlap"),
    "gap": ({"a": dict(GOOD, shape=[1], data_offsets=[4, 8])}, None, EIGHT, "gap"),
    "stray bytes": ({"w": GOOD}, None, EIGHT + b"!", "stray bytes"),
    "metadata not an object": ({"__metadata__": "x"}, None, b"", "__metadata__"),
    "metadata value not a string": ({"__metadata__": {"step": 3}}, None, b"", "'step'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_raises_value_error_naming_it(tmp_path, case):
    header, header_length, buffer, message = MALFORMED[case]
    if case in ("empty file", "short file"):
        path = tmp_path / "bad.safetensors"
        path.write_bytes(buffer)
    else:
        path = raw_file(tmp_path / "bad.safetensors", header, buffer, header_length)
    # Only read_safetensors makes arrays, so only it can find a shape NumPy refuses.
    readers = [read_safetensors] if case == "huge zero-size shape" else [
        read_safetensors, read_safetensors_metadata]
    for read in readers:
        with pytest.raises(ValueError, match="bad.safetensors") as info:
            read(path)
        assert message in str(info.value)


def small_valid_file(path):
    write_safetensors(path, {"a": np.arange(3, dtype=np.float32), "b": np.array([1, -1], np.int16),
                             "c": np.zeros((0, 2)), "d": np.array(True)}, {"k": "v"})
    return Path(path).read_bytes()


def test_every_truncation_raises_value_error(tmp_path):
    path = tmp_path / "cut.safetensors"
    data = small_valid_file(path)
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.safetensors"):
            read_safetensors(path)


@given(st.data())
def test_damaged_file_gives_data_or_value_error(data):
    # Cut the file anywhere and flip bytes in its length field and header:
    # the reader returns arrays or raises ValueError, nothing else.
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.safetensors"
        original = small_valid_file(path)
        header_end = 8 + int.from_bytes(original[:8], "little")
        damaged = bytearray(original[:data.draw(st.integers(0, len(original)))])
        for _ in range(data.draw(st.integers(0, 4))):
            if damaged:
                i = data.draw(st.integers(0, min(header_end, len(damaged)) - 1))
                damaged[i] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(damaged))
        try:
            got = read_safetensors(path)
        except ValueError as exc:
            assert str(path) in str(exc)
            return
    assert all(isinstance(a, np.ndarray) for a in got.values())
    if bytes(damaged) == original:
        assert got["b"].tolist() == [1, -1]


# ---------------------------------------------------------------------------
# Writing: bad input, atomicity
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("tensors, metadata, error, message", [
    ({1: np.zeros(2)}, None, TypeError, "names must be strings; got 1"),
    ({"__metadata__": np.zeros(2)}, None, ValueError, "reserved"),
    ({"z": np.zeros(2, np.complex64)}, None, TypeError, "'z' has dtype complex64"),
    ({"o": np.array([None, 1])}, None, TypeError, "'o' has dtype object"),
    ({"s": np.array(["a"])}, None, TypeError, "'s' has dtype <U1"),
    ({"l": [1.0, 2.0]}, None, TypeError, "'l' must be a NumPy or CuPy array"),
    ({"\ud800": np.zeros(1)}, None, ValueError, "UTF-8"),
    ({"x": np.zeros(2)}, {"step": 3}, TypeError, "'step' is int"),
    ({"x": np.zeros(2)}, {4: "v"}, TypeError, "metadata keys must be strings"),
    ({"x": np.zeros(2)}, ["format"], TypeError, "metadata must be a dict"),
    ([np.zeros(2)], None, TypeError, "tensors must be a dict"),
])
def test_bad_input_to_writer(tmp_path, tensors, metadata, error, message):
    path = tmp_path / "m.safetensors"
    with pytest.raises(error, match="write_safetensors") as info:
        write_safetensors(path, tensors, metadata)
    assert message in str(info.value)
    assert os.listdir(tmp_path) == []                 # nothing written


class FailingFile:
    """A file that fails after its first write, as a full disk would."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, b):
        self.writes += 1
        if self.writes > 1:
            raise OSError("No space left on device")
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("failure", ["write", "fsync", "replace"])
def test_failed_write_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"old": np.ones(3)})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(f"simulated {failure} failure")

    if failure == "write":
        monkeypatch.setattr(safetensors_io, "open",
                            lambda *a, **k: FailingFile(open(*a, **k)), raising=False)
    else:
        monkeypatch.setattr(safetensors_io.os, failure, fail)
    with pytest.raises(OSError):
        write_safetensors(path, {"new": np.zeros(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]
    assert list(read_safetensors(path)) == ["old"]


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"old": np.ones(3)})
    write_safetensors(path, {"new": np.zeros(2, np.int8)})
    assert list(read_safetensors(path)) == ["new"]
    assert os.listdir(tmp_path) == ["m.safetensors"]


# ---------------------------------------------------------------------------
# Checkpoint directories
# ---------------------------------------------------------------------------

def test_finds_single_file_even_beside_pickle(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", {"x": np.zeros(2)})
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    assert find_weights_file(tmp_path) == tmp_path / "model.safetensors"
    assert list(read_safetensors_dir(tmp_path)) == ["x"]


@pytest.mark.parametrize("config, expected_class", [
    ({"architectures": ["GPT2LMHeadModel"]}, "GPT2LMHeadModel"),
    ({"architectures": ["x; import os"]}, "AutoModel"),      # never put code in the command
    (None, "AutoModel"),
])
def test_pickle_checkpoint_is_refused_with_conversion_command(tmp_path, config, expected_class):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    for find in (find_weights_file, read_safetensors_dir):
        with pytest.raises(ValueError) as info:
            find(tmp_path)
        message = str(info.value)
        assert str(tmp_path) in message and "pytorch_model.bin" in message
        assert "pickle" in message and "execute" in message
        assert (f"from transformers import {expected_class}; {expected_class}.from_pretrained("
                in message)
        assert "safe_serialization=True" in message
    assert "import os" not in message


@pytest.mark.parametrize("name", ["weights.pt", "model.pth", "last.ckpt"])
def test_other_pickle_suffixes_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="pickle"):
        find_weights_file(tmp_path)


def test_no_weights_lists_directory(tmp_path):
    with pytest.raises(ValueError, match="contains: nothing"):
        find_weights_file(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="contains: config.json, tf_model.h5"):
        find_weights_file(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        find_weights_file(tmp_path / "config.json")


def write_shards(directory, shards, weight_map=None):
    """shards: {file name: {tensor name: array}}; the index maps each tensor to its file."""
    for shard, tensors in shards.items():
        write_safetensors(directory / shard, tensors)
    if weight_map is None:
        weight_map = {name: shard for shard, tensors in shards.items() for name in tensors}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))


SHARDS = {"model-00001-of-00002.safetensors": {"a": np.arange(3.0), "b": np.ones(2, np.float16)},
          "model-00002-of-00002.safetensors": {"c": np.array([7], np.int64)}}


def test_sharded_checkpoint_is_merged(tmp_path):
    write_shards(tmp_path, SHARDS)
    assert find_weights_file(tmp_path) == tmp_path / "model.safetensors.index.json"
    got = read_safetensors_dir(tmp_path)
    assert set(got) == {"a", "b", "c"}
    assert_same_array(got["a"], np.arange(3.0))
    assert_same_array(got["b"], np.ones(2, np.float32))
    assert_same_array(got["c"], np.array([7], np.int64))
    assert read_safetensors_dir(tmp_path, dtype="float64")["b"].dtype == np.float64


@pytest.mark.parametrize("weight_map, message", [
    ({"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"},
     "'b' is in model-00001-of-00002.safetensors but not in the index"),
    ({"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors"},
     "'d' is listed in model-00002-of-00002.safetensors but not found there"),
    ({"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00001-of-00002.safetensors", "x": "model-00002-of-00002.safetensors"},
     "'c' is listed in model-00001-of-00002.safetensors but found in"),
    ({"a": "../model-00001-of-00002.safetensors"}, "expected a file name"),
    ({"a": "/etc/passwd"}, "expected a file name"),
    ({"a": "model-00009-of-00009.safetensors"}, "not in"),
])
def test_inconsistent_shards_are_reported(tmp_path, weight_map, message):
    write_shards(tmp_path, SHARDS, weight_map)
    with pytest.raises(ValueError, match="index.json") as info:
        read_safetensors_dir(tmp_path)
    assert message in str(info.value)


def test_tensor_in_two_shards_is_reported(tmp_path):
    write_shards(tmp_path, {"s1.safetensors": {"a": np.zeros(1)},
                            "s2.safetensors": {"a": np.ones(1)}},
                 {"a": "s1.safetensors", "b": "s2.safetensors"})
    with pytest.raises(ValueError, match="'a' is in both s1.safetensors and s2.safetensors"):
        read_safetensors_dir(tmp_path)


@pytest.mark.parametrize("index", ["{not json", "[]", '{"weight_map": 3}'])
def test_bad_index_is_reported(tmp_path, index):
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ValueError, match="index.json"):
        read_safetensors_dir(tmp_path)
