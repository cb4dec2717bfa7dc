"""Command line: ``scratch-rnn train shakespeare``, ``sample``, ``compare``, ``gradients`` and ``demo``.

scratch-rnn train shakespeare --arch gru --max-minutes 5 --out runs/scratch-rnn/gru
scratch-rnn sample --checkpoint runs/scratch-rnn/gru/checkpoint.pt --prompt "ROMEO:" --length 500 --temperature 0.8
scratch-rnn compare --max-steps 300 --reference torch --out runs/scratch-rnn/compare
scratch-rnn gradients --out runs/scratch-rnn/gradients
scratch-rnn demo --out runs/scratch-rnn
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from scratch_engine.datasets import DataNotFoundError
from scratch_engine.distributed import is_main_process
from scratch_engine.experiment import (
    add_demo_command,
    add_training_arguments,
    config_with_args,
    demo_task,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
    write_metrics,
)
from scratch_rnn import __version__
from scratch_rnn.charlm import ARCHITECTURES, sample
from scratch_rnn.shakespeare import (
    CharLMConfig,
    compare,
    default_prompt,
    format_table,
    gradient_norms,
    load_model,
    plot_gradient_norms,
    run,
)

DEFAULT_OUT = Path("runs") / "scratch-rnn"
DEMO: dict[str, Any] = {"max_steps": 300, "max_minutes": 2.0, "eval_every": 100}  # a modest budget: under 3 minutes
DATA_HINT = (
    "get the data with `python -m scratch_engine.datasets fetch tinyshakespeare` (online) or set SCRATCH_DATA_DIR "
    "to a folder holding tinyshakespeare/input.txt"
)


def clip_value(text: str) -> float | None:
    """``--clip``: a positive finite gradient-norm bound, or ``0``/``none``: no clipping.

    0 means "off" rather than "clip to norm 0", which would scale every gradient to zero and
    leave the weights where they started.
    """
    if text.strip().lower() == "none":
        return None
    value = float(text)
    if value == 0:
        return None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, or 0 / none for no clipping; got {text}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser, *, out: Path, compare_: bool = False) -> None:
    defaults = CharLMConfig()
    add_training_arguments(
        parser,
        epochs=defaults.epochs,
        batch_size=defaults.batch_size,
        lr=defaults.lr,
        optimizer=defaults.optimizer,
        out=out,
        reference=True,  # --reference torch; run_dtype: float64 for a parity run, else float32
    )
    model = parser.add_argument_group("model and budget")
    if not compare_:
        model.add_argument("--arch", choices=list(ARCHITECTURES), default=defaults.arch, help="(%(default)s)")
    model.add_argument("--hidden", type=positive_int, default=defaults.hidden, help="units per layer (%(default)s)")
    model.add_argument("--layers", type=positive_int, default=defaults.layers, help="recurrent layers (%(default)s)")
    model.add_argument(
        "--embedding",
        type=non_negative_int,
        default=defaults.embedding,
        help="embedding width; 0 = one-hot input (%(default)s)",
    )
    model.add_argument("--seq-len", type=positive_int, default=defaults.seq_len, help="BPTT chunk length (%(default)s)")
    model.add_argument(
        "--clip",
        type=clip_value,
        default=defaults.clip,
        help="clip the gradients' global norm to this; 0 or none: no clipping (%(default)s)",
    )
    model.add_argument("--max-steps", type=positive_int, default=defaults.max_steps, help="step budget (%(default)s)")
    model.add_argument(
        "--max-minutes",
        type=positive_float,
        default=defaults.max_minutes,
        help="time budget, checked at each validation (%(default)s)",
    )
    model.add_argument(
        "--eval-every", type=positive_int, default=defaults.eval_every, help="steps between validations (%(default)s)"
    )
    model.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    data = parser.add_argument_group("data")
    data.add_argument("--text", help="train on this UTF-8 text file instead of Tiny Shakespeare")
    data.add_argument("--data-dir", help="folder holding tinyshakespeare/input.txt (default: $SCRATCH_DATA_DIR)")
    data.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing data set")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratch-rnn",
        description="RNN, LSTM and GRU from scratch: a character-level language model on Tiny Shakespeare.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,compare,gradients,demo}")

    train = commands.add_parser(
        "train",
        help="train a character-level language model",
        description="Train a character-level language model (RNN, LSTM or GRU) on one task into --out.",
    )
    tasks = train.add_subparsers(dest="task", required=True, metavar="{shakespeare}")
    shakespeare = tasks.add_parser(
        "shakespeare",
        help="Tiny Shakespeare (or --text FILE), next-character prediction",
        description="Train a CharLM into --out: metrics.json, loss.png, sample.txt and checkpoint.pt.",
    )
    _add_model_arguments(shakespeare, out=DEFAULT_OUT / "shakespeare")

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
    samp.add_argument("--length", type=non_negative_int, default=500, help="characters to generate (%(default)s)")
    samp.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 = greedy (%(default)s)")
    samp.add_argument("--top-k", type=positive_int, help="sample among the K most likely characters only")
    samp.add_argument("--seed", type=int, default=0, help="(%(default)s)")

    comp = commands.add_parser(
        "compare",
        help="train RNN, LSTM and GRU with the same budget; one plot and a table",
        description="Train rnn, lstm and gru into OUT/<arch>/ and write compare.png, compare.md and metrics.json.",
    )
    _add_model_arguments(comp, out=DEFAULT_OUT / "compare", compare_=True)

    grads = commands.add_parser(
        "gradients",
        help="plot ||dL/dh_t|| against t for the three architectures at initialisation",
        description="Backpropagate a loss on the last hidden state through --steps steps of an untrained RNN, LSTM "
        "and GRU and plot the gradient's norm at each earlier step: gradient_norms.png and gradient_norms.json.",
    )
    grads.add_argument("--out", type=Path, default=DEFAULT_OUT / "gradients", help="(%(default)s)")
    grads.add_argument("--steps", type=positive_int, default=200, help="sequence length (%(default)s)")
    grads.add_argument("--hidden", type=positive_int, default=128, help="(%(default)s)")

    add_demo_command(
        commands,
        help="a short LSTM run on Tiny Shakespeare (under 3 minutes): metrics and a sample",
        description=f"Train the default LSTM for at most {DEMO['max_steps']} steps or {DEMO['max_minutes']} minutes "
        "into OUT/shakespeare/.",
        out=DEFAULT_OUT,
    )
    return parser


def _config(args: argparse.Namespace, **extra: Any) -> CharLMConfig:
    return config_with_args(CharLMConfig(), args, **extra)


def main(argv: Sequence[str] | None = None) -> int:
    # missing data, a bad file or a bad value in it: one line, exit 1
    return run_command(build_parser(), argv, command, (DataNotFoundError, FileNotFoundError, ValueError))


def command(args: argparse.Namespace, progress: bool | None) -> int:
    if args.command == "train":
        metrics = run(_config(args, arch=args.arch), args.out, progress)
        if is_main_process():  # one summary for a data-parallel run
            print(format_table([{"arch": args.arch, **metrics}]))
            print(f"\n{metrics['sample']}")
    elif args.command == "compare":
        rows = compare(_config(args), args.out, progress)
        table = format_table(rows)
        print(table)
        if args.out is not None:
            (args.out / "compare.md").write_text(table + "\n", encoding="utf-8")
            write_metrics(args.out, {"task": "compare", "runs": rows})
    elif args.command == "sample":
        model, vocab, config = load_model(args.checkpoint)
        prompt = default_prompt(config, vocab) if args.prompt is None else args.prompt
        generator = torch.Generator().manual_seed(args.seed)
        print(sample(model, vocab, prompt, args.length, args.temperature, args.top_k, generator))
    elif args.command == "gradients":
        norms = {arch: gradient_norms(arch, args.steps, args.hidden) for arch in ARCHITECTURES}
        for arch in ("lstm", "gru"):  # the gate that keeps the state starts at sigmoid(3) = 0.95
            norms[f"{arch}, {'forget' if arch == 'lstm' else 'update'} bias +3"] = gradient_norms(
                arch, args.steps, args.hidden, gate_bias=3.0
            )
        path = plot_gradient_norms(norms, args.out / "gradient_norms.png")
        (args.out / "gradient_norms.json").write_text(json.dumps(norms) + "\n", encoding="utf-8")
        for arch, values in norms.items():
            picks = ", ".join(f"{d}: {values[-1 - d]:.1e}" for d in (10, 50, 100, len(values) - 1) if d < len(values))
            print(f"{arch:22} ||dL/dh_t|| relative, by steps back: {picks}")
        print(f"wrote {path}")
    else:
        return demo(args.out, args.device, progress, full=args.full)
    return 0


def demo(out: Path, device: str, progress: bool | None, full: bool = False) -> int:
    config = replace(CharLMConfig(device=device, download=False), **({} if full else DEMO))
    if (metrics := demo_task("shakespeare", run, config, out, progress, DATA_HINT)) is not None:
        print(format_table([{"arch": "lstm", **metrics}]))
        print(f"\n{metrics['sample']}")
    return 0
