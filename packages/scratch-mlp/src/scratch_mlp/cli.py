"""Command line: ``scratch-mlp train <task>`` and ``scratch-mlp demo``.

scratch-mlp train clusters --epochs 30 --out runs/scratch-mlp/clusters
scratch-mlp train mnist --data-dir ~/data --optimizer adamw --weight-decay 0.01
scratch-mlp train mnist --resume          # continue the run saved in runs/scratch-mlp/mnist
scratch-mlp demo --out runs/scratch-mlp
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scratch_engine.tools import cli
from scratch_engine.tools.records import format_table
from scratch_mlp import __version__
from scratch_mlp.examples import HEADLINE, TASKS

DEFAULT_OUT = Path("runs") / "scratch-mlp"
DEMO_TASKS = ("clusters", "regression", "mnist")
DEMO_EPOCHS = {"mnist": 5}  # a modest budget: a third of the default run, about 98% already
DATA_HINT = (
    "get the data with `python -m scratch_engine.tools.datasets fetch mnist` (online) or set SCRATCH_DATA_DIR to a "
    "folder holding mnist/*.gz (fetched and verified when missing, unless downloads are off)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratch-mlp",
        description="The multi-layer perceptron, from scratch: train the examples, write metrics.json and plots.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,demo}")
    cli.add_train_command(commands, TASKS, DEFAULT_OUT)
    cli.add_demo_command(
        commands,
        help="train clusters, regression and (if its data is there) mnist; print a summary table",
        description="Train clusters, regression and, when its data is available, mnist "
        f"({DEMO_EPOCHS['mnist']} epochs) into OUT/<task>/, then print one summary table.",
        out=DEFAULT_OUT,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # missing data, a diverged run: one line, exit 1
    return cli.main(build_parser(), argv, TASKS, summary, {"demo": demo})


def summary(task: str, metrics: dict[str, Any], out: Path) -> str:
    return format_table([summary_row(task, metrics, out)])


def demo(args: argparse.Namespace, progress: bool) -> int:
    out, device, full = args.out, args.device, args.full
    rows, skipped = [], []
    for name in DEMO_TASKS:
        changes: dict[str, Any] = {"device": device}
        if not full and name in DEMO_EPOCHS:
            changes["epochs"] = DEMO_EPOCHS[name]
        if (metrics := cli.demo_task(TASKS[name], changes, out, progress, DATA_HINT)) is not None:
            rows.append(summary_row(name, metrics, out / name))
        else:
            skipped.append(name)
    print(format_table(rows))
    return cli.demo_status("scratch-mlp", skipped)


def summary_row(task: str, metrics: dict[str, Any], out: Path) -> dict[str, str]:
    metric = HEADLINE[task]
    value = metrics[metric]
    shown = f"{value:.2%}" if metric == "test_accuracy" else f"{value:.4f}"
    if "noise_variance" in metrics:
        shown += f" (noise variance {metrics['noise_variance']:.4f})"
    return {
        "task": task,
        "metric": metric,
        "value": shown,
        "epochs": str(metrics["epochs"]),
        "train s": f"{metrics['train_seconds']:.1f}",
        "parameters": f"{metrics['parameters']:,}",
        "output": str(out),
    }
