"""Attention against recurrence on one text: the LSTM, the GRU and the GPT, the same wall-clock budget each.

    python scripts/head_to_head.py --minutes 10 --out runs/head-to-head
    python scripts/head_to_head.py --minutes 10 --out runs/head-to-head --assets   # also into assets/

Each model is its own package's ``train shakespeare`` with its defaults (the RNN package's 2 x 256
LSTM and GRU, the Transformer package's GPT), run one after the other as a separate command with
``--max-minutes`` (the packages never import each other; a top-level script may run both). All
read the engine's Tiny Shakespeare split and report validation loss in nats per character on the
same validation characters. ``head_to_head.png`` draws each run's validation curve against
wall-clock time and against characters seen; ``head_to_head.md`` is the table; ``head_to_head.json``
the figures. Run it on a quiet machine: the budget is in minutes, so a busy one gets less done.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = {  # name -> the command's module and its arguments besides the budget
    "lstm": ("scratch_rnn", ["--arch", "lstm"]),
    "gru": ("scratch_rnn", ["--arch", "gru"]),
    "gpt": ("scratch_transformer", []),
}


def train(name: str, minutes: float, out: Path, threads: int) -> dict[str, Any]:
    module, extra = RUNS[name]
    argv = [sys.executable, "-m", module, "train", "shakespeare", *extra, "--max-minutes", str(minutes)]
    argv += ["--threads", str(threads), "--device", "cpu", "--out", str(out / name), "--row-sample", "0"]
    print("$", " ".join(argv[1:]), file=sys.stderr, flush=True)
    subprocess.run(argv, check=True)
    metrics: dict[str, Any] = json.loads((out / name / "metrics.json").read_text(encoding="utf-8"))
    return metrics


def characters_per_step(metrics: dict[str, Any]) -> int:
    config = metrics["config"]
    return int(config["batch_size"]) * int(config.get("block_size", config.get("seq_len", 0)))


def curves(metrics: dict[str, Any]) -> dict[str, list[float]]:
    """The validation rows: seconds, characters seen and the loss."""
    history = metrics["history"]
    rows = [i for i, value in enumerate(history["val_loss"]) if value == value]  # NaN: a row without validation
    per_step = characters_per_step(metrics)
    return {
        "seconds": [history["seconds"][i] for i in rows],
        "characters": [history["step"][i] * per_step for i in rows],
        "val_loss": [history["val_loss"][i] for i in rows],
    }


def table(results: dict[str, dict[str, Any]], minutes: float) -> str:
    lines = [
        f"Tiny Shakespeare, {minutes:g} minutes of training each on this machine, validation in nats per character",
        f"(`python scripts/head_to_head.py --minutes {minutes:g}`; each model its package's defaults):",
        "",
        "| model | parameters | steps | characters seen | train s | best val | final val |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, metrics in results.items():
        seen = metrics["steps"] * characters_per_step(metrics)
        lines.append(
            f"| {name} | {metrics['parameters']:,} | {metrics['steps']:,} | {seen:,} | {metrics['train_seconds']:.0f} "
            f"| {metrics['best_val_loss']:.3f} | {metrics['val_loss']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], path: Path, minutes: float) -> None:
    from scratch_engine.tools.plots import new_figure, save_figure

    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for name, metrics in results.items():
        points = curves(metrics)
        axes[0].plot([s / 60 for s in points["seconds"]], points["val_loss"], marker=".", label=name)
        axes[1].plot([c / 1e6 for c in points["characters"]], points["val_loss"], marker=".", label=name)
    axes[0].set_xlabel("training time (minutes)")
    axes[1].set_xlabel("characters seen (millions)")
    for ax in axes:
        ax.set_ylabel("validation loss (nats/char)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Attention vs recurrence on Tiny Shakespeare: {minutes:g} minutes each, same validation text")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per model (%(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/head-to-head"), help="(%(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run (%(default)s)")
    parser.add_argument("--models", nargs="+", choices=tuple(RUNS), default=list(RUNS), help="(all)")
    parser.add_argument("--assets", action="store_true", help="also write the picture and the table into assets/")
    args = parser.parse_args(argv)
    results = {name: train(name, args.minutes, args.out, args.threads) for name in args.models}
    from scratch_engine.tools.files import write_text_atomic

    text = table(results, args.minutes)
    keys = ("parameters", "steps", "train_seconds", "best_val_loss", "val_loss")
    figures = {name: {**{key: m[key] for key in keys}, **curves(m)} for name, m in results.items()}
    folders = [args.out] + ([ROOT / "assets"] if args.assets else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        plot(results, folder / "head_to_head.png", args.minutes)
        write_text_atomic(folder / "head_to_head.md", text)
        write_text_atomic(folder / "head_to_head.json", json.dumps(figures, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
