"""The three architectures side by side: one budget, one plot of their validation curves, one table.

    scratch-rnn compare --max-steps 300 --reference torch --out runs/scratch-rnn/compare

Each architecture is a whole ``train shakespeare`` run (:func:`scratch_rnn.shakespeare.run`)
with the same settings, into ``OUT/<arch>/``; ``compare.png`` draws their validation curves
(with ``--reference torch`` the ``torch.nn`` twins' dashed) from the runs' histories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scratch_engine.tools.plots import new_figure, save_figure
from scratch_engine.tools.records import format_table
from scratch_engine.tools.runner import CHECKPOINT
from scratch_rnn.charlm import ARCHITECTURES
from scratch_rnn.shakespeare import CharLMConfig, run

KEYS = (  # what a row of the comparison keeps from a run's metrics
    "parameters",
    "dtype",
    "steps",
    "tokens_per_second",
    "best_val_loss",
    "val_loss",
    "train_seconds",
    "reference_max_relative_deviation",
    "reference_max_val_loss_gap",
)


def compare(
    config: CharLMConfig,
    out_dir: str | Path | None,
    progress: bool = True,
    archs: Sequence[str] = tuple(ARCHITECTURES),
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Train each architecture with ``config`` into ``out_dir/<arch>``; one row of results per architecture.

    ``resume`` continues the runs an interrupted comparison saved (a finished one is only evaluated again).
    """
    results = {}
    for arch in archs:
        out = None if out_dir is None else Path(out_dir) / arch
        again = resume and out is not None and (out / CHECKPOINT).is_file()
        results[arch] = run(replace(config, arch=arch), out, progress, resume=again)
    if out_dir is not None:
        plot_curves(results, Path(out_dir) / "compare.png")
    return [
        {"arch": arch, **{key: metrics[key] for key in KEYS if key in metrics}} for arch, metrics in results.items()
    ]


def plot_curves(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Validation loss of each run of ``results`` (arch -> metrics) against the step, and against the wall-clock
    seconds of training (what a step costs differs: an LSTM step is about four RNN steps); the torch.nn twin dashed."""
    figure = new_figure(12.0, 4.5)
    for panel, (x_key, x_label) in enumerate(
        (("step", "step"), ("seconds", "wall-clock seconds of the run (earlier validations included)"))
    ):
        axes = figure.add_subplot(1, 2, panel + 1)
        for k, (arch, metrics) in enumerate(results.items()):
            history = metrics["history"]
            axes.plot(history[x_key], history["val_loss"], color=f"C{k}", marker="o", label=f"{arch} validation")
            if "val_reference_loss" in history and x_key == "step":  # the twin's time is its own, not plotted
                axes.plot(
                    history["step"],
                    history["val_reference_loss"],
                    color=f"C{k}",
                    linestyle="--",
                    label=f"{arch} torch.nn twin",
                )
        axes.set_xlabel(x_label)
        axes.set_ylabel("validation loss (nats per character)")
        axes.grid(alpha=0.3)
        axes.legend()
    return save_figure(figure, path)


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The runs as a Markdown table: size, speed, best validation loss; with a twin, the largest gaps to it."""
    reference = any("reference_max_val_loss_gap" in row for row in rows)
    cells = []
    for row in rows:
        cell = {
            "arch": row["arch"],
            "dtype": row.get("dtype", "float32"),
            "parameters": f"{row['parameters']:,}",
            "steps": str(row["steps"]),
            "tokens/s": f"{row['tokens_per_second']:,.0f}",
            "train s": f"{row['train_seconds']:.1f}",
            "best val loss": f"{row['best_val_loss']:.4f}",
            "best val bpc": f"{row['best_val_loss'] / math.log(2):.3f}",
        }
        if reference:
            cell["max val gap vs torch"] = f"{row['reference_max_val_loss_gap']:.2e}"
            cell["max rel. train-loss gap"] = f"{row['reference_max_relative_deviation']:.2e}"
        cells.append(cell)
    return format_table(cells, markdown=True)
