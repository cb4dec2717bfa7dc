"""What every example script shares: its flags, its training run and the record it leaves.

Each package's CLI calls :func:`add_training_arguments` with its own defaults; an example
subclasses :class:`TrainConfig` with its defaults, calls :func:`start` (seed, device),
:func:`train` (optimizer by name, optional cosine schedule, the :class:`Engine`), then
:func:`record` and :func:`save`, which writes ``metrics.json`` with :func:`write_metrics`.
So every run of every architecture leaves the same kind of record behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from scratch_engine import distributed
from scratch_engine.data import DataLoader
from scratch_engine.datasets import ChecksumError, DataNotFoundError
from scratch_engine.device import resolve_device, seed_everything
from scratch_engine.engine import Engine, NonFiniteLossError
from scratch_engine.losses import CrossEntropyLoss, Loss
from scratch_engine.module import Module
from scratch_engine.optim import Adam, AdamW, GradientDescent, Optimizer
from scratch_engine.precision import DTYPES, weights_dtype
from scratch_engine.schedules import WarmupCosine

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
# What run_command reports in one line: a problem with the user's data, files, settings or launch, not a bug.
USER_ERRORS: tuple[type[Exception], ...] = (
    DataNotFoundError,
    ChecksumError,
    ImportError,  # a missing extra (torchvision)
    OSError,  # a file that cannot be read or written
    NonFiniteLossError,
    distributed.LaunchError,
)
MOMENTUM = 0.9  # what "--optimizer momentum" means
PARITY_DTYPE_HELP = (  # for add_training_arguments(dtype=None, ...) in commands with --reference torch
    "float32, float64, or bfloat16 (mixed precision, float32 master weights); "
    "default: float64 with --reference (a parity check of the backward), else float32"
)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_training_arguments(
    parser: argparse.ArgumentParser,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    out: str | Path | None = None,
    dtype: str | None = "float32",
    dtype_help: str = "number format; bfloat16 is mixed precision with float32 master weights (%(default)s)",
    reference: bool = False,
) -> argparse.ArgumentParser:
    """Add ``--epochs --batch-size --lr --optimizer --weight-decay --seed --device --dtype --out --quiet``.

    The keyword arguments are this command's defaults, shown in ``--help``; ``dtype=None``
    leaves the number format to the command (say how in ``dtype_help``). ``reference=True`` adds
    ``--reference torch`` (whole-run parity with the torch.nn twin, see :func:`train`) and makes
    ``--dtype`` default to float64 for such a run and float32 otherwise. Returns ``parser``.
    It also adds ``--distributed`` (see :func:`start`).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid names: {', '.join(OPTIMIZERS)}")
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the training set (%(default)s)")
    group.add_argument("--batch-size", type=positive_int, default=batch_size, help="samples per step (%(default)s)")
    group.add_argument("--lr", type=non_negative_float, default=lr, help="(peak) learning rate (%(default)s)")
    group.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=optimizer,
        help=f"sgd, sgd with momentum {MOMENTUM}, adam or adamw (%(default)s)",
    )
    group.add_argument(
        "--weight-decay", type=non_negative_float, default=weight_decay, help="L2 / decoupled decay (%(default)s)"
    )
    group.add_argument("--seed", type=int, default=0, help="seeds initialisation, data order and dropout (%(default)s)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (%(default)s)")
    if reference:
        dtype, dtype_help = None, PARITY_DTYPE_HELP
        group.add_argument(
            "--reference",
            choices=("torch",),
            help="also train the torch.nn twin on the same batches (dropout off); plot both curves",
        )
    group.add_argument("--dtype", choices=tuple(DTYPES), default=dtype, help=dtype_help)
    group.add_argument("--out", type=Path, default=out, help="folder for metrics.json and the plots (%(default)s)")
    group.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the processes started by torchrun (gloo on CPU, NCCL on GPU)",
    )
    return parser


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
    raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")


def environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions and hardware a result depends on: Python, torch, the scratch packages, device, threads."""
    packages = {
        name.replace("_", "-"): module.__version__
        for name, module in sorted(sys.modules.items())
        if name.startswith("scratch_") and "." not in name and isinstance(getattr(module, "__version__", None), str)
    }
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "packages": packages,
        "device": None if device is None else str(device),
        "cuda_device": torch.cuda.get_device_name(device)
        if device is not None and str(device).startswith("cuda")
        else None,
        "threads": torch.get_num_threads(),
        "world_size": distributed.world_size(),
    }


def write_metrics(out_dir: str | Path, metrics: Mapping[str, Any], device: str | torch.device | None = None) -> Path:
    """Write ``out_dir/metrics.json``: ``metrics`` plus an ``"environment"`` entry. Returns the path.

    Tensors become numbers or lists and paths strings; a non-finite float is written as
    ``null`` so that the file stays strict JSON. In a data-parallel run only rank 0 writes
    (the others return the path), so the ranks never race for one file.
    """
    path = Path(out_dir) / "metrics.json"
    if not distributed.is_main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**_plain(dict(metrics)), "environment": environment(device)}
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    """``value`` with tensors, tuples and paths turned into what JSON can hold."""
    if isinstance(value, Tensor):
        return _plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class TrainConfig:
    """The knobs every example has (the ``scratch-mlp train`` flags); each example sets its defaults.

    ``schedule="cosine"`` decays the learning rate from ``lr`` to 0 over the run, one step
    per batch; ``"constant"`` keeps it. ``distributed`` trains data-parallel over the
    processes torchrun started (see :func:`start`); ``batch_size`` is then per process.
    ``reference="torch"`` also trains the torch.nn twin of the model on the same batches from
    the same weights (:func:`scratch_engine.reference.twin_of`); run it with dropout off, and
    in float64 (``dtype=None`` picks it for a reference run): in float32 the two runs' rounding,
    the same sums added in other orders, can grow through an unstable stretch of training
    into a gap that says nothing about the gradients.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    seed: int = 0
    device: str = "auto"
    distributed: bool = False
    dtype: str | None = "float32"  # or "float64", "bfloat16" (mixed precision); None: float64 with a reference
    reference: str | None = None  # "torch": whole-run parity with the torch.nn twin


def default_dtype(dtype: str | None, reference: bool) -> str:
    """``dtype``, or for ``None`` float64 in a run with a torch.nn reference and float32 otherwise."""
    return dtype or ("float64" if reference else "float32")


def run_dtype(config: TrainConfig) -> str:
    """The number format of a run of ``config``: :func:`default_dtype` of its dtype and reference."""
    return default_dtype(config.dtype, config.reference is not None)


def start(config: TrainConfig) -> torch.device:
    """Seed everything (before the model is built, so its initialisation is seeded) and pick the device.

    With ``config.distributed`` it also joins torchrun's process group
    (:func:`scratch_engine.distributed.setup`: gloo on the CPU, NCCL on CUDA) and each process
    takes its own GPU, ``cuda:LOCAL_RANK``, which it writes back into ``config.device``. Loaders
    made afterwards shard the data by themselves, and the engine averages the gradients.
    """
    if config.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {config.schedule!r}")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if getattr(config, "distributed", False):
        device = distributed.setup(device=device)
        config.device = str(device)
    return device


def train(
    model: Module,
    loss: Loss,
    config: TrainConfig,
    train_loader: DataLoader,
    *,
    val_loader: DataLoader | None = None,
    progress: bool | None = None,
) -> tuple[Engine, float]:
    """Fit ``model`` for ``config.epochs``; returns the engine and the training time in seconds.

    With ``config.reference == "torch"`` the engine also steps the torch.nn twin on every batch;
    :func:`record` then reports the largest deviation and :func:`save_reference_plot` draws both curves.
    """
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay)
    scheduler = None
    if config.schedule == "cosine":
        scheduler = WarmupCosine(optimizer, warmup_steps=0, total_steps=config.epochs * len(train_loader))
    twin = None
    if config.reference is not None:
        if config.reference != "torch":
            raise ValueError(f"reference must be None or 'torch', got {config.reference!r}")
        from scratch_engine.reference import twin_of  # torch.nn only on request

        # the twin copies the weights in the format the run uses
        model.to(resolve_device(config.device), dtype=weights_dtype(run_dtype(config)))
        twin = twin_of(model, optimizer, loss, scheduler)
    engine = Engine(
        model,
        loss,
        optimizer,
        scheduler=scheduler,
        device=config.device,
        dtype=run_dtype(config),
        progress=progress,
        reference=twin,
    )
    start_time = time.perf_counter()
    engine.fit(train_loader, config.epochs, val_loader=val_loader)
    return engine, time.perf_counter() - start_time


def record(
    task: str, config: TrainConfig, engine: Engine, train_seconds: float, results: dict[str, Any]
) -> dict[str, Any]:
    """The metrics every example reports: ``results`` first, then epochs, time, size and the config.

    A run with a torch.nn twin adds ``reference_steps`` and ``reference_max_relative_deviation``.
    """
    twin = {} if engine.reference is None else engine.reference.summary()
    return {
        "task": task,
        **results,
        **twin,
        "epochs": engine.epoch,
        "train_seconds": round(train_seconds, 3),
        "parameters": engine.model.num_parameters(),
        "final_train_loss": engine.history["loss"][-1],
        "dtype": run_dtype(config),
        "config": asdict(config),
    }


def save_reference_plot(engine: Engine, out_dir: str | Path | None, title: str) -> None:
    """``reference.png``: both training-loss curves of a run with a torch.nn twin (nothing otherwise)."""
    if engine.reference is not None and out_dir is not None:
        from scratch_engine.reference import plot_reference_curves

        plot_reference_curves(engine.reference, Path(out_dir) / "reference.png", title=title)


def save(out_dir: str | Path | None, metrics: dict[str, Any], device: torch.device) -> None:
    if out_dir is not None:
        write_metrics(out_dir, metrics, device=device)


def evaluate_classifier(
    engine: Engine, X_test: Tensor, y_test: Tensor, class_names: Sequence[str], out_dir: str | Path | None, title: str
) -> dict[str, Any]:
    """Test loss and accuracy, per-class accuracy and the confusion matrix of a trained classifier.

    A run with a torch.nn twin also reports the twin's ``reference_test_accuracy`` (the same
    architecture trained by torch.nn on the same batches). Given ``out_dir`` it also writes
    ``confusion_matrix.png`` and ``mistakes.png`` (up to 24 misclassified test inputs, drawn as
    28x28 images when they have 784 pixels).
    """
    from scratch_engine.plots import confusion_matrix, plot_confusion_matrix, plot_image_grid

    logits = engine.predict(X_test, batch_size=500)  # one pass over the test set serves every figure below
    predictions = logits.argmax(dim=-1)
    test = {"loss": float(engine.loss_fn(logits, y_test)), "accuracy": float((predictions == y_test).double().mean())}
    matrix = confusion_matrix(predictions, y_test, len(class_names))
    per_class = (matrix.diag() / matrix.sum(dim=1).clamp(min=1)).tolist()
    if out_dir is not None:
        out_dir = Path(out_dir)
        plot_confusion_matrix(
            matrix,
            class_names,
            out_dir / "confusion_matrix.png",
            title=f"{title}: test accuracy {test['accuracy']:.2%}",
        )
        wrong = (predictions != y_test).nonzero().squeeze(1)[:24].cpu()
        if len(wrong) > 0 and X_test[0].numel() == 28 * 28:
            plot_image_grid(
                X_test[wrong].cpu().reshape(-1, 28, 28),
                [f"{class_names[int(y_test[i])]} → {class_names[int(predictions[i])]}" for i in wrong.tolist()],
                out_dir / "mistakes.png",
                title=f"{title}: misclassified test images (true → predicted)",
            )
    results = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "per_class_accuracy": dict(zip(class_names, per_class, strict=True)),
        "confusion_matrix": matrix,
    }
    return results | reference_accuracy(engine, X_test, y_test)


def train_classifier(
    model: Module,
    config: TrainConfig,
    data: Sequence[Tensor],
    class_names: Sequence[str],
    out_dir: str | Path | None,
    *,
    task: str,
    title: str,
    progress: bool | None = None,
    test_batch_size: int = 500,
) -> tuple[Engine, dict[str, Any]]:
    """Train ``model`` with cross-entropy on ``data = (X_train, y_train, X_test, y_test)``, then evaluate it.

    The test set also draws the validation curve (nothing is chosen by it). Returns the engine and
    the metrics (:func:`evaluate_classifier` through :func:`record`); given ``out_dir`` it writes
    ``loss.png``, the classifier's plots and, with a torch.nn twin, ``reference.png``. Writing
    ``metrics.json`` is left to the caller, which may add to the metrics first.
    """
    X_train, y_train, X_test, y_test = data
    train_loader = DataLoader(X_train, y_train, batch_size=config.batch_size, seed=config.seed)
    test_loader = DataLoader(X_test, y_test, batch_size=test_batch_size, shuffle=False)
    engine, seconds = train(model, CrossEntropyLoss(), config, train_loader, val_loader=test_loader, progress=progress)
    results = evaluate_classifier(engine, X_test, y_test, class_names, out_dir, task)
    results |= {
        "train_accuracy": engine.history["accuracy"][-1],  # with dropout on, as it trained
        "train_samples": len(X_train),
        "test_samples": len(X_test),
    }
    metrics = record(task, config, engine, seconds, results)
    if out_dir is not None:
        engine.history.plot(Path(out_dir) / "loss.png", title=f"{title} (val = the test set)")
    save_reference_plot(engine, out_dir, f"{title}: scratch vs torch.nn, same batches")
    return engine, metrics


def reference_outputs(engine: Engine, X: Tensor) -> Tensor | None:
    """The run's torch.nn twin's outputs for ``X``, on the CPU (``None`` for a run without a twin)."""
    if engine.reference is None:
        return None
    return engine.reference.predict(engine._inputs(X)).cpu()


def reference_accuracy(engine: Engine, X_test: Tensor, y_test: Tensor) -> dict[str, float]:
    """``{"reference_test_accuracy": ...}`` of the run's torch.nn twin (``{}`` for a run without one)."""
    outputs = reference_outputs(engine, X_test)
    if outputs is None:
        return {}
    return {"reference_test_accuracy": float((outputs.argmax(dim=-1) == y_test.cpu()).double().mean())}


# --------------------------------------------------------------------------- command lines


def add_demo_command(commands: Any, *, help: str, description: str, out: Path) -> argparse.ArgumentParser:
    """The ``demo`` subcommand every package has (``nox -s demo`` calls it): ``--out --device --quiet --full``."""
    demo = commands.add_parser("demo", help=help, description=description)
    demo.add_argument("--out", type=Path, default=out, help="output folder (default: %(default)s)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    demo.add_argument(
        "--full", action="store_true", help="train with the full budgets of `train` instead of the demo's modest ones"
    )
    return demo


Config = TypeVar("Config", bound="DataclassInstance")


def config_with_args(config: Config, args: argparse.Namespace, **changes: Any) -> Config:
    """``config`` (a dataclass) with every field that a flag of the same name set: ``--batch-size`` -> ``batch_size``.

    A list (``nargs``) becomes a tuple where the field holds one; ``--no-download`` sets
    ``download=False`` (else ``None``: ``SCRATCH_DOWNLOAD`` decides); ``changes`` come last, for
    a flag whose value the config keeps in another form.
    """
    given = vars(args)
    names = {item.name for item in fields(config)}
    values = {name: given[name] for name in names & given.keys()}
    values = {
        name: tuple(value) if isinstance(value, list) and isinstance(getattr(config, name), tuple) else value
        for name, value in values.items()
    }
    if "download" in names and "no_download" in given:
        values["download"] = False if given["no_download"] else None
    return replace(config, **(values | changes))


def demo_task(
    name: str,
    run: Callable[[Any, Path, bool | None], dict[str, Any]],
    config: Any,
    out: Path,
    progress: bool | None,
    hint: str,
) -> dict[str, Any] | None:
    """One task of a ``demo``: ``run(config, out / name, progress)``, its metrics; ``None`` without its data.

    A demo trains what it can: a task whose data (or torchvision) is missing or corrupt is skipped with
    two lines on stderr, why and ``hint`` (how to get the data), and the demo goes on.
    """
    print(f"== {name}", file=sys.stderr, flush=True)
    try:
        return run(config, out / name, progress)
    except (DataNotFoundError, ChecksumError, ImportError) as error:
        print(f"{name}: skipped: {error}\n{name}: {hint}", file=sys.stderr, flush=True)
        return None


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    command: Callable[[argparse.Namespace, bool | None], int],
    expected: tuple[type[Exception], ...] = (),
) -> int:
    """A package's ``main``: parse ``argv``, check ``--device`` and ``--out``, return ``command(args, progress)``.

    ``progress`` is ``False`` under ``--quiet``, else ``None`` (a bar where the output is a
    terminal). A user's problem (missing or corrupt data, a missing extra, a file that cannot be
    read or written, a diverged run, ``--distributed`` outside torchrun) and any ``expected`` error
    is printed as one line, ``<prog>: error: ...``, and the exit status is 1: no traceback.
    An ``--out`` that cannot become a writable folder fails before any training.
    """
    args = parser.parse_args(argv)
    check_device(parser, args)
    check_out(parser, args)
    expected = (*USER_ERRORS, *expected)
    try:
        return command(args, False if getattr(args, "quiet", False) else None)
    except expected as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1


def check_out(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Argparse's usage error now, not after a whole run, if ``--out`` cannot become a writable folder.

    Nothing is created here: a run that fails for another reason leaves no empty folder behind.
    """
    out = getattr(args, "out", None)
    if out is None:
        return
    existing = Path(out)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"argument --out: {out} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"argument --out: {out} cannot be written: {existing} is not writable")


def check_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject an unknown or unavailable ``--device`` with argparse's usage error, before any work."""
    if getattr(args, "device", None) is not None:
        try:
            resolve_device(args.device)
        except ValueError as error:
            parser.error(str(error))


def format_table(rows: Sequence[Mapping[str, str]]) -> str:
    """A plain-text table with aligned columns (the keys of the first row are the header)."""
    if not rows:
        return "(nothing was trained)"
    header = list(rows[0])
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in header}
    lines = [{key: key for key in header}, {key: "-" * widths[key] for key in header}, *rows]
    return "\n".join("  ".join(line[key].ljust(widths[key]) for key in header).rstrip() for line in lines)
