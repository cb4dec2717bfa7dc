"""One summary table of every demo: ``python scripts/demo_report.py runs`` (what `nox -s demo` runs last).

Each package's ``demo`` leaves ``runs/scratch-<package>/<task>/metrics.json``; this prints the
headline metric of each task in one table and writes it to ``runs/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("mlp", "cnn", "rnn", "transformer")


def headline(metrics: dict[str, Any]) -> str:
    """The number a task is judged by, with its name."""
    if "test_accuracy" in metrics:
        return f"test accuracy {metrics['test_accuracy']:.2%}"
    if "test_mse" in metrics:
        return f"test MSE {metrics['test_mse']:.4f}"
    if "test_cer" in metrics:
        return f"test CER {metrics['test_cer']:.3f}"
    if "val_loss" in metrics:
        return f"validation {metrics['val_loss']:.3f} nats/char"
    return "?"


def rows(runs: Path) -> list[dict[str, str]]:
    found = []
    for package in PACKAGES:
        for path in sorted((runs / f"scratch-{package}").glob("*/metrics.json")):
            metrics = json.loads(path.read_text(encoding="utf-8"))
            by_steps = "steps" in metrics and metrics.get("config", {}).get("max_steps") is not None
            amount = f"{metrics['steps']} steps" if by_steps else f"{metrics.get('epochs', '?')} epochs"
            found.append(
                {
                    "package": package,
                    "task": path.parent.name,
                    "result": headline(metrics),
                    "budget": amount,
                    "train s": f"{metrics.get('train_seconds', 0.0):.1f}",
                    "output": str(path.parent),
                }
            )
    return found


def table(found: list[dict[str, str]]) -> str:
    header = list(found[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row[key] for key in header) + " |" for row in found]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo_report.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs",
        metavar="RUNS",
        type=Path,
        help="the demos' output: RUNS/scratch-<package>/<task>/metrics.json; the table goes to RUNS/summary.md",
    )
    args = parser.parse_args(argv)
    runs = args.runs
    found = rows(runs)
    if not found:
        print(f"no demo results under {runs}/scratch-*/", file=sys.stderr)
        return 1
    text = table(found)
    (runs / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
