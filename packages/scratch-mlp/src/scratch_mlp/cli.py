"""Command line: ``scratch-mlp train <task>`` and ``scratch-mlp demo``.

scratch-mlp train clusters --epochs 30 --out runs/scratch-mlp/clusters
scratch-mlp train mnist --data-dir ~/data --optimizer adamw --weight-decay 0.01
scratch-mlp demo --out runs/scratch-mlp
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

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
from scratch_mlp import __version__
from scratch_mlp.examples import EXAMPLES, Example, ImagesConfig

DEFAULT_OUT = Path("runs") / "scratch-mlp"
DEMO_TASKS = ("clusters", "regression", "mnist")
DEMO_EPOCHS = {"mnist": 5}  # a modest budget: a third of the default run, about 98% already
DATA_HINT = (
    "get the data with `python -m scratch_engine.datasets fetch mnist` (online) or set SCRATCH_DATA_DIR to a "
    "folder holding mnist/*.gz; it needs torchvision: pip install 'scratch-engine[vision]'"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratch-mlp",
        description="The multi-layer perceptron, from scratch: train the examples, write metrics.json and plots.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,demo}")

    train = commands.add_parser(
        "train", help="train one example", description="Train one example into --out: metrics.json and PNG plots."
    )
    tasks = train.add_subparsers(dest="task", required=True, metavar="{" + ",".join(EXAMPLES) + "}")
    for example in EXAMPLES.values():
        task = tasks.add_parser(example.name, help=example.help, description=f"Train {example.name}: {example.help}.")
        config = example.config
        add_training_arguments(
            task,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            optimizer=config.optimizer,
            weight_decay=config.weight_decay,
            out=DEFAULT_OUT / example.name,
            reference=True,
        )
        if isinstance(config, ImagesConfig):
            data = task.add_argument_group("data")
            data.add_argument("--data-dir", help="folder holding <data set>/*.gz (default: $SCRATCH_DATA_DIR)")
            data.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing set")
            data.add_argument("--train-samples", type=positive_int, help="use only the first N training images")

    add_demo_command(
        commands,
        help="train clusters, regression and (if its data is there) mnist; print a summary table",
        description="Train clusters, regression and, when its data is available, mnist "
        f"({DEMO_EPOCHS['mnist']} epochs) into OUT/<task>/, then print one summary table.",
        out=DEFAULT_OUT,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, command)  # missing data or torchvision: one line, exit 1


def command(args: argparse.Namespace, progress: bool | None) -> int:
    if args.command == "demo":
        return demo(args.out, args.device, progress, full=args.full)
    return train(EXAMPLES[args.task], args, progress)


def train(example: Example, args: argparse.Namespace, progress: bool | None) -> int:
    metrics = example.run(config_with_args(example.config, args), args.out, progress)
    if is_main_process():  # one summary for a torchrun launch, not one per process
        print(format_table([summary_row(example, metrics, args.out)]))
    return 0


def demo(out: Path, device: str, progress: bool | None, full: bool = False) -> int:
    rows = []
    for name in DEMO_TASKS:
        example = EXAMPLES[name]
        epochs = example.config.epochs if full else DEMO_EPOCHS.get(name, example.config.epochs)
        config = replace(example.config, device=device, epochs=epochs)
        if isinstance(config, ImagesConfig):
            config = replace(config, download=False)  # "when its data is available": never download here
        if (metrics := demo_task(name, example.run, config, out, progress, DATA_HINT)) is not None:
            rows.append(summary_row(example, metrics, out / name))
    print(format_table(rows))
    return 0


def summary_row(example: Example, metrics: dict[str, Any], out: Path) -> dict[str, str]:
    value = metrics[example.metric]
    shown = f"{value:.2%}" if example.metric == "test_accuracy" else f"{value:.4f}"
    if "noise_variance" in metrics:
        shown += f" (noise variance {metrics['noise_variance']:.4f})"
    return {
        "task": example.name,
        "metric": example.metric,
        "value": shown,
        "epochs": str(metrics["epochs"]),
        "train s": f"{metrics['train_seconds']:.1f}",
        "parameters": f"{metrics['parameters']:,}",
        "output": str(out),
    }
