"""One summary table of every demo: ``python scripts/demo_report.py runs`` (what `nox -s demo` runs last).

Each package's ``demo`` leaves ``runs/scratch-<package>/<task>/metrics.json``; this prints the
headline metric of each task in one table and writes it to ``runs/summary.md``.

``--check README.md`` fails (exit 1, naming the rows) when the README's demo table, between its
markers, differs from this run's in anything but the seconds (the demos' budgets are steps and
epochs, so every machine gets the same figures); ``--write README.md`` puts this run's table there.
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


def table(found: list[dict[str, str]], header: list[str] | None = None) -> str:
    header = list(found[0]) if header is None else header
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row[key] for key in header) + " |" for row in found]
    return "\n".join(lines)


BEGIN = "<!-- demo table: written by scripts/demo_report.py --write README.md -->"
END = "<!-- end of demo table -->"
README_COLUMNS = ["package", "task", "result", "budget", "train s"]
CHECKED = ("package", "task", "result", "budget")  # not the seconds: they depend on the machine


def readme_table(text: str, path: Path) -> tuple[int, int]:
    """Where the demo table lies in ``text``: the span between its markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"demo_report.py: {path} has no demo table between {BEGIN!r} and {END!r}")
    return start + len(BEGIN), end


def parse_rows(markdown: str) -> list[dict[str, str]]:
    lines = [line.strip() for line in markdown.strip().splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return []
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=False)) for line in lines[2:]
    ]


def differences(found: list[dict[str, str]], committed: list[dict[str, str]]) -> list[str]:
    """The rows of this run and of the README that differ in a checked column, as lines to print (only the
    packages whose demos ran: ``nox -s "demo(mlp)"`` checks the MLP's rows)."""
    ours = {tuple(row[key] for key in CHECKED) for row in found}
    packages = {row["package"] for row in found}
    theirs = {tuple(row.get(key, "") for key in CHECKED) for row in committed if row.get("package") in packages}
    return [f"  README only:   {' | '.join(row)}" for row in sorted(theirs - ours)] + [
        f"  this run only: {' | '.join(row)}" for row in sorted(ours - theirs)
    ]


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
    parser.add_argument("--check", type=Path, metavar="README", help="fail if README's demo table differs")
    parser.add_argument("--write", type=Path, metavar="README", help="write this run's table into README")
    args = parser.parse_args(argv)
    runs = args.runs
    found = rows(runs)
    if not found:
        print(f"no demo results under {runs}/scratch-*/", file=sys.stderr)
        return 1
    text = table(found)
    (runs / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if args.write is not None:
        readme = args.write.read_text(encoding="utf-8")
        start, end = readme_table(readme, args.write)
        new = readme[:start] + "\n" + table(found, README_COLUMNS) + "\n" + readme[end:]
        args.write.write_text(new, encoding="utf-8")
    if args.check is not None:
        readme = args.check.read_text(encoding="utf-8")
        start, end = readme_table(readme, args.check)
        if diff := differences(found, parse_rows(readme[start:end])):
            print(
                f"the demo table in {args.check} is stale; `python scripts/demo_report.py {runs} --write "
                f"{args.check}` updates it:",
                file=sys.stderr,
            )
            print("\n".join(diff), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
