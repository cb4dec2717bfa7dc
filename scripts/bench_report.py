"""Turn the four benchmarks' JSON into ``assets/benchmarks.md`` and ``assets/benchmarks.png``.

    python scripts/bench_report.py runs/bench assets       # what `nox -s bench` runs last

Each ``python -m scratch_<package>.bench --json`` file holds its config, its results (every
comparison has ``name``, ``scratch_ms``, ``torch_ms``, ``ratio`` and both peak memories, timed
alternately in one process) and the environment it ran in. The table lists every comparison
with the machine, threads and torch version beside it; the picture shows the time ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MIB = 2**20
PACKAGES = ("mlp", "cnn", "rnn", "transformer")


def comparisons(value: Any) -> Iterator[dict[str, Any]]:
    """Every ``{"name", "ratio", ...}`` record inside a benchmark's JSON results."""
    if isinstance(value, dict):
        if "ratio" in value and "name" in value:
            yield value
        for item in value.values():
            yield from comparisons(item)
    elif isinstance(value, list):
        for item in value:
            yield from comparisons(item)


def load(bench_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(package, record)`` for each ``scratch-<package>.json`` found."""
    found = []
    for package in PACKAGES:
        path = bench_dir / f"scratch-{package}.json"
        if path.is_file():
            found.append((package, json.loads(path.read_text(encoding="utf-8"))))
    return found


def extras(package: str, results: Any) -> list[str]:
    """The benchmarks' other figures: the engine's loop and the matmul peak (MLP), loop vs im2col (CNN), KV-cache
    decoding (Transformer)."""
    lines = []
    if package == "mlp" and isinstance(results, dict) and "fit_overhead" in results:
        overhead, peak = results["fit_overhead"], results["matmul_peak_gflops"]
        lines.append(
            f"- MLP, the small model, an epoch of {overhead['steps']} steps through `Engine.fit`: "
            f"{overhead['fit_ms']:.2f} ms, the bare step loop {overhead['bare_ms']:.2f} ms: "
            f"**{overhead['fit_over_bare']:.2f}×**"
        )
        lines.append(
            f"- Matmul peak: this machine's measured float32 1024×1024 product rate, {peak:.0f} GFLOP/s (the MLP "
            "bench's); a step's share of it is its matrix products (counted by `tools.benchmark.step_gflop`) over "
            "its time"
        )
    if package == "cnn" and isinstance(results, dict):
        for layer in results.get("layers", []):
            lines.append(
                f"- CNN `Conv2D` forward+backward, batch {layer['batch']}, {layer['in_channels']}→"
                f"{layer['out_channels']} channels, {layer['size']}×{layer['size']}, {layer['kernel']}×"
                f"{layer['kernel']}: loop {layer['loop_ms']:.1f} ms, im2col {layer['im2col_ms']:.2f} ms, "
                f"**{layer['speedup']:.0f}× faster**"
            )
    if package == "transformer" and isinstance(results, dict) and "gpt_sampling" in results:
        sampling = results["gpt_sampling"]
        lines.append(
            f"- GPT batch-1 greedy sampling of 256 characters with the KV cache: "
            f"{sampling['cached_seconds'] * 1e3:,.0f} ms, the torch.nn twin's own cached decoder "
            f"{sampling['torch_cached_seconds'] * 1e3:,.0f} ms: "
            f"**{sampling['versus_torch']:.2f}×** (same tokens: {sampling['same_tokens']})"
        )
    if package == "transformer" and isinstance(results, dict) and "decoding" in results:
        decoding = results["decoding"]
        lines.append(
            f"- Transformer greedy decoding: {decoding['cached_tokens_per_s']:,.0f} tokens/s with the KV cache, "
            f"{decoding['uncached_tokens_per_s']:,.0f} without: speed-up **{decoding['speedup']:.2f}×**"
        )
    return lines


def markdown(records: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "# Benchmarks: scratch vs torch.nn",
        "",
        "One training step of each package's default model against the same model in torch.nn with",
        "autograd and torch.optim, and against the yardstick a user would otherwise write (the same scratch",
        "forward, its gradients by torch.autograd), alternating in one process; medians. Written by",
        "`nox -s bench` (`scripts/bench_report.py`); each package's README describes its case.",
        "",
        "| package | operation | scratch ms | torch.nn ms | scratch / torch | peak MiB scratch | peak MiB torch "
        "| autograd ms | scratch / autograd | share of the matmul peak, scratch / torch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes: list[str] = []
    machines = set()
    peak = next((r["results"].get("matmul_peak_gflops") for p, r in records if p == "mlp"), None)
    for package, record in records:
        for row in comparisons(record["results"]):
            memory = f"{row['scratch_peak_bytes'] / MIB:.1f} | {row['torch_peak_bytes'] / MIB:.1f}"
            yardstick = (
                f"{row['autograd_ms']:.2f} | **{row['autograd_ratio']:.2f}**" if row.get("autograd_ms") else "— | —"
            )
            share = "—"
            if peak and row.get("gflop"):  # GFLOP a step / (ms a step / 1e3) = GFLOP/s
                rates = [row["gflop"] * 1e3 / row[side] / peak for side in ("scratch_ms", "torch_ms")]
                share = " / ".join(f"{rate:.1%}" if rate < 0.1 else f"{rate:.0%}" for rate in rates)
            lines.append(
                f"| {package} | {row['name']} | {row['scratch_ms']:.2f} | {row['torch_ms']:.2f} | "
                f"**{row['ratio']:.2f}** | {memory} | {yardstick} | {share} |"
            )
        notes += extras(package, record["results"])
        env = record.get("environment", {})
        device = env.get("cuda_device") or env.get("device", "cpu")
        machines.add(
            f"{device} on {env.get('platform', '?')}, {env.get('threads', '?')} threads, torch {env.get('torch')}"
        )
    lines += ["", *notes, "", "Measured on: " + "; ".join(sorted(machines)) + "."]
    return "\n".join(lines) + "\n"


def plot(records: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"{package}: {row['name']}", row["ratio"])
        for package, record in records
        for row in comparisons(record["results"])
    ]
    figure, axes = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.4))
    names, ratios = zip(*rows, strict=True) if rows else ((), ())
    axes.barh(range(len(rows)), ratios, color=["tab:green" if r <= 1.0 else "tab:orange" for r in ratios])
    axes.set_yticks(range(len(rows)), names)
    axes.invert_yaxis()
    axes.axvline(1.0, color="black", linewidth=1.0)
    axes.set_xlim(0.0, 1.15 * max([1.0, *ratios]))  # room for the labels beside the longest bar
    axes.set_xlabel("training-step time, scratch / torch.nn (lower is faster; 1 = the same)")
    for i, ratio in enumerate(ratios):
        axes.text(ratio, i, f" {ratio:.2f}", va="center")
    axes.set_title("scratch vs torch.nn + autograd, same model, same batch")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_report.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "bench_dir", metavar="BENCH_DIR", type=Path, help="the benchmarks' JSON: scratch-<package>.json (runs/bench)"
    )
    parser.add_argument(
        "assets", metavar="ASSETS", type=Path, help="where benchmarks.md and benchmarks.png are written (assets)"
    )
    args = parser.parse_args(argv)
    bench_dir, assets = args.bench_dir, args.assets
    records = load(bench_dir)
    if not records:
        print(f"no scratch-*.json benchmark results in {bench_dir}", file=sys.stderr)
        return 1
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "benchmarks.md").write_text(markdown(records), encoding="utf-8")
    plot(records, assets / "benchmarks.png")
    print((assets / "benchmarks.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
