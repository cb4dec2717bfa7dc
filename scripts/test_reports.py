"""The report scripts: benchmark JSON to a Markdown table and a picture; the GPU check's summary."""

from __future__ import annotations

import json
from pathlib import Path

import bench_report
import gpu_check_summary
import pytest


def comparison(name: str, scratch: float, torch: float) -> dict[str, object]:
    return {
        "name": name,
        "scratch_ms": scratch,
        "torch_ms": torch,
        "ratio": scratch / torch,
        "scratch_peak_bytes": 3 * 2**20,
        "torch_peak_bytes": 2**20,
    }


ENVIRONMENT = {"device": "cpu", "platform": "Linux-test", "threads": 2, "torch": "2.13.0+cpu"}


def write_benchmarks(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    mlp = {"results": [comparison("adam", 1.0, 2.0)], "environment": ENVIRONMENT}
    layer = {"batch": 8, "in_channels": 1, "out_channels": 8, "size": 28, "kernel": 3}
    cnn = {
        "results": {
            "step": comparison("lenet", 3.0, 2.0),
            "layers": [{**layer, "loop_ms": 90, "im2col_ms": 2, "speedup": 45}],
        },
        "environment": ENVIRONMENT,
    }
    (folder / "scratch-mlp.json").write_text(json.dumps(mlp))
    (folder / "scratch-cnn.json").write_text(json.dumps(cnn))


def test_bench_report_writes_the_table_and_the_picture(tmp_path: Path) -> None:
    write_benchmarks(tmp_path / "bench")
    assert bench_report.main([str(tmp_path / "bench"), str(tmp_path / "assets")]) == 0
    table = (tmp_path / "assets" / "benchmarks.md").read_text(encoding="utf-8")
    assert "| mlp | adam | 1.00 | 2.00 | **0.50** | 3.0 | 1.0 |" in table
    assert "| cnn | lenet | 3.00 | 2.00 | **1.50** |" in table
    assert "loop 90.0 ms, im2col 2.00 ms, **45× faster**" in table
    assert "2 threads, torch 2.13.0+cpu" in table
    assert (tmp_path / "assets" / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_report_without_results_fails(tmp_path: Path) -> None:
    assert bench_report.main([str(tmp_path), str(tmp_path / "assets")]) == 1


def test_gpu_check_summary_fails_on_a_failed_test_or_a_missing_result(tmp_path: Path) -> None:
    for package in gpu_check_summary.PACKAGES:
        failures = 1 if package == "rnn" else 0
        (tmp_path / f"tests-{package}.xml").write_text(
            f'<testsuites><testsuite tests="10" failures="{failures}" errors="0" skipped="0" time="1.5"/></testsuites>'
        )
    for package in gpu_check_summary.HEADLINE:
        (tmp_path / f"train-{package}").mkdir()
        metrics = {"test_accuracy": 0.9, "val_loss": 2.0, "test_cer": 0.5, "epochs": 1, "train_seconds": 1.0}
        (tmp_path / f"train-{package}" / "metrics.json").write_text(json.dumps(metrics))
    for package in gpu_check_summary.HEADLINE:
        record = {"results": [comparison("step", 2.0, 1.0)], "environment": ENVIRONMENT}
        (tmp_path / f"bench-{package}.json").write_text(json.dumps(record))
    assert gpu_check_summary.main([str(tmp_path), "cuda"]) == 1
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| rnn | 9 | 1 | 0 | 0 | 2 |" in summary
    assert summary.endswith("result: FAIL\n")
    (tmp_path / "tests-rnn.xml").write_text("<testsuites/>")  # pytest stopped before writing a suite
    assert gpu_check_summary.main([str(tmp_path), "cuda"]) == 1
    assert "| rnn | no result |" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    (tmp_path / "tests-rnn.xml").write_text('<testsuites><testsuite tests="10" failures="0" errors="0"/></testsuites>')
    assert gpu_check_summary.main([str(tmp_path), "cuda"]) == 0


def test_demo_report_prints_one_table_of_every_task(tmp_path: Path) -> None:
    import demo_report

    tasks = {
        "mlp": {"clusters": {"test_accuracy": 0.995, "epochs": 20, "train_seconds": 0.3}},
        "rnn": {"shakespeare": {"val_loss": 1.9, "steps": 300, "train_seconds": 120.0}},
        "transformer": {"eng-fra": {"test_cer": 0.64, "steps": 392, "train_seconds": 120.0}},
    }
    for package, runs in tasks.items():
        for task, metrics in runs.items():
            (tmp_path / f"scratch-{package}" / task).mkdir(parents=True)
            (tmp_path / f"scratch-{package}" / task / "metrics.json").write_text(json.dumps(metrics))
    assert demo_report.main([str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| mlp | clusters | test accuracy 99.50% | 20 epochs | 0.3 |" in summary
    assert "| rnn | shakespeare | validation 1.900 nats/char | 300 steps |" in summary
    assert "| transformer | eng-fra | test CER 0.640 | 392 steps |" in summary
    assert demo_report.main([str(tmp_path / "nothing")]) == 1


def test_gpu_check_summary_covers_only_the_phases_that_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for package in gpu_check_summary.PACKAGES:
        (tmp_path / f"tests-{package}.xml").write_text('<testsuites><testsuite tests="3" failures="0"/></testsuites>')
    (tmp_path / "environment.json").write_text('{"torch": "2.11.0+cu130", "cuda_device": "NVIDIA H200"}')
    monkeypatch.setenv("GPU_CHECK_PHASES", " tests ")
    assert gpu_check_summary.main([str(tmp_path), "cuda"]) == 0
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# GPU check: NVIDIA H200, torch 2.11.0+cu130")  # named without a benchmark's record
    assert "Parity tests on cuda" in summary
    assert "Benchmarks" not in summary
