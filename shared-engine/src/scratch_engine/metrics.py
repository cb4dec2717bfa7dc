"""Metrics summed on the device during an epoch and read once when they are logged.

A metric is a function ``(output, target) -> (total, count)`` returning two 0-dim tensors
on the device; the epoch value is ``sum(total) / sum(count)``. Nothing here calls
``.item()`` per step, so a GPU never waits for the host between batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from scratch_engine import distributed

Metric = Callable[[Any, Any], tuple[Tensor, Tensor]]


def accuracy(logits: Tensor, targets: Tensor, ignore_index: int | None = None) -> tuple[Tensor, Tensor]:
    """Correct predictions and how many were counted: argmax over the last dim of ``logits``.

    ``logits (..., C)`` and integer ``targets (...)``; positions whose target equals
    ``ignore_index`` (padding) are not counted. Both results stay on the device.
    """
    predictions = logits.argmax(dim=-1)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"accuracy expects logits (..., C) and targets (...), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    hits = predictions == targets
    if ignore_index is None:
        return hits.sum(), torch.full((), targets.numel(), dtype=torch.long, device=targets.device)
    keep = targets != ignore_index
    return (hits & keep).sum(), keep.sum()


class RunningMetrics:
    """The sample-weighted mean loss and each metric, accumulated as device tensors."""

    def __init__(self, metrics: Mapping[str, Metric], device: torch.device) -> None:
        self.metrics = dict(metrics)
        # float64 where the device has it: summing thousands of float32 losses in float32 loses digits
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
        self.samples = 0
        self.totals: dict[str, list[Tensor]] = {}

    def update(self, loss: Tensor, output: Any, target: Any, samples: int) -> None:
        self.loss_sum += loss.detach() * samples
        self.samples += samples
        for name, metric in self.metrics.items():
            total, count = metric(output, target)
            if name in self.totals:
                self.totals[name][0] += total
                self.totals[name][1] += count
            else:
                self.totals[name] = [total.detach().clone(), count.detach().clone()]

    def all_reduce(self) -> RunningMetrics:
        """Sum the loss, sample count and every metric's totals over the data-parallel ranks, in place.

        Afterwards :meth:`compute` gives the means over all ranks' samples. It is a
        collective: every rank calls it, once, at the same point (a no-op when not distributed).
        A rank that saw no samples contributes zeros for every metric.
        """
        if not distributed.is_distributed():
            return self
        device = self.loss_sum.device
        values = [self.loss_sum.to(torch.float64), torch.tensor(float(self.samples), device=device)]
        for name in self.metrics:
            total, count = self.totals.get(name, [torch.zeros((), device=device)] * 2)
            values += [total.to(device=device, dtype=torch.float64), count.to(device=device, dtype=torch.float64)]
        summed = distributed.all_reduce_sum(torch.stack([v.reshape(()) for v in values]))
        self.loss_sum = summed[0].to(self.loss_sum.dtype)
        self.samples = round(float(summed[1]))
        self.totals = {name: [summed[2 + 2 * i], summed[3 + 2 * i]] for i, name in enumerate(self.metrics)}
        return self

    def compute(self) -> dict[str, float]:
        """Mean loss and metrics so far (this reads the device: one synchronisation)."""
        logs = {"loss": self.loss_sum.item() / max(self.samples, 1)}
        for name, (total, count) in self.totals.items():
            logs[name] = total.item() / max(count.item(), 1)
        return logs


class NonFiniteWatch:
    """Remembers, without synchronising, the first step whose loss was NaN or infinite."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)

    def update(self, loss: Tensor, step: int) -> None:
        first = (self.step < 0) & ~torch.isfinite(loss.detach())
        self.step = torch.where(first, step, self.step)
        self.value = torch.where(first, loss.detach().to(self.value.dtype), self.value)

    def first(self) -> tuple[int, float] | None:
        """``(step, loss)`` of the first non-finite loss, or ``None`` (one synchronisation)."""
        step = int(self.step.item())
        return None if step < 0 else (step, self.value.item())
