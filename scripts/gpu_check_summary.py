"""The one summary of scripts/gpu_check.sh: parity tests, training runs and benchmark ratios.

    python scripts/gpu_check_summary.py OUT DEVICE

Reads what the script left in OUT (pytest's JUnit XML, each run's metrics.json, each
benchmark's JSON), prints a Markdown summary, writes it to OUT/summary.md, and exits 1 when
a test failed or a run or benchmark left no result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from bench_report import comparisons  # scripts/ is on sys.path when this runs as a script

PACKAGES = ("engine", "mlp", "cnn", "rnn", "transformer")
HEADLINE = {  # the metric that says whether a short run learned
    "mlp": ("test_accuracy", "{:.2%}"),
    "cnn": ("test_accuracy", "{:.2%}"),
    "rnn": ("val_loss", "{:.3f} nats/char"),
    "transformer": ("test_cer", "CER {:.3f}"),
}


def tests(out: Path) -> tuple[list[str], bool]:
    lines, ok = ["| package | passed | failed | errors | skipped | seconds |", "|---|---|---|---|---|---|"], True
    for package in PACKAGES:
        path = out / f"tests-{package}.xml"
        suites = ET.parse(path).getroot() if path.is_file() else None
        suite = suites if suites is None or suites.tag == "testsuite" else suites.find("testsuite")
        if suite is None:  # no file, or pytest died before writing a suite
            lines.append(f"| {package} | no result | | | | |")
            ok = False
            continue
        total, failed, errors, skipped = (int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped"))
        ok = ok and failed == 0 and errors == 0
        seconds = float(suite.get("time", 0.0))
        passed = total - failed - errors - skipped
        lines.append(f"| {package} | {passed} | {failed} | {errors} | {skipped} | {seconds:.0f} |")
    return lines, ok


def runs(out: Path) -> tuple[list[str], bool]:
    lines, ok = ["| package | result | steps/epochs | train s | dtype |", "|---|---|---|---|---|"], True
    for package, (key, fmt) in HEADLINE.items():
        path = out / f"train-{package}" / "metrics.json"
        if not path.is_file():  # the image tasks write into a subfolder per task
            path = next(iter(sorted((out / f"train-{package}").glob("*/metrics.json"))), path)
        if not path.is_file():
            lines.append(f"| {package} | no metrics.json (see train-{package}.log) | | | |")
            ok = False
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        amount = f"{metrics['steps']} steps" if "steps" in metrics else f"{metrics.get('epochs')} epochs"
        dtype = metrics.get("config", {}).get("dtype") or metrics.get("dtype", "")
        seconds = metrics["train_seconds"]
        lines.append(f"| {package} | {fmt.format(metrics[key])} | {amount} | {seconds:.1f} | {dtype} |")
    return lines, ok


def benchmarks(out: Path) -> tuple[list[str], bool]:
    lines = ["| package | case | scratch ms | torch ms | scratch/torch |", "|---|---|---|---|---|"]
    ok = True
    for package in HEADLINE:
        path = out / f"bench-{package}.json"
        if not path.is_file():
            lines.append(f"| {package} | no result (see bench-{package}.log) | | | |")
            ok = False
            continue
        for row in comparisons(json.loads(path.read_text(encoding="utf-8"))["results"]):
            if "scratch_ms" in row and "torch_ms" in row:
                scratch, torch_ms = f"{row['scratch_ms']:.3f}", f"{row['torch_ms']:.3f}"
            else:
                scratch = torch_ms = ""
            lines.append(f"| {package} | {row['name']} | {scratch} | {torch_ms} | {row['ratio']:.2f} |")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpu_check_summary.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "out", metavar="OUT", type=Path, help="the folder gpu_check.sh wrote into (GPU_CHECK_OUT, runs/gpu-check)"
    )
    parser.add_argument("device", metavar="DEVICE", help="the device the checks ran on, as named in the titles (cuda)")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"OUT {str(args.out)!r} is not a folder")
    out, device = args.out, args.device
    environment = {}  # gpu_check.sh's own record, else the first benchmark's
    for path in [out / "environment.json", *sorted(out.glob("bench-*.json"))]:
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            environment = record.get("environment", record)
            break
    machine = environment.get("cuda_device") or environment.get("platform", "?")
    phases = os.environ.get("GPU_CHECK_PHASES", "tests train bench").split()  # what gpu_check.sh ran
    sections = [
        (f"Parity tests on {device}", tests(out) if "tests" in phases else None),
        (f"Short training runs on {device}", runs(out) if "train" in phases else None),
        (f"Benchmarks on {device} (medians, same process)", benchmarks(out) if "bench" in phases else None),
    ]
    text = [f"# GPU check: {machine}, torch {environment.get('torch', '?')}", ""]
    ok = True
    for title, section in sections:
        if section is None:
            continue
        lines, passed = section
        text += [f"## {title}", "", *lines, ""]
        ok = ok and passed
    text.append("result: " + ("PASS" if ok else "FAIL"))
    summary = "\n".join(text)
    (out / "summary.md").write_text(summary + "\n", encoding="utf-8")
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
