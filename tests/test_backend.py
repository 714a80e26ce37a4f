"""The array backend: the numpy/cupy switch, array-module lookup, erf and scatter_add."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import scratchlm
from scratchlm import backend
from scratchlm import functional as F
from strategies import arrays, shapes


@pytest.fixture(autouse=True)
def restore_backend(monkeypatch):
    """Every test leaves the backend state (and a cached cupy module) as it found it."""
    monkeypatch.setattr(backend, "_backend", backend._backend)
    monkeypatch.setattr(backend, "_cupy", backend._cupy)


class FakeCupyArray:
    """An object that looks like a CuPy array (its type lives in the cupy package)."""

    __module__ = "cupy._core.core"

    def __init__(self, data):
        self.data = np.asarray(data)
        self.shape = self.data.shape
        self.dtype = self.data.dtype

    def get(self):
        return self.data.copy()


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter with extra environment variables."""
    environ = {k: v for k, v in os.environ.items() if k != "SCRATCHLM_BACKEND"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=120)


# --- set_backend / get_backend -------------------------------------------------

def test_numpy_is_the_default_backend(monkeypatch):
    monkeypatch.delenv("SCRATCHLM_BACKEND", raising=False)
    monkeypatch.setattr(backend, "_backend", None)
    assert scratchlm.get_backend() == "numpy"
    assert backend.xp() is np
    assert isinstance(backend.default_rng(0), np.random.Generator)


@pytest.mark.parametrize("name", ["numpy", "NumPy", "NUMPY"])
def test_set_backend_numpy(name):
    scratchlm.set_backend(name)
    assert scratchlm.get_backend() == "numpy"
    assert backend.xp() is np and backend.xp("numpy") is np


@pytest.mark.parametrize("name", ["torch", "", "numpy ", "jax", None, 3, ["numpy"]])
def test_set_backend_rejects_unknown_names(name):
    scratchlm.set_backend("numpy")
    with pytest.raises(ValueError, match=r"set_backend: backend must be one of \('numpy', "
                                         r"'cupy'\); got"):
        scratchlm.set_backend(name)
    assert scratchlm.get_backend() == "numpy"           # unchanged


@pytest.mark.parametrize("call", [lambda: backend.xp("tpu"), lambda: backend.to_backend(
    np.ones(2), "tpu")])
def test_other_entry_points_reject_unknown_names(call):
    with pytest.raises(ValueError, match=r"backend must be one of"):
        call()


def test_asking_for_missing_cupy_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)      # makes `import cupy` fail here
    monkeypatch.setattr(backend, "_cupy", None)
    scratchlm.set_backend("numpy")
    with pytest.raises(RuntimeError, match=r"backend 'cupy' requested but CuPy is not "
                                           r"installed; install it with: pip install"):
        scratchlm.set_backend("cupy")
    assert scratchlm.get_backend() == "numpy"           # a failed switch changes nothing
    for call in (lambda: backend.xp("cupy"), lambda: backend.to_backend(np.ones(2), "cupy"),
                 lambda: backend.default_rng(0, "cupy")):
        with pytest.raises(RuntimeError, match="CuPy is not installed"):
            call()


@pytest.mark.parametrize("value, expected", [("numpy", "numpy"), ("NumPy", "numpy")])
def test_environment_variable_sets_the_default(value, expected):
    result = run_python("import scratchlm; print(scratchlm.get_backend())",
                        SCRATCHLM_BACKEND=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_environment_variable_with_an_unknown_name_is_a_clear_error():
    result = run_python("import scratchlm; scratchlm.get_backend()", SCRATCHLM_BACKEND="jax")
    assert result.returncode != 0
    assert "ValueError: SCRATCHLM_BACKEND: backend must be one of ('numpy', 'cupy'); " \
           "got 'jax'" in result.stderr


def test_environment_variable_cupy_imports_lazily_and_fails_clearly_without_it():
    code = ("import sys; sys.modules['cupy'] = None\n"       # as where CuPy is missing
            "import scratchlm, scratchlm.functional, scratchlm.gradcheck\n"
            "print('imported')\n"
            "scratchlm.get_backend()\n")
    result = run_python(code, SCRATCHLM_BACKEND="cupy")
    assert result.stdout.strip() == "imported"          # importing never asks for cupy
    assert "RuntimeError: backend 'cupy' requested but CuPy is not installed" in result.stderr


def test_importing_scratchlm_does_not_import_cupy():
    result = run_python("import sys, scratchlm, scratchlm.functional, scratchlm.gradcheck, "
                        "scratchlm.cli\nprint('cupy' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --- get_array_module, to_numpy, to_backend ------------------------------------

@pytest.mark.parametrize("args", [
    (np.ones(3),), (np.ones(3), None), (None,), (), (1.0, 2, None), (np.ones(2), 3.0, np.ones(1)),
])
def test_get_array_module_is_numpy_for_numpy_arrays_none_and_scalars(args):
    assert scratchlm.get_array_module(*args) is np


def test_get_array_module_refuses_numpy_and_cupy_together():
    with pytest.raises(TypeError, match=r"get_array_module: got numpy and cupy arrays together "
                                        r"\(numpy \(2,\), cupy \(3,\)\); move inputs"):
        scratchlm.get_array_module(np.ones(2), FakeCupyArray(np.ones(3)))


def test_ops_refuse_mixed_backends():
    q = np.ones((1, 1, 2, 2))
    with pytest.raises(TypeError, match="got numpy and cupy arrays together"):
        F.attention_forward(q, q, q, mask=FakeCupyArray(np.ones((1, 2), dtype=bool)))


def test_to_numpy_walks_nested_structures():
    a, b = np.arange(3.0), FakeCupyArray(np.ones((2, 2)))
    cache = F.LinearCache(FakeCupyArray(np.ones(4)), np.eye(2), True)
    nested = {"a": a, "list": [b, (b, 1.5)], "cache": cache, "none": None, "text": "x"}
    out = scratchlm.to_numpy(nested)
    assert out["a"] is a                                # numpy arrays pass through
    assert isinstance(out["list"], list) and isinstance(out["list"][1], tuple)
    for moved in (out["list"][0], out["list"][1][0]):
        assert isinstance(moved, np.ndarray)
        np.testing.assert_array_equal(moved, np.ones((2, 2)))
    assert out["list"][1][1] == 1.5 and out["none"] is None and out["text"] == "x"
    assert type(out["cache"]) is F.LinearCache          # a NamedTuple keeps its type
    assert isinstance(out["cache"].x, np.ndarray) and out["cache"].has_bias is True


def test_to_backend_numpy():
    a = np.ones(3)
    assert backend.to_backend(a, "numpy") is a
    np.testing.assert_array_equal(backend.to_backend([1, 2], "numpy"), [1, 2])
    moved = backend.to_backend(FakeCupyArray([1.0, 2.0]), "numpy")
    assert isinstance(moved, np.ndarray)
    assert backend.to_backend(None, "numpy") is None


def test_is_cupy_array():
    assert backend.is_cupy_array(FakeCupyArray([1.0]))
    assert not backend.is_cupy_array(np.ones(1))
    assert not backend.is_cupy_array(None)


# --- erf and scatter_add -------------------------------------------------------

@given(arrays((64,), bound=6.0))
def test_erf_matches_math_erf(x):
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(backend.erf(x), expected, rtol=0, atol=1e-15)


def test_erf_on_a_grid_and_at_the_ends():
    x = np.concatenate([np.linspace(-6, 6, 20001), [-40.0, -1e-300, 0.0, 1e-300, 40.0]])
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(backend.erf(x), expected, rtol=0, atol=1e-15)
    assert backend.erf(np.array([-40.0, 40.0])).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=shapes(0, 3))
def test_erf_keeps_dtype_and_shape(dtype, shape):
    x = np.linspace(-3, 3, int(np.prod(shape))).reshape(shape).astype(dtype)
    y = backend.erf(x)
    assert y.dtype == dtype and np.shape(y) == shape


def test_erf_float32_is_accurate_to_float32():
    x = np.linspace(-5, 5, 1001).astype(np.float32)
    expected = np.array([math.erf(float(v)) for v in x])
    np.testing.assert_allclose(backend.erf(x), expected, rtol=0, atol=2e-7)


def test_scatter_add_adds_duplicates():
    a = np.zeros(4)
    backend.scatter_add(a, np.array([0, 2, 0, 0]), np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(a, [8.0, 0.0, 2.0, 0.0])
    rows = np.ones((3, 2), dtype=np.float32)
    backend.scatter_add(rows, np.array([1, 1]), np.array([[1, 2], [3, 4]], dtype=np.float32))
    np.testing.assert_array_equal(rows, [[1, 1], [5, 7], [1, 1]])
    assert rows.dtype == np.float32


@given(st.integers(1, 6), st.lists(st.integers(0, 5), min_size=1, max_size=30), st.data())
def test_scatter_add_equals_a_loop(V, ids, data):
    ids = np.array(ids) % V
    values = data.draw(arrays((len(ids), 3)))
    a = np.zeros((V, 3))
    backend.scatter_add(a, ids, values)
    expected = np.zeros((V, 3))
    for i, v in zip(ids, values):
        expected[i] += v
    np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-12)


@given(st.integers(1, 6), st.lists(st.integers(-6, 5), min_size=1, max_size=40),
       st.integers(1, 9), st.booleans(), st.data())
def test_scatter_add_in_order_equals_add_at(V, ids, chunk, rows, data):
    # The GPU's deterministic scatter-add, run on NumPy: chunks of any size, negative
    # indices (-1 is row V-1), a table of rows or a vector.
    ids = np.array([i % V - V if i < 0 else i % V for i in ids])
    shape = (V, 3) if rows else (V,)
    values = data.draw(arrays((len(ids),) + shape[1:]))
    expected = data.draw(arrays(shape))
    a = expected.copy()
    np.add.at(expected, ids, values)
    backend.scatter_add_in_order(a, ids, values, chunk=chunk)
    np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-12)


def test_scatter_add_in_order_takes_batches_of_ids():
    ids = np.array([[0, 3, 3], [1, 0, 3]])
    values = np.arange(12.0).reshape(2, 3, 2)
    a = np.zeros((4, 2))
    backend.scatter_add_in_order(a, ids, values, chunk=4)
    expected = np.zeros((4, 2))
    np.add.at(expected, ids.reshape(-1), values.reshape(-1, 2))
    np.testing.assert_array_equal(a, expected)


# --- CuPy against NumPy, where a GPU is visible --------------------------------

def gpu_cases():
    """(name, forward, backward, inputs): float32 inputs as NumPy arrays, no dropout."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    x = rng.standard_normal((2, 5, 8)).astype(f32)
    qkv = [rng.standard_normal((2, 2, 5, 4)).astype(f32) for _ in range(3)]
    pad = np.ones((2, 5), dtype=bool)
    pad[1] = False
    pad[0, 3:] = False
    return [
        ("linear", F.linear_forward, F.linear_backward,
         [x, rng.standard_normal((8, 6)).astype(f32), rng.standard_normal(6).astype(f32)]),
        ("embedding", F.embedding_forward, F.embedding_backward,
         [np.array([[1, 1, 4], [0, 10, 1]]), rng.standard_normal((11, 8)).astype(f32)]),
        ("layernorm", F.layernorm_forward, F.layernorm_backward,
         [x, rng.standard_normal(8).astype(f32), rng.standard_normal(8).astype(f32)]),
        ("gelu none", lambda a: F.gelu_forward(a, "none"), F.gelu_backward, [x]),
        ("gelu tanh", lambda a: F.gelu_forward(a, "tanh"), F.gelu_backward, [x]),
        ("relu", F.relu_forward, F.relu_backward, [x]),
        ("tanh", F.tanh_forward, F.tanh_backward, [x]),
        ("softmax", F.softmax_forward, F.softmax_backward, [10 * x]),
        ("log_softmax", F.log_softmax_forward, F.log_softmax_backward, [10 * x]),
        ("attention causal", lambda q, k, v: F.attention_forward(q, k, v, causal=True),
         F.attention_backward, qkv),
        ("attention padding", lambda q, k, v, m: F.attention_forward(q, k, v, mask=m),
         F.attention_backward, qkv + [pad]),
        ("attention additive", lambda q, k, v, m: F.attention_forward(q, k, v, causal=True,
                                                                      mask=m),
         F.attention_backward, qkv + [np.where(pad, 0, -np.inf).astype(f32)[:, None, None]]),
        ("cross_entropy", lambda z: F.cross_entropy_forward(z, targets_on(z)),
         F.cross_entropy_backward, [rng.standard_normal((2, 5, 11)).astype(f32)]),
    ]


def targets_on(z):
    """The cross-entropy targets of gpu_cases on z's backend."""
    targets = np.random.default_rng(1).integers(0, 11, (2, 5))
    targets[0, :2] = -100
    return backend.xp("cupy").asarray(targets) if backend.is_cupy_array(z) else targets


@pytest.mark.gpu
@pytest.mark.parametrize("name, forward, backward, inputs", gpu_cases(),
                         ids=[c[0] for c in gpu_cases()])
def test_cupy_matches_numpy(name, forward, backward, inputs):
    cp = backend.xp("cupy")
    out, cache = forward(*inputs)
    dout = np.asarray(np.random.default_rng(2).standard_normal(np.shape(out)), dtype=out.dtype)
    grads = backward(dout, cache)
    out_gpu, cache_gpu = forward(*[cp.asarray(a) for a in inputs])
    grads_gpu = backward(cp.asarray(dout), cache_gpu)
    assert backend.is_cupy_array(out_gpu)
    assert out_gpu.dtype == out.dtype == np.float32
    np.testing.assert_allclose(cp.asnumpy(out_gpu), out, rtol=1e-5, atol=1e-5)
    grads = grads if isinstance(grads, tuple) else (grads,)
    grads_gpu = grads_gpu if isinstance(grads_gpu, tuple) else (grads_gpu,)
    for g, g_gpu in zip(grads, grads_gpu):
        if g is None:
            continue
        assert backend.is_cupy_array(g_gpu) and g_gpu.dtype == g.dtype == np.float32
        np.testing.assert_allclose(cp.asnumpy(g_gpu), g, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_cupy_backend_switch_erf_scatter_add_and_dropout():
    scratchlm.set_backend("cupy")
    cp = backend.xp()
    assert scratchlm.get_backend() == "cupy" and cp.__name__ == "cupy"
    a = cp.zeros(3, dtype=cp.float32)
    backend.scatter_add(a, cp.asarray([0, 0, 2]), cp.asarray([1.0, 2.0, 3.0], dtype=cp.float32))
    np.testing.assert_array_equal(cp.asnumpy(a), [3.0, 0.0, 3.0])
    ids = cp.asarray(np.random.default_rng(0).integers(0, 50, 10_000))  # many repeats, 3 chunks
    rows = cp.asarray(np.random.default_rng(1).standard_normal((10_000, 16)), dtype=cp.float32)
    sums = []
    for _ in range(3):                                  # the same bits every time
        table = cp.zeros((50, 16), dtype=cp.float32)
        backend.scatter_add(table, ids, rows)
        sums.append(cp.asnumpy(table))
    assert all(np.array_equal(s, sums[0]) for s in sums)
    expected = np.zeros((50, 16))
    np.add.at(expected, cp.asnumpy(ids), cp.asnumpy(rows).astype(np.float64))
    np.testing.assert_allclose(sums[0], expected, rtol=1e-4, atol=1e-4)
    x = cp.linspace(-3, 3, 101, dtype=cp.float32)
    assert backend.erf(x).dtype == cp.float32
    np.testing.assert_allclose(cp.asnumpy(backend.erf(x)), backend.erf(cp.asnumpy(x)),
                               rtol=0, atol=1e-6)
    assert scratchlm.get_array_module(x) is cp
    assert isinstance(scratchlm.to_numpy({"x": [x]})["x"][0], np.ndarray)
    ones = cp.ones(100_000, dtype=cp.float32)
    y1, cache = F.dropout_forward(ones, 0.25, rng=3)
    y2, _ = F.dropout_forward(ones, 0.25, rng=3)
    assert y1.dtype == cp.float32
    np.testing.assert_array_equal(cp.asnumpy(y1), cp.asnumpy(y2))
    kept = float(cache.keep.mean())
    assert abs(kept - 0.75) < 5 * np.sqrt(0.25 * 0.75 / 100_000)
    with pytest.raises(TypeError, match="rng is a numpy Generator but x is a cupy array"):
        F.dropout_forward(ones, 0.25, rng=np.random.default_rng(0))
