"""The training loop: ``Engine(model, loss, optimizer).fit(loader, epochs=10)``.

The lesson is :meth:`Engine.train_step`: forward, loss, backward (each layer's own chain rule), an optimizer
step. What a real run adds (mixed precision, the data-parallel all-reduce, the torch.nn twin, progress,
checkpoints: :mod:`scratch_engine.tools`) attaches around it as a :class:`Callback`. The position (``epoch``,
``batch``, ``global_step``, ``seconds``) is plain attributes: a saved run continues where it stopped, mid-epoch too.
"""

from __future__ import annotations

import importlib
import itertools
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine import checks
from scratch_engine.data import as_pair, map_tensors
from scratch_engine.losses import CrossEntropyLoss
from scratch_engine.module import Module, no_cache, skip_data_gradient
from scratch_engine.optim import clip_grad_norm

Metric = Callable[[Any, Any], tuple[Tensor | int, Tensor | int]]  # (output, target) -> (total, count), see Engine


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite: the run diverged, or the data holds NaN/inf."""


class Callback:
    """Code that runs around the training step. The hooks, in the order a fit calls them; ``state_dict`` holds
    what a resumed run needs (a fit-time callback gets it back from ``engine.resume_states``, by type name)."""

    def attach(self, engine: Engine) -> None: ...  # the engine takes it (it may swap engine.net: a bfloat16 copy)
    def on_fit_begin(self, engine: Engine) -> None: ...
    def on_epoch_begin(self, engine: Engine) -> None: ...
    def on_batch(self, engine: Engine, x: Any, y: Any) -> tuple[Any, Any]:
        return x, y  # the batch to compute with, in evaluation and prediction too (a cast, say)

    def on_train_batch(self, engine: Engine, x: Any, y: Any) -> None: ...
    def after_backward(self, engine: Engine) -> None: ...  # the gradients are complete (an all-reduce, say)
    def after_update(self, engine: Engine) -> None: ...  # the weights moved
    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None: ...  # after its row, if any
    def combine(self, engine: Engine, meter: Meter) -> None: ...  # sums are about to be read (all-reduce them)
    def on_evaluate(self, engine: Engine, loader: Iterable[Any], logs: dict[str, float]) -> None: ...
    def on_log(self, engine: Engine, logs: dict[str, float]) -> None: ...  # a history row
    def on_fit_end(self, engine: Engine) -> None: ...
    def state_dict(self) -> dict[str, Any]:
        return {}  # plain data and tensors

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Engine:
    """Train, evaluate and predict with a :class:`~scratch_engine.Module`.

    ``device=None`` leaves the model where it is, else it moves there; batches follow it. ``metrics`` maps names
    to ``fn(output, target) -> (total, count)``: tensors whose elements add up to the step's total and count, or
    numbers, summed on the device (:func:`accuracy` by default for a :class:`CrossEntropyLoss`). ``progress``
    prints each history row. Every ``log_every`` steps the engine reads the device once, to stop a diverged run
    (:class:`NonFiniteLossError`). A module that carries a state from batch to batch (truncated backpropagation
    through time) has ``reset_state``, ``carried_state`` and ``set_carried_state``: reset each epoch, kept aside
    in evaluation, saved.
    """

    def __init__(
        self,
        model: Module,
        loss: Any,
        optimizer: Any,
        *,
        scheduler: Any = None,
        clip_grad_norm: float | None = None,
        device: str | torch.device | None = None,
        metrics: Mapping[str, Metric] | None = None,
        progress: bool = True,
        log_every: int = 10,
        callbacks: Iterable[Callback] = (),
        seed: int | None = None,
    ) -> None:
        if seed is not None:  # deprecated, scratch-engine 0.1's: seed before building the model instead
            moved("scratch_engine.tools.device", "seed_everything", "Engine(seed=...)")(seed)
        if log_every < 1:
            raise ValueError(f"log_every must be at least 1, got {log_every}")
        _check_optimizer_and_scheduler(model, optimizer, scheduler)
        if device is not None:
            model.to(torch.device(device))
        self.params = model.parameters()
        skip_data_gradient(model)  # train_step drops dL/d(input): the first layer need not compute it
        self.device = self.params[0].data.device if self.params else torch.device(device or "cpu")
        if metrics is None and isinstance(loss, CrossEntropyLoss):
            metrics = {"accuracy": partial(accuracy, ignore_index=loss.ignore_index)}
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.net = model  # the module that computes (a callback may swap in a bfloat16 copy)
        self.clip_grad_norm, self.metrics = clip_grad_norm, dict(metrics or {})
        self.progress, self.log_every = progress, log_every
        self.epoch = self.batch = self.global_step = 0  # epochs done, batches into the next one, steps taken
        self.seconds = 0.0  # time spent in fit, over every fit and resume of the run
        self.learning_rate = float(optimizer.learning_rate)  # the rate the latest step trained with
        self.history, self.meter = History(), Meter(self.metrics, self.device)  # the meter: sums since the last row
        self.stop_training = False
        self.train_loader: Iterable[Any] | None = None
        self.budget: dict[str, Any] = {}
        self.callbacks: list[Callback] = list(callbacks)
        self._fit_callbacks: list[Callback] = []
        self.resume_states: dict[str, Any] = {}  # a restored run's: the next fit's callbacks' state, its loader seed
        for callback in self.callbacks:
            callback.attach(self)

    # ------------------------------------------------------------------ the lesson
    def train_step(self, x: Any, y: Any) -> tuple[Tensor, Any]:
        """One step of gradient descent on the batch ``(x, y)``; returns the loss and the output."""
        self.net.zero_grad()
        output = self.net(x)  # forward: every layer keeps what its backward needs
        loss = self.loss_fn(output, y)  # how wrong the output is, one number
        self.net.backward(self.loss_fn.backward())  # backward: dL/dθ added into every Parameter.grad
        self.update()  # θ <- θ - η · dL/dθ, in the optimizer's own way
        return loss, output

    def update(self) -> None:
        self._run("after_backward")
        if self.clip_grad_norm is not None:
            clip_grad_norm(self.params, self.clip_grad_norm)
        self.learning_rate = float(self.optimizer.learning_rate)  # before the schedule moves it
        self.optimizer.step()
        self._run("after_update")
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1

    # ------------------------------------------------------------------ the loop
    def fit(
        self,
        train_loader: Iterable[Any],
        epochs: int | None = None,
        *,
        max_steps: int | None = None,
        max_seconds: float | None = None,
        val_loader: Iterable[Any] | None = None,
        eval_every: int | None = None,
        callbacks: Iterable[Callback] = (),
    ) -> History:
        """Train until the first budget is spent; returns the :class:`History`.

        Budgets are totals for the run (``epochs``, ``max_steps``, ``max_seconds`` of fit time), so after a restore
        or an earlier ``fit`` training continues. A budget that ends between two rows records one more. A callback
        that sets ``stop_training`` ends the fit after the step under way, without a row (the run can be resumed).
        """
        self.budget = _budget(epochs, max_steps, max_seconds, eval_every)
        self._fit_callbacks = list(callbacks)
        for callback in self._fit_callbacks:
            callback.attach(self)
            callback.load_state_dict(self.resume_states.pop(type(callback).__name__, {}))
        if (seed := self.resume_states.pop("loader_seed", None)) is not None and hasattr(train_loader, "seed"):
            train_loader.seed = seed  # a resumed run shuffles as it did
        self.train_loader, self.stop_training = train_loader, False
        self._run("on_fit_begin")
        clock = time.perf_counter() - self.seconds
        with torch.no_grad(), checks.deferred():  # value checks on a GPU: read every log_every steps
            while not self.budget_spent() and not self.stop_training:
                for batch in self._epoch_batches(train_loader):
                    x, y = self.prepare_batch(as_pair(batch, "training batches"))
                    self._run("on_train_batch", x, y)
                    loss: Tensor | None
                    if _has_samples(y):
                        loss, output = self.train_step(x, y)
                        self.meter.update(loss, output, y, self.global_step)
                    else:  # a data-parallel rank's empty share of a short last batch: it joins the update
                        loss = output = None
                        self.net.zero_grad()
                        self.update()
                    self.batch, self.seconds = self.batch + 1, time.perf_counter() - clock
                    if eval_every is not None and self.global_step % eval_every == 0:
                        self._log(val_loader)
                    self._run("on_step_end", loss, output)
                    if self.global_step % self.log_every == 0:
                        self._check_finite()
                    if self.stop_training or self.budget_spent():
                        break
                else:  # the epoch ran to its end
                    if self.batch == 0:
                        raise ValueError(f"the training data gave no batches in epoch {self.epoch + 1}: is it empty?")
                    self.epoch, self.batch = self.epoch + 1, 0
                    if eval_every is None:
                        self._log(val_loader)
            if self.meter.steps and not self.stop_training:  # a budget ended between two rows
                self._log(val_loader)
        self._run("on_fit_end")
        self._fit_callbacks = []
        return self.history

    def _epoch_batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """The batches of the epoch under way from ``self.batch`` on; carried states reset at its start."""
        if self.batch == 0:
            self._reset_states()
            self._run("on_epoch_begin")
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch, self.batch)
            return iter(loader)
        return itertools.islice(iter(loader), self.batch, None)  # a plain iterable: skip what was done

    def budget_spent(self) -> bool:
        spent = {"epochs": self.epoch, "max_steps": self.global_step, "max_seconds": self.seconds}
        return any(limit is not None and spent[name] >= limit for name, limit in self.budget.items())

    def prepare_batch(self, batch: tuple[Any, Any]) -> tuple[Any, Any]:
        """``(x, y)`` on the engine's device, as the callbacks want it (``on_batch``: a cast, say)."""
        device = self.device  # a tensor already there is used as it is (.to would cost a dispatch per step)
        x, y = map_tensors(lambda t: t if t.device == device else t.to(device, non_blocking=True), batch)
        for callback in self.all_callbacks():
            x, y = callback.on_batch(self, x, y)
        return x, y

    def _log(self, val_loader: Iterable[Any] | None) -> None:
        """Record a history row: training means since the last row, validation, learning rate, position."""
        self._run("combine", self.meter)
        self._check_finite()
        epoch = self.epoch + (self.batch / len(self.train_loader) if isinstance(self.train_loader, Sized) else 0)
        logs = {"step": float(self.global_step), "epoch": epoch, **self.meter.compute()}
        self.meter = Meter(self.metrics, self.device)
        if val_loader is not None:
            logs |= {f"val_{name}": value for name, value in self.evaluate(val_loader).items()}
        logs |= {"learning_rate": self.learning_rate, "seconds": self.seconds}
        self.history.append(logs)
        if self.progress:
            shown = "  ".join(f"{name} {value:.4g}" for name, value in logs.items() if name not in ("step", "epoch"))
            print(f"step {self.global_step} (epoch {epoch:.2f})  {shown}", file=sys.stderr, flush=True)
        self._run("on_log", logs)

    def _check_finite(self) -> None:
        checks.raise_pending()  # targets or token ids found out of range since the last look
        if (found := self.meter.first_non_finite()) is not None:
            raise NonFiniteLossError(
                f"loss became non-finite ({found[1]}) at step {found[0]}; "
                "try a lower learning rate or gradient clipping, and check the data for NaN/inf"
            )

    # ------------------------------------------------------------------ inference
    @contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode, no cache, carried states set aside; leaving restores the mode and the states (mid-epoch too)."""
        carried, was_training = self.carried_states(), self.net.training
        self.net.eval()
        self._reset_states()
        try:
            with torch.no_grad(), checks.deferred(), no_cache():
                yield
        finally:
            self.net.train(was_training)
            self.set_carried_states(carried)

    def evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        """Mean loss and metrics over ``loader``, in :meth:`inference`."""
        meter = Meter(self.metrics, self.device)
        with self.inference():
            for batch in loader:
                x, y = self.prepare_batch(as_pair(batch, "evaluation batches"))
                if _has_samples(y):  # data-parallel: a rank's share of the last batch may be empty
                    output = self.net(x)
                    meter.update(self.loss_fn(output, y), output, y, meter.steps + 1)
            checks.raise_pending()
        self._run("combine", meter)
        if meter.samples == 0:
            raise ValueError("the evaluation data gave no samples: is the data set empty?")
        logs = meter.compute()
        if not math.isfinite(logs["loss"]):
            raise ValueError(f"the evaluation loss is non-finite ({logs['loss']}): check the data for NaN/inf")
        self._run("on_evaluate", loader, logs)
        return logs

    def predict(self, X: Tensor | Iterable[Any], batch_size: int = 256) -> Tensor:
        """Model outputs, in :meth:`inference` and on the engine's device, for a tensor (in chunks of
        ``batch_size``) or for a loader's inputs (in its own order)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"predict batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(X, Tensor):  # an empty tensor: one empty chunk, for the output's shape
            batches: Iterable[Any] = X.split(batch_size) if len(X) else [X]
        else:
            batches = (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in X)
        with self.inference():
            outputs = [self.net(self.prepare_batch((x, None))[0]) for x in batches]
        if not outputs:
            raise ValueError("predict got a loader without batches: is the data set empty?")
        return torch.cat(outputs)

    # ------------------------------------------------------------------ carried state
    def _stateful(self) -> Iterator[tuple[str, Any]]:
        return ((name, m) for name, m in self.net.named_modules() if callable(getattr(m, "reset_state", None)))

    def _reset_states(self) -> None:
        for _, module in self._stateful():
            module.reset_state()

    def carried_states(self) -> dict[str, Any]:
        """Each stateful module's carried state, by its name in ``net`` (to save a run mid-epoch)."""
        return {name: module.carried_state() for name, module in self._stateful() if hasattr(module, "carried_state")}

    def set_carried_states(self, states: Mapping[str, Any]) -> None:
        for name, module in self._stateful():
            if name in states:
                module.set_carried_state(states[name])

    def all_callbacks(self) -> list[Callback]:
        return [*self.callbacks, *self._fit_callbacks]

    def _run(self, hook: str, *args: Any) -> None:
        for callbacks in (self.callbacks, self._fit_callbacks):  # all_callbacks(), without a new list per hook
            for callback in callbacks:
                getattr(callback, hook)(self, *args)


class History(dict[str, list[float]]):
    """Name -> one float per history row (``history["loss"][-1]``); ``nan`` where a row lacks it."""

    @property
    def rows(self) -> int:
        return max(map(len, self.values()), default=0)

    def append(self, logs: Mapping[str, float]) -> None:
        rows = self.rows
        for name in {**self, **logs}:
            if name not in self:  # a new column: nan for the rows before it (built only then, not at every row)
                self[name] = [math.nan] * rows
            self[name].append(float(logs.get(name, math.nan)))

    def to_dict(self) -> dict[str, list[float]]:
        return {name: list(values) for name, values in self.items()}

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Deprecated: :func:`scratch_engine.tools.plots.plot_history` draws the curves."""
        return Path(moved("scratch_engine.tools.plots", "plot_history", "History.plot")(self, path, title))


class Meter:
    """Sums of the loss and each metric, on the device and read once per row, and the first non-finite loss's step.

    Speed trick: a step only notes its loss and metrics, and :meth:`flush` adds them into ``loss_sum``,
    ``totals`` and ``bad`` at a row (or every 64 steps), in a few kernels (call it before reading them). The plain
    form adds into the sums at every step: a dozen tiny kernels, most of a small model's time outside its step.
    """

    def __init__(self, metrics: Mapping[str, Metric], device: torch.device) -> None:
        self.metrics = metrics
        wide = torch.float32 if device.type == "mps" else torch.float64  # float32 sums of thousands lose digits
        self.loss_sum = torch.zeros((), device=device, dtype=wide)
        self.totals = {name: torch.zeros(2, device=device, dtype=wide) for name in metrics}
        self.bad = torch.full((2,), math.nan, device=device, dtype=wide)  # (step, loss) of the first non-finite
        self.samples = self.steps = 0
        self.noted: list[tuple[int, int, list[Any]]] = []  # (samples, step, [loss, total, count, ...]) per step
        self.looked = 0  # how many of the noted steps first_non_finite has seen

    def update(self, loss: Tensor, output: Any, target: Any, step: int) -> None:
        samples = target.shape[0] if isinstance(target, Tensor) and target.dim() > 0 else 1
        loss = loss.detach() if loss.requires_grad else loss  # under no_grad (the engine's) nothing to detach
        parts = [loss, *(part for metric in self.metrics.values() for part in metric(output, target))]
        self.noted.append((samples, step, parts))
        self.samples, self.steps = self.samples + samples, self.steps + 1
        if len(self.noted) >= 64:
            self.flush()

    def flush(self) -> None:
        """Add what was noted since the last flush into the sums, and note the first non-finite loss among it."""
        if not self.noted:
            return
        (samples, steps, parts), self.noted, self.looked = zip(*self.noted, strict=True), [], 0
        wide = self.loss_sum.dtype
        losses = torch.stack([row[0] for row in parts])  # one stack for the losses, one for the metrics
        if len(set(samples)) == 1:  # batches of one size: size * sum(loss), two kernels fewer than the plain form
            self.loss_sum.add_(summed := losses.sum(dtype=wide), alpha=samples[0])
        else:  # the plain form: sum(loss * samples)
            self.loss_sum += (summed := losses.to(wide) @ torch.tensor(samples, dtype=wide, device=losses.device))
        for i, name in enumerate(self.metrics):
            total, count = ([row[1 + 2 * i + j] for row in parts] for j in (0, 1))
            self.totals[name] += torch.stack([_added(total, self.loss_sum), _added(count, self.loss_sum)])
        # one read of the device (mostly at the finite check, which reads it anyway); finite iff every loss is
        if not math.isfinite(summed.item()) and math.isnan(float(self.bad[0])):
            first = int(losses.isfinite().logical_not().nonzero()[0])
            self.bad = torch.stack([losses.new_tensor(steps[first], dtype=wide), losses[first].to(wide)])

    def first_non_finite(self) -> tuple[int, float] | None:
        """``(step, loss)`` of the first non-finite loss, or ``None``. Speed trick (plain form: flush, then read):
        the losses noted since the last look are summed, finite iff every one is, and only then flushed."""
        fresh, self.looked = self.noted[self.looked :], len(self.noted)
        if fresh and not math.isfinite(torch.stack([parts[0] for _, _, parts in fresh]).sum().item()):
            self.flush()  # which finds the first
        step, loss = self.bad.tolist()
        return None if math.isnan(step) else (int(step), loss)

    def compute(self) -> dict[str, float]:
        """Mean loss and metrics (this reads the device: one synchronisation)."""
        self.flush()
        logs = {"loss": self.loss_sum.item() / max(self.samples, 1)}
        return logs | {name: total.item() / max(count.item(), 1) for name, (total, count) in self.totals.items()}


def _added(values: list[Any], like: Tensor) -> Tensor:
    """Every element of ``values`` (tensors of any shape, or numbers) added up: a 0-d tensor like ``like``."""
    number = sum(value for value in values if not isinstance(value, Tensor))
    if not (tensors := [v if v.ndim == 1 else v.reshape(-1) for v in values if isinstance(v, Tensor)]):
        return like.new_full((), number)  # numbers only (a count): one kernel, not two
    total = torch.cat(tensors).sum(dtype=like.dtype).to(like.device)
    return total + number if number else total


def accuracy(logits: Tensor, targets: Tensor, ignore_index: int | None = None) -> tuple[Tensor, Tensor | int]:
    """Per target, whether the argmax over the last dim hits it, and which targets count (not ``ignore_index``).
    Speed trick: the meter adds both up every few steps; the plain ``(hits.sum(), count)`` makes 4 kernels, not 2."""
    predictions = logits.argmax(dim=-1)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"accuracy expects logits (..., C) and targets (...), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if ignore_index is None:  # every target counts
        return predictions == targets, targets.numel()
    keep = targets != ignore_index
    return (predictions == targets) & keep, keep


def _budget(epochs: Any, max_steps: Any, max_seconds: Any, eval_every: Any) -> dict[str, Any]:
    for name, value in (("epochs", epochs), ("max_steps", max_steps), ("eval_every", eval_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer (a total for the run) or None, got {value!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and 0 < max_seconds < math.inf):
        raise ValueError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    if epochs is None and max_steps is None and max_seconds is None:
        raise ValueError("fit needs a budget: epochs, max_steps or max_seconds")
    return {"epochs": epochs, "max_steps": max_steps, "max_seconds": max_seconds}


def _has_samples(y: Any) -> bool:
    return not (isinstance(y, Tensor) and y.dim() > 0 and y.shape[0] == 0)


def _check_optimizer_and_scheduler(model: Module, optimizer: Any, scheduler: Any) -> None:
    """The optimizer must update this model's parameters (a subset may stay frozen), the schedule drive it."""
    own = {id(p) for p in model.parameters()}
    if foreign := sum(id(p) not in own for p in getattr(optimizer, "params", [])):
        raise ValueError(
            f"the optimizer updates {foreign} parameters that are not the model's: build it on this model (Adam(model))"
        )
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError(f"the scheduler drives another optimizer than the engine's {type(optimizer).__name__}")


def moved(module: str, name: str, old: str) -> Any:
    """``module.name``, looked up when first used, with a ``DeprecationWarning``: how code written for
    scratch-engine 0.1 still finds what moved into :mod:`scratch_engine.tools` (the core never uses it)."""
    warnings.warn(f"{old} moved: use {module}.{name}", DeprecationWarning, stacklevel=3)
    return getattr(importlib.import_module(module), name)
