"""Command line: ``scratch-cnn train <data set>``, ``scratch-cnn receptive-field`` and ``scratch-cnn demo``.

scratch-cnn train mnist --out runs/scratch-cnn/mnist
scratch-cnn train fashion-mnist --model best --epochs 10 --data-dir ~/data
scratch-cnn train mnist --resume          # continue the run saved in runs/scratch-cnn/mnist
scratch-cnn receptive-field --model best --out runs/scratch-cnn/receptive-field
scratch-cnn demo --out runs/scratch-cnn
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scratch_cnn import __version__
from scratch_cnn.images import TASKS
from scratch_cnn.models import MODELS
from scratch_cnn.receptive import gradient_map, measured_size, plot_receptive_fields, receptive_fields
from scratch_engine.tools import cli
from scratch_engine.tools.config import SEED
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.records import format_table

DEFAULT_OUT = Path("runs") / "scratch-cnn"
DEMO_TASK = "mnist"
# a modest budget: about 96% (96.14% at seed 0) in 15-40 s on 2 cores
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,receptive-field,demo}")
    cli.add_train_command(commands, TASKS, DEFAULT_OUT)
    field = commands.add_parser(
        "receptive-field",
        help="which input pixels a unit of each layer sees: the formula, and measured by backprop",
        description="For each convolution and pooling layer of a network (untrained, 28x28 inputs), the receptive "
        "field of its centre unit by the formula r_l = r_{l-1} + (k_l - 1) d_l j_{l-1} and as the pixels where the "
        "hand-written backward of a one at that unit is nonzero: receptive_field.png and receptive_field.json.",
    )
    field.add_argument("--model", choices=sorted(MODELS), default="lenet", help="(%(default)s)")
    field.add_argument("--out", type=Path, default=DEFAULT_OUT / "receptive-field", help="(%(default)s)")
    field.add_argument(
        "--seed", type=SEED, default=0, help="seeds the untrained weights, so the picture repeats (%(default)s)"
    )
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
    return cli.main(build_parser(), argv, TASKS, summary, {"demo": demo, "receptive-field": receptive_field_command})


def summary(task: str, metrics: dict[str, Any], out: Path) -> str:
    return format_table([summary_row(task, metrics, out)])


def demo(args: argparse.Namespace, progress: bool) -> int:
    out, budget = args.out, {} if args.full else DEMO_BUDGET
    changes = {"device": args.device, **budget}
    if (metrics := cli.demo_task(TASKS[DEMO_TASK], changes, out, progress, DATA_HINT)) is None:
        return cli.demo_status("scratch-cnn", [DEMO_TASK])
    print(format_table([summary_row(DEMO_TASK, metrics, out / DEMO_TASK)]))
    return 0


def receptive_field_command(args: argparse.Namespace, progress: bool) -> int:
    torch.manual_seed(args.seed)
    model = MODELS[args.model]()
    maps = [(field, gradient_map(model, field.index, 28)) for field in receptive_fields(model)]
    path = plot_receptive_fields(
        maps, args.out / "receptive_field.png", f"{args.model}: receptive field of the centre unit"
    )
    rows = [
        {
            "layer": field.name,
            "computed": list(field.size),
            "measured": list(measured_size(grad)),
            "jump": list(field.jump),
        }
        for field, grad in maps
    ]
    write_text_atomic(args.out / "receptive_field.json", json.dumps({"model": args.model, "layers": rows}) + "\n")
    for row in rows:
        print(
            f"{row['layer']:7} sees {row['computed'][0]}x{row['computed'][1]} pixels (measured "
            f"{row['measured'][0]}x{row['measured'][1]}), neighbours {row['jump'][0]} pixels apart"
        )
    print(f"wrote {path}")
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
