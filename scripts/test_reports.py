"""The report scripts: benchmark JSON to a Markdown table and a picture; the GPU check's summary."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    mlp = {
        "results": {
            "steps": [{**comparison("adam", 1.0, 2.0), "autograd_ms": 4.0, "autograd_ratio": 0.25, "gflop": 0.1}],
            "matmul_peak_gflops": 100.0,
            "fit_overhead": {"steps": 32, "fit_ms": 11.0, "bare_ms": 10.0, "fit_over_bare": 1.1},
        },
        "environment": ENVIRONMENT,
    }
    layer = {"batch": 8, "in_channels": 1, "out_channels": 8, "size": 28, "kernel": 3}
    cnn = {
        "results": {
            "step": {**comparison("lenet", 3.0, 2.0), "gflop": 0.2},
            "layers": [{**layer, "loop_ms": 90, "im2col_ms": 2, "speedup": 45}],
        },
        "environment": ENVIRONMENT,
    }
    transformer = {
        "results": {
            "training_step": comparison("training step", 2.0, 2.0),
            "gpt_sampling": {
                "cached_seconds": 0.3,
                "torch_cached_seconds": 0.2,
                "versus_torch": 1.5,
                "same_tokens": True,
            },
        },
        "environment": ENVIRONMENT,
    }
    (folder / "scratch-transformer.json").write_text(json.dumps(transformer))
    (folder / "scratch-mlp.json").write_text(json.dumps(mlp))
    (folder / "scratch-cnn.json").write_text(json.dumps(cnn))


def test_bench_report_writes_the_table_and_the_picture(tmp_path: Path) -> None:
    write_benchmarks(tmp_path / "bench")
    assert bench_report.main([str(tmp_path / "bench"), str(tmp_path / "assets")]) == 0
    table = (tmp_path / "assets" / "benchmarks.md").read_text(encoding="utf-8")
    assert "| mlp | adam | 1.00 | 2.00 | **0.50** | 3.0 | 1.0 | 4.00 | **0.25** | 100% / 50% |" in table
    assert "| cnn | lenet | 3.00 | 2.00 | **1.50** | 3.0 | 1.0 | — | — | 67% / 100% |" in table
    assert "| transformer | training step | 2.00 | 2.00 | **1.00** | 3.0 | 1.0 | — | — | — |" in table  # no count
    assert "loop 90.0 ms, im2col 2.00 ms, **45× faster**" in table
    assert "through `Engine.fit`: 11.00 ms, the bare step loop 10.00 ms: **1.10×**" in table
    assert "measured float32 1024×1024 product rate, 100 GFLOP/s" in table
    assert "the torch.nn twin's own cached decoder 200 ms: **1.50×** (same tokens: True)" in table
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

    tasks: dict[str, dict[str, dict[str, Any]]] = {
        "mlp": {"clusters": {"test_accuracy": 0.995, "epochs": 20, "steps": 640, "train_seconds": 0.3}},
        "rnn": {"shakespeare": {"val_loss": 1.9, "steps": 300, "train_seconds": 120.0, "config": {"max_steps": 300}}},
        "transformer": {
            "eng-fra": {"test_cer": 0.64, "steps": 392, "train_seconds": 120.0, "config": {"max_steps": 900}}
        },
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


# ---- every helper script's command line: --help exits 0 with a usage text, bad arguments exit 2

SCRIPTS = Path(__file__).parent
HELPERS = {  # module: (its positional arguments in the usage line, a line of its description)
    "bench_report": ("BENCH_DIR ASSETS", "Turn the four benchmarks' JSON into"),
    "demo_report": ("[--check README] [--write README] RUNS", "One summary table of every demo"),
    "gpu_check_summary": ("OUT DEVICE", "The one summary of scripts/gpu_check.sh"),
    "walkthrough": ("{cnn,mlp,rnn,transformer}", "A new user's first minutes with one distribution"),
}


@pytest.mark.parametrize("module", sorted(HELPERS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0_and_prints_usage(module: str, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    positional, description = HELPERS[module]
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main([flag])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: "), out
    assert positional in out.splitlines()[0]
    assert description in out
    assert "positional arguments:" in out


@pytest.mark.parametrize("module", sorted(HELPERS))
def test_missing_arguments_exit_2(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ")
    assert "the following arguments are required" in err


@pytest.mark.parametrize("module", ["bench_report", "demo_report", "gpu_check_summary"])
def test_the_scripts_themselves_answer_help(module: str) -> None:
    script = SCRIPTS / f"{module}.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"usage: {module}.py [-h] {HELPERS[module][0]}\n")
    assert "no demo results" not in result.stdout
    missing = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr


def test_gpu_check_summary_needs_an_existing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        gpu_check_summary.main([str(tmp_path / "missing"), "cuda"])
    assert exit_.value.code == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def gpu_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/gpu_check.sh with a Python that cannot run and an output folder that must stay unmade."""
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out"), "PYTHON": str(tmp_path / "no-python")}
    return subprocess.run(
        ["bash", str(SCRIPTS / "gpu_check.sh"), *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_gpu_check_help_exits_0_before_doing_anything(tmp_path: Path, flag: str) -> None:
    result = gpu_check(tmp_path, flag)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: scripts/gpu_check.sh [-h] [DEVICE]\n")
    assert "DEVICE      where to run" in result.stdout
    assert "GPU_CHECK_PHASES" in result.stdout
    assert not (tmp_path / "out").exists()  # nothing installed, run or written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown DEVICE '--bogus'"),
        (["gpu"], "unknown DEVICE 'gpu'"),
        (["cuda:x"], "unknown DEVICE 'cuda:x'"),
        (["cuda", "extra"], "one DEVICE at most, got 2"),
    ],
)
def test_gpu_check_bad_arguments_exit_2_before_doing_anything(tmp_path: Path, args: list[str], message: str) -> None:
    result = gpu_check(tmp_path, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: scripts/gpu_check.sh [-h] [DEVICE]\n")
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cpu", "mps", "auto", None])
def test_gpu_check_accepts_every_device_it_can_run_on(tmp_path: Path, device: str | None) -> None:
    result = gpu_check(tmp_path, *([device] if device else []))
    assert result.returncode == 1  # past the arguments, then stopped by the missing Python
    assert "usage:" not in result.stderr
    assert (tmp_path / "out").is_dir()


def demo_run(runs: Path, cer: float) -> None:
    folder = runs / "scratch-transformer" / "eng-fra"
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"test_cer": cer, "steps": 900, "config": {"max_steps": 900}, "train_seconds": 12.3}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


def test_demo_table_check_fails_on_a_stale_readme_and_write_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import demo_report

    runs, readme = tmp_path / "runs", tmp_path / "README.md"
    demo_run(runs, 0.625)
    readme.write_text(f"intro\n{demo_report.BEGIN}\n| old |\n{demo_report.END}\nafter\n", encoding="utf-8")
    assert demo_report.main([str(runs), "--check", str(readme)]) == 1
    assert "this run only: transformer | eng-fra | test CER 0.625 | 900 steps" in capsys.readouterr().err
    assert demo_report.main([str(runs), "--write", str(readme), "--check", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n")
    assert text.endswith("after\n")
    assert "| transformer | eng-fra | test CER 0.625 | 900 steps | 12.3 |" in text
    demo_run(runs, 0.610)  # another figure: stale again; the seconds alone would not be
    assert demo_report.main([str(runs), "--check", str(readme)]) == 1
    assert "README only:   transformer | eng-fra | test CER 0.625" in capsys.readouterr().err
