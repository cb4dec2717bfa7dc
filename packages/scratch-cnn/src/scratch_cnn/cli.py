"""Command line: ``scratch-cnn train <data set>`` and ``scratch-cnn demo``.

scratch-cnn train mnist --out runs/scratch-cnn/mnist
scratch-cnn train fashion-mnist --model best --epochs 10 --data-dir ~/data
scratch-cnn demo --out runs/scratch-cnn
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scratch_cnn import __version__
from scratch_cnn.conv import IMPLS
from scratch_cnn.images import ImagesConfig
from scratch_cnn.images import run as run_images
from scratch_cnn.models import MODELS
from scratch_engine.distributed import is_main_process
from scratch_engine.experiment import (
    add_demo_command,
    add_training_arguments,
    config_with_args,
    demo_task,
    format_table,
    positive_int,
    run_command,
)

DEFAULT_OUT = Path("runs") / "scratch-cnn"
TASKS: dict[str, tuple[str, ImagesConfig]] = {
    "mnist": ("MNIST digits, (1, 28, 28) images", ImagesConfig(dataset="mnist")),
    "fashion-mnist": ("Fashion-MNIST clothes, (1, 28, 28) images", ImagesConfig(dataset="fashion-mnist")),
}
DEMO_TASK = "mnist"
# a modest budget: about 96.7% in 15-40 s on 2 cores
DEMO_BUDGET: dict[str, Any] = {"epochs": 1, "train_samples": 20_000}
DATA_HINT = (
    "to train it, get the data with `python -m scratch_engine.datasets fetch mnist` (online) or set "
    "SCRATCH_DATA_DIR to a folder holding mnist/*.gz, then run `scratch-cnn demo` again"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratch-cnn",
        description="The convolutional network, from scratch: train on MNIST or Fashion-MNIST, "
        "write metrics.json and plots.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,demo}")

    train = commands.add_parser(
        "train", help="train on one data set", description="Train on one data set into --out: metrics.json and PNGs."
    )
    tasks = train.add_subparsers(dest="task", required=True, metavar="{" + ",".join(TASKS) + "}")
    for name, (help_, config) in TASKS.items():
        task = tasks.add_parser(name, help=help_, description=f"Train {name}: {help_}.")
        add_training_arguments(
            task,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            optimizer=config.optimizer,
            weight_decay=config.weight_decay,
            out=DEFAULT_OUT / name,
            reference=True,
        )
        network = task.add_argument_group("network")
        network.add_argument(
            "--model", choices=list(MODELS), default=config.model, help="see scratch_cnn.models (%(default)s)"
        )
        network.add_argument(
            "--impl", choices=list(IMPLS), default=config.impl, help="Conv2D implementation (%(default)s)"
        )
        data = task.add_argument_group("data")
        data.add_argument("--data-dir", help="folder holding <data set>/*.gz (default: $SCRATCH_DATA_DIR)")
        data.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing set")
        data.add_argument("--train-samples", type=positive_int, help="use only the first N training images")
        data.add_argument("--test-samples", type=positive_int, help="use only the first N test images")

    add_demo_command(
        commands,
        help="train mnist on a modest budget if its data is there; print a summary table",
        description=f"Train the default network on mnist ({DEMO_BUDGET['train_samples']:,} images, "
        f"{DEMO_BUDGET['epochs']} epoch) into OUT/mnist/ when its data is available, then print a summary.",
        out=DEFAULT_OUT,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, command)  # missing data or torchvision: one line, exit 1


def command(args: argparse.Namespace, progress: bool | None) -> int:
    if args.command == "demo":
        return demo(args.out, args.device, progress, full=args.full)
    return train(args, progress)


def train(args: argparse.Namespace, progress: bool | None) -> int:
    metrics = run_images(config_with_args(TASKS[args.task][1], args), args.out, progress)
    if is_main_process():  # one summary for a torchrun launch, not one per process
        print(format_table([summary_row(args.task, metrics, args.out)]))
    return 0


def demo(out: Path, device: str, progress: bool | None, full: bool = False) -> int:
    budget = {} if full else DEMO_BUDGET
    config = replace(TASKS[DEMO_TASK][1], device=device, download=False, **budget)  # never download here
    metrics = demo_task(DEMO_TASK, run_images, config, out, progress, DATA_HINT)
    print(format_table([] if metrics is None else [summary_row(DEMO_TASK, metrics, out / DEMO_TASK)]))
    return 0


def summary_row(task: str, metrics: dict[str, Any], out: Path) -> dict[str, str]:
    return {
        "task": task,
        "model": metrics["model"],
        "test accuracy": f"{metrics['test_accuracy']:.2%}",
        "epochs": str(metrics["epochs"]),
        "train images": f"{metrics['train_samples']:,}",
        "train s": f"{metrics['train_seconds']:.1f}",
        "parameters": f"{metrics['parameters']:,}",
        "output": str(out),
    }
