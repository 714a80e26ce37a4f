"""The NCCL code path of scratchlm.distributed, run on the CPU under ``mpirun -n 2``.

    python tests/distributed_nccl_worker.py SCENARIO OUT_DIR

There is no GPU here, so ``distributed.nccl_runtime`` (which returns CuPy and
``cupy.cuda.nccl``) is replaced by a stand-in pair, ``StandInCupy`` and
``StandInNccl``, that keeps the calling conventions of the real ones:

* ``StandInNccl`` has CuPy's ``get_unique_id()`` (a tuple of 128 signed bytes),
  ``NcclCommunicator(ndev, commId, rank)``, ``allReduce(sendbuf, recvbuf,
  count, datatype, op, stream)`` with *addresses* and a stream pointer,
  ``check_async_error()``, ``abort()``, ``destroy()`` and NCCL's enum values.
  Its all-reduce reads and writes the buffer at the address it is given (a
  NumPy view made with ctypes over ``count`` elements of the declared
  datatype) and sums it over MPI with a nonblocking all-reduce on a
  communicator of its own; it refuses addresses outside the arrays registered
  as device memory, unknown streams, and ids that differ between ranks.
* ``StandInCupy`` holds only what the code path touches: ``ndarray`` (here
  NumPy's: the arrays stay NumPy arrays in host memory, and the buffer address
  the library passes is the host one), and ``cuda`` with ``runtime.
  getDeviceCount()``/``deviceGetPCIBusId()``, ``Device(i).use()``,
  ``Stream(non_blocking=...)``, ``Event(...)`` with ``record()``/``done`` and
  ``get_current_stream()``. The compute stream is the host thread: its work
  is done as soon as it is issued, so an event recorded on it is passed at
  once and making it wait for an event blocks until that event's all-reduces
  have completed. The NCCL stream's work is the pending MPI requests.

Every call is logged to OUT_DIR/<run>/rank<r>_calls.json for the test to check.
"""

import ctypes
import itertools
import json
import os
import sys

import numpy as np
from mpi4py import MPI

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from distributed_worker import attach_without_setup, make_trainer, save  # noqa: E402

from scratchlm import distributed  # noqa: E402
from scratchlm.distributed import DistributedError, init_distributed  # noqa: E402

BUCKET_MB = 0.02            # about one block of the tiny GPT per bucket: several buckets


class NcclError(RuntimeError):
    pass


class Stream:
    """A stream of the stand-in: the NCCL work queued on it is its pending MPI requests."""

    def __init__(self, cuda, ptr):
        self.cuda, self.ptr = cuda, ptr
        self.pending = []               # requests of the all-reduces queued on it
        self.waited = []                # events it was made to wait for since its last one

    def wait_event(self, event):
        self.cuda.log.append({"call": "wait_event", "stream": self.ptr, "event": event.id,
                              "event_stream": event.stream.ptr})
        if self is self.cuda.compute:   # the host thread: block until the event has passed
            MPI.Request.Waitall(event.requests)
        else:                           # noted; the host work before it is done already
            self.waited.append(event)


class Event:
    def __init__(self, cuda, number):
        self.cuda, self.id = cuda, number
        self.stream, self.requests = None, []

    def record(self, stream=None):
        self.stream = self.cuda.compute if stream is None else stream
        self.requests = list(self.stream.pending)      # passed when these complete
        self.cuda.log.append({"call": "record", "event": self.id, "stream": self.stream.ptr})

    @property
    def done(self):
        return MPI.Request.Testall(self.requests)


class Device:
    def __init__(self, cuda, index):
        self.cuda, self.id = cuda, index

    def use(self):
        if not 0 <= self.id < self.cuda.devices:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {self.id}")
        self.cuda.current = self.id
        self.cuda.log.append({"call": "Device.use", "device": self.id})


class StandInCuda:
    """The few pieces of ``cupy.cuda`` that the NCCL path uses, for a host "device"."""

    def __init__(self, devices):
        self.devices = devices          # GPUs each process "sees"
        self.current = None             # the index passed to Device(i).use()
        self.log = []
        self._ptrs = itertools.count(0x1000, 0x10)
        self._events = itertools.count(1)
        self.compute = Stream(self, 0)  # CuPy's default current stream: the null stream
        self.streams = {0: self.compute}
        self.runtime = self             # runtime.getDeviceCount(), runtime.deviceGetPCIBusId()

    def getDeviceCount(self):
        return self.devices

    def deviceGetPCIBusId(self, index):
        return f"0000:{index + 1:02x}:00.0"

    def Device(self, index):
        return Device(self, index)

    def Stream(self, null=False, non_blocking=False):
        if null:
            return self.compute
        stream = Stream(self, next(self._ptrs))
        self.streams[stream.ptr] = stream
        self.log.append({"call": "Stream", "ptr": stream.ptr, "non_blocking": non_blocking})
        return stream

    def Event(self, block=False, disable_timing=False, interprocess=False):
        return Event(self, next(self._events))

    def get_current_stream(self):
        return self.compute


class StandInCupy:
    def __init__(self, devices):
        self.ndarray = np.ndarray
        self.cuda = StandInCuda(devices)


class StandInNccl:
    """``cupy.cuda.nccl`` over MPI on host memory addressed by pointer."""

    available = True
    NcclError = NcclError
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 6, 7, 8      # ncclDataType_t
    NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3    # ncclRedOp_t
    DTYPES = {6: np.float16, 7: np.float32, 8: np.float64}

    def __init__(self, cuda):
        self.cuda = cuda
        self.log = cuda.log             # one log, in call order
        self.memory = []                # the arrays that stand for device memory

    def get_unique_id(self):
        self.log.append({"call": "get_unique_id"})
        return tuple(int(b) for b in np.frombuffer(os.urandom(128), dtype=np.int8))

    def NcclCommunicator(self, ndev, commId, rank):
        return StandInCommunicator(self, ndev, commId, rank)

    def find(self, address, nbytes):
        """(registered array index, element offset) of [address, address + nbytes)."""
        for i, a in enumerate(self.memory):
            start = a.ctypes.data
            if start <= address and address + nbytes <= start + a.nbytes:
                return i, (address - start) // a.itemsize
        raise NcclError(f"ncclInvalidArgument: {nbytes} bytes at {address:#x} are not in "
                        "device memory")


class StandInCommunicator:
    def __init__(self, nccl, ndev, commId, rank):
        if not isinstance(commId, tuple) or len(commId) != 128:    # CuPy: ``tuple commId``
            raise TypeError(f"commId must be a tuple of 128 ints; got {type(commId).__name__}")
        if nccl.cuda.current is None:
            raise NcclError("ncclInvalidUsage: no device chosen before ncclCommInitRank")
        self.nccl, self.mpi = nccl, MPI.COMM_WORLD.Dup()           # NCCL's own connections
        if (ndev, rank) != (self.mpi.Get_size(), self.mpi.Get_rank()):
            raise NcclError(f"ncclInvalidArgument: ndev={ndev}, rank={rank} in a job of "
                            f"{self.mpi.Get_size()}, where this is rank {self.mpi.Get_rank()}")
        ids = self.mpi.allgather(commId)
        if any(i != ids[0] for i in ids):
            raise NcclError("ncclCommInitRank: the ranks were given different unique ids")
        self.aborted = False
        nccl.log.append({"call": "NcclCommunicator", "ndev": ndev, "rank": rank,
                         "device": nccl.cuda.current})

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        if self.aborted:
            raise NcclError("ncclInvalidArgument: the communicator was aborted")
        if op != self.nccl.NCCL_SUM or datatype not in self.nccl.DTYPES:
            raise NcclError(f"ncclInvalidArgument: op {op}, datatype {datatype}")
        if stream not in self.nccl.cuda.streams:
            raise NcclError(f"cudaErrorInvalidResourceHandle: stream {stream:#x}")
        dtype = np.dtype(self.nccl.DTYPES[datatype])
        nbytes = count * dtype.itemsize
        array, offset = self.nccl.find(recvbuf, nbytes)
        recv = np.frombuffer((ctypes.c_char * nbytes).from_address(recvbuf), dtype=dtype)
        if sendbuf == recvbuf:
            send = MPI.IN_PLACE
        else:
            self.nccl.find(sendbuf, nbytes)
            send = np.frombuffer((ctypes.c_char * nbytes).from_address(sendbuf), dtype=dtype)
        queue = self.nccl.cuda.streams[stream]
        queue.pending.append(self.mpi.Iallreduce(send, recv, op=MPI.SUM))
        self.nccl.log.append({
            "call": "allReduce", "in_place": sendbuf == recvbuf, "array": array,
            "offset": int(offset), "count": count, "datatype": datatype, "stream": stream,
            "after": [(e.id, e.stream.ptr) for e in queue.waited]})
        queue.waited = []

    def check_async_error(self):
        if self.aborted:
            raise NcclError("ncclInvalidArgument: the communicator was aborted")

    def abort(self):
        if not self.aborted:
            self.nccl.log.append({"call": "abort"})
        self.aborted = True

    def destroy(self):
        self.aborted = True


def install(devices=2, fail_on=None):
    """Make ``distributed.nccl_runtime`` return the stand-in pair; returns it."""
    cp = StandInCupy(devices)
    nccl = StandInNccl(cp.cuda)

    def nccl_runtime():
        if MPI.COMM_WORLD.Get_rank() == fail_on:
            raise RuntimeError("backend 'cupy' requested but no GPU is usable: "
                               "cudaErrorNoDevice")
        return cp, nccl

    distributed.nccl_runtime = nccl_runtime
    return cp, nccl


def train(out, dist, nccl=None):
    """The tiny GPT of distributed_worker, 2 ranks x batch 2, float64, small buckets."""
    trainer = make_trainer(os.path.join(out, "run"), dist, batch=2, dtype="float64",
                           bucket_mb=BUCKET_MB)
    reducer = trainer.parallel.reducer
    if nccl is not None:
        nccl.memory.append(reducer.flat)
        finish = reducer.finish

        def logged_finish(where=""):
            nccl.log.append({"call": "finish"})
            finish(where)

        reducer.finish = logged_finish
    trainer.train()
    if nccl is not None:
        nccl.log.append({"call": "trained"})
    save(out, dist.rank, trainer, buckets=[[int(s), int(e)] for s, e, _, _ in reducer.buckets])
    return trainer


def main(scenario, out):
    rank = MPI.COMM_WORLD.Get_rank()
    if scenario == "train":          # the MPI path, then the NCCL path, in the same job
        train(os.path.join(out, "mpi"), init_distributed("numpy", timeout=60))
        cp, nccl = install()
        dist = init_distributed("cupy", timeout=60)
        assert repr(dist).endswith("NCCL)"), repr(dist)
        train(os.path.join(out, "nccl"), dist, nccl)
        sums = {}                    # each datatype of the map, outside training
        for name in ("float16", "float32", "float64"):
            buf = (np.arange(6) * (rank + 1)).astype(name)
            nccl.memory.append(buf)
            dist.wait([dist.start_allreduce(buf, f"{name} sum")], f"{name} sum")
            sums[name] = buf.tolist()
        try:
            dist.start_allreduce(np.zeros(3, dtype=np.int64), "int64 sum")
            sums["int64"] = None
        except DistributedError as exc:
            sums["int64"] = str(exc)
        with open(os.path.join(out, "nccl", f"rank{rank}_calls.json"), "w") as f:
            json.dump({"calls": nccl.log, "sums": sums}, f)
    elif scenario in ("shared_gpu", "no_gpu_on_rank1"):   # set-up problems reach every rank
        if scenario == "shared_gpu":
            install(devices=1)       # each process sees one GPU: the same one
        else:
            install(fail_on=1)
        try:
            init_distributed("cupy", timeout=60)
            save(out, rank, error=None)
        except DistributedError as exc:
            save(out, rank, error=str(exc))
    elif scenario == "dead":         # rank 1 leaves after NCCL's set-up, before step 1
        cp, nccl = install()
        dist = init_distributed("cupy", timeout=60)
        if rank == 1:
            save(out, rank, note="leaving")
            return
        trainer = make_trainer(os.path.join(out, "run"), None)   # no collectives yet
        dist.timeout = 1.5
        nccl.memory.append(attach_without_setup(trainer, dist).reducer.flat)
        try:
            trainer.train()
            save(out, rank, error=None)
        except DistributedError as exc:
            save(out, rank, error=str(exc), calls=[c["call"] for c in nccl.log])
            dist.abort(3)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
