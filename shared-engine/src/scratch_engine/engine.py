"""The training loop: ``Engine(model, loss, optimizer).fit(loader, epochs)``.

One step is: zero the gradients, forward, loss, backward (the layers' own ``backward``,
or torch's in the opt-in ``backward="autograd"`` mode), optional gradient clipping,
optimizer step, schedule step. Losses and metrics are summed on the device and read
only every ``log_every`` steps and at the end of each epoch, so the GPU is never kept
waiting. A checkpoint holds everything needed to resume exactly where a run stopped.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping, Sized
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm import tqdm

from scratch_engine import checkpoint, checks, distributed, optim
from scratch_engine.autograd import autograd_step
from scratch_engine.callbacks import Callback, ModelCheckpoint
from scratch_engine.data import as_pair
from scratch_engine.device import resolve_device, seed_everything
from scratch_engine.history import History
from scratch_engine.losses import CrossEntropyLoss
from scratch_engine.metrics import Metric, NonFiniteWatch, RunningMetrics, accuracy
from scratch_engine.module import Module, no_cache
from scratch_engine.precision import MIXED, MixedPrecision, cast_floating, resolve_dtype
from scratch_engine.reference import TorchTwin

CHECKPOINT_FORMAT = "scratch-engine-checkpoint/1"


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite: the run diverged, or the data holds NaN/inf."""


class Engine:
    """Train, evaluate and checkpoint a :class:`~scratch_engine.Module`.

    ``device=None`` leaves the model where it is; otherwise the model moves to
    ``resolve_device(device)`` (``"auto"``, ``"cpu"``, ``"cuda"``...). Batches follow it.
    ``metrics`` maps names to ``fn(output, target) -> (total, count)`` (see
    :mod:`scratch_engine.metrics`); by default a :class:`CrossEntropyLoss` gets accuracy.
    ``progress``: ``True`` a tqdm bar per epoch, ``False`` silence, ``None`` a bar on a
    terminal and one summary line per epoch otherwise (both on stderr).
    ``seed`` calls :func:`seed_everything` first. Modules with a ``reset_state()`` method
    (recurrent models that carry their state from batch to batch, for truncated
    backpropagation through time) are reset at the start of every epoch and evaluation.
    ``reference`` trains a torch.nn twin on the same batches and records both losses at
    every step (see :mod:`scratch_engine.reference`); validation then also logs
    ``reference_val_loss``.

    **Data-parallel.** When ``torch.distributed`` is initialized with more than one rank
    (:func:`scratch_engine.distributed.setup`), the engine makes every rank start from rank
    0's weights, all-reduces the gradients after each backward (before clipping and the
    optimizer step: :func:`~scratch_engine.distributed.all_reduce_gradients`), sums the
    losses and metrics of every rank before it logs them, and leaves the progress bar, the
    epoch lines and checkpoint files to rank 0. A rank whose share of a batch is empty
    skips forward and backward but still joins the all-reduce. ``fit`` and ``evaluate``
    are then collectives: every rank calls them, with loaders of as many batches.
    BatchNorm statistics stay per rank (no synchronised batch norm).
    ``dtype``: ``"float64"`` or ``"float32"`` cast the model and the floating inputs;
    ``"bfloat16"`` trains in mixed precision (:mod:`scratch_engine.precision`): forward and
    backward on a bfloat16 copy, the optimizer on the model's own float32 weights.
    ``None`` leaves the model's dtype alone.
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
        backward: Literal["manual", "autograd"] = "manual",
        metrics: Mapping[str, Metric] | None = None,
        seed: int | None = None,
        progress: bool | None = None,
        log_every: int = 10,
        reference: TorchTwin | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if backward not in ("manual", "autograd"):
            raise ValueError(f"backward must be 'manual' or 'autograd', got {backward!r}")
        if log_every < 1:
            raise ValueError(f"log_every must be at least 1, got {log_every}")
        if seed is not None:
            seed_everything(seed)
        if device is None:
            params = model.parameters()
            self.device = params[0].data.device if params else torch.device("cpu")
        else:
            self.device = resolve_device(device)
            model.to(self.device)
        self.distributed = distributed.is_distributed()
        if self.distributed:
            if reference is not None:
                raise ValueError("a torch.nn reference twin cannot be trained data-parallel: drop one or the other")
            distributed.broadcast_parameters(model)  # before any copy of the weights is made
        self.dtype = resolve_dtype(dtype)
        self.precision: MixedPrecision | None = None
        if self.dtype in MIXED:
            if reference is not None:
                raise ValueError(
                    "a torch.nn reference twin is compared in full precision: use dtype float32 or float64"
                )
            self.precision = MixedPrecision(model, self.dtype)
        elif self.dtype is not None:
            model.to(dtype=self.dtype)
        _check_optimizer_and_scheduler(model, optimizer, scheduler)
        if metrics is None:
            is_classifier = isinstance(loss, CrossEntropyLoss)
            ignore_index = getattr(loss, "ignore_index", None)
            metrics = {"accuracy": partial(accuracy, ignore_index=ignore_index)} if is_classifier else {}
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.params = model.parameters()
        self.clip_grad_norm = clip_grad_norm
        self.backward = backward
        self.metrics = dict(metrics)
        self.progress = progress
        self.log_every = log_every
        self.reference = reference
        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps taken
        self.history = History()
        self.stop_training = False
        self._train_loader: Any = None
        self._resume_loader_seed: int | None = None
        self._callbacks: list[Callback] = []  # the latest fit's: their state goes into checkpoints
        self._resume_callback_states: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train_loader: Iterable[Any],
        epochs: int,
        val_loader: Iterable[Any] | None = None,
        callbacks: Iterable[Callback] = (),
    ) -> History:
        """Train until ``epochs`` epochs are complete *in total* and return the :class:`History`.

        After :meth:`load_checkpoint` (or an earlier ``fit``) training continues from the
        epoch reached, and a loader with a ``seed`` continues the saved shuffle order.
        Per epoch it logs ``loss``, metrics, ``val_loss`` and ``val_`` metrics, ``lr`` (the rate the
        epoch's last step trained with) and ``seconds``.

        ``callbacks`` run in the order given, except that :class:`ModelCheckpoint` runs last
        (its checkpoint then holds the others' state after this epoch). After
        :meth:`load_checkpoint` each callback with a :meth:`~Callback.state_dict` first gets the
        state saved for it (see :mod:`scratch_engine.callbacks`).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer (the total to reach), got {epochs!r}")
        callbacks = sorted(callbacks, key=lambda callback: isinstance(callback, ModelCheckpoint))  # stable
        self._callbacks = callbacks
        for key, callback in _keyed(callbacks):
            if key in self._resume_callback_states:
                callback.load_state_dict(self._resume_callback_states[key])
        self._resume_callback_states = {}
        self._train_loader = train_loader
        if self._resume_loader_seed is not None and hasattr(train_loader, "seed"):
            train_loader.seed = self._resume_loader_seed
        self._resume_loader_seed = None
        self.stop_training = False
        for callback in callbacks:
            callback.on_train_begin(self)
        fit_start, first_epoch = time.perf_counter(), self.epoch
        while self.epoch < epochs and not self.stop_training:
            start = time.perf_counter()
            bar = self._progress_bar(train_loader, epochs)
            try:
                with checks.deferred():  # value checks on a GPU: read when logging, not every step
                    logs, samples_per_second, epoch_lr = self._train_epoch(train_loader, bar)
                if val_loader is not None:
                    logs.update({f"val_{name}": value for name, value in self.evaluate(val_loader).items()})
                    if self.reference is not None:
                        logs["reference_val_loss"] = self.reference.evaluate_loss(val_loader, self._inputs)
                logs["lr"] = epoch_lr
                logs["seconds"] = time.perf_counter() - start
                self.epoch += 1
                self.history.append(logs)
                summary = _format_logs(logs, samples_per_second)
                if self.epoch < epochs:  # the whole run's remaining time, from this fit's epochs so far
                    per_epoch = (time.perf_counter() - fit_start) / (self.epoch - first_epoch)
                    summary += f"  ETA {_format_duration(per_epoch * (epochs - self.epoch))}"
                if bar is not None:
                    bar.set_postfix_str(summary, refresh=True)
                elif self.progress is None and distributed.is_main_process():
                    print(f"epoch {self.epoch}/{epochs}  {summary}", file=sys.stderr, flush=True)
            finally:
                if bar is not None:
                    bar.close()
            for callback in callbacks:
                callback.on_epoch_end(self, self.epoch, logs)
        for callback in callbacks:
            callback.on_train_end(self)
        return self.history

    @property
    def net(self) -> Module:
        """The module that computes: the bfloat16 copy in mixed precision, else the model itself."""
        return self.model if self.precision is None else self.precision.compute

    def _inputs(self, value: Any) -> Any:
        """A batch's tensors on the engine's device, floating ones in the compute dtype."""
        value = _to_device(value, self.device)
        compute_dtype = self.precision.dtype if self.precision is not None else self.dtype
        return value if compute_dtype is None else cast_floating(value, compute_dtype)

    def _reset_states(self) -> None:
        """Call ``reset_state()`` on every module that has one (a recurrent model's carried state)."""
        for module in self.net.modules():
            reset = getattr(module, "reset_state", None)
            if callable(reset):
                reset()
        if self.reference is not None:
            self.reference.reset_state()

    @torch.no_grad()
    def _train_epoch(self, loader: Iterable[Any], bar: tqdm[Any] | None) -> tuple[dict[str, float], float, float]:
        """One pass over ``loader``: its logs, samples per second, and the rate its last step trained with."""
        net = self.net
        net.train()
        self._reset_states()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        meter = RunningMetrics(self.metrics, self.device)
        watch = NonFiniteWatch(self.device)
        first_step = self.global_step
        step_lr = self.optimizer.learning_rate
        start = time.perf_counter()
        for batch, pair in enumerate(loader, 1):
            x, y = as_pair(pair, "training batches")
            x, y = self._inputs(x), self._inputs(y)
            net.zero_grad()
            samples = _num_samples(x, y)
            if samples == 0:  # this rank's share of a short last batch: zero gradients, no forward
                loss = output = None
            elif self.backward == "autograd":
                loss, output = autograd_step(net, self.loss_fn, x, y)
            else:
                output = net(x)
                loss = self.loss_fn(output, y)
                net.backward(self.loss_fn.backward(1.0))
            if self.precision is not None:
                self.precision.gradients_to_master()
            if self.distributed:
                distributed.all_reduce_gradients(self.params, samples)
            if self.clip_grad_norm is not None:
                optim.clip_grad_norm(self.params, self.clip_grad_norm)
            step_lr = self.optimizer.learning_rate  # the rate this step trains with, before the schedule moves it
            self.optimizer.step()
            if self.precision is not None:
                self.precision.master_to_compute()
            if self.scheduler is not None:
                self.scheduler.step()
            self.global_step += 1
            if self.reference is not None and loss is not None:  # a twin never runs data-parallel: loss is set
                self.reference.record(self.global_step, loss, self.reference.step(x, y))
            if loss is not None:
                watch.update(loss, self.global_step)
                meter.update(loss, output, y, samples)
            if bar is not None:
                bar.update()
            if batch % self.log_every == 0:  # the only place, with the epoch end, that reads the device
                self._raise_if_non_finite(watch, first_step)
                if self.reference is not None:
                    self.reference.flush()
                if bar is not None:
                    rate = meter.samples / (time.perf_counter() - start)
                    bar.set_postfix_str(f"loss {meter.compute()['loss']:.4f}  {rate:,.0f} samples/s")
        self._raise_if_non_finite(watch, first_step)
        if self.reference is not None:
            self.reference.flush()
        meter.all_reduce()  # every rank's samples, so the logs (and the samples per second) are global
        if meter.samples == 0:
            raise ValueError(f"the training data gave no samples in epoch {self.epoch + 1}: is the data set empty?")
        if self.precision is not None:
            self.precision.buffers_to_master()  # running statistics live in the compute copy
        return meter.compute(), meter.samples / max(time.perf_counter() - start, 1e-9), float(step_lr)

    def _raise_if_non_finite(self, watch: NonFiniteWatch, first_step: int) -> None:
        checks.raise_pending()  # targets or token ids found out of range since the last look
        found = watch.first()
        if self.distributed:  # agree on the first bad step, so that every rank stops at once
            found = _first_non_finite_on_any_rank(found, self.device)
        if found is not None:
            step, value = found
            raise NonFiniteLossError(
                f"loss became non-finite ({value}) at step {step} (epoch {self.epoch + 1}, "
                f"batch {step - first_step}); try a lower learning rate or gradient clipping, "
                "and check the data for NaN/inf"
            )

    def _progress_bar(self, loader: Iterable[Any], epochs: int) -> tqdm[Any] | None:
        show = sys.stderr.isatty() if self.progress is None else self.progress
        if not show or not distributed.is_main_process():
            return None
        total = len(loader) if isinstance(loader, Sized) else None
        return tqdm(total=total, desc=f"epoch {self.epoch + 1}/{epochs}", unit="batch", file=sys.stderr)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        """Mean loss and metrics over ``loader`` in eval mode, under ``no_cache()``; the train/eval mode is restored.

        Data-parallel, each rank evaluates its shard and the sums are combined over the ranks
        (a collective). A loader that is not sharded gives the same means, only computed on
        every rank.
        """
        net = self.net
        was_training = net.training
        net.eval()
        self._reset_states()
        try:
            meter = RunningMetrics(self.metrics, self.device)
            with checks.deferred(), no_cache():  # no backward follows: the layers keep nothing for one
                for pair in loader:
                    x, y = as_pair(pair, "evaluation batches")
                    x, y = self._inputs(x), self._inputs(y)
                    samples = _num_samples(x, y)
                    if samples == 0:  # an empty shard of the last batch
                        continue
                    output = net(x)
                    meter.update(self.loss_fn(output, y), output, y, samples)
                checks.raise_pending()
            meter.all_reduce()
            if meter.samples == 0:
                raise ValueError("the evaluation data gave no samples: is the data set empty?")
            logs = meter.compute()
            if not math.isfinite(logs["loss"]):
                raise ValueError(f"the evaluation loss is non-finite ({logs['loss']}): check the data for NaN/inf")
            return logs
        finally:
            net.train(was_training)

    @torch.no_grad()
    def predict(self, X: Tensor | Iterable[Any], batch_size: int = 256) -> Tensor:
        """Model outputs for a tensor (in chunks of ``batch_size``) or for a loader's inputs, in eval mode.

        The outputs are concatenated and stay on the engine's device (``.cpu()`` them if
        needed). A loader is read in its own order: give it ``shuffle=False``. An empty
        tensor gives an empty output (one forward of the empty batch); a loader without
        batches is a ``ValueError``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"predict batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(X, Tensor):
            starts = range(0, len(X), batch_size) if len(X) else [0]  # [0]: the empty batch, for the output's shape
            batches: Iterable[Any] = (X[i : i + batch_size] for i in starts)
        else:
            batches = (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in X)
        net = self.net
        was_training = net.training
        net.eval()
        try:
            with no_cache():  # no backward follows: the layers keep nothing for one
                outputs = [net(self._inputs(x)) for x in batches]
        finally:
            net.train(was_training)
        if not outputs:
            raise ValueError("predict got a loader without batches: is the data set empty?")
        return torch.cat(outputs)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write model, optimizer, schedule, progress, history and RNG states (atomically).

        ``extra`` holds what else a package needs to use the model later (its vocabulary,
        its config): plain dicts, lists, strings, numbers and tensors, read back by
        :meth:`load_checkpoint` or :func:`scratch_engine.checkpoint.load_checkpoint`
        (key ``"extra"``).

        Data-parallel, only rank 0 writes (every rank holds the same weights); the others
        return ``path`` without writing.
        """
        if not distributed.is_main_process():
            return Path(path)
        return checkpoint.save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "epoch": self.epoch,
                "global_step": self.global_step,
                "history": self.history.to_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
                "loader_seed": getattr(self._train_loader, "seed", None),
                "callbacks": _callback_states(self._callbacks),
                "extra": dict(extra or {}),
            },
            path,
        )

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore everything :meth:`save_checkpoint` wrote and return its ``extra`` entries.

        The next :meth:`fit` resumes from there, and hands its callbacks their saved state. A
        checkpoint of another model is a ``ValueError`` naming the keys or shapes that differ;
        one of another type of optimizer, one naming both types.
        """
        state = checkpoint.load_checkpoint(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a scratch-engine checkpoint (expected format {CHECKPOINT_FORMAT!r})")
        # the optimizer first: another type of optimizer is refused before the weights change
        self.optimizer.load_state_dict(state["optimizer"])  # it moves its tensors to the parameters' device
        self.model.load_state_dict(state["model"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.history = History.from_dict(state["history"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self._resume_loader_seed = state["loader_seed"]
        self._resume_callback_states = dict(state.get("callbacks", {}))  # older checkpoints have none
        self._sync_compute_copy()
        return dict(state.get("extra", {}))

    def load_model_state(self, state_dict: dict[str, Tensor]) -> None:
        """Load ``state_dict`` into the model, and so into what ``evaluate`` and ``predict`` run.

        In mixed precision that is the bfloat16 compute copy, which is refreshed from the
        loaded float32 masters (``model.load_state_dict`` alone would leave it behind).
        """
        self.model.load_state_dict(state_dict)
        self._sync_compute_copy()

    def _sync_compute_copy(self) -> None:
        """After the master model's weights or buffers were replaced: cast them into the compute copy."""
        if self.precision is not None:
            self.precision.master_to_compute()
            self.precision.buffers_to_compute()


def _check_optimizer_and_scheduler(model: Module, optimizer: Any, scheduler: Any) -> None:
    """The optimizer must update the model's parameters and the schedule drive that optimizer.

    Only what always holds is checked: an optimizer may leave some parameters frozen (a
    subset), but one that also updates parameters the model does not have was built for
    another model (mixed precision, data-parallel training and the reference twin all keep
    the optimizer on the model passed in, the float32 masters).
    """
    params = getattr(optimizer, "params", None)
    if isinstance(params, list):
        own = {id(p) for p in model.parameters()}
        foreign = sum(id(p) not in own for p in params)
        if foreign:
            raise ValueError(
                f"the optimizer updates {foreign} of its {len(params)} parameters that are not the model's: "
                "build it on this model (e.g. Adam(model))"
            )
    driven = getattr(scheduler, "optimizer", optimizer)
    if driven is not optimizer:
        raise ValueError(
            f"the scheduler drives another optimizer than the engine's: build it on the same {type(optimizer).__name__}"
        )


def _keyed(callbacks: list[Callback]) -> list[tuple[str, Callback]]:
    """Each callback with its checkpoint key: its type name, then ``#2``, ``#3``... for repeats of a type."""
    seen: dict[str, int] = {}
    keyed = []
    for callback in callbacks:
        name = type(callback).__name__
        seen[name] = seen.get(name, 0) + 1
        keyed.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
    return keyed


def _callback_states(callbacks: list[Callback]) -> dict[str, Any]:
    """The non-empty ``state_dict()`` of each callback, by key (callbacks without one have no state)."""
    states = {}
    for key, callback in _keyed(callbacks):
        state_dict = getattr(callback, "state_dict", None)
        state = state_dict() if callable(state_dict) else {}
        if state:
            states[key] = state
    return states


def _to_device(value: Any, device: torch.device) -> Any:
    """Move the tensors in ``value`` (nested in tuples, lists and dicts) to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


def _num_samples(x: Any, y: Any) -> int:
    for value in (y, x):
        if isinstance(value, Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


def _first_non_finite_on_any_rank(found: tuple[int, float] | None, device: torch.device) -> tuple[int, float] | None:
    """The earliest ``(step, loss)`` any rank saw non-finite, on every rank (two small all-reduces)."""
    never = float("inf")
    first = torch.tensor([never if found is None else float(found[0])], dtype=torch.float64, device=device)
    step = float(distributed.all_reduce_min(first)[0])
    mine = found if found is not None and float(found[0]) == step else None
    value = torch.tensor([mine[1] if mine else 0.0, 1.0 if mine else 0.0], dtype=torch.float64, device=device)
    value = distributed.all_reduce_sum(value)
    if step == never:
        return None
    return int(step), float(value[0] / value[1])


def _format_duration(seconds: float) -> str:
    """``"45s"``, ``"12m05s"`` or ``"2h03m"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _format_logs(logs: Mapping[str, float], samples_per_second: float) -> str:
    parts = []
    for name, value in logs.items():
        if name == "lr":
            parts.append(f"lr {value:.2e}")
        elif name == "seconds":
            parts.append(f"{value:.1f}s ({samples_per_second:,.0f} samples/s)")
        else:
            parts.append(f"{name} {value:.4f}")
    return "  ".join(parts)
