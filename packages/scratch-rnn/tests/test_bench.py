"""The benchmark runs and reports a ratio (no timing assertions: machines differ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratch_rnn.bench import main


def test_tiny_bench_reports_a_ratio_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    argv = "--hidden 16 --layers 2 --batch-size 4 --seq-len 5 --warmup 1 --repeats 2 --steps 1 --threads 1"
    assert main([*argv.split(), "--json", str(path)]) == 0
    assert "scratch/torch" in capsys.readouterr().out
    record = json.loads(path.read_text(encoding="utf-8"))
    assert [r["name"] for r in record["results"]] == ["lstm", "gru", "rnn"]
    for result in record["results"]:
        assert result["ratio"] == pytest.approx(result["scratch_ms"] / result["torch_ms"])
        assert result["autograd_ratio"] == pytest.approx(result["scratch_ms"] / result["autograd_ms"])
        assert len(result["scratch_ms_all"]) == len(result["torch_ms_all"]) == 2
        assert result["scratch_peak_bytes"] > 0
        assert result["torch_peak_bytes"] > 0
        assert result["first_loss_difference"] < 1e-5  # same weights, same batch
    assert record["environment"]["threads"] == 1
