"""Data-parallel training on ``torch.distributed``, with the gradient all-reduce written by hand.

``torchrun --nproc_per_node=N ...`` starts N processes (ranks) and describes them in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
:func:`setup` joins them into one process group: gloo on the CPU, NCCL on CUDA (one GPU
per rank, ``cuda:LOCAL_RANK``). Every rank holds a full copy of the model, reads its own
shard of each global batch (:class:`ShardedDataLoader`; the packages' loaders shard alike) and runs
the model's own forward and backward on it; :func:`all_reduce_gradients` then turns the
ranks' gradients into the gradient of the mean loss over the *global* batch, so that every
rank takes the same optimizer step a single process would take on the whole batch.
:class:`DataParallel` attaches all of this to an :class:`~scratch_engine.Engine`.

Every collective here must be called by every rank, in the same order. A rank that dies
makes the others fail (gloo: the connection closes) or, at worst, time out after
``timeout_seconds`` with an error, instead of waiting forever.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from scratch_engine.data import DataLoader
from scratch_engine.engine import Callback, Engine, Meter
from scratch_engine.module import Module, Parameter, widened

DEFAULT_TIMEOUT_SECONDS = 300.0  # how long a collective waits for a missing rank before it fails
BUCKET_BYTES = 25 * 2**20  # gradients travel in flat buckets of about this size (DDP's default)
_ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_EXACT_COUNT_DTYPES = (torch.float32, torch.float64)  # they hold a sample count exactly


def is_initialized() -> bool:
    """Whether this process belongs to an initialized ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """How many processes train together, 1 when not distributed."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``), 0 when unset."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 and whenever the run is not distributed: the process that logs and writes files."""
    return rank() == 0


class LaunchError(RuntimeError):
    """Distributed training asked for where it cannot start: no torchrun environment, no torch.distributed."""


def is_distributed() -> bool:
    """Whether gradients and metrics must be combined across processes (initialized, more than one rank)."""
    return is_initialized() and world_size() > 1


def setup(
    backend: str | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    device: str | torch.device | None = None,
) -> torch.device:
    """Join the process group that torchrun's environment describes; return this rank's device.

    ``backend=None`` picks NCCL when this rank trains on CUDA and gloo otherwise. ``device``
    is the device asked for (``None``: CUDA when available); on CUDA each rank takes
    ``cuda:LOCAL_RANK``. A collective that waits more than ``timeout_seconds`` for another
    rank raises instead of hanging. Calling it again returns the device and changes nothing.
    """
    if not dist.is_available():
        raise LaunchError("this build of torch has no torch.distributed")
    missing = [name for name in _ENVIRONMENT if name not in os.environ]
    if missing and not is_initialized():
        raise LaunchError(
            f"distributed training needs the environment torchrun sets ({', '.join(missing)} missing): "
            "launch with `torchrun --nproc_per_node=N -m <package> train ... --distributed`"
        )
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"distributed training runs on the CPU (gloo) or CUDA (NCCL), not on {device.type!r}")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if is_initialized():
        return device
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_seconds))
    atexit.register(cleanup)
    return device


def cleanup() -> None:
    """Leave the process group (safe to call twice, or when there is none)."""
    if is_initialized():
        dist.destroy_process_group()


def collective_device() -> torch.device:
    """Where small tensors must be for a collective: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_parameters(module: Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (running statistics) into every rank's ``module``.

    Ranks seeded alike already start equal; this makes it so whatever the seeds were.
    """
    if not is_distributed():
        return
    tensors = [p.data for p in module.parameters()]
    tensors += [buffer for m in module.modules() for _, buffer in m.named_buffers()]
    for tensor in tensors:
        dist.broadcast(tensor, src=src)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` (any picklable object), on every rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_ranks_agree(flag: bool) -> bool:
    """``flag`` if every rank says so (a logical AND over the ranks; ``flag`` itself when not distributed).

    For decisions every rank must take together, such as stopping when a time budget runs out
    on any of them: a rank that stopped alone would leave the others waiting in a collective.
    """
    if not is_distributed():
        return flag
    return bool(int(all_reduce_min(torch.tensor([int(flag)], device=collective_device()))))


def all_reduce_min(tensor: Tensor) -> Tensor:
    """Elementwise minimum of ``tensor`` over the ranks, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def gradient_buckets(grads: Sequence[Tensor], bucket_bytes: int = BUCKET_BYTES) -> list[list[Tensor]]:
    """Split ``grads`` into runs of one device and dtype of at most ``bucket_bytes`` each (a bigger tensor goes alone).

    One all-reduce per bucket rather than per tensor: small messages waste the network's
    latency, one huge one would need a second copy of every gradient at once.
    """
    buckets: list[list[Tensor]] = []
    size = 0
    for grad in grads:
        nbytes = grad.numel() * grad.element_size()
        last = buckets[-1] if buckets else None
        if (
            last is None
            or last[0].dtype != grad.dtype
            or last[0].device != grad.device
            or (size + nbytes > bucket_bytes and size > 0)
        ):
            buckets.append([grad])
            size = nbytes
        else:
            last.append(grad)
            size += nbytes
    return buckets


def all_reduce_gradients(
    params: Iterable[Parameter], samples: int | Tensor, bucket_bytes: int = BUCKET_BYTES
) -> Tensor:
    r"""Replace each rank's ``Parameter.grad`` by the gradient of the mean loss over the global batch.

    Each rank holds :math:`g_k`, the gradient of the mean loss over its ``samples``
    :math:`n_k` (zero gradients and ``samples=0`` for a rank whose shard of the batch is
    empty; it must still call this). The result on every rank is
    :math:`\sum_k n_k g_k / \sum_k n_k`, the gradient a single process would compute on the
    whole batch, so ranks holding different sample counts are weighted correctly.

    The gradients are flattened into buckets (:func:`gradient_buckets`) and summed with
    one all-reduce each. :math:`n_k` travels in the first bucket when that bucket is
    float32/float64 (which hold a count exactly); otherwise it is summed first, on its own,
    and each :math:`g_k` is scaled by :math:`n_k/\sum n` before its sum, which keeps
    low-precision gradients in range. On gloo (the CPU) 16-bit buckets travel as float32.
    Returns :math:`\sum_k n_k` as a float64 0-dim tensor.
    """
    grads = [p.grad for p in params]
    if not is_distributed():
        return torch.as_tensor(samples, dtype=torch.float64)
    buckets = gradient_buckets(grads, bucket_bytes)
    device = buckets[0][0].device if buckets else collective_device()
    local = torch.as_tensor(samples, dtype=torch.float64, device=device).reshape(1)
    count_in_first = bool(buckets) and buckets[0][0].dtype in _EXACT_COUNT_DTYPES
    count = local.clone()
    if not count_in_first:
        dist.all_reduce(count)
    total = count.clamp(min=1)  # with count_in_first, only the local count until the first bucket arrives
    flats, works = [], []
    upcast = dist.get_backend() == "gloo"  # gloo sums no 16-bit floats in older torch (2.1); float32 is exacter
    for i, bucket in enumerate(buckets):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        if upcast:
            flat = widened(flat)
        if count_in_first:
            flat.mul_(local.to(flat.dtype))
            if i == 0:
                flat = torch.cat([flat, local.to(flat.dtype)])
        else:
            flat.mul_((local / total).to(flat.dtype))
        flats.append(flat)
        works.append(dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True))
    for i, (bucket, flat, work) in enumerate(zip(buckets, flats, works, strict=True)):
        work.wait()
        if count_in_first:
            if i == 0:
                count = flat[-1:].to(torch.float64)
                total = count.clamp(min=1)
                flat = flat[:-1]
            flat.div_(total.to(flat.dtype))
        for grad, piece in zip(bucket, flat.split([g.numel() for g in bucket]), strict=True):
            grad.copy_(piece.view_as(grad))
    return count.reshape(())


def shard(rank_: int | None, world_size_: int | None, seed: int | None, shuffle: bool) -> tuple[int, int]:
    """``(rank, world_size)``: the ones given, else torch.distributed's; checked. A shuffled loader of more than
    one rank needs a ``seed``: every rank must draw the same order."""
    rank_ = rank() if rank_ is None else rank_
    world_size_ = world_size() if world_size_ is None else world_size_
    if not (isinstance(rank_, int) and isinstance(world_size_, int) and 0 <= rank_ < world_size_):
        raise ValueError(f"need integers 0 <= rank < world_size, got rank {rank_!r} and world_size {world_size_!r}")
    if seed is None and shuffle and world_size_ > 1:
        raise ValueError("a sharded, shuffled loader needs a seed: every rank must draw the same order")
    return rank_, world_size_


class ShardedDataLoader(DataLoader):
    """One rank's part of every batch of a :class:`~scratch_engine.DataLoader`; ``batch_size`` is per rank.

    Global batch ``b`` is batch ``b`` of the single-process loader with batch size ``batch_size * world_size``
    and the same seed; rank ``r`` takes part ``r`` of its ``tensor_split`` (in the last batch a rank may get
    fewer samples, or none: it still joins the step). ``rank`` and ``world_size`` default to torch.distributed's
    (0 and 1 outside a process group, where it is a plain ``DataLoader``).
    """

    def __init__(
        self,
        X: Any,
        y: Any = None,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.rank, self.world_size = shard(rank, world_size, seed, shuffle)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"ShardedDataLoader batch_size must be a positive integer, got {batch_size!r}")
        super().__init__(X, y, batch_size * self.world_size, shuffle, drop_last, seed)
        self.rank_batch_size = batch_size  # self.batch_size is the global batch

    def batch(self, indices: Tensor) -> tuple[Any, Any]:
        return super().batch(indices.tensor_split(self.world_size)[self.rank])

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, rank={self.rank}, world_size={self.world_size})"


class DataParallel(Callback):
    """Data-parallel training for an :class:`~scratch_engine.Engine`, around its unchanged training step.

    Every rank starts from rank 0's weights; after each backward the gradients are averaged over
    the global batch (:func:`all_reduce_gradients`, before clipping and the optimizer step); the
    ranks agree after every step on the time spent and on whether to stop (the slowest clock, and
    a stop asked for on any rank: a rank that stopped alone would leave the others waiting); the
    losses and metrics of every rank are summed before they are read; only rank 0 prints.
    ``fit`` and ``evaluate`` are then collectives: every rank calls them, with loaders of as many
    batches. BatchNorm statistics stay per rank (no synchronised batch norm).
    """

    def __init__(self) -> None:
        self.samples = 0

    def attach(self, engine: Engine) -> None:
        broadcast_parameters(engine.model)  # before any copy of the weights is made
        if not is_main_process():
            engine.progress = False

    def on_train_batch(self, engine: Engine, x: Any, y: Any) -> None:
        self.samples = y.shape[0] if isinstance(y, Tensor) and y.dim() > 0 else 1

    def after_backward(self, engine: Engine) -> None:
        all_reduce_gradients(engine.params, self.samples)

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        """Agree on the time spent (the slowest clock), on stopping (any rank) and on the first non-finite loss."""
        if not is_distributed():
            return
        clock = torch.tensor([engine.seconds, float(engine.stop_training)], dtype=torch.float64)
        agreed = clock.to(collective_device())
        engine.meter.flush()
        first_bad = (-engine.meter.bad[:1].to(agreed)).nan_to_num(nan=-math.inf)  # MAX of -step: the earliest
        agreed = torch.cat([agreed, first_bad])  # the meter's step stays on the device: one read, below
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        seconds, stop, earliest = agreed.tolist()
        engine.seconds, engine.stop_training = seconds, bool(stop)
        if math.isfinite(earliest):  # some rank saw one: every rank takes the earliest, with its value
            _agree_on_first_non_finite(engine.meter, -earliest)

    def combine(self, engine: Engine, meter: Meter) -> None:
        if not is_distributed():
            return
        meter.flush()
        device = meter.loss_sum.device
        parts = [
            meter.loss_sum.reshape(1),
            torch.tensor([meter.samples, meter.steps], device=device).to(meter.loss_sum),
        ]
        parts += [meter.totals[name] for name in meter.totals]
        summed = all_reduce_sum(torch.cat(parts))
        meter.loss_sum = summed[0]
        meter.samples, meter.steps = round(float(summed[1])), round(float(summed[2]))
        for i, name in enumerate(meter.totals):
            meter.totals[name] = summed[3 + 2 * i : 5 + 2 * i]
        _agree_on_first_non_finite(meter, float(all_reduce_min(meter.bad[:1].nan_to_num(math.inf))))


def _agree_on_first_non_finite(meter: Meter, first: float) -> None:
    """Every rank's ``meter.bad`` becomes ``(first, loss)``: the earliest non-finite step on any rank and its loss.

    A collective, to call on every rank alike (only when some rank saw one: ``first`` is finite).
    """
    if not math.isfinite(first):
        return
    mine = float(meter.bad[0]) == first
    value = torch.tensor([float(meter.bad[1]) if mine else 0.0, float(mine)], dtype=torch.float64)
    value = all_reduce_sum(value.to(collective_device())).to(meter.bad)
    meter.bad = torch.stack([torch.full_like(value[0], first), value[0] / value[1]])
