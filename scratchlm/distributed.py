"""Data-parallel training over MPI (CPU) and NCCL (GPU).

N processes (*ranks*) hold the same model. One optimizer step:

    every rank draws the same global batch of N*B rows and keeps its own B rows
    every rank runs forward and backward on its rows      -> g_r (its own gradients)
    g = (1/N) sum_r g_r                                    all-reduce, one flat buffer in buckets
    every rank clips and steps from the same g             -> identical weights everywhere

A GPT loss is the mean over rows (every row counts the same number of targets),
so the mean over ranks of the per-rank means is the mean over all N*B rows:
N ranks with batch B take the same steps as one process with batch N*B, up to
the rounding of the sums. (Where rows count different numbers of targets, as
in BERT's masked LM, the average over ranks is a mean of per-rank means, as
with gradient accumulation and as in PyTorch's DistributedDataParallel.)

The pieces, from the bottom up:

* ``launched_world_size()`` reads the variables that ``mpirun``/``mpiexec``
  put in each process's environment; ``init_distributed()`` joins the job
  (mpi4py, imported only then) and returns a ``Communicator``, or None when
  the process was not started by an MPI launcher.
* ``Communicator``: rank, world size, and the few collectives training needs
  (barrier, broadcast of the initial weights, all-reduce, an agreement check
  of configurations and checkpoints). Every collective is nonblocking and
  polled against a deadline: a rank that died or hangs makes the others stop
  with a ``CollectiveTimeoutError`` that names the operation and the ranks
  that did not answer, instead of waiting forever.
* ``GradientReducer``: the gradients of all trainable parameters, copied into
  one flat buffer in the order backward completes them (the transformer blocks
  from last to first, then embeddings, final LayerNorm and heads), cut into
  buckets of whole parameters. A bucket's all-reduce starts as soon as the
  backward of every block it holds has returned, so its communication overlaps
  the backward of the blocks below; the rest start at the end. Then the sums
  are divided by N and copied back into ``.grad``.
* ``ShardedBatches``: this rank's rows of a global batcher.
* ``DataParallel``: the Trainer's one seam. ``Trainer(..., parallel=
  DataParallel(comm))`` calls its hooks at fixed points of the loop (set-up,
  after backward, logging, evaluation, checkpoints, resume); every collective
  the training loop needs runs inside them, so ``scratchlm.train`` knows
  nothing of MPI.

On the cupy backend, gradients are all-reduced on the GPU by NCCL
(``cupy.cuda.nccl``, found by ``nccl_runtime()``; ``NcclAllReduce``); MPI only
starts the job, hands NCCL its unique id, and carries the small host messages
(losses, agreement checks).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import time
from collections import Counter
from dataclasses import asdict

import numpy as np

from scratchlm import backend
from scratchlm.nn.module import ModuleList

DEFAULT_TIMEOUT_S = 600.0     # how long a rank waits in one collective before giving up
DEFAULT_BUCKET_MB = 4.0       # gradient bucket size; small enough that the first bucket of a
                              # small model can start while lower blocks still run backward
_SPIN_S = 0.05                # poll without sleeping this long (low latency for a step's
                              # all-reduce), then sleep 1 ms between polls
_PING_TAG = 77                # the tag of "where are you?" messages after a timeout
INSTALL_HINT = ('pip install -e ".[mpi]" (mpi4py and the MPICH runtime from PyPI), '
                'or pip install mpi4py mpich')

# Variables an MPI launcher sets in each process it starts, world size first.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE",      # Open MPI
                   "PMI_SIZE",                  # MPICH / Intel MPI (Hydra), Slurm's PMI2
                   "MV2_COMM_WORLD_SIZE")       # MVAPICH2
_RANK_VARIABLES = ("PMIX_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")   # PMIx sets no size


class DistributedError(RuntimeError):
    """The ranks of a job cannot train together (they disagree, or MPI is missing)."""


class CollectiveTimeoutError(DistributedError):
    """A collective operation did not complete on every rank before the deadline."""


def launched_world_size():
    """The world size an MPI launcher announced in the environment; None when not launched.

    -1 when a launcher is detected (PMIx) but announces no size.
    """
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    if any(os.environ.get(name) for name in _RANK_VARIABLES):
        return -1
    return None


def _import_mpi(launched: int | None):
    """``mpi4py.MPI``, with an install hint when it or its MPI library is missing."""
    by = f" (mpirun started {launched} processes)" if launched and launched > 0 else ""
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional dependency, imported on demand
    except ImportError as exc:
        raise DistributedError(
            f"this process was started by mpirun/mpiexec{by}, but mpi4py is not installed; "
            f"install it with: {INSTALL_HINT}; or run without mpirun for one process "
            f"(import failed with: {exc})") from None
    except (RuntimeError, OSError) as exc:         # mpi4py present, libmpi missing
        raise DistributedError(
            f"mpi4py is installed but cannot load an MPI library ({exc}); install one with: "
            f"{INSTALL_HINT}") from None
    return MPI


def init_distributed(backend_name: str | None = None, timeout: float = DEFAULT_TIMEOUT_S):
    """Join the MPI job this process belongs to; None when no MPI launcher started it.

    Call it before building the model: with ``backend_name="cupy"`` (or the
    active backend being cupy) it makes GPU number ``local rank`` (the rank's
    place among the ranks of its machine; one rank per GPU) the current
    device and sets up NCCL, so the model's arrays are made on that GPU.
    """
    launched = launched_world_size()
    if launched is None:
        return None
    MPI = _import_mpi(launched)
    world = MPI.COMM_WORLD
    if launched > 0 and world.Get_size() != launched:
        raise DistributedError(
            f"mpirun started {launched} processes, but MPI reports a world of "
            f"{world.Get_size()}: the mpirun on PATH belongs to another MPI than the one "
            f"mpi4py uses ({MPI.Get_library_version().splitlines()[0].strip()}); launch "
            "with that MPI's mpirun (for the PyPI runtime: the one installed beside "
            "python, e.g. $(dirname $(which python))/mpirun)")
    comm = Communicator(world, timeout=timeout)
    name = backend.get_backend() if backend_name is None else backend_name
    if name == "cupy":
        comm.init_nccl()
    return comm


def rank_seed(seed: int, rank: int) -> int:
    """A seed of its own for each rank's dropout stream, independent of ``seed``'s stream."""
    return int(np.random.SeedSequence(seed, spawn_key=(rank,)).generate_state(1)[0])


class Communicator:
    """One rank's view of an MPI job: who it is, and collectives with a deadline.

    Every operation is a collective: all ranks must call it, in the same order.
    ``timeout`` (seconds) bounds each one.
    """

    def __init__(self, mpi_comm, timeout: float = DEFAULT_TIMEOUT_S):
        MPI = _import_mpi(None)
        if not timeout > 0:
            raise ValueError(f"Communicator: timeout must be > 0 seconds; got {timeout!r}")
        self.MPI = MPI
        self.comm = mpi_comm.Dup()          # our own context: no clash with the user's messages
        self.control = mpi_comm.Dup()       # "where are you?" messages after a timeout
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_main = self.rank == 0
        self.timeout = float(timeout)
        self.collectives = 0                # started so far; the same count on every rank
        self.nccl = None                    # NcclAllReduce, once init_nccl() has run
        self._sends = []                    # replies in flight

    def __repr__(self):
        via = "NCCL" if self.nccl else "MPI"
        return f"Communicator(rank {self.rank} of {self.world_size}, {via})"

    # --- waiting with a deadline ----------------------------------------------
    def _poll(self, done, what):
        """Call ``done()`` until it is true; past the deadline, raise CollectiveTimeoutError."""
        if done():
            return
        start = time.monotonic()
        while not done():
            now = time.monotonic()
            if now - start > _SPIN_S:
                self._answer_pings()
                if now - start > self.timeout:
                    raise CollectiveTimeoutError(self._timeout_message(what, now - start))
                time.sleep(0.001)

    def _answer_pings(self, seen=None):
        """Reply to every "where are you?" from a rank that timed out; note who asked."""
        MPI, status = self.MPI, self.MPI.Status()
        while self.control.Iprobe(source=MPI.ANY_SOURCE, tag=_PING_TAG, status=status):
            kind, (rank, number, what) = self.control.recv(source=status.Get_source(),
                                                           tag=_PING_TAG)
            if seen is not None:
                seen[rank] = (number, what)
            if kind == "ping":
                here = (self.rank, self.collectives, self._current)
                self._sends.append(self.control.isend(("pong", here), dest=rank, tag=_PING_TAG))

    def _timeout_message(self, what, waited):
        """Ask the other ranks where they are (live ones answer from their own wait loop)."""
        others = [r for r in range(self.world_size) if r != self.rank]
        here = (self.rank, self.collectives, what)
        for r in others:
            try:
                self._sends.append(self.control.isend(("ping", here), dest=r, tag=_PING_TAG))
            except self.MPI.Exception:
                pass                                  # that rank is gone
        answers, until = {}, time.monotonic() + min(5.0, self.timeout)
        while len(answers) < len(others) and time.monotonic() < until:
            self._answer_pings(answers)
            time.sleep(0.01)
        silent = [r for r in others if r not in answers]
        same = [r for r, (n, _) in answers.items() if n == self.collectives]
        elsewhere = [f"rank {r} is in collective #{n} ({w})"
                     for r, (n, w) in sorted(answers.items()) if n != self.collectives]
        parts = [f"{what} (collective #{self.collectives}) timed out after {waited:.0f} s on "
                 f"rank {self.rank} of {self.world_size}"]
        if silent:
            parts.append(f"no answer from {_ranks(silent)}: dead, hung, or busy outside "
                         "scratchlm's collectives (a crash there is reported by that rank "
                         "or by mpirun)")
        if same:
            parts.append(f"{_ranks(same)} {'is' if len(same) == 1 else 'are'} waiting in the "
                         "same operation")
        parts += elsewhere
        parts.append(f"the limit is {self.timeout:g} s (--dist-timeout / "
                     "Communicator(timeout=...))")
        return "; ".join(parts)

    def _start(self, what):
        self.collectives += 1
        self._current = what

    _current = "nothing"

    # --- host collectives (MPI) -------------------------------------------------
    def barrier(self, what="barrier"):
        """Wait until every rank has arrived."""
        self._start(what)
        request = self.comm.Ibarrier()
        self._poll(request.Test, what)

    def allreduce_sum(self, values, what="all-reduce"):
        """Element-wise sum over ranks of a list of numbers; a float64 NumPy array."""
        buf = np.array(values, dtype=np.float64).reshape(-1)
        self._start(what)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self._poll(request.Test, what)
        return buf

    def allreduce_mean(self, values, what="all-reduce"):
        """Element-wise mean over ranks of a list of numbers (losses, metrics)."""
        return self.allreduce_sum(values, what) / self.world_size

    def allgather_object(self, obj, what="all-gather"):
        """A list of every rank's ``obj`` (picklable), in rank order, on every rank."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        sizes = np.zeros(self.world_size, dtype=np.int64)
        self._start(what)
        request = self.comm.Iallgather(np.array([data.size], dtype=np.int64), sizes)
        self._poll(request.Test, what)
        gathered = np.empty(int(sizes.sum()), dtype=np.uint8)
        self._start(what)
        request = self.comm.Iallgatherv(data, [gathered, sizes.tolist()])
        self._poll(request.Test, what)
        ends = np.cumsum(sizes)
        return [pickle.loads(gathered[end - size:end].tobytes())
                for end, size in zip(ends, sizes)]

    def bcast_object(self, obj, what="broadcast", root=0):
        """Rank ``root``'s ``obj`` (picklable), on every rank."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == root else None
        size = np.array([0 if data is None else data.size], dtype=np.int64)
        self._start(what)
        request = self.comm.Ibcast(size, root=root)
        self._poll(request.Test, what)
        buf = data.copy() if data is not None else np.empty(int(size[0]), dtype=np.uint8)
        self._start(what)
        request = self.comm.Ibcast(buf, root=root)
        self._poll(request.Test, what)
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def broadcast_parameters(self, model, root=0):
        """Copy rank ``root``'s weights into every rank's model (frozen ones included)."""
        params = model.parameters()
        host = [np.ascontiguousarray(backend.to_numpy(p.data)) for p in params]
        what = "broadcast of the initial weights"
        self._start(what)
        requests = [self.comm.Ibcast(a, root=root) for a in host]
        self._poll(lambda: self.MPI.Request.Testall(requests), what)
        if self.rank != root:
            for p, a in zip(params, host):
                p.data[...] = backend.to_backend(a, "cupy" if backend.is_cupy_array(p.data)
                                                 else "numpy")

    def check_agreement(self, what, value):
        """Raise DistributedError on every rank unless all ranks hold an equal ``value``.

        ``value`` is a dict (of JSON-like values) or anything comparable with
        ``==``; for dicts, the error lists the keys that differ and each rank's value.
        """
        values = self.allgather_object(value, f"agreement check on {what}")
        if all(v == values[0] for v in values[1:]):
            return
        raise DistributedError(f"the ranks disagree on {what}: {_differences(values)}")

    # --- gradients ---------------------------------------------------------------
    def gradient_reducer(self, model, bucket_mb=DEFAULT_BUCKET_MB, overlap=True):
        """A GradientReducer for ``model``'s trainable parameters."""
        return GradientReducer(self, model, bucket_mb=bucket_mb, overlap=overlap)

    def start_allreduce(self, buf, what):
        """Start summing ``buf`` over ranks, in place; returns a handle for ``test``/``wait``.

        Through NCCL once ``init_nccl()`` has run (GPU buffers), else through MPI
        (NumPy buffers).
        """
        self._start(what)
        if self.nccl is not None:
            return self.nccl.start(buf)
        if backend.is_cupy_array(buf):
            raise DistributedError("a CuPy gradient buffer needs NCCL: call "
                                   "init_distributed('cupy') (or Communicator.init_nccl()) "
                                   "before building the model")
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def test(self, handles):
        """True when every handle's all-reduce has completed (moves MPI's progress on)."""
        requests = [h for h in handles if isinstance(h, self.MPI.Request)]
        events = [h for h in handles if not isinstance(h, self.MPI.Request)]
        return (self.MPI.Request.Testall(requests)
                and (not events or self.nccl.done(events)))

    def wait(self, handles, what):
        """Wait for ``start_allreduce`` handles, with the deadline.

        For NCCL the host waits only to enforce the deadline; then the compute
        stream is made to wait for the sums, so the kernels queued after this read them.
        """
        events = [h for h in handles if not isinstance(h, self.MPI.Request)]
        try:
            self._poll(lambda: self.test(handles), what)
        except Exception:                   # the deadline passed, or a peer failed
            if events:
                self.nccl.abort()           # stop the kernels waiting for it
            raise
        if events:
            self.nccl.wait_for(events)

    def init_nccl(self):
        """Pick this rank's GPU and build the NCCL communicator (bootstrapped over MPI).

        The GPU: where a process sees all the GPUs of its machine, the rank with
        local rank i (its place among the ranks of the machine) takes GPU i;
        where the launcher shows each process one GPU of its own
        (CUDA_VISIBLE_DEVICES set per rank), that one. Every rank checks its own
        set-up first and the ranks compare notes before NCCL starts, so a problem
        on any rank (no NCCL, too few GPUs, two ranks on one GPU) stops all of
        them with the same message: NCCL's own set-up is a collective without a
        deadline, where the others would wait forever. Returns the GPU's index.
        """
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)   # ranks on this machine
        local_rank, local_size = local.Get_rank(), local.Get_size()
        local.Free()
        problem, gpu, index = None, None, None
        try:
            cp, nccl = nccl_runtime()
            n_gpus = cp.cuda.runtime.getDeviceCount()
            if local_size > n_gpus > 1:
                raise DistributedError(f"{local_size} ranks share a machine whose processes "
                                       f"see {n_gpus} GPUs; NCCL needs one GPU per rank: "
                                       f"start at most {n_gpus} ranks per machine")
            index = local_rank if local_size <= n_gpus else 0
            cp.cuda.Device(index).use()
            gpu = (socket.gethostname(), cp.cuda.runtime.deviceGetPCIBusId(index))
        except (DistributedError, RuntimeError, ImportError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        notes = self.allgather_object((problem, gpu), "NCCL set-up (GPU choice)")
        problems = [f"rank {r}: {p}" for r, (p, _) in enumerate(notes) if p is not None]
        if problems:
            raise DistributedError("NCCL cannot start; " + "; ".join(problems))
        ranks_of = {}
        for r, (_, g) in enumerate(notes):
            ranks_of.setdefault(tuple(g), []).append(r)
        shared = [f"{_ranks(rs)} share GPU {bus} on {host}"
                  for (host, bus), rs in ranks_of.items() if len(rs) > 1]
        if shared:
            raise DistributedError("NCCL needs a GPU of its own for each rank, but "
                                   + "; ".join(shared) + ": start at most one rank per GPU")
        uid = self.bcast_object(nccl.get_unique_id() if self.is_main else None,
                                "NCCL set-up (unique id)")
        self.nccl = NcclAllReduce(cp, nccl, self.world_size, uid, self.rank)
        return index

    def abort(self, code=1):
        """End every process of the job now (after an error that leaves the others waiting)."""
        if self.nccl is not None:
            self.nccl.abort()
        self.comm.Abort(code)


def nccl_runtime():
    """CuPy and its NCCL bindings, ``(cupy, cupy.cuda.nccl)``; an error that says what is missing.

    ``import cupy`` leaves ``cupy.cuda.nccl`` unloaded (it is not an attribute
    of ``cupy.cuda`` until imported), so the backend imports it, once it has
    found CuPy and a GPU. Its ``available`` is False where the NCCL library
    could not be loaded.
    """
    cp = backend.xp("cupy")
    try:
        nccl = backend.cupy_nccl()
    except ImportError as exc:
        nccl, reason = None, str(exc)
    else:
        reason = "cupy.cuda.nccl.available is False"
    if nccl is None or not getattr(nccl, "available", False):
        raise DistributedError(f"this CuPy cannot load NCCL ({reason}); install the NCCL "
                               "library for your CUDA (pip install nvidia-nccl-cu12, or "
                               "nvidia-nccl-cu11)")
    return cp, nccl


class NcclAllReduce:
    """In-place sums over ranks of GPU buffers by NCCL, on a CUDA stream of its own.

    ``start(buf)`` queues three things on that stream and returns at once:

        wait for an event recorded now on the compute stream   (the copies into buf)
        ncclAllReduce(buf -> buf, count = buf.size, sum)
        record a "done" event                                   (the handle)

    ``done(events)`` asks, without blocking, whether they have passed (and
    raises NCCL's error if a peer failed); ``wait_for(events)`` makes the
    compute stream wait for them, so that the kernels queued after it read the
    sums. ``cp`` and ``nccl`` are ``nccl_runtime()``'s pair.
    """

    def __init__(self, cp, nccl, world_size, unique_id, rank):
        self.cp, self.nccl = cp, nccl
        self.datatypes = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                          "float64": nccl.NCCL_FLOAT64}
        self.comm = nccl.NcclCommunicator(world_size, unique_id, rank)   # on the current GPU
        self.stream = cp.cuda.Stream(non_blocking=True)

    def start(self, buf):
        if not isinstance(buf, self.cp.ndarray):
            raise DistributedError(f"NCCL sums GPU arrays; got a {type(buf).__module__} "
                                   "array: build the model on the cupy backend")
        if buf.dtype.name not in self.datatypes or not buf.flags.c_contiguous:
            raise DistributedError(f"NCCL all-reduce: need a contiguous buffer of "
                                   f"{'/'.join(self.datatypes)}; got {buf.dtype.name}")
        cuda = self.cp.cuda
        ready = cuda.Event(disable_timing=True)
        ready.record(cuda.get_current_stream())
        self.stream.wait_event(ready)
        address = _address(buf)
        self.comm.allReduce(address, address, buf.size, self.datatypes[buf.dtype.name],
                            self.nccl.NCCL_SUM, self.stream.ptr)
        done = cuda.Event(disable_timing=True)
        done.record(self.stream)
        return done

    def done(self, events):
        self.comm.check_async_error()       # a failed peer surfaces here
        return all(e.done for e in events)

    def wait_for(self, events):
        stream = self.cp.cuda.get_current_stream()
        for e in events:
            stream.wait_event(e)

    def abort(self):
        """Stop this rank's NCCL kernels and free the communicator (no-op when done already)."""
        self.comm.abort()


def _address(buf):
    """The address of a contiguous array's first element (on the GPU for CuPy)."""
    return buf.data.ptr if backend.is_cupy_array(buf) else buf.ctypes.data


def _ranks(ranks):
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _short(value, width=60):
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[:width - 3] + "..."


def _flatten(value, prefix=""):
    """A nested dict as {"a.b.c": leaf}; anything else as {prefix: value}."""
    if not isinstance(value, dict) or not value:
        return {prefix or "value": value}
    flat = {}
    for k, v in value.items():
        flat.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return flat


def _differences(values):
    """Which entries differ between ranks, and each rank's value (for an error message)."""
    values = [_flatten(v) for v in values]
    keys = sorted({k for v in values for k in v})
    lines = []
    for k in keys:
        got = [v.get(k, "<missing>") for v in values]
        if any(g != got[0] for g in got[1:]):
            groups = {}
            for r, g in enumerate(got):
                groups.setdefault(_short(g), []).append(r)
            lines.append(f"{k}: " + ", ".join(f"{_ranks(rs)} {text}"
                                              for text, rs in groups.items()))
    shown = lines[:8] + ([f"... and {len(lines) - 8} more"] if len(lines) > 8 else [])
    return "; ".join(shown)


def fingerprint(arrays) -> str:
    """A short hash of arrays' bytes (to compare weights across ranks)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(backend.to_numpy(a)).tobytes())
    return h.hexdigest()


def file_fingerprint(paths) -> str:
    """A short hash of files' bytes (to compare the checkpoint each rank read)."""
    h = hashlib.blake2b(digest_size=16)
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class GradientReducer:
    """Average the gradients over ranks: g <- (1/N) sum_r g_r, bucket by bucket.

    Layout. Trainable parameters are ordered as backward completes them: the
    layers of the model's ModuleLists (the transformer blocks) from last to
    first, then every other parameter (embeddings, final LayerNorm, heads, and
    weights shared between modules, all complete only when backward ends).
    Their gradients are laid end to end in one flat buffer, cut into buckets
    of whole parameters of about ``bucket_mb`` megabytes:

        flat = [ g(h.L-1) ... | g(h.L-3) ... g(h.0) | g(wte) g(wpe) g(ln_f) ]
                 bucket 0       bucket 1              bucket 2

    Overlap. With ``overlap=True`` each layer's ``backward`` is wrapped (an
    instance attribute; ``close()`` removes it): when it returns, that layer's
    gradients are complete, and every bucket whose layers are all complete
    starts its all-reduce, in bucket order (all ranks must start collectives
    in the same order), while backward goes on below. ``finish()`` starts what
    is left, waits, divides by N and copies the averages into ``.grad``.

    The copies in and out cost two passes over the gradients; they leave each
    ``Parameter.grad`` the array its layer and the optimizer own.
    """

    def __init__(self, comm, model, bucket_mb=DEFAULT_BUCKET_MB, overlap=True):
        if not bucket_mb > 0:
            raise ValueError(f"GradientReducer: bucket_mb must be > 0; got {bucket_mb!r}")
        self.comm, self.overlap = comm, overlap
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("GradientReducer: the model has no trainable parameters")
        dtypes = {p.data.dtype.name for _, p in trainable}
        kinds = {backend.is_cupy_array(p.data) for _, p in trainable}
        if len(dtypes) > 1 or len(kinds) > 1:
            raise ValueError(f"GradientReducer: trainable parameters must share one dtype and "
                             f"backend; got dtypes {sorted(dtypes)}")
        # A parameter owned by two modules (tied weights) is complete only at the end.
        owners = Counter(id(p) for m in model.modules() for p in m._parameters.values())
        layers, taken = [], []
        for name, module in model.named_modules():
            if isinstance(module, ModuleList) and not any(name.startswith(t + ".")
                                                          for t in taken):
                taken.append(name)
                layers += list(module)
        name_of = {id(p): n for n, p in trainable}
        order, layer_of = [], {}
        for layer in reversed(layers):                 # backward meets the last layer first
            for p in layer.parameters():
                if id(p) in name_of and owners[id(p)] == 1 and id(p) not in layer_of:
                    layer_of[id(p)] = layer
                    order.append(p)
        placed = set(map(id, order))
        order += [p for _, p in trainable if id(p) not in placed]
        self.names = [name_of[id(p)] for p in order]
        self.params = order
        # Buckets: consecutive whole parameters, cut when one would pass bucket_mb.
        itemsize = order[0].data.dtype.itemsize
        cap = bucket_mb * 1e6 / itemsize
        self.buckets = []                # (start, end) in the flat buffer, and params indices
        start = count = 0
        first = 0
        for i, p in enumerate(order):
            if count and count + p.size > cap:
                self.buckets.append((start, start + count, first, i))
                start, count, first = start + count, 0, i
            count += p.size
        self.buckets.append((start, start + count, first, len(order)))
        self.offsets = np.cumsum([0] + [p.size for p in order])
        xp = backend.get_array_module(order[0].data)
        self.flat = xp.empty(int(self.offsets[-1]), dtype=order[0].data.dtype)
        self.nbytes = int(self.flat.nbytes)
        # The layers each bucket waits for; None when it holds a parameter of no layer.
        self._needs = []
        for _, _, i, j in self.buckets:
            need = {id(layer_of[id(p)]) for p in order[i:j] if id(p) in layer_of}
            self._needs.append(None if any(id(p) not in layer_of for p in order[i:j])
                               else need)
        self._wrapped = []
        if overlap:
            for layer in {id(m): m for m in layer_of.values()}.values():
                self._wrap(layer)
        self._armed, self._done, self._launched, self._handles = False, set(), 0, []
        self.last_wait_s = 0.0           # time finish() spent waiting for the last step's sums

    def _wrap(self, layer):
        original = layer.backward

        def backward(*args, **kwargs):
            dx = original(*args, **kwargs)
            self._layer_done(layer)
            return dx

        object.__setattr__(layer, "backward", backward)
        self._wrapped.append(layer)

    def close(self):
        """Remove the wrappers from the layers' backward."""
        for layer in self._wrapped:
            del layer.__dict__["backward"]
        self._wrapped = []

    def arm(self):
        """The next backward is the step's last: start buckets as its layers complete them."""
        self._armed, self._done, self._launched, self._handles = True, set(), 0, []

    def _layer_done(self, layer):
        if not self._armed:
            return                                   # an earlier micro-batch: grads still add up
        if id(layer) in self._done:
            raise RuntimeError("GradientReducer: a layer's backward ran twice in one backward "
                               "pass; overlap assumes once (use overlap=False)")
        self._done.add(id(layer))
        while (self._launched < len(self.buckets) and self._needs[self._launched] is not None
               and self._needs[self._launched] <= self._done):
            self._launch(self._launched)
        if self._handles:
            self.comm.test(self._handles)            # let MPI move the started ones on

    def _launch(self, b):
        start, end, i, j = self.buckets[b]
        for k in range(i, j):
            p = self.params[k]
            self.flat[self.offsets[k]:self.offsets[k + 1]] = p.grad.reshape(-1)
        self._handles.append(self.comm.start_allreduce(
            self.flat[start:end], f"gradient all-reduce, bucket {b + 1}/{len(self.buckets)}"))
        self._launched = b + 1

    def finish(self, where=""):
        """Start the remaining buckets, wait, and write the averages into every ``.grad``."""
        while self._launched < len(self.buckets):
            self._launch(self._launched)
        t0 = time.perf_counter()
        n = len(self.buckets)
        self.comm.wait(self._handles, f"gradient all-reduce ({n} bucket{'s' * (n > 1)}, "
                                      f"{self.nbytes / 1e6:.1f} MB{', ' + where if where else ''})")
        self.last_wait_s = time.perf_counter() - t0
        self.flat /= float(self.comm.world_size)        # the mean over ranks
        for k, p in enumerate(self.params):
            p.grad[...] = self.flat[self.offsets[k]:self.offsets[k + 1]].reshape(p.grad.shape)
        self._armed, self._done, self._launched, self._handles = False, set(), 0, []

    def describe(self):
        """One line per bucket: its size and its first and last parameter."""
        return [f"bucket {b + 1}: {(end - start) * self.flat.itemsize / 1e6:.2f} MB, "
                f"{self.names[i]} .. {self.names[j - 1]}"
                for b, (start, end, i, j) in enumerate(self.buckets)]


class DataParallel:
    """Data-parallel training as the Trainer's strategy: its hooks, run over a Communicator.

        comm = init_distributed()
        train = ShardedBatches(batches, comm.rank, comm.world_size)
        Trainer(model, args, train, eval_shards, parallel=DataParallel(comm)).train()

    ``scratchlm.train.SingleProcess`` is the one-process version of the same
    hooks (each does nothing); the Trainer calls them at these points:

        setup(trainer)              Trainer.__init__: the ranks agree on the set-up, take
                                    rank 0's weights, and each draws dropout of its own
        before_last_backward()      the step's last micro-batch: buckets start during backward
        average_gradients(step)     after it: every .grad <- (1/N) sum_r g_r
        average_loss(loss, tokens)  the logged loss: the mean over ranks; tokens: the sum
        average_evaluation(...)     the evaluation loss: the mean; metric sums and counts:
                                    the sums (each rank evaluated its shard)
        gather_rng_states(...)      before a checkpoint: the weights agree; every rank's
                                    dropout state, for rank 0 to save
        after_save(step)            rank 0 has written the checkpoint; the others wait here
        check_resume(dir, state)    every rank is about to resume from the same bytes

    Every hook is a collective: all ranks call it, in the same order, which
    the Trainer's fixed loop guarantees. ``bucket_mb`` and ``overlap`` are
    the GradientReducer's.
    """

    def __init__(self, comm, bucket_mb=DEFAULT_BUCKET_MB, overlap=True):
        self.comm = comm
        self.rank, self.world_size, self.is_main = comm.rank, comm.world_size, comm.is_main
        self.bucket_mb, self.overlap = bucket_mb, overlap
        self.reducer = None                 # a GradientReducer, built by setup()

    def __repr__(self):
        return f"DataParallel({self.comm!r})"

    def setup(self, trainer):
        """Same set-up and weights on every rank; a gradient reducer; per-rank dropout."""
        args, model = trainer.args, trainer.model
        self.comm.check_agreement("the training set-up", {
            "args": {k: v for k, v in asdict(args).items() if k not in ("out_dir", "progress")},
            "parameters": [(n, list(p.shape), p.dtype.name, p.requires_grad)
                           for n, p in model.named_parameters()],
            "optimizer": type(trainer.optimizer).__name__,
            "data": trainer.train_batches.state_dict(),
            "eval_batches": len(trainer.eval_batches or ())})
        self.comm.broadcast_parameters(model)
        self.reducer = self.comm.gradient_reducer(model, bucket_mb=self.bucket_mb,
                                                  overlap=self.overlap)
        if self.world_size > 1 and model.rng is not None:
            model.set_rng(backend.default_rng(rank_seed(args.seed, self.rank)))

    def before_last_backward(self):
        """Arm the reducer: the coming backward starts each bucket as its blocks complete."""
        self.reducer.arm()

    def average_gradients(self, step):
        """Wait for the buckets and leave the mean over ranks in every ``.grad``."""
        self.reducer.finish(f"step {step}")

    def average_loss(self, loss, tokens):
        """(the mean of the ranks' losses, the ranks' tokens added up), the same everywhere."""
        loss, tokens = self.comm.allreduce_sum([loss, tokens], "loss all-reduce")
        return float(loss) / self.world_size, int(tokens)

    def average_evaluation(self, val_loss, sums, counts):
        """Each rank evaluated its shard: the mean of the losses; metric sums and counts added."""
        n = len(sums)
        totals = self.comm.allreduce_sum([val_loss, *sums, *counts], "evaluation all-reduce")
        return float(totals[0]) / self.world_size, totals[1:1 + n], totals[1 + n:]

    def gather_rng_states(self, model, rng_state, step):
        """Check that the weights agree; every rank's dropout state, in rank order."""
        self.comm.check_agreement(f"the weights at step {step}",
                                  fingerprint(model.state_dict().values()))
        return self.comm.allgather_object(rng_state, "dropout states")

    def after_save(self, step):
        """Every rank waits here until rank 0 has written the checkpoint of ``step``."""
        self.comm.barrier(f"checkpoint of step {step}")

    def check_resume(self, directory, state):
        """Every rank read the same checkpoint (its step and its files' bytes)."""
        names = ("trainer_state.json", "model.safetensors", "optimizer.safetensors")
        self.comm.check_agreement("the checkpoint to resume from", {
            "step": state["step"],
            "content": file_fingerprint(os.path.join(directory, n) for n in names)})

    def summary(self):
        """One line for a log: what is all-reduced per step, and through what."""
        via = "NCCL" if self.comm.nccl else "MPI"
        return f"{self.reducer.nbytes / 1e6:.1f} MB of gradients all-reduced per step via {via}"


class ShardedBatches:
    """This rank's rows of a global batcher (whose batches hold N*B rows).

    Every rank keeps an identical copy of the global batcher (same seed, same
    state) and takes rows [rank*B, (rank+1)*B) of each batch, so the ranks
    together see exactly the batches one process would, and the batcher's
    state (the same on every rank) resumes exactly. Drawing the whole global
    batch on every rank costs N times the data work, which is small beside a
    model step.
    """

    def __init__(self, batches, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def next_batch(self):
        return shard_batch(self.batches.next_batch(), self.rank, self.world_size)

    def state_dict(self):
        return self.batches.state_dict()

    def load_state_dict(self, state):
        self.batches.load_state_dict(state)


def shard_batch(batch: dict, rank: int, world_size: int) -> dict:
    """Rows [rank*B, (rank+1)*B) of every array of a batch of N*B rows."""
    out = {}
    for key, value in batch.items():
        rows = int(np.shape(value)[0])
        if rows % world_size:
            raise ValueError(f"shard_batch: {key!r} has {rows} rows, not divisible by the "
                             f"{world_size} ranks; make the global batch a multiple of them")
        per = rows // world_size
        out[key] = value[rank * per:(rank + 1) * per]
    return out
