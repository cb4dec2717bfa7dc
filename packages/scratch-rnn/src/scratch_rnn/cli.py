"""Command line: ``scratch-rnn train shakespeare``, ``sample``, ``compare``, ``gradients`` and ``demo``.

scratch-rnn train shakespeare --arch gru --max-minutes 5 --out runs/scratch-rnn/gru
scratch-rnn train shakespeare --arch gru --max-minutes 10 --out runs/scratch-rnn/gru --resume   # 5 minutes more
scratch-rnn sample --checkpoint runs/scratch-rnn/gru/checkpoint.pt --prompt "ROMEO:" --length 500 --temperature 0.8
scratch-rnn compare --max-steps 300 --reference torch --out runs/scratch-rnn/compare
scratch-rnn gradients --out runs/scratch-rnn/gradients
scratch-rnn demo --out runs/scratch-rnn
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from scratch_engine.tools import cli
from scratch_engine.tools.cli import add_config_arguments, config_from_args
from scratch_engine.tools.config import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT
from scratch_engine.tools.distributed import is_main_process
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.records import write_metrics
from scratch_engine.tools.runner import Task
from scratch_rnn import __version__
from scratch_rnn.charlm import sample
from scratch_rnn.compare import compare, table
from scratch_rnn.gradients import gradient_curves, plot_gradient_norms
from scratch_rnn.shakespeare import SHAKESPEARE, CharLMConfig, CompareConfig
from scratch_rnn.trained import default_prompt, load_model

DEFAULT_OUT = Path("runs") / "scratch-rnn"
TASKS: dict[str, Task[Any]] = {SHAKESPEARE.name: SHAKESPEARE}
DEMO: dict[str, Any] = {"max_steps": 300, "eval_every": 100, "max_minutes": None}  # a modest budget, in steps
DATA_HINT = (
    "get the data with `python -m scratch_engine.tools.datasets fetch tinyshakespeare` (online) or set "
    "SCRATCH_DATA_DIR to a folder holding tinyshakespeare/input.txt"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratch-rnn",
        description="RNN, LSTM and GRU from scratch: a character-level language model on Tiny Shakespeare.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,compare,gradients,demo}")
    cli.add_train_command(commands, TASKS, DEFAULT_OUT)

    samp = commands.add_parser(
        "sample",
        help="generate text from a checkpoint",
        description="Continue --prompt with characters drawn from a trained checkpoint (temperature 0: greedy).",
    )
    samp.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by train")
    samp.add_argument(
        "--prompt",
        help="text to start from (default: the training run's sample prompt, ROMEO: for Shakespeare, where "
        "the checkpoint's vocabulary has its characters, else the vocabulary's first character)",
    )
    samp.add_argument("--length", type=NON_NEGATIVE_INT, default=500, help="characters to generate (%(default)s)")
    samp.add_argument("--temperature", type=NON_NEGATIVE, default=0.8, help="0 = greedy (%(default)s)")
    samp.add_argument("--top-k", type=POSITIVE_INT, help="sample among the K most likely characters only")
    samp.add_argument("--seed", type=int, default=0, help="(%(default)s)")

    comp = commands.add_parser(
        "compare",
        help="train RNN, LSTM and GRU with the same budget; one plot and a table",
        description="Train rnn, lstm and gru with the same settings into OUT/<arch>/ (each as `train shakespeare` "
        "would) and write compare.png, compare.md and metrics.json.",
        allow_abbrev=False,
    )
    add_config_arguments(comp, CompareConfig())  # every flag of train shakespeare but --arch
    output = comp.add_argument_group("output")
    output.add_argument("--out", type=Path, default=DEFAULT_OUT / "compare", help="output folder (%(default)s)")
    output.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    output.add_argument("--resume", action="store_true", help="continue the runs an interrupted compare saved in --out")

    grads = commands.add_parser(
        "gradients",
        help="plot ||dL/dh_t|| against t for the three architectures at initialisation",
        description="Backpropagate a loss on the last hidden state through --steps steps of an untrained RNN, LSTM "
        "and GRU and plot the gradient's norm at each earlier step: gradient_norms.png and gradient_norms.json.",
    )
    grads.add_argument("--out", type=Path, default=DEFAULT_OUT / "gradients", help="(%(default)s)")
    grads.add_argument("--steps", type=POSITIVE_INT, default=200, help="sequence length (%(default)s)")
    grads.add_argument("--hidden", type=POSITIVE_INT, default=128, help="(%(default)s)")

    cli.add_demo_command(
        commands,
        help="a short LSTM run on Tiny Shakespeare: metrics and a sample",
        description=f"Train the default LSTM for {DEMO['max_steps']} steps, validating every {DEMO['eval_every']}, "
        "into OUT/shakespeare/.",
        out=DEFAULT_OUT,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # missing data, a bad file or a bad value in it (a text too short for the batch): one line, exit 1
    commands = {"compare": compare_command, "sample": sample_command, "gradients": gradients_command, "demo": demo}
    return cli.main(build_parser(), argv, TASKS, summary, commands, expected=(ValueError,))


def summary(task: str, metrics: dict[str, Any], out: Path) -> str:
    return f"{table([metrics])}\n\n{metrics['sample']}"


def compare_command(args: argparse.Namespace, progress: bool) -> int:
    rows = compare(config_from_args(CharLMConfig(), args), args.out, progress, resume=args.resume)
    text = table(rows)
    if is_main_process():  # one table for a torchrun launch, as for train
        print(text)
        write_text_atomic(args.out / "compare.md", text + "\n")
        write_metrics(args.out, {"task": "compare", "runs": rows})
    return 0


def sample_command(args: argparse.Namespace, progress: bool) -> int:
    model, vocabulary, settings = load_model(args.checkpoint)
    prompt = default_prompt(settings, vocabulary) if args.prompt is None else args.prompt
    generator = torch.Generator().manual_seed(args.seed)
    print(sample(model, vocabulary, prompt, args.length, args.temperature, args.top_k, generator))
    return 0


def gradients_command(args: argparse.Namespace, progress: bool) -> int:
    norms = gradient_curves(args.steps, args.hidden)
    path = plot_gradient_norms(norms, args.out / "gradient_norms.png")
    write_text_atomic(args.out / "gradient_norms.json", json.dumps(norms) + "\n")
    for label, values in norms.items():
        picks = ", ".join(f"{d}: {values[-1 - d]:.1e}" for d in (10, 50, 100, len(values) - 1) if d < len(values))
        print(f"{label:22} ||dL/dh_t|| relative, by steps back: {picks}")
    print(f"wrote {path}")
    return 0


def demo(args: argparse.Namespace, progress: bool) -> int:
    changes = {"device": args.device, **({} if args.full else DEMO)}
    if (metrics := cli.demo_task(SHAKESPEARE, changes, args.out, progress, DATA_HINT)) is None:
        return cli.demo_status("scratch-rnn", [SHAKESPEARE.name])
    print(summary(SHAKESPEARE.name, metrics, args.out / SHAKESPEARE.name))
    return 0
