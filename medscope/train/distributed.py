"""Data-parallel training under ``torchrun``: the process group, sharding, collectives.

``train.py`` runs unchanged under PyTorch's launcher::

    torchrun --standalone --nproc_per_node=4 train.py --dataset pathmnist --size 224

:func:`init` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``) and joins the process group: NCCL when the processes train on
GPUs, Gloo on CPUs. Started without torchrun it returns :data:`SINGLE` and
starts nothing, and every helper here is then a no-op, so a single-process run
computes exactly what it computed before this module existed.

Sharding keeps the *global* batch: an epoch's permutation is the same on every
rank (it comes from the shared epoch generator), each global batch is the one
a single process would take, and rank ``r`` trains on the ``r``-th of its
``world_size`` equal parts. The learning rate, the steps per epoch and the
schedule therefore do not depend on the number of processes.

Only rank 0 writes (the run folder, checkpoints, TensorBoard); it runs
whatever touches the results folder and broadcasts the outcome, including its
errors, so that no rank waits in a collective for a peer that has given up.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import signal
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from medscope.devices import resolve_device
from medscope.errors import RunFailed, UsageError

T = TypeVar("T")

# PyTorch's own default for Gloo. A crashed peer is noticed at once (its
# sockets close and torchrun stops the others); the timeout only bounds a peer
# that hangs or a node that vanishes, so it must exceed the longest stretch one
# rank works alone: hashing a fresh 224 px file, or rank 0's final test pass.
DEFAULT_TIMEOUT_S = 1800.0

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    Attributes
    ----------
    rank, world_size : int
        This process and the number of processes, over all nodes.
    local_rank, local_world_size : int
        The same on this node (``LOCAL_RANK`` picks the GPU).
    backend : str or None
        ``"nccl"`` or ``"gloo"``; None for a single process with no process group.
    device : torch.device
        The device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nnodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    @property
    def collective_device(self) -> torch.device:
        """NCCL moves only CUDA tensors; Gloo only CPU ones."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def record(self) -> dict:
        """What run.json's environment says about the job."""
        return {"world_size": self.world_size, "nnodes": self.nnodes, "backend": self.backend or "none"}

    def describe(self) -> str:
        """Where the job trains, in words: ``cpu``, or ``2 CPU processes (gloo, 1 node)``."""
        if not self.distributed:
            return str(self.device)
        kind = "GPUs" if self.device.type == "cuda" else "CPU processes"
        return f"{self.world_size} {kind} ({self.backend}, {self.nnodes} node{'s' if self.nnodes > 1 else ''})"


SINGLE = DistContext()


def launched_by_torchrun(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return all(key in environ for key in _TORCHRUN_ENV)


def device_for(spec: str, local_rank: int, local_world_size: int) -> torch.device:
    """The device of one process of a job: ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``.

    An explicit ``cuda:N`` is accepted for a one-process-per-node job only:
    several processes on one GPU would share its memory and NCCL refuses them.
    """
    spec = (spec or "auto").lower()
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec in ("auto", "cuda"):
        resolve_device("cuda")  # CUDA must be there: one clear line if not
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"local rank {local_rank} has no GPU of its own (this node has "
                             f"{torch.cuda.device_count()}); start at most that many processes per node")
        return torch.device("cuda", local_rank)
    device = resolve_device(spec)
    if device.type == "cuda" and local_world_size > 1:
        raise UsageError(f"--device {spec}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                         "pass --device cuda (or auto)")
    return device


def init(device_spec: str, timeout_s: float = DEFAULT_TIMEOUT_S, environ=None) -> DistContext:
    """Join torchrun's process group, or describe a single process when not under torchrun.

    Parameters
    ----------
    device_spec : str
        ``--device`` as given (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    timeout_s : float
        How long a collective may wait for a peer before it fails.
    """
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return DistContext(device=resolve_device(device_spec))
    rank, world_size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    local_rank = int(environ["LOCAL_RANK"])
    local_world_size = int(environ.get("LOCAL_WORLD_SIZE", world_size))
    device = device_for(device_spec, local_rank, local_world_size)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the group: NCCL binds each rank to its current device
        dist.init_process_group(backend, timeout=timeout, device_id=device)
    else:
        dist.init_process_group(backend, timeout=timeout)
    install_signal_handlers()
    return DistContext(rank, world_size, local_rank, local_world_size, backend, device)


def close(ctx: DistContext, *, ok: bool = True) -> None:
    """Leave the process group: together after success, at once after a failure.

    After a failure a peer may be gone, and a barrier would wait for it until
    the timeout; the process group is then only torn down locally.
    """
    if not ctx.distributed or not dist.is_initialized():
        return
    if ok:
        dist.barrier()
        dist.destroy_process_group()
    elif ctx.backend == "gloo":
        dist.destroy_process_group()  # local for Gloo: closes this rank's sockets
    else:
        with contextlib.suppress(Exception):
            dist.distributed_c10d._abort_process_group()  # NCCL: never block on a dead peer


# ------------------------------------------------------------------ signals

# {"held": True} once this process is ending. Error handlers set it inline, as
# their first statement, not through a function call: a signal handler runs
# when a Python function is entered, and could otherwise cut the cleanup short.
signals = {"held": False}


def _interrupt(signum, _frame):
    if signals["held"]:
        return  # already ending: let the cleanup (run.json's status) finish
    signals["held"] = True
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """Make SIGTERM end a worker like Ctrl-C, once.

    torchrun forwards a Ctrl-C to its workers as SIGINT and stops the survivors
    of a failed worker with SIGTERM. Both become one KeyboardInterrupt, so rank
    0 marks the run interrupted (its checkpoint of the last complete epoch is
    intact) and the process exits with 130; later signals are ignored while
    that cleanup runs, and torchrun's SIGKILL 30 s later bounds it.
    """
    signals["held"] = False
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


PEER_FAILURE_MESSAGES = ("Connection closed by peer", "Connection reset by peer",  # Gloo
                         "remote process exited", "ncclRemoteError", "NCCL communicator was aborted")  # NCCL


def is_peer_failure(exc: BaseException) -> bool:
    """True for the errors a collective raises when another process of the job died."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    # only what a dead peer causes: this process's own NCCL or CUDA faults must not read as someone else's
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(needle in text for needle in PEER_FAILURE_MESSAGES)


# ------------------------------------------------------------------ rank 0 first, then share

def broadcast_object(ctx: DistContext, obj: T = None) -> T:
    """Rank 0's ``obj`` on every rank (pickled: small values, or a checkpoint once)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.collective_device)
    return box[0]


def _outcome(fn: Callable[[], T]):
    try:
        return ("ok", fn())
    except UsageError as exc:
        return ("usage", str(exc))
    except Exception as exc:  # noqa: BLE001 - re-raised on this rank after the peers are told
        return ("failed", exc)


def _raise_shared(kind: str, value, own):
    if kind == "usage":
        raise UsageError(value)
    if own is not None:
        raise own
    raise RunFailed(f"another process of the job failed: {value}")


def on_main(ctx: DistContext, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank.

    A :class:`UsageError` on rank 0 is raised on every rank (so the job ends
    with exit code 2 everywhere instead of leaving peers blocked); any other
    error is re-raised on rank 0 and becomes :class:`RunFailed` on the others.
    """
    if not ctx.distributed:
        return fn()
    kind, value = _outcome(fn) if ctx.is_main else (None, None)
    own = value if kind == "failed" else None
    shared = broadcast_object(ctx, (kind, str(value) if kind == "failed" else value))
    if shared[0] != "ok":
        _raise_shared(shared[0], shared[1], own)
    return shared[1]


def local_main_first(ctx: DistContext, fn: Callable[[], T]) -> T:
    """``fn()`` on each node's local rank 0 first, then on the other ranks.

    For work with side effects in a node's cache: a download, the MD5 of a
    10 GB file (remembered once computed), the extraction of a split for
    memory-mapping. The others start only when it succeeded on every node,
    and a failure anywhere is raised on every rank.
    """
    if not ctx.distributed:
        return fn()
    first = ctx.local_rank == 0
    kind, value = _outcome(fn) if first else ("ok", None)
    own = value if kind == "failed" else None
    outcomes = [None] * ctx.world_size
    dist.all_gather_object(outcomes, (kind, str(value) if kind in ("usage", "failed") else None))
    for shared_kind, message in outcomes:
        if shared_kind != "ok":
            _raise_shared(shared_kind, message, own)
    return value if first else fn()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


# ------------------------------------------------------------------ sharding

def shard_range(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of rank ``rank``: the shards cover ``range(n)`` in order.

    Used for evaluation, where nothing is padded or repeated: gathering the
    shards in rank order gives the split in its own order.
    """
    return n * rank // world_size, n * (rank + 1) // world_size


def shard_epoch(order: torch.Tensor, batch_size: int, world_size: int, rank: int,
                drop_last: bool) -> torch.Tensor:
    """This rank's training indices for one epoch, in the order it takes them.

    Parameters
    ----------
    order : tensor (N,)
        The epoch's permutation, the same on every rank.
    batch_size : int
        The global batch; a multiple of ``world_size``.
    drop_last : bool
        Drop the incomplete last global batch (as a single process does).

    Returns
    -------
    tensor
        Consecutive chunks of ``batch_size // world_size`` are this rank's
        batches: step ``k`` of rank ``r`` is the ``r``-th part of the global
        batch ``order[k * batch_size:(k + 1) * batch_size]``. A kept last
        batch that does not split evenly is padded with the epoch's first
        indices (as ``DistributedSampler`` pads), so every rank takes the same
        number of steps; with one process nothing is padded.
    """
    if batch_size % world_size:
        raise ValueError(f"the global batch {batch_size} does not split into {world_size} equal parts")
    n = len(order)
    if drop_last:
        order = order[: n - n % batch_size]
    elif n % world_size:
        pad = world_size - n % world_size
        order = torch.cat([order, order.repeat(pad // max(n, 1) + 1)[:pad]])
    parts = []
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        part = len(batch) // world_size
        parts.append(batch[rank * part:(rank + 1) * part])
    return torch.cat(parts) if parts else order[:0]


# ------------------------------------------------------------------ reductions

def all_reduce_sum(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over all ranks (a new tensor on ``value``'s device)."""
    if not ctx.distributed:
        return value
    total = value.detach().to(ctx.collective_device, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(value.device)


def all_gather_rows(ctx: DistContext, rows: torch.Tensor) -> torch.Tensor:
    """Every rank's ``rows`` (any number each, same trailing shape), concatenated in rank order.

    With the contiguous shards of :func:`shard_range` the result is the whole
    split in its own order. Returned on the CPU.
    """
    if not ctx.distributed:
        return rows.cpu()
    device = ctx.collective_device
    counts = torch.zeros(ctx.world_size, dtype=torch.long, device=device)
    counts[ctx.rank] = rows.shape[0]
    dist.all_reduce(counts)
    longest = int(counts.max())
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    pieces = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[: int(count)] for piece, count in zip(pieces, counts.tolist())]).cpu()


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics) before evaluating.

    DDP keeps parameters identical; the running statistics each rank updates in
    its last step differ, and evaluation and checkpoints must use one model.
    """
    if not ctx.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def command_prefix(ctx: DistContext) -> str:
    """How ``train.py`` was started, for the re-runnable command in run.json."""
    if not ctx.distributed:
        return "python"
    if ctx.nnodes == 1:
        return f"torchrun --standalone --nproc_per_node={ctx.local_world_size}"
    return f"torchrun --nnodes={ctx.nnodes} --nproc_per_node={ctx.local_world_size}"

