"""Command line: ``scratch-cnn train <data set>`` and ``scratch-cnn demo``.

scratch-cnn train mnist --out runs/scratch-cnn/mnist
scratch-cnn train fashion-mnist --model best --epochs 10 --data-dir ~/data
scratch-cnn train mnist --resume          # continue the run saved in runs/scratch-cnn/mnist
scratch-cnn demo --out runs/scratch-cnn
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scratch_cnn import __version__
from scratch_cnn.images import TASKS
from scratch_engine.tools import cli
from scratch_engine.tools.records import format_table

DEFAULT_OUT = Path("runs") / "scratch-cnn"
DEMO_TASK = "mnist"
# a modest budget: about 96.7% in 15-40 s on 2 cores
DEMO_BUDGET: dict[str, Any] = {"epochs": 1, "train_samples": 20_000, "eval_every": 40}  # 157 steps, 4 rows
DATA_HINT = (
    "to train it, get the data with `python -m scratch_engine.tools.datasets fetch mnist` (online) or set "
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
    cli.add_train_command(commands, TASKS, DEFAULT_OUT)
    cli.add_demo_command(
        commands,
        help="train mnist on a modest budget if its data is there; print a summary table",
        description=f"Train the default network on mnist ({DEMO_BUDGET['train_samples']:,} images, "
        f"{DEMO_BUDGET['epochs']} epoch) into OUT/mnist/ when its data is available, then print a summary.",
        out=DEFAULT_OUT,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # missing data, a diverged run: one line, exit 1
    return cli.main(build_parser(), argv, TASKS, summary, {"demo": demo})


def summary(task: str, metrics: dict[str, Any], out: Path) -> str:
    return format_table([summary_row(task, metrics, out)])


def demo(args: argparse.Namespace, progress: bool) -> int:
    out, budget = args.out, {} if args.full else DEMO_BUDGET
    changes = {"device": args.device, **budget}
    if (metrics := cli.demo_task(TASKS[DEMO_TASK], changes, out, progress, DATA_HINT)) is None:
        return cli.demo_status("scratch-cnn", [DEMO_TASK])
    print(format_table([summary_row(DEMO_TASK, metrics, out / DEMO_TASK)]))
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
