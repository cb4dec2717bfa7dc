"""Whole-run parity with PyTorch: train a torch.nn twin on the very same batches.

``Engine(..., reference=TorchTwin(torch_model, torch_optimizer, loss_fn))`` makes every
training step also step the twin: the torch.nn model (built from ``torch.nn`` modules,
started from the same weights, dropout off) with ``torch.optim`` and autograd. Both losses
are recorded at every logged step; :meth:`TorchTwin.max_relative_deviation` and
:func:`plot_reference_curves` say how far apart the two runs drifted. When the
hand-written backward is right, the curves lie on top of each other for hundreds of steps.

This module is a *reference*, not part of the training path: it is the one place outside
the tests where the engine uses ``torch.nn``, ``torch.optim`` and autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


@dataclass
class TorchTwin:
    """A ``torch.nn`` model, its ``torch.optim`` optimizer and a loss ``loss_fn(output, target)``.

    ``scheduler`` (a ``torch.optim.lr_scheduler``) steps once per batch, like the
    engine's; ``clip_grad_norm`` clips with ``torch.nn.utils.clip_grad_norm_``. A
    model with a ``reset_state()`` method is reset when the scratch model is.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Any, Any], Tensor]
    scheduler: Any = None
    clip_grad_norm: float | None = None
    steps: list[int] = field(default_factory=list)
    scratch_losses: list[float] = field(default_factory=list)
    torch_losses: list[float] = field(default_factory=list)
    _pending: list[tuple[int, Tensor, Tensor]] = field(default_factory=list)

    def step(self, x: Any, y: Any) -> Tensor:
        """One training step of the twin on batch ``(x, y)``; returns its detached loss."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def record(self, step: int, scratch_loss: Tensor, torch_loss: Tensor) -> None:
        """Keep both losses of ``step`` on the device until :meth:`flush` reads them."""
        self._pending.append((step, scratch_loss.detach(), torch_loss.detach()))

    def flush(self) -> None:
        for step, ours, theirs in self._pending:
            self.steps.append(step)
            self.scratch_losses.append(float(ours))
            self.torch_losses.append(float(theirs))
        self._pending.clear()

    @torch.no_grad()
    def evaluate_loss(self, loader: Any, to_device: Callable[[Any], Any]) -> float:
        """Sample-weighted mean loss of the twin over ``loader`` in eval mode."""
        self.model.eval()
        self.reset_state()
        total, count = 0.0, 0
        for x, y in loader:
            x, y = to_device(x), to_device(y)
            n = len(y) if isinstance(y, Tensor) and y.dim() > 0 else 1
            total += float(self.loss_fn(self.model(x), y)) * n
            count += n
        self.model.train()
        return total / max(count, 1)

    def reset_state(self) -> None:
        reset = getattr(self.model, "reset_state", None)
        if callable(reset):
            reset()

    def max_relative_deviation(self) -> float:
        """``max |scratch - torch| / |torch|`` over the recorded steps (0 when nothing was recorded)."""
        self.flush()
        return max(
            (abs(a - b) / max(abs(b), 1e-12) for a, b in zip(self.scratch_losses, self.torch_losses, strict=True)),
            default=0.0,
        )

    def summary(self) -> dict[str, float | int]:
        """What goes into ``metrics.json``: steps compared and the largest deviations."""
        self.flush()
        absolute = max((abs(a - b) for a, b in zip(self.scratch_losses, self.torch_losses, strict=True)), default=0.0)
        return {
            "reference_steps": len(self.steps),
            "reference_max_relative_deviation": self.max_relative_deviation(),
            "reference_max_abs_deviation": absolute,
        }


def plot_reference_curves(twin: TorchTwin, path: str | Path, title: str | None = None) -> Path:
    """Both training-loss curves in one plot, with the relative deviation underneath."""
    from scratch_engine.plots import new_figure, save_figure

    twin.flush()
    figure = new_figure(7.0, 5.0)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(twin.steps, twin.scratch_losses, label="scratch (hand-written backward)", linewidth=2.0)
    top.plot(twin.steps, twin.torch_losses, label="torch.nn + autograd + torch.optim", linewidth=1.0, linestyle="--")
    top.set_ylabel("training loss")
    top.legend()
    top.set_title(title or "whole-run parity with PyTorch")
    deviation = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(twin.scratch_losses, twin.torch_losses, strict=True)]
    bottom.plot(twin.steps, deviation, color="tab:red")
    bottom.set_ylabel("relative gap")
    bottom.set_xlabel("step")
    return save_figure(figure, path)
