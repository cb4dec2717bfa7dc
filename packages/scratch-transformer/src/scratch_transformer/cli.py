"""Command line: ``scratch-transformer train eng-fra|shakespeare``, ``translate``, ``evaluate``, ``sample``,
``attention-cost``, ``demo``.

scratch-transformer train eng-fra --out runs/scratch-transformer/eng-fra
scratch-transformer train eng-fra --resume          # continue the run saved in runs/scratch-transformer/eng-fra
scratch-transformer train eng-fra --max-steps 300 --reference torch
scratch-transformer translate --checkpoint runs/scratch-transformer/eng-fra/checkpoint.pt "I am cold."
scratch-transformer evaluate --checkpoint runs/scratch-transformer/eng-fra/checkpoint.pt --beam 4
echo "Go away." | scratch-transformer translate --checkpoint ... --beam 4
scratch-transformer train shakespeare --out runs/scratch-transformer/shakespeare
scratch-transformer sample --checkpoint runs/scratch-transformer/shakespeare/checkpoint.pt --prompt "ROMEO:"
scratch-transformer attention-cost --out runs/scratch-transformer/attention-cost
scratch-transformer demo --out runs/scratch-transformer
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from scratch_engine.tools import cli
from scratch_engine.tools.config import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, SEED
from scratch_engine.tools.datasets import DataNotFoundError
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.runner import Task
from scratch_transformer import __version__
from scratch_transformer.attention_cost import layer_flops, measure, plot_attention_cost
from scratch_transformer.checkpoint import load_gpt, load_translator
from scratch_transformer.eng_fra import BEAM, ENG_FRA
from scratch_transformer.evaluation import evaluate_checkpoint
from scratch_transformer.gpt import sample
from scratch_transformer.shakespeare import SHAKESPEARE
from scratch_transformer.translating import translate

DEFAULT_OUT = Path("runs") / "scratch-transformer"
# A modest budget in steps, not minutes, so that the result does not depend on the machine's speed
# (about 2 minutes on 2 CPU cores); the cosine ends at its 900 steps, so the rate decays within the demo.
DEMO: dict[str, Any] = {"max_steps": 900, "max_minutes": None, "eval_every": 300, "test_limit": 300}
# the GPT's demo: nanoGPT's baby shape for 600 steps (about a minute on 2 CPU cores)
GPT_DEMO: dict[str, Any] = {
    "max_steps": 600,
    "max_minutes": None,
    "eval_every": 200,
    "block_size": 64,
    "batch_size": 12,
}
TASKS: dict[str, Task[Any]] = {ENG_FRA.name: ENG_FRA, SHAKESPEARE.name: SHAKESPEARE}
GPT_DATA_HINT = (
    "get Tiny Shakespeare with `python -m scratch_engine.tools.datasets fetch tinyshakespeare` (online) or set "
    "SCRATCH_DATA_DIR to a folder holding tinyshakespeare/input.txt"
)
DATA_HINT = (
    "get the pairs with `python -m scratch_engine.tools.datasets fetch eng-fra` (online) or set SCRATCH_DATA_DIR to a "
    "folder holding eng-fra/eng-fra.txt (train takes --data-dir DIR or --pairs PATH too)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratch-transformer",
        description="The Transformer, from scratch: an encoder-decoder trained English to French, and a "
        "decoder-only GPT on Tiny Shakespeare.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,translate,evaluate,sample,attention-cost,demo}"
    )
    cli.add_train_command(commands, TASKS, DEFAULT_OUT)

    translate_ = commands.add_parser(
        "translate",
        help="translate English sentences with a trained checkpoint",
        description="Translate the SENTENCES given, or each line of stdin when none is given "
        "(one output line per input line: a blank line gives a blank line).",
    )
    translate_.add_argument("sentences", nargs="*", metavar="SENTENCE")
    translate_.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by train")
    translate_.add_argument("--beam", type=BEAM, default=1, help="beam size, at most 64 (1: greedy, the default)")
    translate_.add_argument("--device", default="cpu", help="(%(default)s)")

    evaluate = commands.add_parser(
        "evaluate",
        help="the test CER of a trained checkpoint, decoded again (e.g. with beam search)",
        description="Rebuild the test split the checkpoint was trained beside and print its CER and exact match.",
    )
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by train")
    evaluate.add_argument("--beam", type=BEAM, default=1, help="beam size, at most 64 (1: greedy, the default)")
    evaluate.add_argument("--test-limit", type=POSITIVE_INT, help="decode only the first N test sentences")
    evaluate.add_argument("--data-dir", help="folder holding eng-fra/eng-fra.txt (default: $SCRATCH_DATA_DIR)")
    evaluate.add_argument("--pairs", type=Path, help="the pairs file the checkpoint was trained on, if moved")
    evaluate.add_argument("--device", default="cpu", help="(%(default)s)")
    evaluate.add_argument("--json", type=Path, help="also write the figures to this JSON file")

    sample_ = commands.add_parser(
        "sample",
        help="generate text with a trained GPT checkpoint (train shakespeare)",
        description="Print the prompt and LENGTH characters drawn one at a time, with the KV cache.",
    )
    sample_.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt written by train shakespeare")
    sample_.add_argument("--prompt", help="the text to continue (default: the one the run sampled with)")
    sample_.add_argument("--length", type=NON_NEGATIVE_INT, default=500, help="characters to generate (%(default)s)")
    sample_.add_argument("--temperature", type=NON_NEGATIVE, default=0.8, help="0: greedy (%(default)s)")
    sample_.add_argument("--top-k", type=POSITIVE_INT, help="draw among the K most likely characters only")
    sample_.add_argument("--seed", type=SEED, default=0, help="(%(default)s)")
    sample_.add_argument(
        "--no-cache", action="store_true", help="recompute the whole context for every character (slower, same text)"
    )
    sample_.add_argument("--device", default="cpu", help="(%(default)s)")

    cost = commands.add_parser(
        "attention-cost",
        help="how attention's cost grows with the sequence length: counted FLOPs and measured time",
        description="Count one layer's forward FLOPs by part (attention grows as T^2, projections and feed-forward "
        "as T) and time one pre-norm causal EncoderLayer and its attention core, forward and hand-written backward, "
        "at lengths 32, 64, ... up to --max-length: attention_cost.png and attention_cost.json.",
    )
    cost.add_argument("--d-model", type=POSITIVE_INT, default=128, help="(%(default)s)")
    cost.add_argument("--heads", type=POSITIVE_INT, default=4, help="(%(default)s)")
    cost.add_argument("--max-length", type=POSITIVE_INT, default=2048, help="(%(default)s)")
    cost.add_argument("--out", type=Path, default=DEFAULT_OUT / "attention-cost", help="(%(default)s)")

    cli.add_demo_command(
        commands,
        help=f"a short eng-fra run ({DEMO['max_steps']} steps) and a short GPT run ({GPT_DEMO['max_steps']} steps)",
        description=f"Train eng-fra for {DEMO['max_steps']} steps into OUT/eng-fra/ and evaluate on "
        f"{DEMO['test_limit']} test sentences, then the GPT on Tiny Shakespeare for {GPT_DEMO['max_steps']} steps "
        "into OUT/shakespeare/. It fetches the data it lacks unless SCRATCH_DOWNLOAD=0; without it, it says how to "
        "get it and exits 1.",
        out=DEFAULT_OUT,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # missing data, a bad file or a bad value in it: one line, exit 1
    commands = {
        "translate": translate_command,
        "evaluate": evaluate_command,
        "sample": sample_command,
        "attention-cost": attention_cost_command,
        "demo": demo,
    }
    return cli.main(build_parser(), argv, TASKS, summary, commands, (DataNotFoundError, FileNotFoundError, ValueError))


def attention_cost_command(args: argparse.Namespace, progress: bool) -> int:
    if args.d_model % args.heads:
        raise ValueError(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
    lengths = [2**e for e in range(5, 31) if 2**e <= args.max_length] or [args.max_length]
    timings = measure(lengths, args.d_model, args.heads)
    path = plot_attention_cost(lengths, args.d_model, timings, args.out / "attention_cost.png")
    rows = [{**asdict(t), "flops": layer_flops(t.length, args.d_model)} for t in timings]
    record = {"d_model": args.d_model, "heads": args.heads, "threads": torch.get_num_threads(), "lengths": rows}
    write_text_atomic(args.out / "attention_cost.json", json.dumps(record) + "\n")
    for row in rows:
        share = row["flops"]["attention"] / sum(row["flops"].values())
        print(
            f"T {row['length']:5}: layer {row['layer_ms']:8.2f} ms, attention core {row['attention_ms']:8.2f} ms; "
            f"attention {share:4.0%} of the counted FLOPs; weights P {row['weights_mib']:.2f} MiB"
        )
    print(f"wrote {path}")
    return 0


def summary(task: str, metrics: dict[str, Any], out: Path) -> str:
    """What ``train`` and ``demo`` print: the headline figure, the run's size, the twin's gap, samples."""
    if task == SHAKESPEARE.name:
        return gpt_summary(metrics, out)
    above = (
        " (above 1: the translations need more character edits than the references have characters, as an "
        "undertrained model's long, repetitive output does)"
        if metrics["test_cer"] > 1
        else ""
    )
    lines = [
        f"{task}: test CER {metrics['test_cer']:.3f}{above} ({metrics['decoding']}, {metrics['test_sentences']} "
        f"sentences), exact match {metrics['test_exact_match']:.1%}, val loss {metrics['val_loss']:.4f}",
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


def gpt_summary(metrics: dict[str, Any], out: Path) -> str:
    lines = [
        f"shakespeare: validation {metrics['val_loss']:.4f} nats/char ({metrics['val_bpc']:.3f} bits), best "
        f"{metrics['best_val_loss']:.4f}",
        f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s, {metrics['characters_seen']:,} characters "
        f"seen, {metrics['parameters']:,} parameters; written to {out}",
    ]
    if "reference_max_relative_deviation" in metrics:
        lines.append(
            f"torch.nn twin: max relative loss deviation {metrics['reference_max_relative_deviation']:.2e} "
            f"over {metrics['reference_steps']} logged steps"
        )
    return "\n".join([*lines, "sample:", metrics["sample"]])


def sample_command(args: argparse.Namespace, progress: bool) -> int:
    model, vocabulary, prompt = load_gpt(args.checkpoint, args.device)
    generator = torch.Generator().manual_seed(args.seed)
    text = sample(
        model,
        vocabulary,
        prompt if args.prompt is None else args.prompt,
        args.length,
        args.temperature,
        args.top_k,
        generator,
        use_cache=not args.no_cache,
    )
    print(text)
    return 0


def translate_command(args: argparse.Namespace, progress: bool) -> int:
    """One translation per SENTENCE (a blank one is an error), or one output line per line of stdin."""
    model, src_vocab, tgt_vocab, _ = load_translator(args.checkpoint, args.device)
    if args.sentences:
        lines = sentences = list(args.sentences)
    else:
        if sys.stdin.isatty():  # else it would wait silently for input the user did not know it expects
            print("reading sentences from stdin, one per line; Ctrl-D to end", file=sys.stderr, flush=True)
        lines = [line.strip() for line in sys.stdin]
        sentences = [line for line in lines if line]  # a blank line gets a blank line: the lines stay aligned
    # unknown characters: one plain line on stderr (a Python warning would show our source line)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        french = iter(translate(model, sentences, src_vocab, tgt_vocab, beam=args.beam))
    for warning in caught:
        print(f"scratch-transformer: warning: {warning.message}", file=sys.stderr)
    for line in lines:
        print(next(french) if line else "")
    return 0


def evaluate_command(args: argparse.Namespace, progress: bool) -> int:
    if args.json is not None and args.json.is_dir():  # found now, not after the whole evaluation
        raise ValueError(f"--json {args.json} is a folder: name the JSON file to write")
    result = evaluate_checkpoint(
        args.checkpoint,
        beam=args.beam,
        limit=args.test_limit,
        device=args.device,
        data_dir=args.data_dir,
        pairs=None if args.pairs is None else str(args.pairs),
        progress=progress,
    )
    print(
        f"eng-fra: test CER {result['cer']:.3f} ({result['decoding']}, {result['sentences']} sentences), "
        f"exact match {result['exact_match']:.1%}"
    )
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


def demo(args: argparse.Namespace, progress: bool) -> int:
    skipped = []
    for task, budget, hint in ((ENG_FRA, DEMO, DATA_HINT), (SHAKESPEARE, GPT_DEMO, GPT_DATA_HINT)):
        changes: dict[str, Any] = {"device": args.device} | ({} if args.full else budget)
        if (metrics := cli.demo_task(task, changes, args.out, progress, hint)) is None:
            skipped.append(task.name)
        else:
            print(summary(task.name, metrics, args.out / task.name))
    return cli.demo_status("scratch-transformer", skipped)
