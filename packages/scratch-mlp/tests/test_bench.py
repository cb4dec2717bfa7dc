"""The benchmark runs and reports a ratio (no timing assertions: machines differ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from scratch_engine import CrossEntropyLoss, skip_data_gradient
from scratch_engine.tools.testing import assert_close
from scratch_mlp.bench import BenchConfig, main, run, scratch_copy


def test_tiny_bench_reports_a_ratio_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    argv = "--sizes 20 16 8 4 --batch-size 8 --warmup 1 --repeats 2 --steps 2 --threads 1"
    assert main([*argv.split(), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "scratch/torch" in out
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["config"]["sizes"] == [20, 16, 8, 4]
    results = record["results"]
    assert [r["name"] for r in results["steps"]] == ["adam", "sgd", "small 2-32-32-4, sgd"]
    # 20-16-8-4, batch 8: forward and weight gradients 2·8·(20·16 + 16·8 + 8·4) each, g W past the first layer
    products = [20 * 16, 16 * 8, 8 * 4]
    want = 2 * 8 * (2 * sum(products) + sum(products[1:]))
    assert results["steps"][0]["gflop"] * 1e9 == pytest.approx(want)
    assert "MFLOP a step" in out
    assert "of the peak" in out
    assert results["matmul_peak_gflops"] > 0
    overhead = results["fit_overhead"]
    assert overhead["steps"] == 32
    assert overhead["fit_over_bare"] == pytest.approx(overhead["fit_ms"] / overhead["bare_ms"])
    assert "fit / bare" in out
    for result in results["steps"]:
        assert result["ratio"] > 0
        assert result["ratio"] == pytest.approx(result["scratch_ms"] / result["torch_ms"])
        assert len(result["scratch_ms_all"]) == len(result["torch_ms_all"]) == 2
        assert result["scratch_peak_bytes"] > 0
        assert result["torch_peak_bytes"] > 0
        assert result["first_loss_difference"] < 1e-4
    assert record["environment"]["threads"] == 1


def test_memory_counts_at_least_the_weights() -> None:
    torch.set_num_threads(1)
    config = BenchConfig(sizes=(64, 32, 10), batch_size=4, optimizers=("sgd",), warmup=0, repeats=1, steps=1)
    result = run(config)["steps"][0]
    weights_and_grads = 2 * 4 * (64 * 32 + 32 + 32 * 10 + 10)  # float32
    assert result.scratch_peak_bytes >= weights_and_grads
    assert result.torch_peak_bytes >= weights_and_grads


def test_skipping_the_input_gradient_changes_no_parameter_gradient() -> None:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x, y = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 3, (7,))
    grads = []
    for input_grad in (True, False):
        model = scratch_copy(reference)
        if not input_grad:
            skip_data_gradient(model)  # what Engine and the benchmark's step do
        loss = CrossEntropyLoss()
        loss(model(x), y)
        returned = model.backward(loss.backward())
        assert (returned is None) == (not input_grad)
        grads.append([p.grad.clone() for p in model.parameters()])
    for with_input_grad, without in zip(*grads, strict=True):
        assert_close(without, with_input_grad, name="parameter gradient")
