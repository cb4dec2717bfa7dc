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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
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

    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode, no gradients, a fresh recurrent state; training mode again afterwards."""
        self.model.eval()
        self.reset_state()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train()

    def evaluate_loss(self, loader: Any, to_device: Callable[[Any], Any]) -> float:
        """Sample-weighted mean loss of the twin over ``loader`` in eval mode."""
        total, count = 0.0, 0
        with self._evaluating():
            for x, y in loader:
                x, y = to_device(x), to_device(y)
                n = len(y) if isinstance(y, Tensor) and y.dim() > 0 else 1
                total += float(self.loss_fn(self.model(x), y)) * n
                count += n
        return total / max(count, 1)

    def predict(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """The twin's outputs for ``x`` (already on its device, in its dtype) in eval mode, batch by batch."""
        with self._evaluating():
            return torch.cat([self.model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

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


# --------------------------------------------------------------------------- building the twin of a model

TO_TORCH: dict[type, Callable[[Any], torch.nn.Module]] = {}


def register_to_torch(layer_class: type, build: Callable[[Any], torch.nn.Module]) -> None:
    """Teach :func:`to_torch` one more layer: ``build(layer)`` returns its torch.nn twin with the same weights.

    Packages register their own layers (the CNN its convolutions and pooling) in their
    ``reference.py``; the engine's layers are registered below.
    """
    TO_TORCH[layer_class] = build


def to_torch(module: Any) -> torch.nn.Module:
    """The torch.nn twin of a :class:`~scratch_engine.Sequential` of registered layers, same weights and buffers.

    Dropout keeps its rate; a parity run turns it off on both sides (two generators never
    draw the same masks).
    """
    from scratch_engine.module import Sequential

    if isinstance(module, Sequential):
        return torch.nn.Sequential(*(to_torch(layer) for layer in module.layers))
    build = TO_TORCH.get(type(module))
    if build is None:
        raise ValueError(f"no torch.nn twin is known for {type(module).__name__}: register one with register_to_torch")
    return build(module)


@torch.no_grad()
def copy_parameters(twin: torch.nn.Module, layer: Any) -> torch.nn.Module:
    """``twin`` moved to ``layer``'s device and dtype, with its parameters and buffers copied by name."""
    ours = layer.state_dict()
    floating = [value for value in ours.values() if value.is_floating_point()]
    if floating:
        twin = twin.to(device=floating[0].device, dtype=floating[0].dtype)
    for name, value in twin.state_dict().items():
        if name in ours:
            value.copy_(ours[name])
    return twin


def _batch_norm_twin(theirs: type[torch.nn.modules.batchnorm._BatchNorm], layer: Any) -> torch.nn.Module:
    return copy_parameters(
        theirs(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine), layer
    )


def _register_engine_layers() -> None:
    from scratch_engine import activations, layers, normalization

    nn = torch.nn
    register_to_torch(
        layers.Dense, lambda d: copy_parameters(nn.Linear(d.in_features, d.out_features, bias=d.bias is not None), d)
    )
    register_to_torch(layers.Dropout, lambda d: nn.Dropout(d.p))
    register_to_torch(activations.ReLU, lambda _: nn.ReLU())
    register_to_torch(activations.Tanh, lambda _: nn.Tanh())
    register_to_torch(activations.Sigmoid, lambda _: nn.Sigmoid())
    register_to_torch(activations.LeakyReLU, lambda a: nn.LeakyReLU(a.negative_slope))
    register_to_torch(activations.GELU, lambda a: nn.GELU(approximate=a.approximate))
    register_to_torch(normalization.BatchNorm1d, partial(_batch_norm_twin, nn.BatchNorm1d))
    register_to_torch(normalization.BatchNorm2d, partial(_batch_norm_twin, nn.BatchNorm2d))


_register_engine_layers()


def torch_optimizer(optimizer: Any, params: Any, learning_rate: float | None = None) -> torch.optim.Optimizer:
    """The ``torch.optim`` twin of one of our optimizers, with the same hyperparameters."""
    from scratch_engine.optim import Adam, AdamW, GradientDescent

    lr = optimizer.learning_rate if learning_rate is None else learning_rate
    if isinstance(optimizer, GradientDescent):
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optimizer.momentum,
            dampening=optimizer.dampening,
            weight_decay=optimizer.weight_decay,
            nesterov=optimizer.nesterov,
        )
    if isinstance(optimizer, (Adam, AdamW)):
        kind = torch.optim.AdamW if isinstance(optimizer, AdamW) else torch.optim.Adam
        return kind(params, lr=lr, betas=optimizer.betas, eps=optimizer.eps, weight_decay=optimizer.weight_decay)
    raise ValueError(f"no torch.optim twin is known for {type(optimizer).__name__}")


def torch_loss(loss: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """``torch.nn.functional``'s version of one of our losses (class dimension last for cross-entropy)."""
    from scratch_engine.losses import CrossEntropyLoss, MSELoss

    functional = torch.nn.functional
    if isinstance(loss, CrossEntropyLoss):
        ignore = -100 if loss.ignore_index is None else loss.ignore_index

        def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
            flat = logits.reshape(-1, logits.shape[-1])
            return functional.cross_entropy(
                flat, target.reshape(-1), ignore_index=ignore, label_smoothing=loss.label_smoothing
            )

        return cross_entropy
    if isinstance(loss, MSELoss):
        return functional.mse_loss
    raise ValueError(f"no torch twin is known for the loss {type(loss).__name__}")


def twin_of(
    model: Any, optimizer: Any, loss: Any, scheduler: Any = None, clip_grad_norm: float | None = None
) -> TorchTwin:
    """A :class:`TorchTwin` of a registered model: torch.nn layers with its weights (:func:`to_torch`),
    trained as :func:`twin_for` trains them."""
    return twin_for(to_torch(model), optimizer, loss, scheduler, clip_grad_norm)


def twin_for(
    torch_model: torch.nn.Module,
    optimizer: Any,
    loss: Any,
    scheduler: Any = None,
    clip_grad_norm: float | None = None,
) -> TorchTwin:
    """A :class:`TorchTwin` training ``torch_model`` as the engine trains ours: torch.optim with our
    optimizer's hyperparameters, our schedule (a ``LambdaLR`` reading ``scheduler.lr_at``), our
    clipping and our loss (:func:`torch_loss`). Packages whose models are not a ``Sequential``
    build ``torch_model`` themselves and copy it into ours with ``from_torch``."""
    if scheduler is None:
        torch_opt = torch_optimizer(optimizer, torch_model.parameters())
        torch_scheduler = None
    else:  # LambdaLR multiplies the initial rate, 1.0, by our schedule's rate at each step
        torch_opt = torch_optimizer(optimizer, torch_model.parameters(), learning_rate=1.0)
        torch_scheduler = torch.optim.lr_scheduler.LambdaLR(torch_opt, scheduler.lr_at)
    return TorchTwin(torch_model, torch_opt, torch_loss(loss), torch_scheduler, clip_grad_norm)
