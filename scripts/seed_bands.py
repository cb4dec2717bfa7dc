"""Is my number right? Each demo task's headline figure over several seeds, as a band to compare a run against.

    python scripts/seed_bands.py                      # every package's demo tasks, seeds 0 1 2 (about 15 min here)
    python scripts/seed_bands.py --only rnn --seeds 0 1 2 3 4

Runs each task's `train` command with the budget its package's `demo` uses (steps or epochs, never minutes, so
the figure does not depend on the machine's speed) once per seed, with every package's command on PATH (a venv
holding all four, e.g. from `pip install ./shared-engine ./packages/*`), and writes `assets/seed_bands.json` and
`assets/seed_bands.md`: per task the command, each seed's figure and the band (min-max). The packages' READMEs
quote these bands. The device is the default (``auto``: a GPU when there is one); the JSON records which.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))

from demo_report import headline  # noqa: E402

# (package, task, the demo's budget as flags): what `scratch-<package> demo` trains, one command per task
TASKS: list[tuple[str, str, list[str]]] = [
    ("mlp", "clusters", []),
    ("mlp", "regression", []),
    ("mlp", "mnist", ["--epochs", "5"]),
    ("cnn", "mnist", ["--epochs", "1", "--train-samples", "20000", "--eval-every", "40"]),
    ("rnn", "shakespeare", ["--max-steps", "300", "--eval-every", "100", "--max-minutes", "none"]),
    (
        "transformer",
        "eng-fra",
        ["--max-steps", "900", "--eval-every", "300", "--test-limit", "300", "--max-minutes", "none"],
    ),
    (
        "transformer",
        "shakespeare",
        [
            "--max-steps",
            "600",
            "--eval-every",
            "200",
            "--block-size",
            "64",
            "--batch-size",
            "12",
            "--max-minutes",
            "none",
        ],
    ),
]


def figure(metrics: dict[str, Any]) -> tuple[str, float]:
    """The headline metric's key and value (the same number the demo table shows)."""
    for key in ("test_accuracy", "test_mse", "test_cer", "val_loss"):
        if key in metrics:
            return key, float(metrics[key])
    raise KeyError(f"no headline metric in {sorted(metrics)}")


def measure(package: str, task: str, flags: list[str], seeds: list[int], scratch: Path) -> dict[str, Any]:
    command = [f"scratch-{package}", "train", task, *flags]
    if shutil.which(command[0]) is None:
        raise SystemExit(f"seed_bands: {command[0]} is not on PATH: install every package into this venv first")
    values: dict[int, float] = {}
    shown: dict[int, str] = {}
    key = ""
    device = "?"
    for seed in seeds:
        out = scratch / f"{package}-{task}-seed{seed}"
        start = time.perf_counter()
        subprocess.run(
            [*command, "--seed", str(seed), "--quiet", "--out", str(out)], check=True, stdout=subprocess.DEVNULL
        )
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        key, values[seed] = figure(metrics)
        shown[seed] = headline(metrics)
        environment = metrics.get("environment", {})
        where = (environment.get("device", "?"), environment.get("threads", "?"), environment.get("torch", "?"))
        device = "{}, {} threads, torch {}".format(*where)
        print(
            f"seed_bands: {package} {task} seed {seed}: {shown[seed]} ({time.perf_counter() - start:.0f} s)", flush=True
        )
    return {
        "package": package,
        "task": task,
        "command": " ".join(command) + " --seed S",
        "metric": key,
        "values": {str(seed): value for seed, value in values.items()},
        "shown": {str(seed): text for seed, text in shown.items()},
        "low": min(values.values()),
        "high": max(values.values()),
        "device": device,
    }


def band_text(row: dict[str, Any]) -> str:
    """``98.12%-98.31%`` in the unit the demo table uses."""
    if row["metric"] == "test_accuracy":
        return f"{row['low']:.2%} to {row['high']:.2%}"
    digits = 4 if row["metric"] == "test_mse" else 3
    return f"{row['low']:.{digits}f} to {row['high']:.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| package | task | command | seeds | band (min to max) | each seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        seeds = ", ".join(row["values"])
        each = "; ".join(f"{seed}: {text}" for seed, text in row["shown"].items())
        lines.append(f"| {row['package']} | {row['task']} | `{row['command']}` | {seeds} | {band_text(row)} | {each} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", choices=sorted({package for package, _, _ in TASKS}), nargs="+")
    parser.add_argument("--assets", type=Path, default=ROOT / "assets", help="where the JSON and the table go")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="seed-bands-") as scratch:
        for package, task, flags in TASKS:
            if args.only is None or package in args.only:
                rows.append(measure(package, task, flags, args.seeds, Path(scratch)))
    path = args.assets / "seed_bands.json"
    earlier = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.exists() else []
    measured = {(row["package"], row["task"]): row for row in [*earlier, *rows]}  # this run's rows replace
    order = [(package, task) for package, task, _ in TASKS]
    rows = [measured[key] for key in order if key in measured]
    record = {"machine": f"{platform.machine()}, {platform.system()}", "rows": rows}
    args.assets.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=2) + "\n")
    write_atomic(args.assets / "seed_bands.md", markdown(rows))
    print(markdown(rows))
    return 0


def write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


if __name__ == "__main__":
    sys.exit(main())
