"""The benchmark runs and reports a ratio and a loop/im2col table (no timing assertions: machines differ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratch_cnn.bench import main, scratch_copy, torch_model
from scratch_engine import CrossEntropyLoss


def test_tiny_bench_reports_a_ratio_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    argv = "--batch-size 4 --warmup 1 --repeats 2 --steps 1 --threads 1 --layers 2,1,4,8,3 2,3,4,6,5 --layer-repeats 1"
    assert main([*argv.split(), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "scratch/torch" in out
    assert "speed-up" in out
    record = json.loads(path.read_text(encoding="utf-8"))
    step = record["results"]["step"]
    assert step["ratio"] > 0
    assert step["ratio"] == pytest.approx(step["scratch_ms"] / step["torch_ms"])
    assert step["autograd_ratio"] == pytest.approx(step["scratch_ms"] / step["autograd_ms"])  # the yardstick
    assert len(step["scratch_ms_all"]) == len(step["torch_ms_all"]) == 2
    assert step["scratch_peak_bytes"] > 4 * 421_642  # at least the weights
    assert step["torch_peak_bytes"] > 4 * 421_642
    assert step["first_loss_difference"] < 1e-4
    assert [layer["kernel"] for layer in record["results"]["layers"]] == [3, 5]
    for layer in record["results"]["layers"]:
        assert layer["speedup"] == pytest.approx(layer["loop_ms"] / layer["im2col_ms"])
    assert record["environment"]["threads"] == 1


def test_the_scratch_copy_computes_what_torch_computes() -> None:
    reference = torch_model(seed=0).double().eval()
    mine = scratch_copy(reference).eval()
    x, y = torch.randn(3, 1, 28, 28, dtype=torch.float64), torch.tensor([0, 4, 9])
    loss = CrossEntropyLoss()
    with torch.no_grad():
        assert abs(loss(mine(x), y).item() - torch.nn.functional.cross_entropy(reference(x), y).item()) < 1e-10
    assert mine.num_parameters() == sum(p.numel() for p in reference.parameters()) == 421_642
