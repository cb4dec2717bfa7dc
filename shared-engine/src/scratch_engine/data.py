"""Mini-batches from tensors or from a map-style dataset, in a reproducible order.

The shuffle order of epoch ``e`` is a pure function of ``(seed, e)``: a permutation drawn
from a fresh ``torch.Generator`` seeded with ``seed + e``. Nothing depends on how many
random numbers the model used, so a resumed run sees exactly the batches it would have.
In data-parallel training every rank draws that same global order and takes its own part
of each global batch, so the ranks together see exactly what one process would.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from scratch_engine import distributed


class DataLoader:
    """Iterate ``(xb, yb)`` mini-batches; every sample exactly once per epoch.

    ``DataLoader(X, y)`` with tensors ``X (N, ...)`` and ``y (N, ...)`` selects rows with
    ``index_select``. ``DataLoader(dataset)`` takes a map-style dataset (``__len__`` and
    ``__getitem__`` returning ``(x, y)`` pairs, e.g. a torchvision dataset with a
    ``ToTensor`` transform); it is never materialised: each batch indexes the dataset and
    stacks the items (tensors with ``torch.stack``, Python numbers with ``torch.tensor``).

    With ``seed=None`` a shuffling loader draws its base seed once, here, from torch's global
    generator, so :func:`~scratch_engine.seed_everything` makes the order reproducible too; a
    loader with ``shuffle=False`` draws nothing (building one, say a validation loader after
    :meth:`Engine.load_checkpoint <scratch_engine.Engine.load_checkpoint>`, leaves the random
    numbers of the model's dropout masks where they were). ``batch_size`` and ``seed`` must be
    integers; ``drop_last=True`` with fewer samples than one batch is an error. Each new
    iteration moves on to the next epoch; :meth:`set_epoch` chooses one (to resume).
    ``len(loader)`` is the number of batches.

    **Sharding for data-parallel training.** With ``world_size > 1``, ``batch_size`` is per
    rank: global batch ``b`` is batch ``b`` of the single-process loader with batch size
    ``batch_size * world_size`` and the same seed, split between the ranks with
    ``tensor_split`` (rank ``r`` gets part ``r``). The shards are disjoint, together cover
    every sample once per epoch, and every rank has the same number of batches; in the last
    global batch a rank may get fewer samples, or none (an empty batch). As with torch's
    ``DistributedSampler``, ``rank`` and ``world_size`` default to those of
    ``torch.distributed`` when it is initialized, else 0 and 1: a loader made inside a
    distributed run shards by itself, evaluation loaders included (the
    :class:`~scratch_engine.Engine` then sums their results over the ranks). Shuffled
    shards need one order on every rank: without a ``seed``, rank 0's drawn seed is
    broadcast to the others (a collective: every rank must build the loader).
    """

    def __init__(
        self,
        X: Any,
        y: Tensor | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        for name, value in (("X", X), ("y", y)):
            if type(value).__module__ == "numpy":  # arrays also have __len__ and __getitem__
                raise TypeError(f"DataLoader expects torch tensors, got a NumPy {name}: pass torch.from_numpy({name})")
        if isinstance(X, Tensor):
            if not isinstance(y, Tensor):
                raise ValueError(
                    "DataLoader(X, y) needs a tensor y when X is a tensor "
                    "(to iterate a dataset of (x, y) pairs, pass it alone as X)"
                )
            if X.dim() == 0 or len(X) != len(y):
                raise ValueError(f"X and y differ in length: X has shape {tuple(X.shape)}, y {tuple(y.shape)}")
        elif y is not None:
            raise ValueError("y must be None when X is a dataset: its items are (x, y) pairs")
        elif not (hasattr(X, "__len__") and hasattr(X, "__getitem__")):
            raise TypeError(f"DataLoader expects tensors or a map-style dataset, got {type(X).__name__}")
        batch_size = _integer("batch_size", batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(X) == 0:
            raise ValueError("DataLoader got no samples (X is empty)")
        self.X = X
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.world_size = distributed.world_size() if world_size is None else _integer("world_size", world_size)
        self.rank = distributed.rank() if rank is None else _integer("rank", rank)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank} and world_size {self.world_size}")
        if drop_last and len(self) == 0:
            per_step = f"{batch_size} x world_size {self.world_size}" if self.world_size > 1 else str(batch_size)
            raise ValueError(
                f"drop_last=True with batch_size {per_step} leaves no batch of the {len(X)} samples: "
                "use a smaller batch_size or drop_last=False"
            )
        if seed is None and not shuffle:
            seed = 0  # the order ignores it: drawing one would shift the global RNG (and the next dropout masks)
        elif seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
            if self.world_size > 1:
                if not distributed.is_distributed():
                    raise ValueError("a sharded, shuffled DataLoader needs a seed: every rank must draw the same order")
                seed = distributed.broadcast_object(seed)
        self.seed = _integer("seed", seed)
        self.epoch = 0
        self._started = False  # has an iteration used self.epoch yet?

    @property
    def num_samples(self) -> int:
        return len(self.X)

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.global_batch_size
        return math.ceil(self.num_samples / self.global_batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce the order of ``epoch``."""
        self.epoch = int(epoch)
        self._started = False

    def order(self, epoch: int) -> Tensor:
        """The sample indices of ``epoch``, in the order they are served."""
        if not self.shuffle:
            return torch.arange(self.num_samples, device="cpu")
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator, device="cpu")  # the order is host-side bookkeeping

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        if self._started:
            self.epoch += 1
        self._started = True
        order = self.order(self.epoch)
        size = self.global_batch_size
        for b in range(len(self)):
            indices = order[b * size : (b + 1) * size]
            if self.world_size > 1:
                indices = indices.tensor_split(self.world_size)[self.rank]
            if isinstance(self.X, Tensor) and isinstance(self.y, Tensor):  # y is a tensor whenever X is one
                yield self._rows(self.X, indices), self._rows(self.y, indices)
            elif len(indices) == 0:  # this rank's share of a short last batch: the right types, no rows
                as_pair(self.X[0], "dataset items")
                yield _empty(_collate([self.X[0]]))
            else:
                items = [self.X[i] for i in indices.tolist()]
                as_pair(items[0], "dataset items")  # one look per batch: a dataset gives items of one kind
                yield _collate(items)

    def _rows(self, tensor: Tensor, indices: Tensor) -> Tensor:
        if len(indices) == 0:
            return tensor[:0]
        if not self.shuffle:  # consecutive rows: a view, no copy
            return tensor[int(indices[0]) : int(indices[-1]) + 1]
        return tensor.index_select(0, indices.to(tensor.device))

    def __repr__(self) -> str:
        return (
            f"DataLoader(samples={self.num_samples}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, seed={self.seed}, epoch={self.epoch}"
            + (f", rank={self.rank}, world_size={self.world_size})" if self.world_size > 1 else ")")
        )


def _integer(name: str, value: Any) -> int:
    """``value`` as an int; a ``TypeError`` for anything else (2.7, "4", True) rather than a silent ``int()``.

    ``operator.index`` takes exactly the integers (NumPy's and 0-dim integer tensors too).
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"DataLoader {name} must be an integer, got {value!r}") from None


def as_pair(value: Any, what: str) -> tuple[Any, Any]:
    """``value``'s ``(x, y)``; anything else is a ``TypeError`` naming ``what`` ("dataset items", "training batches").

    Unpacking a stacked batch of ``x`` alone would "work": its first row taken for ``x``, its second for ``y``.
    """
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        size = f" of {len(value)}" if isinstance(value, (tuple, list)) else ""
        raise TypeError(f"{what} must be (x, y) pairs, got a {type(value).__name__}{size}")
    return value[0], value[1]


def _empty(batch: Any) -> Any:
    """``batch`` with no samples: every tensor sliced to its first 0 rows."""
    if isinstance(batch, tuple):
        return tuple(_empty(item) for item in batch)
    return batch[:0]


def _collate(items: list[Any]) -> Any:
    """Stack a list of samples field by field: ``[(x, y), ...] -> (X, Y)``."""
    first = items[0]
    if isinstance(first, (tuple, list)):
        return tuple(_collate([item[k] for item in items]) for k in range(len(first)))
    if isinstance(first, Tensor):
        return torch.stack(items)
    if isinstance(first, (bool, int, float)):
        return torch.tensor(items)
    raise TypeError(
        f"DataLoader can only batch tensors and Python numbers, got a {type(first).__module__}.{type(first).__name__}; "
        "give the dataset a transform that returns tensors (e.g. torchvision.transforms.ToTensor())"
    )
