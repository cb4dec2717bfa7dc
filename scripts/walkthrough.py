"""A new user's first minutes with one distribution, as checks: run it in a fresh venv holding only
that package's wheel and the engine's wheel (`nox -s "walkthrough(mlp)"`; every `tests(<package>)`
session also ends with it).

    python scripts/walkthrough.py PACKAGE [--out DIR]

1. The command line is there: ``<cli> --version``, ``<cli> --help`` and the ``--help`` of every
   subcommand and every ``train`` task exit 0 and describe themselves (a usage line and a description).
2. A short training run writes ``metrics.json``, its PNG plots and ``checkpoint.pt`` (the data from
   ``SCRATCH_DATA_DIR``; the MLP's clusters need none), and ``--resume`` of the finished run succeeds.
3. A wrong data path fails with exit status 1 and one line on stderr that says where the data was
   looked for and how to get it, without a traceback.
4. ``<cli> demo`` without its data (and downloads off) trains what it can, prints one hint per skipped
   task and a last line naming them, and exits 1; ``python -m scratch_engine.tools.datasets list`` says
   where each data set is found, and its ``fetch`` into an empty cache either downloads and verifies the
   set (online) or exits 1 naming it, with no traceback and no partial file (offline, as in CI).

Every command and what it printed goes into ``DIR/<package>.md`` (default ``runs/walkthrough``);
the exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# a short run of each package: a few seconds on a laptop's CPU
SHORT_RUNS = {
    "mlp": ["train", "clusters"],
    "cnn": ["train", "mnist", "--epochs", "1", "--train-samples", "1000", "--test-samples", "500"],
    "rnn": ["train", "shakespeare", "--arch", "lstm", "--hidden", "32", "--max-steps", "20", "--eval-every", "10"],
    "transformer": [
        *("train", "eng-fra", "--max-steps", "20", "--test-limit", "10", "--max-src-len", "12"),
        *("--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32"),
    ],
}
NEEDS_DATA = {  # a task that reads a data set
    "mlp": ["train", "mnist"],
    "cnn": ["train", "mnist"],
    "rnn": ["train", "shakespeare"],
    "transformer": ["train", "eng-fra"],
}
HOW_TO_GET = re.compile(r"SCRATCH_DATA_DIR|fetch|download", re.IGNORECASE)
DATASETS_TOOL = (sys.executable, "-m", "scratch_engine.tools.datasets")  # the engine's data set command line


@dataclass
class Walkthrough:
    cli: str
    log: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(
        self,
        *args: str,
        timeout: float = 600.0,
        env: dict[str, str] | None = None,
        program: tuple[str, ...] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``<cli> args...`` (or ``program args...``), logged with its first output lines and exit status."""
        command = [*(program or (self.cli,)), *args]
        environment = {**os.environ, **(env or {})}
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
        shown = "\n".join((result.stdout + result.stderr).strip().splitlines()[:12])
        self.log += [f"$ {' '.join(command)}", shown, f"(exit status {result.returncode})", ""]
        return result

    def check(self, ok: bool, what: str) -> None:
        self.log.append(("ok: " if ok else "FAILED: ") + what)
        if not ok:
            self.failures.append(what)


def subcommands(help_text: str) -> list[str]:
    """The choices of the first ``{a,b,c}`` in a usage text."""
    found = re.search(r"\{([a-z0-9,-]+)\}", help_text)
    return found.group(1).split(",") if found else []


def described(help_text: str) -> bool:
    """A usage line, then a description paragraph before the argument lists."""
    paragraphs = [p.strip() for p in help_text.strip().split("\n\n")]
    return (
        len(paragraphs) >= 2
        and paragraphs[0].startswith("usage:")
        and not paragraphs[1].startswith(("positional arguments", "options"))
    )


def check_help(walk: Walkthrough, *prefix: str) -> list[str]:
    result = walk.run(*prefix, "--help")
    name = " ".join([walk.cli, *prefix])
    walk.check(result.returncode == 0 and described(result.stdout), f"`{name} --help` describes it")
    return subcommands(result.stdout.split("\n\n")[0])


def walk_through(package: str, out: Path, data_dir: str | None) -> Walkthrough:
    walk = Walkthrough(f"scratch-{package}")
    if shutil.which(walk.cli) is None:
        walk.check(False, f"`{walk.cli}` is on PATH after installing the wheel")
        return walk
    version = walk.run("--version")
    walk.check(version.returncode == 0 and bool(re.search(r"\d+\.\d+\.\d+", version.stdout)), "`--version` works")

    commands = check_help(walk)
    walk.check(bool(commands) and "train" in commands, f"`{walk.cli} --help` lists its subcommands")
    for command in commands:
        tasks = check_help(walk, command)
        if command == "train":
            for task in tasks:
                check_help(walk, command, task)

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        result = walk.run(*SHORT_RUNS[package], "--out", str(run_dir), "--quiet")
        walk.check(result.returncode == 0, "a short training run succeeds")
        metrics = run_dir / "metrics.json"
        walk.check(metrics.is_file() and bool(json.loads(metrics.read_text())), "it writes metrics.json")
        plots = sorted(p.name for p in run_dir.glob("*.png"))
        walk.check(bool(plots), f"it writes its plots ({', '.join(plots) or 'none'})")
        walk.check((run_dir / "checkpoint.pt").is_file(), "it writes checkpoint.pt")
        points = json.loads(metrics.read_text()).get("loss_curve_points", 0) if metrics.is_file() else 0
        walk.check(points > 1, f"its loss.png draws a curve, not a point ({points} points)")
        result = walk.run(*SHORT_RUNS[package], "--out", str(run_dir), "--quiet", "--resume")
        walk.check(result.returncode == 0, "`--resume` of the finished run succeeds")

        nowhere = Path(scratch) / "no-such-data"
        result = walk.run(*NEEDS_DATA[package], "--data-dir", str(nowhere), "--no-download", "--out", str(run_dir))
        error = result.stderr.strip()
        walk.check(result.returncode == 1, "a wrong data path exits with status 1")
        walk.check(len(error.splitlines()) == 1 and "Traceback" not in result.stderr, "... with a one-line error")
        walk.check(str(nowhere) in error, "... that says where the data was looked for")
        walk.check(bool(HOW_TO_GET.search(error)), "... and how to get it")

        empty = {"SCRATCH_DATA_DIR": str(nowhere), "SCRATCH_CACHE_DIR": str(Path(scratch) / "cache")}
        result = walk.run(
            "demo", "--out", str(Path(scratch) / "demo"), "--quiet", env=empty | {"SCRATCH_DOWNLOAD": "0"}
        )
        lines = result.stderr.strip().splitlines()
        skipped = [line for line in lines if ": skipped: " in line]
        walk.check(result.returncode == 1, "`demo` without its data exits with status 1")
        named = lines[-1].split("incomplete: ", 1)[-1].split(" skipped")[0].split(", ") if lines else []
        hints = len(skipped) == len(named) and all(HOW_TO_GET.search(line) for line in skipped)
        walk.check(bool(skipped) and hints, "... with one hint for each skipped task")
        walk.check(bool(lines) and "incomplete" in lines[-1], "... and a last line naming what it skipped")
        listing = walk.run("list", program=DATASETS_TOOL)
        walk.check(listing.returncode == 0 and "mnist" in listing.stdout, "`datasets list` says where each data set is")

        # Fetching into an empty cache: online, the data set is downloaded, verified and named; offline (CI),
        # every mirror fails and the command says so in a few lines, exit status 1, without a traceback.
        cache = Path(scratch) / "fetch-cache"
        fetched = walk.run(
            "fetch",
            "tinyshakespeare",
            program=DATASETS_TOOL,
            env={
                "SCRATCH_DATA_DIR": "",  # not the data CI points at: the cache alone, empty
                "SCRATCH_CACHE_DIR": str(cache),
                "SCRATCH_DOWNLOAD": "1",
                "SCRATCH_DOWNLOAD_TIMEOUT": "60",
            },
        )
        if fetched.returncode == 0:
            kept = list((cache / "tinyshakespeare").glob("*.txt"))
            walk.check(bool(kept) and str(cache) in fetched.stdout, "`datasets fetch` downloads, verifies and names it")
        else:
            errors = fetched.stderr.strip().splitlines()
            walk.check(
                fetched.returncode == 1 and "Traceback" not in fetched.stderr and bool(errors),
                "`datasets fetch` offline exits with status 1 and no traceback",
            )
            walk.check(
                bool(errors) and errors[-1] == "error: not fetched: tinyshakespeare", "... naming what it could not get"
            )
            walk.check(not list(cache.rglob("*.part")), "... and leaves no partial file behind")

    out.mkdir(parents=True, exist_ok=True)
    verdict = "every check passed" if not walk.failures else f"{len(walk.failures)} checks FAILED"
    body = "\n".join(walk.log)
    report = f"# Walkthrough: {walk.cli} ({verdict})\n\nData: {data_dir or 'not set'}\n\n```text\n{body}\n```\n"
    (out / f"{package}.md").write_text(report, encoding="utf-8")
    return walk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", choices=sorted(SHORT_RUNS))
    parser.add_argument("--out", type=Path, default=Path("runs") / "walkthrough")
    args = parser.parse_args(argv)
    walk = walk_through(args.package, args.out, os.environ.get("SCRATCH_DATA_DIR"))
    for line in walk.log:
        if line.startswith(("ok: ", "FAILED: ")):
            print(line)
    print(f"walkthrough of {walk.cli}: " + ("PASS" if not walk.failures else f"FAIL ({len(walk.failures)})"))
    return 0 if not walk.failures else 1


if __name__ == "__main__":
    sys.exit(main())
