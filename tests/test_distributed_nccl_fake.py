"""The NCCL code path of data-parallel training, run on the CPU with a stand-in for NCCL.

``mpirun -n 2`` starts tests/distributed_nccl_worker.py, which replaces
``scratchlm.distributed.nccl_runtime`` (the one place that finds CuPy and
``cupy.cuda.nccl``) by a stand-in pair: an NCCL module with CuPy's calling
conventions whose all-reduce sums, over MPI, the memory at the *addresses* it
is given, and the few ``cupy.cuda`` pieces the path touches (device choice,
one stream, events). Everything else is the library's own code: the GPU
choice and its checks, the unique id broadcast over MPI, ``NcclAllReduce``
(datatype map, counts, the stream and event protocol), the bucketed
``GradientReducer`` and the deadline with NCCL's abort.

What this cannot show. The arrays stay NumPy arrays in host memory:
``StandInCupy.ndarray`` is NumPy's, so the library passes host addresses
(``distributed._address``) where on a GPU it passes ``buf.data.ptr``. The
compute stream is the host thread, so a missing "wait for the copies" or
"wait for the sums" is caught from the call log, not by a race; real NCCL,
CUDA streams and CuPy arrays are checked by benchmarks/check_nccl_gpu.py and
the ``gpu`` test in test_distributed.py. The tests are skipped where mpi4py
or mpirun is missing.
"""

import json
import os
import re
import sys
import types

import numpy as np
import pytest

from scratchlm import distributed
from scratchlm.distributed import DistributedError, NcclAllReduce

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_nccl_worker.py")
sys.path.insert(0, HERE)
from test_distributed import compare, mpirun, needs_mpi, one_process, results  # noqa: E402

NCCL_FLOAT64, NCCL_STREAM = 8, 0x1000        # the stand-in's datatype code; its first stream


@pytest.fixture(scope="module")
def nccl_run(tmp_path_factory):
    """The MPI path, then the NCCL path, in one 2-rank job (2 x batch 2, float64)."""
    out = str(tmp_path_factory.mktemp("nccl"))
    mpirun(2, WORKER, "train", out)
    return out


def calls(out, rank):
    with open(os.path.join(out, "nccl", f"rank{rank}_calls.json")) as f:
        return json.load(f)


@needs_mpi
def test_nccl_path_equals_one_process_with_twice_the_batch_and_the_mpi_path(nccl_run,
                                                                             tmp_path):
    ref = one_process(tmp_path, batch=4, dtype="float64")
    nccl0, nccl1 = results(os.path.join(nccl_run, "nccl"), 0), results(
        os.path.join(nccl_run, "nccl"), 1)
    mpi0 = results(os.path.join(nccl_run, "mpi"), 0)
    compare(ref, nccl0, 1e-12, "float64, 6 AdamW steps, tiny GPT, NCCL path (stand-in)")
    assert len(nccl0[0]["buckets"]) == 4                       # several buckets
    assert nccl0[0]["losses"] == nccl1[0]["losses"] == mpi0[0]["losses"]
    for name, w in nccl0[1].items():          # a sum of two terms: NCCL's equals MPI's
        np.testing.assert_array_equal(w, mpi0[1][name], err_msg=name)
        np.testing.assert_array_equal(w, nccl1[1][name], err_msg=name)


@needs_mpi
@pytest.mark.parametrize("rank", [0, 1])
def test_nccl_calls_follow_the_protocol(nccl_run, rank):
    log = calls(nccl_run, rank)["calls"]
    buckets = results(os.path.join(nccl_run, "nccl"), rank)[0]["buckets"]
    # Set-up: this rank's GPU first, the unique id from rank 0 only, then the communicator
    # and one non-blocking stream of NCCL's own.
    setup = ["Device.use"] + ["get_unique_id"] * (rank == 0) + ["NcclCommunicator", "Stream"]
    assert [c["call"] for c in log[:len(setup)]] == setup
    assert sum(c["call"] == "get_unique_id" for c in log) == (rank == 0)
    assert log[0]["device"] == rank                         # local rank i takes GPU i
    made = next(c for c in log if c["call"] == "NcclCommunicator")
    assert (made["ndev"], made["rank"], made["device"]) == (2, rank, rank)
    assert [c for c in log if c["call"] == "Stream"] == [
        {"call": "Stream", "ptr": NCCL_STREAM, "non_blocking": True}]
    # Steps: per step, one in-place all-reduce per bucket, in bucket order, on NCCL's stream,
    # each after an event recorded on the compute stream (the copies into the bucket);
    # the buckets of whole blocks start during backward, the rest at finish(); then the
    # compute stream waits for every bucket's "done" event before reading the sums.
    training = log[len(setup):[c["call"] for c in log].index("trained")]
    steps = [[]]                        # each step ends with the compute stream's waits
    for c in training:
        if c["call"] != "wait_event" and any(x["call"] == "wait_event" and x["stream"] == 0
                                             for x in steps[-1]):
            steps.append([])
        steps[-1].append(c)
    assert len(steps) == 6                                     # 6 optimizer steps
    for step in steps:
        kinds = [c["call"] for c in step]
        reduces = [c for c in step if c["call"] == "allReduce"]
        assert [(c["offset"], c["count"]) for c in reduces] == [
            (start, end - start) for start, end in buckets]
        assert kinds[:kinds.index("finish")].count("allReduce") == 3   # the blocks' buckets
        for c in reduces:                                              # start in backward
            assert c["in_place"] and c["datatype"] == NCCL_FLOAT64
            assert c["stream"] == NCCL_STREAM
            assert len(c["after"]) == 1 and c["after"][0][1] == 0   # the compute stream's event
        dones = [c["event"] for c in step if c["call"] == "record" and c["stream"] == NCCL_STREAM]
        waits = [c["event"] for c in step if c["call"] == "wait_event" and c["stream"] == 0]
        assert len(dones) == len(reduces) and waits == dones
        assert kinds[-len(waits):] == ["wait_event"] * len(waits)    # after the last bucket
    assert not any(c["call"] == "abort" for c in log)


@needs_mpi
def test_each_datatype_is_summed_and_others_refused(nccl_run):
    for rank in (0, 1):
        sums = calls(nccl_run, rank)["sums"]
        for name in ("float16", "float32", "float64"):
            assert sums[name] == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0], name
        assert sums["int64"] == ("NCCL all-reduce: need a contiguous buffer of "
                                 "float16/float32/float64; got int64")


@needs_mpi
@pytest.mark.parametrize("scenario, message", [
    ("shared_gpu", r"NCCL needs a GPU of its own for each rank, but ranks 0, 1 share GPU "
                   r"0000:01:00\.0 on \S+: start at most one rank per GPU"),
    ("no_gpu_on_rank1", r"NCCL cannot start; rank 1: RuntimeError: backend 'cupy' requested "
                        r"but no GPU is usable: cudaErrorNoDevice")])
def test_a_set_up_problem_on_one_rank_stops_every_rank(tmp_path, scenario, message):
    out = str(tmp_path)
    mpirun(2, WORKER, scenario, out, timeout=60)
    errors = [results(out, rank)[0]["error"] for rank in (0, 1)]
    assert errors[0] == errors[1] and re.fullmatch(message, errors[0]), errors


@needs_mpi
def test_a_rank_that_leaves_makes_the_others_abort_nccl_and_stop(tmp_path):
    out = str(tmp_path)
    result = mpirun(2, WORKER, "dead", out, check=False, timeout=60)
    assert result.returncode != 0                      # rank 0 aborted the job
    notes = results(out, 0)[0]
    assert re.match(r"gradient all-reduce \(1 bucket, 0\.1 MB, step 1\) \(collective #\d+\) "
                    r"timed out after \d+ s on rank 0 of 2; no answer from rank 1",
                    notes["error"]), notes["error"]
    assert notes["calls"][-3:] == ["allReduce", "record", "abort"]


# --- in one process ------------------------------------------------------------------

def test_nccl_runtime_takes_the_nccl_module_from_the_backend_and_checks_it(monkeypatch):
    cp = types.SimpleNamespace(cuda=types.SimpleNamespace())
    monkeypatch.setattr(distributed.backend, "xp", lambda name=None: cp)
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.available = True
    monkeypatch.setattr(distributed.backend, "cupy_nccl", lambda: nccl)
    assert distributed.nccl_runtime() == (cp, nccl)
    nccl.available = False
    with pytest.raises(DistributedError, match=r"this CuPy cannot load NCCL \(cupy\.cuda\."
                                               r"nccl\.available is False\); install"):
        distributed.nccl_runtime()

    def missing():
        raise ImportError("No module named 'cupy.cuda.nccl'")

    monkeypatch.setattr(distributed.backend, "cupy_nccl", missing)
    with pytest.raises(DistributedError, match="No module named 'cupy.cuda.nccl'"):
        distributed.nccl_runtime()


def test_nccl_refuses_host_arrays():
    class GPUArray:
        pass

    cp = types.SimpleNamespace(ndarray=GPUArray, cuda=types.SimpleNamespace(
        Stream=lambda non_blocking: None))
    nccl = types.SimpleNamespace(NCCL_FLOAT16=6, NCCL_FLOAT32=7, NCCL_FLOAT64=8,
                                 NcclCommunicator=lambda ndev, uid, rank: None)
    reduce = NcclAllReduce(cp, nccl, 2, tuple(range(128)), 0)
    with pytest.raises(DistributedError, match="NCCL sums GPU arrays; got a numpy array"):
        reduce.start(np.zeros(3))
