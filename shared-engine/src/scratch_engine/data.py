"""Mini-batches of tensors, in a reproducible order.

The shuffle order of epoch ``e`` is a pure function of ``(seed, e)``: a permutation drawn from a fresh
``torch.Generator`` seeded with ``seed + e``. Nothing depends on how many random numbers the model used, so a
resumed run sees exactly the batches it would have, from the middle of an epoch too (:meth:`~EpochBatches.set_epoch`).
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor


class EpochBatches:
    """What every resumable batch source shares: the epoch its next iteration serves and the batch it starts at.
    Each new iteration moves on to the next epoch."""

    epoch, start = 0, 0
    _started = False  # has an iteration used self.epoch yet?

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next iteration produce the batches of ``epoch``, from batch ``start`` on (to resume)."""
        self.epoch, self.start, self._started = int(epoch), int(start), False

    def next_epoch(self) -> tuple[int, int]:
        """For an iteration beginning: the epoch it serves and the batch it starts at."""
        if self._started:
            self.epoch, self.start = self.epoch + 1, 0
        self._started = True
        return self.epoch, self.start


class DataLoader(EpochBatches):
    """``(xb, yb)`` mini-batches of the rows of tensors ``X (N, ...)`` and ``y (N, ...)``, every sample once per
    epoch; ``len(loader)`` batches. (Each data-parallel rank takes its part: :mod:`scratch_engine.tools.distributed`.)

    With ``seed=None`` a shuffling loader draws its base seed once, here, from torch's global generator (so
    ``torch.manual_seed`` makes the order reproducible too); ``shuffle=False`` draws nothing, so building one
    leaves the next dropout masks alone.
    """

    def __init__(
        self,
        X: Any,
        y: Any = None,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        self._check_samples(X, y)
        self.X, self.y, self.shuffle, self.drop_last = X, y, shuffle, drop_last
        self.batch_size = _integer("batch_size", batch_size)
        if self.batch_size < 1:
            raise ValueError(f"DataLoader batch_size must be at least 1, got {self.batch_size}")
        if drop_last and len(self) == 0:
            raise ValueError(
                f"drop_last=True with {self.batch_size} samples a step leaves no batch of the {len(X)} samples"
            )
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item()) if shuffle else 0
        self.seed = _integer("seed", seed)

    @property
    def num_samples(self) -> int:
        return len(self.X)

    def __len__(self) -> int:
        return self.num_samples // self.batch_size if self.drop_last else math.ceil(self.num_samples / self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """The sample indices of ``epoch``, in the order they are served."""
        if not self.shuffle:
            return torch.arange(self.num_samples, device="cpu")
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator, device="cpu")  # the order is host-side bookkeeping

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        epoch, start = self.next_epoch()
        order, size = self.order(epoch), self.batch_size
        for b in range(start, len(self)):
            yield self.batch(order[b * size : (b + 1) * size])

    def batch(self, indices: Tensor) -> tuple[Any, Any]:
        """The samples at ``indices``: rows of ``X`` and ``y`` (consecutive rows are a view, not a copy)."""
        if len(indices) and not self.shuffle:
            rows = slice(int(indices[0]), int(indices[-1]) + 1)
            return self.X[rows], self.y[rows]
        return self.X.index_select(0, indices.to(self.X.device)), self.y.index_select(0, indices.to(self.y.device))

    @staticmethod
    def _check_samples(X: Any, y: Any) -> None:
        for name, value in (("X", X), ("y", y)):
            if not isinstance(value, Tensor):
                convert = ".float()" if name == "X" else " (.long() for class labels, .float() for targets)"
                hint = f": pass torch.from_numpy({name}){convert}" if type(value).__module__ == "numpy" else ""
                raise TypeError(f"DataLoader expects tensors X and y, got a {type(value).__name__} {name}{hint}")
        if X.dim() == 0 or len(X) != len(y):
            raise ValueError(f"X and y differ in length: X has shape {tuple(X.shape)}, y {tuple(y.shape)}")
        if len(X) == 0:
            raise ValueError("DataLoader got no samples (X is empty)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(samples={self.num_samples}, batch_size={self.batch_size}, seed={self.seed})"


def map_tensors(fn: Callable[[Tensor], Any], value: Any) -> Any:
    """``value`` with ``fn`` applied to every tensor in it, also inside tuples, lists and dicts: the one walker
    over nested batches (moving them to a device, casting them, detaching them)."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)([map_tensors(fn, item) for item in value])
    if isinstance(value, dict):
        return {key: map_tensors(fn, item) for key, item in value.items()}
    return value


def as_pair(value: Any, what: str) -> tuple[Any, Any]:
    """``value``'s ``(x, y)``; anything else is a ``TypeError`` naming ``what`` ("training batches"), where
    unpacking would "work" on a stacked batch of ``x`` alone: its first row taken for ``x``, its second for ``y``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        size = f" of {len(value)}" if isinstance(value, (tuple, list)) else ""
        raise TypeError(f"{what} must be (x, y) pairs, got a {type(value).__name__}{size}")
    return value[0], value[1]


def _integer(name: str, value: Any) -> int:
    """``value`` as an int; a ``TypeError`` for anything else (2.7, "4", True) rather than a silent ``int()``."""
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            return operator.index(value)  # exactly the integers (NumPy's and 0-dim integer tensors too)
    raise TypeError(f"DataLoader {name} must be an integer, got {value!r}")
