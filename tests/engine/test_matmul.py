"""blas.matmul, the fast path's matrix product, and the MKL it uses where installed.

blas.matmul must equal NumPy's product (to rounding) for every shape and
layout it is given, whether MKL computes it (in blocks over the threads) or
NumPy does (MKL absent, a layout it does not take, a small product). The
MKL tests skip where the ``mkl`` package is not installed.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from scratchlm.kernels.cpu import blas
from scratchlm.kernels.cpu import threads as cpu_threads
from scratchlm.kernels.cpu import mkl as _mkl

HAVE_MKL = _mkl.library() is not None
needs_mkl = pytest.mark.skipif(not HAVE_MKL, reason="needs the mkl package (scratchlm[mkl])")


@pytest.fixture
def every_product(monkeypatch):
    """Send products of any size to MKL, so that small test arrays take its path and
    are cut over the threads as large ones are."""
    monkeypatch.setattr(blas, "MATMUL_MKL_FROM", 1)


def operand(rng, shape, dtype, layout):
    """A 2-D array of ``shape`` stored C-ordered, as a transposed view, or as a slice."""
    rows, cols = shape
    if layout == "c":
        return rng.standard_normal(shape).astype(dtype)
    if layout == "t":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows + 3, cols + 5)).astype(dtype)[2:2 + rows, 1:1 + cols]


@given(M=st.integers(1, 90), K=st.integers(1, 40), N=st.integers(1, 90),
       dtype=st.sampled_from([np.float32, np.float64]),
       la=st.sampled_from("cts"), lb=st.sampled_from("cts"), seed=st.integers(0, 2**16))
def test_matmul_equals_numpy(M, K, N, dtype, la, lb, seed):
    """Any shape, both float dtypes, C-ordered / transposed / sliced operands; with
    MKL taking every product (when installed) on 2 threads."""
    rng = np.random.default_rng(seed)
    a, b = operand(rng, (M, K), dtype, la), operand(rng, (K, N), dtype, lb)
    before, blas.MATMUL_MKL_FROM = blas.MATMUL_MKL_FROM, 1
    try:
        got = blas.matmul(a, b)
    finally:
        blas.MATMUL_MKL_FROM = before
    assert got.dtype == dtype and got.shape == (M, N)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_allclose(got, a @ b, rtol=tol, atol=tol * np.sqrt(K))


@pytest.mark.parametrize("shape", [(300, 50, 70), (40, 200, 500), (1, 64, 700), (700, 3, 1)])
def test_matmul_over_threads_writes_out(threads, every_product, shape):
    """Cut by rows (M >= N) or by columns (M < N), into ``out`` or a new array, the same
    bits on every repeat."""
    M, K, N = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((N, K)).astype(np.float32).T      # a transposed weight
    out = np.full((M, N), np.nan, dtype=np.float32)
    assert blas.matmul(a, b, out=out) is out
    assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    assert_array_equal(blas.matmul(a, b), out)


def test_matmul_falls_back_to_numpy_for_what_mkl_does_not_take(every_product):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 20))
    b = rng.standard_normal((20, 10))
    cases = [
        (a.astype(np.int64), b.astype(np.int64), None),               # integers
        (a.astype(np.float32), b, None),                              # mixed dtypes
        (a[:, ::2], b[::2], None),                                    # no contiguous axis
        (a, b, np.empty((10, 30)).T),                                 # out transposed
        (a[:, :0], b[:0], None),                                      # K = 0: zeros
    ]
    for x, y, out in cases:
        if HAVE_MKL and out is None:
            probe = np.empty((x.shape[0], y.shape[1]), dtype=np.result_type(x, y))
            assert not _mkl.takes(x, y, probe)
        got = blas.matmul(x, y, out=out)
        assert_allclose(got, np.matmul(x, y), rtol=1e-12, atol=1e-12)
        if out is not None:
            assert got is out


@needs_mkl
def test_mkl_refuses_an_out_that_overlaps_an_operand():
    a = np.ones((8, 8))
    assert not _mkl.takes(a, a, a)
    assert not _mkl.takes(a[:, :4], np.ones((4, 4)), a[:, 4:])   # may share memory
    assert _mkl.takes(a, a, np.empty((8, 8)))


@needs_mkl
def test_mkl_is_sequential_and_reported():
    assert "Math Kernel Library" in _mkl.version()
    # MKL's threads stay at 1 whatever asks: the fast path's threads cut the work
    from threadpoolctl import threadpool_info
    mkl = [i for i in threadpool_info() if i.get("internal_api") == "mkl"]
    assert mkl and mkl[0]["threading_layer"] == "sequential"


def test_blas_numpy_in_the_environment_leaves_mkl_alone():
    code = "from scratchlm.kernels.cpu import mkl; print(mkl.library() is None, mkl.version())"
    env = dict(os.environ, SCRATCHLM_BLAS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "None"]


def test_parallel_for_runs_every_blas_single_threaded_inside(monkeypatch):
    """Every BLAS library in the process (NumPy's, SciPy's own, MKL) is held at one
    thread while the ranges run, and restored after; with blas_inside=False none is
    touched."""
    pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (loads SciPy's own BLAS beside NumPy's)
    from threadpoolctl import threadpool_info

    monkeypatch.setattr(cpu_threads, "_blas", None)     # look at the libraries loaded now
    before = {i["filepath"]: i["num_threads"] for i in threadpool_info()
              if i["user_api"] == "blas"}
    seen = []

    def look(lo, hi):
        seen.append({i["filepath"]: i["num_threads"] for i in threadpool_info()
                     if i["user_api"] == "blas"})

    threads = cpu_threads.num_threads()
    cpu_threads.set_num_threads(2)
    try:
        cpu_threads.parallel_for(2, look)
        inside = seen[-1]
        assert set(inside) == set(before) and set(inside.values()) == {1}
        after = {i["filepath"]: i["num_threads"] for i in threadpool_info()
                 if i["user_api"] == "blas"}
        assert after == before
        if any(n != 1 for n in before.values()):
            cpu_threads.parallel_for(2, look, blas_inside=False)
            assert seen[-1] == before
    finally:
        cpu_threads.set_num_threads(threads)


@needs_mkl
def test_a_training_run_through_mkl_resumes_bit_for_bit(tmp_path, every_product):
    """The Trainer's resume test with every product of the model through MKL: a run
    cut at a checkpoint and resumed (new arrays, other alignments) repeats the
    uninterrupted one bit for bit."""
    import test_train
    test_train.test_resume_from_a_checkpoint_gives_identical_losses(tmp_path)


@needs_mkl
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpt_gradients_through_mkl_equal_numpys(every_product, monkeypatch, dtype):
    from scratchlm.models import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    ids = np.random.default_rng(3).integers(0, 50, (4, 32))

    def gradients():
        model = GPT(cfg, seed=0, dtype=dtype).train()
        loss = model(ids, labels=ids)["loss"]
        model.backward()
        return float(loss), {n: p.grad.copy() for n, p in model.named_parameters()}

    loss, mkl = gradients()
    again_loss, again = gradients()
    assert again_loss == loss
    for name in mkl:
        assert_array_equal(again[name], mkl[name], err_msg=name)     # repeats exactly
    monkeypatch.setattr(_mkl, "_lib", False)                         # NumPy's products
    numpy_loss, plain = gradients()
    tol = 2e-4 if dtype == "float32" else 1e-10
    assert abs(numpy_loss - loss) < tol
    for name in mkl:
        assert_allclose(mkl[name], plain[name], rtol=tol, atol=tol, err_msg=name)
