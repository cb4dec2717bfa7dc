"""The one run recipe every ``train`` command follows: a :class:`Task` says what, :func:`run` does the rest.

A package defines each task as a subclass of :class:`Task`: its config (a
:class:`~scratch_engine.tools.config.TrainConfig`), its data, its model, its loss and its
evaluation. :func:`run` then does what every run needs, the same way for every architecture::

    seed, device (and torchrun's process group)      the number format (one rule: run_dtype)
    data = task.load_data(config, device)                    model = task.build_model(config, data)
    optimizer and schedule by name                   the torch.nn twin, with --reference torch
    Engine(model, loss, optimizer, callbacks=[data-parallel, precision, twin, progress bar])
    engine.fit(data.train, budgets..., val_loader=data.val, callbacks=[Checkpoints(out/checkpoint.pt)])
    metrics = task.evaluate(run)                     loss.png, reference.png, metrics.json

A run saves ``out/checkpoint.pt`` every ``checkpoint_minutes``, at every validation and when it
ends; Ctrl-C or SIGTERM end it after the step under way (:class:`RunInterruptedError`), and
``resume=True`` continues it to the very result an uninterrupted run would have reached.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from scratch_engine.engine import Callback, Engine, NonFiniteLossError
from scratch_engine.losses import CrossEntropyLoss, Loss
from scratch_engine.module import Module
from scratch_engine.optim import Adam, AdamW, GradientDescent, Optimizer
from scratch_engine.schedules import InverseSqrtWarmup, LRScheduler, WarmupCosine
from scratch_engine.tools import distributed
from scratch_engine.tools.callbacks import StopOnDivergence
from scratch_engine.tools.checkpoint import Checkpoints, read_checkpoint, restore_run, stop_on_signals
from scratch_engine.tools.config import (
    RESUMABLE_CHANGES,
    TrainConfig,
    check_config,
    config_differences,
    steps_in_budget,
)
from scratch_engine.tools.device import resolve_device, seed_everything
from scratch_engine.tools.precision import Precision, run_dtype, weights_dtype
from scratch_engine.tools.progress import LossTrace, ProgressBar
from scratch_engine.tools.records import write_metrics

MOMENTUM = 0.9  # what "--optimizer momentum" means
CHECKPOINT = "checkpoint.pt"
PREVIOUS = ".previous-run"  # where a new run in a used --out keeps the previous run until it is complete itself

ConfigT = TypeVar("ConfigT", bound=TrainConfig)


@dataclass
class Loaders:
    """What :meth:`Task.load_data` returns: the training loader and the validation loader (or ``None``).

    A task subclasses it to carry what its evaluation needs too (test tensors, vocabularies).
    """

    train: Any
    val: Any = None


@dataclass
class Run(Generic[ConfigT]):
    """A run under way, as :meth:`Task.evaluate` and :meth:`Task.checkpoint_extra` see it."""

    task: Task[ConfigT]
    config: ConfigT
    data: Any
    model: Module
    engine: Engine
    device: torch.device
    out: Path | None
    progress: bool
    twin: Any = None  # the TorchTwin callback of a --reference torch run
    extra: dict[str, Any] = field(default_factory=dict)  # what the task keeps between its hooks
    trace: Any = None  # the LossTrace callback: the training loss between history rows


class RunError(ValueError):
    """A run that cannot start as asked (a resume that does not fit, an unfinished run in the way): one line."""


class RunInterruptedError(Exception):
    """Ctrl-C or SIGTERM stopped a run after a step; the run is saved in ``checkpoint`` (``None``: no ``out``)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        import signal

        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        saved = f"saved in {checkpoint}" if checkpoint is not None else "not saved (no output folder)"
        super().__init__(f"stopped by {name} after step {step}; the run is {saved}")


class Task(Generic[ConfigT]):
    """One ``train <name>`` of a package. Override what differs; the defaults fit a plain classifier."""

    name: str = "task"
    help: str = ""
    config: ConfigT  # the defaults, shown by --help
    resumable: frozenset[str] = frozenset()  # config fields besides RESUMABLE_CHANGES a --resume may change

    def load_data(self, config: ConfigT, device: torch.device) -> Loaders:
        """The loaders, their tensors on ``device`` where they fit (a clear error for missing or bad data here)."""
        raise NotImplementedError

    def build_model(self, config: ConfigT, data: Any) -> Module:
        raise NotImplementedError

    def loss(self, config: ConfigT, data: Any) -> Loss:
        return CrossEntropyLoss()

    def torch_twin(self, config: ConfigT, data: Any, model: Module) -> torch.nn.Module:
        """The torch.nn model with ``model``'s weights that ``--reference torch`` trains beside it."""
        from scratch_engine.tools.twin import to_torch  # torch.nn only on request

        return to_torch(model)

    def make_optimizer(self, config: ConfigT, model: Module) -> Optimizer:
        return make_optimizer(config.optimizer, model, config.learning_rate, config.weight_decay)

    def make_scheduler(self, config: ConfigT, optimizer: Optimizer, total_steps: int | None) -> LRScheduler | None:
        return make_scheduler(config, optimizer, total_steps)

    def evaluate(self, run: Run[ConfigT]) -> dict[str, Any]:
        """The task's results (test metrics), and its figures written into ``run.out`` when it is set."""
        return {}

    def checkpoint_extra(self, run: Run[ConfigT]) -> dict[str, Any]:
        """What using the trained model later needs besides the weights (a vocabulary, say)."""
        return {}

    def callbacks(self, config: ConfigT, data: Any, progress: bool) -> list[Callback]:
        """The task's own callbacks on the engine (a sample printed at each validation, say)."""
        return []


def make_optimizer(name: str, model: Module, learning_rate: float, weight_decay: float = 0.0) -> Optimizer:
    """``"sgd"``, ``"momentum"`` (SGD with momentum 0.9), ``"adam"`` or ``"adamw"`` over ``model``'s parameters."""
    if name == "sgd":
        return GradientDescent(model, learning_rate, weight_decay=weight_decay)
    if name == "momentum":
        return GradientDescent(model, learning_rate, momentum=MOMENTUM, weight_decay=weight_decay)
    if name == "adam":
        return Adam(model, learning_rate, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(model, learning_rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid names: sgd, momentum, adam, adamw")


def make_scheduler(config: TrainConfig, optimizer: Optimizer, total_steps: int | None) -> LRScheduler | None:
    """The schedule ``config.schedule`` names: ``constant`` (none); ``cosine``, ``warmup_steps`` of linear
    warm-up, then a cosine to 0 (or the config's ``min_learning_rate``) at ``total_steps``; ``inverse-sqrt``,
    the Transformer paper's, scaled so that its peak after the warm-up is ``learning_rate`` (it needs the config's
    ``d_model``)."""
    if config.schedule == "constant":
        return None
    if config.schedule == "cosine":
        if total_steps is None:
            raise RunError("the cosine schedule needs a step budget: --epochs or --max-steps")
        floor = getattr(config, "min_learning_rate", 0.0)  # a task's config may give the cosine a floor
        return WarmupCosine(optimizer, min(config.warmup_steps, total_steps), total_steps, floor)
    if config.schedule == "inverse-sqrt":
        d_model = getattr(config, "d_model", None)
        if not isinstance(d_model, int) or config.warmup_steps < 1:
            raise RunError("the inverse-sqrt schedule needs a model width d_model and warmup_steps >= 1")
        factor = config.learning_rate * math.sqrt(d_model * config.warmup_steps)  # the peak, factor/sqrt(d W)
        return InverseSqrtWarmup(optimizer, d_model, config.warmup_steps, factor=factor)
    raise RunError(f"unknown schedule {config.schedule!r}")


def run(
    task: Task[ConfigT],
    config: ConfigT | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    resume: bool | str | Path = False,
) -> dict[str, Any]:
    """Train ``task`` with ``config``, evaluate it, and (given ``out``) save its files; returns the metrics.

    ``out`` receives ``checkpoint.pt`` (during the run too), ``metrics.json``, ``loss.png``, the
    task's figures and, with a twin, ``reference.png``. ``resume`` continues the run saved in
    ``out/checkpoint.pt`` (or the path given); its config may differ only in the budget, the device
    and the like. An interrupted run raises :class:`RunInterruptedError` after saving itself.
    ``config.threads`` holds for the run only. With ``config.reference`` a ``dropout`` field is 0, as recorded.
    """
    config = config if config is not None else task.config
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(task, config, None if out is None else Path(out), progress, resume)
    finally:
        torch.set_num_threads(threads)


def _run(
    task: Task[ConfigT], config: ConfigT, out: Path | None, progress: bool, resume: bool | str | Path
) -> dict[str, Any]:
    check_config(config)
    if config.reference is not None and any(item.name == "dropout" for item in fields(config)):
        no_dropout: dict[str, Any] = {"dropout": 0.0}  # the twin would draw other dropout masks: compare without
        config = replace(config, **no_dropout)
    path = _checkpoint_path(out, resume)
    saved = _saved_run(path, config, resume, RESUMABLE_CHANGES | task.resumable) if path is not None else None
    dtype = run_dtype(config.dtype, config.reference is not None)
    if config.reference is not None and (config.distributed or dtype == "bfloat16"):
        raise RunError("--reference torch compares one process in float32 or float64: drop --distributed/bfloat16")
    device = resolve_device(config.device)
    if config.distributed:
        device = distributed.setup(device=device)
    data = task.load_data(config, device)
    seed_everything(config.seed)  # here: the model's initial weights depend on the seed alone
    model = task.build_model(config, data)
    model.to(device, dtype=weights_dtype(dtype))  # the format the twin copies (mixed precision: float32 masters)
    optimizer = task.make_optimizer(config, model)
    scheduler = task.make_scheduler(config, optimizer, steps_in_budget(config.epochs, config.max_steps, data.train))
    loss = task.loss(config, data)
    callbacks: list[Callback] = [distributed.DataParallel()] if config.distributed else []
    callbacks.append(Precision(dtype))
    twin = None
    if config.reference is not None:
        from scratch_engine.tools.twin import twin_for  # torch.nn only on request

        twin = twin_for(task.torch_twin(config, data, model), optimizer, loss, scheduler, config.clip_grad_norm)
        callbacks.append(twin)
    callbacks.append(ProgressBar(enabled=progress))
    trace = LossTrace()  # the training loss between history rows, for loss.png
    callbacks.append(trace)
    if config.stop_on_divergence:
        callbacks.append(StopOnDivergence())
    callbacks += task.callbacks(config, data, progress)
    engine = Engine(
        model,
        loss,
        optimizer,
        scheduler=scheduler,
        clip_grad_norm=config.clip_grad_norm,
        progress=progress,
        callbacks=callbacks,
    )
    this = Run(task, config, data, model, engine, device, out, progress, twin, trace=trace)
    if saved is not None:
        restore_run(engine, saved)
    elif out is not None and distributed.is_main_process():
        _set_aside_previous_run(out)  # a new run in a used folder: never a mix of two runs' files
    found = _file_stamps(out)  # what is in the folder before this run writes: not its files, unless it rewrites one
    fit_callbacks: list[Callback] = []
    if path is not None:
        extra = lambda: {"run": _run_record(this), **task.checkpoint_extra(this)}  # noqa: E731
        fit_callbacks.append(Checkpoints(path, 60.0 * config.checkpoint_minutes, extra))
    max_seconds = None if config.max_minutes is None else 60.0 * config.max_minutes
    with stop_on_signals(engine) as caught:
        try:
            engine.fit(
                data.train,
                config.epochs,
                max_steps=config.max_steps,
                max_seconds=max_seconds,
                val_loader=data.val,
                eval_every=config.eval_every,
                callbacks=fit_callbacks,
            )
        except NonFiniteLossError as error:  # NaN, inf or a finite divergence: say so in the folder too
            if out is not None:
                failed = {"task": task.name, "diverged": {"step": engine.global_step, "error": str(error)}}
                write_metrics(out, failed | {"config": asdict(config), "history": engine.history.to_dict()}, device)
            raise
    if caught:
        raise RunInterruptedError(caught[0], engine.global_step, path)
    metrics = {"task": task.name, **task.evaluate(this), **(twin.summary() if twin is not None else {})}
    metrics |= {
        "steps": engine.global_step,
        "epochs": engine.epoch,
        "train_seconds": round(engine.seconds, 3),
        "parameters": model.num_parameters(),
        "final_train_loss": engine.history["loss"][-1] if "loss" in engine.history else math.nan,
        "loss_curve_points": len(trace.points),  # loss.png's training curve: more than one point, not a dot
        "dtype": dtype,
        "config": asdict(config),
        "history": engine.history.to_dict(),
    }
    if out is not None:
        _save_figures(this, out)
        if distributed.is_main_process():  # write_metrics writes on rank 0 only
            written = _file_stamps(out).items()
            metrics["files"] = sorted(
                name for name, stamp in written if found.get(name) != stamp and name != "metrics.json"
            )
            write_metrics(out, metrics, device=device)
            shutil.rmtree(out / PREVIOUS, ignore_errors=True)  # this run is whole: the one before it goes
    return metrics


def _file_stamps(out: Path | None) -> dict[str, int]:
    """Each file in ``out`` and when it was last written (a user's own files among them)."""
    if out is None or not out.is_dir():
        return {}
    return {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.is_file()}


def _set_aside_previous_run(out: Path) -> None:
    """Move the files of the run that finished in ``out`` before (those its ``metrics.json`` lists, and the record
    itself) into ``out/.previous-run/``: the new run writes into a clean folder, and the previous one is only
    deleted once the new one is complete; should the new one fail, it is still there, whole."""
    record = out / "metrics.json"
    if not record.is_file():
        return
    try:
        listed = json.loads(record.read_text(encoding="utf-8")).get("files", [CHECKPOINT])
    except (ValueError, AttributeError):
        listed = [CHECKPOINT]
    aside = out / PREVIOUS
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for name in ["metrics.json", *listed]:
        if isinstance(name, str) and "/" not in name and (out / name).is_file():
            os.replace(out / name, aside / name)


def _checkpoint_path(out: Path | None, resume: bool | str | Path) -> Path | None:
    if resume and not isinstance(resume, bool):
        return Path(resume)
    if out is None:
        if resume:
            raise RunError("resume needs the run's output folder (out) or a checkpoint path")
        return None
    return out / CHECKPOINT


def unfinished(path: Path) -> bool:
    """Whether ``path`` holds the checkpoint of a run that stopped before its budget was spent and can go on: not
    one that diverged (its ``metrics.json`` says so; resumed, it would diverge again)."""
    if not path.is_file() or _diverged(path.parent / "metrics.json"):
        return False
    return not read_checkpoint(path).get("extra", {}).get("run", {}).get("finished", True)


def _diverged(record: Path) -> bool:
    try:
        return "diverged" in json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _saved_run(
    path: Path, config: TrainConfig, resume: bool | str | Path, resumable: frozenset[str]
) -> dict[str, Any] | None:
    """The checkpoint to resume (checked against ``config``), or ``None`` for a new run, which may not overwrite
    an unfinished one."""
    if not resume:
        if unfinished(path):
            raise RunError(
                f"{path.parent} holds an unfinished run: add --resume to continue it, or choose another --out"
            )
        return None
    state = read_checkpoint(path)
    record = state.get("extra", {}).get("run")
    if not isinstance(record, dict) or "config" not in record:
        raise RunError(f"{path} is not the checkpoint of a train command (no run record): it cannot be resumed")
    differences = config_differences(record["config"], config, resumable)
    if differences:
        raise RunError(f"--resume continues the run as it was configured; {'; '.join(differences)}")
    return state


def _run_record(run: Run[Any]) -> dict[str, Any]:
    engine = run.engine
    return {
        "task": run.task.name,
        "config": asdict(run.config),
        "step": engine.global_step,
        "finished": engine.budget_spent(),
    }


def _save_figures(run: Run[Any], out: Path) -> None:
    from scratch_engine.tools.plots import plot_history

    if run.engine.history.rows:
        title = f"{run.task.name}: training loss per step, validation per history row"
        plot_history(run.engine.history, out / "loss.png", title=title, trace=run.trace.points if run.trace else ())
    if run.twin is not None:
        from scratch_engine.tools.twin import plot_reference_curves

        plot_reference_curves(
            run.twin, out / "reference.png", title=f"{run.task.name}: scratch vs torch.nn, same batches"
        )
