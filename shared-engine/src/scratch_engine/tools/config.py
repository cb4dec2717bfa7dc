"""A task's settings as one typed dataclass, each declared once with its default, help and check.

Every ``train`` task has a config class (a subclass of :class:`TrainConfig`) whose fields are
its settings, each declared once with :func:`option` (default, help, and how a value is checked).
:func:`scratch_engine.tools.cli.add_config_arguments` turns the fields into flags (``batch_size`` ->
``--batch-size``) and :func:`~scratch_engine.tools.cli.config_from_args` reads them back, so a quantity
has one name from the flag to the code.
A config built in code is checked too (``TrainConfig.__post_init__``): a ``ValueError`` names
the field, as argparse names the flag.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from collections.abc import Sized
from dataclasses import Field, dataclass, field, fields
from typing import Any, Union

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "inverse-sqrt")  # the runner's make_scheduler; inverse-sqrt needs a d_model
DTYPE_NAMES = ("float32", "float64", "bfloat16")


@dataclass(frozen=True)
class Number:
    """A number within bounds: argparse's ``type`` for a flag, and the check of a config's field."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False

    def describe(self) -> str:
        name = "an integer" if self.kind is int else "a finite number"
        bounds = []
        shown = "{}" if self.kind is int else "{:g}"  # integer bounds exactly: 2**63 - 1, not 9.22337e+18
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} " + shown.format(self.low))
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} " + shown.format(self.high))
        return name + (" " + " and ".join(bounds) if bounds else "")

    def valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}") from None
        if not self.valid(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value


POSITIVE_INT = Number(int, low=1)
NON_NEGATIVE_INT = Number(int, low=0)
POSITIVE = Number(float, low=0.0, low_open=True)
NON_NEGATIVE = Number(float, low=0.0)
PROBABILITY = Number(float, low=0.0, high=1.0, high_open=True)
SEED = Number(int, low=0, high=2**63 - 1)  # torch.manual_seed takes 64 bits; the data order adds the epoch


def option(
    default: Any,
    help: str,
    *,
    check: Number | None = None,
    choices: tuple[str, ...] | None = None,
    flags: tuple[str, ...] | None = None,
    group: str = "options",
) -> Any:
    """A config field: its default, its help and how a value is checked (``check``, ``choices``).

    ``flags`` overrides the flag names (``("--lr", "--learning-rate")``; ``()``: no flag, for a field a
    command fixes, such as the data set of ``train mnist``); ``group`` is the heading of ``--help`` it
    is listed under. A field whose type allows ``None`` takes ``none`` on the command line.
    """
    metadata = {"help": help, "check": check, "choices": choices, "flags": flags, "group": group}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable: use a tuple")
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """The settings every task's training run has (the runner reads them); a task's config adds its own."""

    # budget: the first one spent ends the run
    epochs: int | None = option(10, "passes over the training data", check=POSITIVE_INT, group="budget")
    max_steps: int | None = option(None, "stop after this many optimizer steps", check=POSITIVE_INT, group="budget")
    max_minutes: float | None = option(
        None, "stop after this many minutes of training (checked after every step)", check=POSITIVE, group="budget"
    )
    eval_every: int | None = option(
        None, "steps between validations (none: after every epoch)", check=POSITIVE_INT, group="budget"
    )
    # optimisation
    batch_size: int = option(32, "samples per step", check=POSITIVE_INT, group="optimisation")
    learning_rate: float = option(
        1e-3, "(peak) learning rate", check=NON_NEGATIVE, flags=("--lr", "--learning-rate"), group="optimisation"
    )
    optimizer: str = option(
        "adam", "sgd, sgd with momentum 0.9, adam or adamw", choices=OPTIMIZERS, group="optimisation"
    )
    weight_decay: float = option(
        0.0, "L2 (sgd, adam) or decoupled (adamw) decay", check=NON_NEGATIVE, group="optimisation"
    )
    schedule: str = option("constant", "learning-rate schedule", choices=SCHEDULES, group="optimisation")
    warmup_steps: int = option(
        0, "linear warm-up steps of the cosine schedule", check=NON_NEGATIVE_INT, group="optimisation"
    )
    clip_grad_norm: float | None = option(
        None, "clip the gradients' global norm to this (none: no clipping)", check=POSITIVE, group="optimisation"
    )
    # the run
    seed: int = option(0, "seeds initialisation, data order and dropout", check=SEED, group="run")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", group="run")
    dtype: str | None = option(
        None,
        "float32, float64, or bfloat16 (mixed precision, float32 master weights); "
        "none: float64 with --reference (a parity check of the backward), else float32",
        choices=DTYPE_NAMES,
        group="run",
    )
    reference: str | None = option(
        None,
        "also train the torch.nn twin on the same batches (dropout off); plot both curves",
        choices=("torch",),
        group="run",
    )
    distributed: bool = option(
        False, "data-parallel over the processes torchrun started (gloo on CPU, NCCL on GPU)", group="run"
    )
    threads: int | None = option(None, "torch CPU threads (none: torch's default)", check=POSITIVE_INT, group="run")
    checkpoint_minutes: float = option(
        5.0,
        "minutes between checkpoints (one is also saved at every validation and at the end)",
        check=POSITIVE,
        group="run",
    )
    stop_on_divergence: bool = option(
        True,
        "stop a run whose finite loss diverged: over 10x its first step's, or for a classifier 1.5x a uniform guess's",
        group="run",
    )

    def __post_init__(self) -> None:
        check_config(self)


# settings a resumed run may change: how long it runs, where, how often it validates and where its data
# lies, not what it trains (a task adds its own: Task.resumable)
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "max_steps",
        "max_minutes",
        "eval_every",
        "device",
        "threads",
        "checkpoint_minutes",
        "stop_on_divergence",
        "data_dir",
        "download",
    }
)


def check_config(config: Any) -> None:
    """A ``ValueError`` naming the first field whose value its :func:`option` does not allow."""
    for item in fields(config):
        value = getattr(config, item.name)
        meta = field_metadata(type(config), item.name)
        if value is None and _optional(type(config), item.name):
            continue
        values = value if isinstance(value, tuple) else (value,)
        check, choices = meta.get("check"), meta.get("choices")
        for one in values:
            if check is not None and not check.valid(one):
                raise ValueError(f"{item.name} must be {check.describe()}, got {value!r}")
            if choices is not None and one not in choices:
                raise ValueError(f"{item.name} must be one of {', '.join(choices)}, got {value!r}")


def config_differences(saved: dict[str, Any], config: Any, allowed: frozenset[str] = RESUMABLE_CHANGES) -> list[str]:
    """The fields of ``config`` that differ from a checkpoint's ``saved`` config and may not (``allowed`` may)."""
    differences = []
    for item in fields(config):
        if item.name in allowed or item.name not in saved:
            continue
        ours, theirs = getattr(config, item.name), saved[item.name]
        if (list(ours) if isinstance(ours, tuple) else ours) != (list(theirs) if isinstance(theirs, tuple) else theirs):
            differences.append(f"{item.name}: the checkpoint has {theirs!r}, this run {ours!r}")
    return differences


def steps_in_budget(epochs: int | None, max_steps: int | None, loader: Any) -> int | None:
    """The steps a budget allows: ``max_steps``, or ``epochs`` passes over ``loader``, whichever is fewer
    (``None``: a time budget alone, or a loader without a length)."""
    steps = [] if max_steps is None else [max_steps]
    if epochs is not None and isinstance(loader, Sized):
        steps.append(epochs * len(loader))
    return min(steps, default=None)


def field_metadata(cls: type, name: str) -> dict[str, Any]:
    """The :func:`option` metadata of field ``name``: a subclass that changes a default keeps its base's help."""
    for base in cls.__mro__:
        declared: dict[str, Field[Any]] = getattr(base, "__dataclass_fields__", {})
        if name in declared and declared[name].metadata:
            return dict(declared[name].metadata)
    return {}


def field_type(cls: type, name: str) -> tuple[type, bool, bool]:
    """``(item type, allows None, is a tuple)`` of field ``name``, from its annotation."""
    hint = typing.get_type_hints(cls)[name]
    optional = False
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        optional, hint = len(members) < len(typing.get_args(hint)), members[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def _optional(cls: type, name: str) -> bool:
    return field_type(cls, name)[1]
