"""Command line: ``scratch-transformer train eng-fra``, ``translate`` and ``demo``.

scratch-transformer train eng-fra --max-minutes 30 --out runs/scratch-transformer/eng-fra
scratch-transformer train eng-fra --max-steps 300 --reference torch --dropout 0
scratch-transformer translate --checkpoint runs/scratch-transformer/eng-fra/checkpoint.pt "I am cold."
scratch-transformer evaluate --checkpoint runs/scratch-transformer/eng-fra/checkpoint.pt --beam 4
echo "Go away." | scratch-transformer translate --checkpoint ... --beam 4
scratch-transformer demo --out runs/scratch-transformer
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scratch_engine.datasets import DataNotFoundError
from scratch_engine.distributed import is_main_process
from scratch_engine.experiment import (
    PARITY_DTYPE_HELP,
    add_demo_command,
    add_training_arguments,
    config_with_args,
    demo_task,
    positive_int,
    run_command,
)
from scratch_transformer import __version__
from scratch_transformer.translate import (
    SCHEDULES,
    TranslateConfig,
    evaluate_checkpoint,
    load_translator,
    run,
    translate,
)

DEFAULT_OUT = Path("runs") / "scratch-transformer"
# A modest budget, well under 3 minutes in all. The cosine ends at max_steps, about what 2 minutes buy on
# 2 cores, so the rate decays within the demo (ending at the default's 9,000 it stayed at its 3e-3 peak).
DEMO: dict[str, Any] = {"max_minutes": 2.0, "max_steps": 900, "test_limit": 300}
DATA_HINT = (
    "get the pairs with `python -m scratch_engine.datasets fetch eng-fra` (online) or set SCRATCH_DATA_DIR to a "
    "folder holding eng-fra/eng-fra.txt (train takes --data-dir DIR or --pairs PATH too)"
)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratch-transformer",
        description="The encoder-decoder Transformer, from scratch: train English to French, translate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,translate,evaluate,demo}")

    train = commands.add_parser("train", help="train a task", description="Train a task into --out.")
    tasks = train.add_subparsers(dest="task", required=True, metavar="{eng-fra}")
    defaults = TranslateConfig()
    task = tasks.add_parser(
        "eng-fra",
        help="English to French, character level",
        description="Train an English-to-French character Transformer: metrics.json (val_loss, test_cer, "
        "test_exact_match, ...), loss.png, attention_<k>.png, translations.txt and checkpoint.pt in --out.",
    )
    add_training_arguments(
        task,
        epochs=defaults.epochs,
        batch_size=defaults.batch_size,
        lr=defaults.lr,
        optimizer=defaults.optimizer,
        weight_decay=defaults.weight_decay,
        out=DEFAULT_OUT / "eng-fra",
        dtype=None,  # float64 for a --reference run, else float32 (TranslateConfig.dtype)
        dtype_help=PARITY_DTYPE_HELP,
    )
    budget = task.add_argument_group("budget and schedule")
    budget.add_argument(
        "--max-steps",
        type=positive_int,
        default=defaults.max_steps,
        help="stop after this many steps; the cosine schedule ends there (%(default)s)",
    )
    budget.add_argument(
        "--max-minutes", type=_positive_float, default=defaults.max_minutes, help="stop after this long (%(default)s)"
    )
    budget.add_argument(
        "--steps-per-epoch", type=positive_int, default=defaults.steps_per_epoch, help="steps between validations"
    )
    budget.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule, help="(%(default)s)")
    budget.add_argument("--warmup-steps", type=positive_int, default=defaults.warmup_steps, help="(%(default)s)")
    budget.add_argument("--label-smoothing", type=_probability, default=defaults.label_smoothing, help="(%(default)s)")
    budget.add_argument(
        "--clip-grad-norm", type=_positive_float, default=defaults.clip_grad_norm, help="global norm (%(default)s)"
    )
    model = task.add_argument_group("model")
    model.add_argument("--d-model", type=positive_int, default=defaults.d_model, help="(%(default)s)")
    model.add_argument("--heads", type=positive_int, default=defaults.heads, help="(%(default)s)")
    model.add_argument(
        "--layers", type=positive_int, default=defaults.layers, help="encoder and decoder layers (%(default)s)"
    )
    model.add_argument("--d-ff", type=positive_int, default=defaults.d_ff, help="(%(default)s)")
    model.add_argument("--dropout", type=_probability, default=defaults.dropout, help="(%(default)s)")
    model.add_argument("--norm", choices=("pre", "post"), default=defaults.norm, help="(%(default)s)")
    data = task.add_argument_group("data and evaluation")
    data.add_argument("--pairs", type=Path, help="a pairs file (English<TAB>French per line) instead of eng-fra.txt")
    data.add_argument("--data-dir", help="folder holding eng-fra/eng-fra.txt (default: $SCRATCH_DATA_DIR)")
    data.add_argument("--no-download", action="store_true", help="fail instead of downloading missing pairs")
    data.add_argument(
        "--max-src-len", type=positive_int, default=defaults.max_src_len, help="longest English (%(default)s chars)"
    )
    data.add_argument("--test-limit", type=positive_int, help="decode only the first N test sentences (default: all)")
    data.add_argument("--beam", type=positive_int, default=1, help="beam size for the test CER (1: greedy)")
    task.add_argument(
        "--reference",
        choices=("torch",),
        help="also train the torch.nn twin on the same batches (dropout forced to 0); plot both curves",
    )

    translate_ = commands.add_parser(
        "translate",
        help="translate English sentences with a trained checkpoint",
        description="Translate the SENTENCES given, or each line of stdin when none is given.",
    )
    translate_.add_argument("sentences", nargs="*", metavar="SENTENCE")
    translate_.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by train")
    translate_.add_argument("--beam", type=positive_int, default=1, help="beam size (1: greedy, the default)")
    translate_.add_argument("--device", default="cpu", help="(%(default)s)")

    evaluate = commands.add_parser(
        "evaluate",
        help="the test CER of a trained checkpoint, decoded again (e.g. with beam search)",
        description="Rebuild the test split the checkpoint was trained beside and print its CER and exact match.",
    )
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by train")
    evaluate.add_argument("--beam", type=positive_int, default=1, help="beam size (1: greedy, the default)")
    evaluate.add_argument("--test-limit", type=positive_int, help="decode only the first N test sentences")
    evaluate.add_argument("--data-dir", help="folder holding eng-fra/eng-fra.txt (default: $SCRATCH_DATA_DIR)")
    evaluate.add_argument("--pairs", type=Path, help="the pairs file the checkpoint was trained on, if moved")
    evaluate.add_argument("--device", default="cpu", help="(%(default)s)")
    evaluate.add_argument("--json", type=Path, help="also write the figures to this JSON file")

    add_demo_command(
        commands,
        help="a short eng-fra run (about 2 minutes): metrics, samples, attention maps",
        description=f"Train eng-fra for {DEMO['max_minutes']:g} minutes (at most {DEMO['max_steps']} steps) into "
        f"OUT/eng-fra/ and evaluate on "
        f"{DEMO['test_limit']} test sentences. Without the data it says how to get it and exits 0.",
        out=DEFAULT_OUT,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # missing data, a bad file or a bad value in it: one line, exit 1
    return run_command(build_parser(), argv, command, (DataNotFoundError, FileNotFoundError, ValueError))


def command(args: argparse.Namespace, progress: bool | None) -> int:
    if args.command == "translate":
        return translate_command(args)
    if args.command == "evaluate":
        return evaluate_command(args, progress)
    if args.command == "demo":
        return demo(args.out, args.device, progress, full=args.full)
    return train(args, progress)


def config_from_args(args: argparse.Namespace) -> TranslateConfig:
    return config_with_args(TranslateConfig(), args, pairs=None if args.pairs is None else str(args.pairs))


def train(args: argparse.Namespace, progress: bool | None) -> int:
    config = config_from_args(args)
    metrics = run(config, args.out, progress, reference=args.reference)
    if is_main_process():  # one summary for a data-parallel run
        print(summary(metrics, args.out))
    return 0


def summary(metrics: dict[str, Any], out: Path) -> str:
    lines = [
        f"eng-fra: test CER {metrics['test_cer']:.3f} ({metrics['decoding']}, {metrics['test_sentences']} sentences), "
        f"exact match {metrics['test_exact_match']:.1%}, val loss {metrics['val_loss']:.4f}",
        f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s, {metrics['parameters']:,} parameters; "
        f"written to {out}",
    ]
    if "reference_max_relative_deviation" in metrics:
        lines.append(
            f"torch.nn twin: max relative loss deviation {metrics['reference_max_relative_deviation']:.2e} "
            f"over {metrics['reference_steps']} logged steps"
        )
    for english, french in metrics.get("samples", [])[:5]:
        lines.append(f"  {english}  ->  {french}")
    return "\n".join(lines)


def translate_command(args: argparse.Namespace) -> int:
    model, src_vocab, tgt_vocab, _ = load_translator(args.checkpoint, args.device)
    sentences = list(args.sentences)
    if not sentences:
        if sys.stdin.isatty():  # else it would wait silently for input the user did not know it expects
            print("reading sentences from stdin, one per line; Ctrl-D to end", file=sys.stderr, flush=True)
        sentences = [line.strip() for line in sys.stdin if line.strip()]
    # unknown characters: one plain line on stderr (a Python warning would show our source line)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        translations = translate(model, sentences, src_vocab, tgt_vocab, beam=args.beam)
    for warning in caught:
        print(f"scratch-transformer: warning: {warning.message}", file=sys.stderr)
    for french in translations:
        print(french)
    return 0


def evaluate_command(args: argparse.Namespace, progress: bool | None) -> int:
    pairs = None if args.pairs is None else str(args.pairs)
    result = evaluate_checkpoint(
        args.checkpoint,
        beam=args.beam,
        limit=args.test_limit,
        device=args.device,
        data_dir=args.data_dir,
        pairs=pairs,
        progress=progress,
    )
    print(
        f"eng-fra: test CER {result['cer']:.3f} ({result['decoding']}, {result['sentences']} sentences), "
        f"exact match {result['exact_match']:.1%}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def demo(out: Path, device: str, progress: bool | None, full: bool = False) -> int:
    config = replace(TranslateConfig(device=device, download=False), **({} if full else DEMO))
    if (metrics := demo_task("eng-fra", run, config, out, progress, DATA_HINT)) is not None:
        print(summary(metrics, out / "eng-fra"))
    return 0
