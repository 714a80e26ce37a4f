"""Data-parallel training: N ranks x batch B == one process x batch N*B, and clear failures.

The multi-process tests start ``mpiexec -n 2`` on tests/distributed_worker.py,
with the MPI launcher of the running Python's environment (``mpi_launcher``),
and are skipped (with the reason) where mpi4py or a launcher is missing.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from scratchlm import distributed
from scratchlm.distributed import (
    DistributedError, GradientReducer, ShardedBatches, launched_world_size, shard_batch)
from scratchlm.models import GPT, GPTConfig

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_worker.py")
sys.path.insert(0, HERE)
import distributed_worker  # noqa: E402

LAUNCHER_NAMES = ("mpiexec", "mpirun")


def mpi_launcher(executable=sys.executable, scripts=None, path=None):
    """The MPI launcher that belongs to ``executable``'s environment, else one on the PATH.

    mpi4py must be started by a launcher of the MPI library it loads. The PyPI
    ``mpich`` package installs that launcher beside the interpreter, in the
    environment's scripts directory, which is not on the PATH when a venv's
    python is run by its full path. So look, in order, in:

        the directory of ``executable`` as given (a venv's bin/)
        ``scripts`` (default: ``sysconfig``'s scripts directory)
        the directory of the file ``executable`` links to (the base
            installation a venv was made from, whose packages a venv made
            with --system-site-packages uses)
        ``path`` (default: $PATH)

    In each place ``mpiexec`` (the MPI standard's name) comes before
    ``mpirun``. None when there is no launcher anywhere.
    """
    scripts = sysconfig.get_path("scripts") if scripts is None else scripts
    base = os.path.dirname(os.path.realpath(executable))
    for place in (os.path.dirname(executable), scripts, base):
        for name in LAUNCHER_NAMES:
            candidate = os.path.join(place, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    for name in LAUNCHER_NAMES:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


MPI_LAUNCHER = mpi_launcher()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPI_LAUNCHER is None,
    reason='needs mpi4py and an MPI launcher (mpiexec) in its environment or on the PATH: '
           'pip install -e ".[mpi]"')
LAUNCH_VARIABLES = ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                    "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               SCRATCHLM_NUM_THREADS="1")             # two ranks on two cores
    return env


def mpirun(n, *args, check=True, timeout=120):
    cmd = [MPI_LAUNCHER, "-n", str(n), sys.executable, *args]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def results(out, rank):
    with open(os.path.join(out, f"rank{rank}.json")) as f:
        notes = json.load(f)
    path = os.path.join(out, f"rank{rank}.npz")
    weights = dict(np.load(path)) if os.path.exists(path) else None
    return notes, weights


def one_process(out, **kw):
    distributed_worker.run("train", str(out), None, **kw)
    return results(str(out), 0)


def compare(ref, two, tol, label):
    """Print and check losses and weights of 2 ranks against one process."""
    (ref_notes, ref_w), (notes, w) = ref, two
    loss_diff = max(abs(a - b) for a, b in zip(ref_notes["losses"], notes["losses"]))
    val_diff = max(abs(a - b) for a, b in zip(ref_notes["val_losses"], notes["val_losses"]))
    weight_diff = max(float(np.abs(ref_w[k] - w[k]).max()) for k in ref_w)
    print(f"\n{label}")
    print(f"{'step':>4} {'1 process, batch 2B':>22} {'2 ranks x batch B':>22} {'|diff|':>9}")
    for i, (a, b) in enumerate(zip(ref_notes["losses"], notes["losses"])):
        print(f"{i + 1:>4} {a:22.16f} {b:22.16f} {abs(a - b):9.1e}")
    print(f"max |loss diff| {loss_diff:.1e}, max |val loss diff| {val_diff:.1e}, "
          f"max |weight diff| {weight_diff:.1e} ({len(ref_w)} tensors)")
    assert len(notes["losses"]) == len(ref_notes["losses"]) > 0
    assert loss_diff <= tol and val_diff <= tol and weight_diff <= tol, (
        loss_diff, val_diff, weight_diff)


# --- two ranks against one process ---------------------------------------------

@pytest.fixture(scope="module")
def two_ranks_float64(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dp64"))
    mpirun(2, WORKER, "train", out, "batch=2", "dtype=float64")
    return out


@needs_mpi
def test_two_ranks_equal_one_process_with_twice_the_batch_float64(two_ranks_float64, tmp_path):
    ref = one_process(tmp_path, batch=4, dtype="float64")
    rank0, rank1 = results(two_ranks_float64, 0), results(two_ranks_float64, 1)
    compare(ref, rank0, 1e-12, "float64, 6 AdamW steps, tiny GPT")
    assert rank0[0]["losses"] == rank1[0]["losses"]            # every rank logs the mean
    for name, w in rank0[1].items():                            # and holds the same weights
        np.testing.assert_array_equal(w, rank1[1][name], err_msg=name)


@needs_mpi
def test_gradient_accumulation_times_ranks(tmp_path):
    out = str(tmp_path / "dp")
    mpirun(2, WORKER, "train", out, "batch=2", "accum=2", "dtype=float64")
    ref = one_process(tmp_path / "one", batch=4, accum=2, dtype="float64")
    compare(ref, results(out, 0), 1e-12, "float64, 2 micro-batches x 2 ranks x batch B")


@needs_mpi
def test_float32_two_ranks_match_to_rounding(tmp_path):
    out = str(tmp_path / "dp")
    mpirun(2, WORKER, "train", out, "batch=2", "dtype=float32")
    ref = one_process(tmp_path / "one", batch=4, dtype="float32")
    compare(ref, results(out, 0), 1e-5, "float32")


@needs_mpi
def test_resume_with_the_same_number_of_ranks_is_exact(tmp_path):
    out = str(tmp_path)
    mpirun(2, WORKER, "resume", out)                  # dropout 0.1: one stream per rank
    for rank in (0, 1):
        notes, _ = results(out, rank)
        assert notes["first"] + notes["resumed"] == notes["full"]          # bit for bit
        assert notes["same_weights"]


@needs_mpi
def test_resuming_with_another_number_of_ranks_is_refused(two_ranks_float64, tmp_path):
    trainer = distributed_worker.make_trainer(str(tmp_path), None, batch=4)
    with pytest.raises(ValueError, match=r"written by a run of 2 rank\(s\), this run has 1"):
        trainer.load_checkpoint(os.path.join(two_ranks_float64, "run", "checkpoint"))


# --- bad set-ups -----------------------------------------------------------------

@needs_mpi
def test_ranks_disagreeing_on_the_config_get_a_clear_error(tmp_path):
    out = str(tmp_path)
    mpirun(2, WORKER, "disagree", out)
    for rank in (0, 1):
        error = results(out, rank)[0]["error"]
        assert error == ("the ranks disagree on the training set-up: args.learning_rate: "
                         "rank 0 0.003, rank 1 0.001")


@needs_mpi
def test_ranks_disagreeing_on_the_checkpoint_get_a_clear_error(tmp_path):
    out = str(tmp_path)
    mpirun(2, WORKER, "other_checkpoint", out)
    for rank in (0, 1):
        error = results(out, rank)[0]["error"]
        assert error.startswith("the ranks disagree on the checkpoint to resume from: content:")


@needs_mpi
def test_a_rank_that_leaves_makes_the_others_stop_with_a_timeout(tmp_path):
    out = str(tmp_path)
    result = mpirun(2, WORKER, "dead", out, "timeout=1.5", check=False, timeout=60)
    assert result.returncode != 0                      # rank 0 aborted the job
    error = results(out, 0)[0]["error"]
    assert re.match(r"gradient all-reduce \(1 bucket, 0\.1 MB, step 1\) \(collective #1\) "
                    r"timed out after \d+ s on rank 0 of 2; no answer from rank 1: dead, hung",
                    error), error


def test_mpi4py_missing_gives_the_install_command(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py -> ImportError
    with pytest.raises(DistributedError, match=r'mpi4py is not installed; install it with: '
                                               r'pip install -e "\.\[mpi\]"'):
        distributed.init_distributed()


def test_launcher_detection(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launched_world_size() is None
    assert distributed.init_distributed() is None      # a plain process: no MPI at all
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launched_world_size() == 4
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setenv("PMIX_RANK", "0")                # PMIx announces no size
    assert launched_world_size() == -1


def test_the_mpi_launcher_of_the_interpreters_environment_comes_first(tmp_path):
    def install(folder, name):
        folder.mkdir(parents=True, exist_ok=True)
        launcher = folder / name
        launcher.write_text("#!/bin/sh\n")
        launcher.chmod(0o755)
        return str(launcher)

    env_bin, scripts, on_path = tmp_path / "venv" / "bin", tmp_path / "scripts", tmp_path / "path"
    base_bin = tmp_path / "base" / "bin"
    base_bin.mkdir(parents=True)
    (base_bin / "python3").write_text("")
    env_bin.mkdir(parents=True)
    python = env_bin / "python"                 # a venv's python, run by its full path
    python.symlink_to(base_bin / "python3")     # a link to the base installation's

    def found():
        return mpi_launcher(str(python), scripts=str(scripts), path=str(on_path))

    assert found() is None
    assert install(on_path, "mpirun") == found()          # only on the PATH
    assert install(base_bin, "mpirun") == found()         # the base installation first
    assert install(scripts, "mpirun") == found()          # the scripts directory before it
    env_mpirun = install(env_bin, "mpirun")
    assert found() == env_mpirun                          # beside python before both
    assert install(env_bin, "mpiexec") == found()         # mpiexec before mpirun
    (env_bin / "mpiexec").chmod(0o644)                    # not executable: passed over
    assert found() == env_mpirun


def test_sharding_takes_each_ranks_rows_and_keeps_the_global_state():
    batch = {"input_ids": np.arange(12).reshape(6, 2), "labels": np.arange(12).reshape(6, 2)}
    parts = [shard_batch(batch, r, 3) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate([p["input_ids"] for p in parts]),
                                  batch["input_ids"])
    with pytest.raises(ValueError, match="6 rows, not divisible by the 4 ranks"):
        shard_batch(batch, 0, 4)

    class Global:
        def next_batch(self):
            return batch

        def state_dict(self):
            return {"position": 7}

    sharded = ShardedBatches(Global(), 1, 3)
    np.testing.assert_array_equal(sharded.next_batch()["labels"], batch["labels"][2:4])
    assert sharded.state_dict() == {"position": 7}


# --- the bucketed all-reduce, with a communicator simulated in one process -------

class FakeComm:
    """A rank 0 of 2 whose peer's gradients are ``peer`` (laid out as the reducer's buffer)."""

    def __init__(self):
        self.rank, self.world_size, self.is_main = 0, 2, True
        self.flat, self.peer, self.phase, self.log = None, None, "backward", []

    def start_allreduce(self, buf, what):
        offset = (buf.ctypes.data - self.flat.ctypes.data) // buf.itemsize
        self.log.append((self.phase, offset, buf.size, what))
        buf += self.peer[offset:offset + buf.size]      # the sum over the two ranks
        return len(self.log)

    def test(self, handles):
        return True

    def wait(self, handles, what):
        self.log.append(("wait", len(handles), what))


def tiny(seed):
    cfg = GPTConfig(vocab_size=23, n_positions=8, n_embd=16, n_layer=3, n_head=2,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT(cfg, seed=seed, dtype="float64")


def test_gradient_reducer_buckets_overlap_and_average():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 23, (2, 8))
    model, peer = tiny(0), tiny(1)
    model.h[2].mlp.c_fc.bias.requires_grad = False       # frozen: not all-reduced
    peer.train()
    peer(ids, labels=ids)
    peer.backward()
    peer_grads = {n: p.grad for n, p in peer.named_parameters()}
    comm = FakeComm()
    block_bytes = sum(p.size for p in model.h[0].parameters()) * 8
    reducer = GradientReducer(comm, model, bucket_mb=1.5 * block_bytes / 1e6)
    comm.flat = reducer.flat
    comm.peer = np.concatenate([peer_grads[n].ravel() for n in reducer.names])

    # Layout: the blocks from last to first, then the rest; each trainable parameter once.
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(reducer.names) == sorted(trainable)
    assert "h.2.mlp.c_fc.bias" not in reducer.names
    firsts = [next(i for i, n in enumerate(reducer.names) if n.startswith(f"h.{b}."))
              for b in (2, 1, 0)]
    assert firsts == sorted(firsts) and firsts[0] == 0
    assert set(reducer.names[-4:]) == {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    bounds = [(s, e) for s, e, _, _ in reducer.buckets]
    assert bounds[0][0] == 0 and bounds[-1][1] == reducer.flat.size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))          # contiguous
    assert all(reducer.offsets[i] == s for s, _, i, _ in reducer.buckets)  # whole parameters
    assert len(reducer.buckets) >= 3
    assert reducer.nbytes == 8 * sum(p.size for p in model.parameters() if p.requires_grad)

    # An earlier micro-batch: nothing starts; the step's last backward: buckets start
    # during backward as their blocks complete, in order, and the rest at finish().
    model.train()
    model(ids, labels=ids)
    model.backward(0.5)
    assert comm.log == []
    model(ids, labels=ids)
    reducer.arm()
    model.backward(0.5)
    during = [entry for entry in comm.log if entry[0] == "backward"]
    assert during, "no bucket started during backward"
    comm.phase = "finish"
    own = {n: p.grad.copy() for n, p in model.named_parameters()}
    reducer.finish("step 1")
    starts = [entry[1] for entry in comm.log if entry[0] != "wait"]
    assert starts == [s for s, _ in bounds]                                 # bucket order
    assert comm.log[-1][0] == "wait" and comm.log[-1][1] == len(bounds)
    for name, p in model.named_parameters():
        if name in reducer.names:
            np.testing.assert_allclose(p.grad, (own[name] + peer_grads[name]) / 2,
                                       rtol=1e-15, atol=1e-18, err_msg=name)
        else:
            np.testing.assert_array_equal(p.grad, own[name])               # frozen: untouched
    reducer.close()
    assert all("backward" not in block.__dict__ for block in model.h)


def test_gradient_reducer_without_overlap_starts_everything_at_the_end():
    model, comm = tiny(0), FakeComm()
    reducer = GradientReducer(comm, model, bucket_mb=0.001, overlap=False)
    comm.flat, comm.peer = reducer.flat, np.zeros(reducer.flat.size)
    ids = np.zeros((1, 8), dtype=np.int64)
    model.train()
    model(ids, labels=ids)
    reducer.arm()
    model.backward()
    assert comm.log == []
    comm.phase = "finish"
    reducer.finish()
    assert len([e for e in comm.log if e[0] == "finish"]) == len(reducer.buckets) > 1


# --- the command line under mpirun ----------------------------------------------

@needs_mpi
def test_train_command_under_mpirun_matches_one_process_and_resumes(tmp_path):
    from scratchlm.data import builtin_corpus

    text = tmp_path / "text.txt"
    text.write_text(builtin_corpus()[:20000])

    def cli(out, batch, *extra):
        return ["-m", "scratchlm", "train", "--text", str(text), "--n-layer", "2",
                "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size",
                str(batch), "--max-steps", "10", "--eval-interval", "5", "--warmup-steps", "2",
                "--sample-tokens", "0", "--dtype", "float64", "--no-progress", "--out",
                str(out), *extra]

    def metrics(out):
        with open(out / "metrics.jsonl") as f:
            return [json.loads(line) for line in f]

    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *cli(one, 4)], env=_env(), check=True,
                   capture_output=True, timeout=120)
    result = mpirun(2, *cli(two, 2))
    assert "2 ranks x batch 2" in result.stdout and result.stdout.count("done in") == 1
    a, b = metrics(one), metrics(two)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "val_loss"):
            if key in ra:
                assert abs(ra[key] - rb[key]) <= 1e-12, (key, ra, rb)
    mpirun(2, *cli(two, 2, "--resume", "--max-steps", "15"))
    assert metrics(two)[-1]["step"] == 15
    refused = mpirun(3, *cli(two, 2, "--resume", "--max-steps", "20"), check=False)
    assert refused.returncode != 0
    assert "written by a run of 2 rank(s), this run has 3" in refused.stderr


# --- NCCL on GPUs ------------------------------------------------------------------

@pytest.mark.gpu
@needs_mpi
def test_nccl_ranks_equal_one_process_on_the_gpu(tmp_path):
    import cupy

    n = min(2, cupy.cuda.runtime.getDeviceCount())
    out = str(tmp_path / "dp")
    env = {**_env(), "SCRATCHLM_BACKEND": "cupy"}
    cmd = [MPI_LAUNCHER, "-n", str(n), sys.executable, WORKER, "train", out, "batch=2",
           "dtype=float64", "steps_only=1"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    from scratchlm import backend

    backend.set_backend("cupy")
    try:
        ref = one_process(tmp_path / "one", batch=2 * n, dtype="float64", steps_only=1)
    finally:
        backend.set_backend("numpy")
    compare(ref, results(out, 0), 1e-12, f"float64 on the GPU, NCCL, {n} rank(s)")


def test_evaluation_leaves_out_metrics_undefined_on_a_batch(tmp_path):
    # A shard with no counted target (an accuracy over no masked token) gives NaN; the
    # mean over batches (and ranks) leaves it out instead of turning NaN.
    trainer = distributed_worker.make_trainer(str(tmp_path), None)
    values = iter([float("nan"), 0.25, 0.75])
    trainer.eval_batches = trainer.eval_batches + trainer.eval_batches[:1]
    trainer.metrics_fn = lambda batch, out: {"acc": next(values), "never": float("nan")}
    result = trainer.evaluate()
    assert result["val_acc"] == 0.5 and np.isnan(result["val_never"])
