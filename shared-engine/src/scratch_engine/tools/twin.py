"""Whole-run parity with PyTorch: train a torch.nn twin on the very same batches.

``Engine(..., callbacks=[TorchTwin(torch_model, torch_optimizer, loss_fn)])`` makes every
training step also step the twin: the torch.nn model (built from ``torch.nn`` modules,
started from the same weights, dropout off) with ``torch.optim`` and autograd. Both losses
are recorded at every step; :meth:`TorchTwin.max_relative_deviation` and
:func:`plot_reference_curves` say how far apart the two runs drifted, and each validation
also logs the twin's ``reference_val_loss``. When the hand-written backward is right, the
curves lie on top of each other for hundreds of steps.

This module is a *reference*, not part of the training path: it is the one place outside
the tests where the engine uses ``torch.nn``, ``torch.optim`` and autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine.engine import Callback, Engine


class TorchTwin(Callback):
    """A ``torch.nn`` model, its ``torch.optim`` optimizer and a loss ``loss_fn(output, target)``, stepped
    on every training batch of the engine it is attached to.

    ``scheduler`` (a ``torch.optim.lr_scheduler``) steps once per batch, like the engine's;
    ``clip_grad_norm`` clips with ``torch.nn.utils.clip_grad_norm_``. A twin model that carries a
    state from batch to batch (``reset_state``, ``carried_state``, ``set_carried_state``) is reset
    when the engine resets ours, and kept aside while it evaluates.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], Tensor],
        scheduler: Any = None,
        clip_grad_norm: float | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.scheduler, self.clip_grad_norm = scheduler, clip_grad_norm
        self.steps: list[int] = []
        self.scratch_losses: list[float] = []
        self.torch_losses: list[float] = []
        self._pending: list[tuple[int, Tensor, Tensor]] = []
        self._loss: Tensor | None = None  # the twin's loss on the batch under way

    # ------------------------------------------------------------------ the engine's hooks
    def on_epoch_begin(self, engine: Engine) -> None:
        self.reset_state()

    def on_train_batch(self, engine: Engine, x: Any, y: Any) -> None:
        self._loss = self.step(x, y)

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        if loss is not None and self._loss is not None:
            self.record(engine.global_step, loss, self._loss)

    def on_evaluate(self, engine: Engine, loader: Iterable[Any], logs: dict[str, float]) -> None:
        logs["reference_loss"] = self.evaluate_loss(loader, lambda value: engine.prepare_batch((value, None))[0])

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        self.flush()

    # ------------------------------------------------------------------ the twin itself
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
        """Eval mode, no gradients, a fresh recurrent state; training mode and the carried state again afterwards."""
        carried = getattr(self.model, "carried_state", None)
        saved = carried() if callable(carried) else None
        self.model.eval()
        self.reset_state()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train()
            if callable(carried):
                self.model.set_carried_state(saved)  # type: ignore[operator]

    def evaluate_loss(self, loader: Iterable[Any], to_device: Callable[[Any], Any]) -> float:
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

    def state_dict(self) -> dict[str, Any]:
        """The twin's weights, optimizer and schedule, and the losses recorded: a resumed run goes on comparing."""
        self.flush()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler_step": None if self.scheduler is None else self.scheduler.last_epoch,
            "carried": self.model.carried_state() if hasattr(self.model, "carried_state") else None,  # type: ignore[operator]
            "steps": self.steps,
            "scratch_losses": self.scratch_losses,
            "torch_losses": self.torch_losses,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # with each group's current learning rate
        if self.scheduler is not None:
            self.scheduler.last_epoch = state["scheduler_step"]
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if state["carried"] is not None:
            self.model.set_carried_state(state["carried"])  # type: ignore[operator]
        self.steps, self.scratch_losses, self.torch_losses = (
            state["steps"],
            state["scratch_losses"],
            state["torch_losses"],
        )

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
    from scratch_engine.tools.plots import new_figure, save_figure

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


# --------------------------------------------------------------------------- the other way: ours of a torch.nn model

FROM_TORCH: dict[type, Callable[[Any], Any]] = {}


def register_from_torch(torch_class: type, build: Callable[[Any], Any]) -> None:
    """Teach :func:`from_torch` one more torch.nn layer: ``build(module)`` returns ours with its weights."""
    FROM_TORCH[torch_class] = build


def from_torch(module: torch.nn.Module) -> Any:
    """Our layer (or ``Sequential``) with the weights, buffers and train/eval mode of a torch.nn ``module``:
    how the tests compare a hand-written layer with its torch.nn counterpart. The inverse of :func:`to_torch`."""
    from scratch_engine.module import Sequential

    if isinstance(module, torch.nn.Sequential):
        return Sequential(*(from_torch(child) for child in module))
    build = next((FROM_TORCH[kind] for kind in type(module).__mro__ if kind in FROM_TORCH), None)  # subclasses too
    if build is None:
        raise ValueError(
            f"no scratch layer is known for {type(module).__name__}: register one with register_from_torch"
        )
    return build(module)


def copied_from(layer: Any, module: torch.nn.Module) -> Any:
    """``layer`` given ``module``'s dtype, device, parameters, buffers and train/eval mode (by name)."""
    tensors = [t for t in module.state_dict().values() if t.is_floating_point()]
    if tensors:
        layer.to(tensors[0].device, tensors[0].dtype)
    layer.load_state_dict({name: value.detach().clone() for name, value in module.state_dict().items()})
    return layer.train(module.training)


def _embedding_of(embedding: torch.nn.Embedding) -> Any:
    from scratch_engine.layers import Embedding

    if embedding.max_norm is not None or embedding.scale_grad_by_freq:
        raise ValueError("from_torch does not copy an nn.Embedding with max_norm or scale_grad_by_freq")
    return copied_from(Embedding(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx), embedding)


def _batch_norm_of(ours: type, bn: torch.nn.modules.batchnorm._BatchNorm) -> Any:
    if not bn.track_running_stats:
        raise ValueError(f"from_torch copies a {type(bn).__name__} only with track_running_stats=True")
    return copied_from(ours(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine), bn)


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

    register_from_torch(
        nn.Linear, lambda m: copied_from(layers.Dense(m.in_features, m.out_features, bias=m.bias is not None), m)
    )
    register_from_torch(nn.Dropout, lambda m: layers.Dropout(m.p).train(m.training))
    register_from_torch(nn.Embedding, _embedding_of)
    register_from_torch(nn.ReLU, lambda m: activations.ReLU())
    register_from_torch(nn.Tanh, lambda m: activations.Tanh())
    register_from_torch(nn.Sigmoid, lambda m: activations.Sigmoid())
    register_from_torch(nn.LeakyReLU, lambda m: activations.LeakyReLU(m.negative_slope))
    register_from_torch(nn.GELU, lambda m: activations.GELU(m.approximate))
    register_from_torch(nn.BatchNorm1d, partial(_batch_norm_of, normalization.BatchNorm1d))
    register_from_torch(nn.BatchNorm2d, partial(_batch_norm_of, normalization.BatchNorm2d))


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
        if not optimizer.decay_vectors:  # two groups: matrices decay, vectors (biases, norm gains) do not
            params = list(params)
            matrices, vectors = [p for p in params if p.dim() > 1], [p for p in params if p.dim() <= 1]
            params = [{"params": matrices}, {"params": vectors, "weight_decay": 0.0}]
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
    optimizer's hyperparameters, our schedule (a ``LambdaLR`` reading ``scheduler.learning_rate_at``), our
    clipping and our loss (:func:`torch_loss`). Packages whose models are not a ``Sequential``
    build ``torch_model`` themselves (with ours's weights)."""
    if scheduler is None:
        torch_opt = torch_optimizer(optimizer, torch_model.parameters())
        torch_scheduler = None
    else:  # LambdaLR multiplies the initial rate, 1.0, by our schedule's rate at each step
        torch_opt = torch_optimizer(optimizer, torch_model.parameters(), learning_rate=1.0)
        torch_scheduler = torch.optim.lr_scheduler.LambdaLR(torch_opt, scheduler.learning_rate_at)
    return TorchTwin(torch_model, torch_opt, torch_loss(loss), torch_scheduler, clip_grad_norm)
