"""What attention costs: the counted FLOPs cross at T = 6d, and the command measures and draws them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratch_transformer.attention_cost import layer_flops, measure
from scratch_transformer.cli import main


def test_attention_overtakes_the_rest_of_the_layer_at_six_times_the_width() -> None:
    d = 128
    at = layer_flops(6 * d, d)
    assert at["attention"] == pytest.approx(at["projections"] + at["feed-forward"])
    below, above = layer_flops(6 * d - 64, d), layer_flops(6 * d + 64, d)
    assert below["attention"] < below["projections"] + below["feed-forward"]
    assert above["attention"] > above["projections"] + above["feed-forward"]
    # doubling T doubles the linear parts and quadruples attention
    assert layer_flops(256, d)["attention"] == 4 * layer_flops(128, d)["attention"]
    assert layer_flops(256, d)["feed-forward"] == 2 * layer_flops(128, d)["feed-forward"]


def test_measure_times_the_layer_and_its_core_and_sizes_the_weights() -> None:
    timings = measure([16, 32], d_model=32, heads=4, repeats=1)
    assert [t.length for t in timings] == [16, 32]
    assert all(t.layer_ms > 0 and t.attention_ms > 0 for t in timings)
    assert timings[1].weights_mib == pytest.approx(4 * 32 * 32 * 4 / 2**20)


def test_the_command_writes_the_picture_and_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["attention-cost", "--d-model", "32", "--heads", "4", "--max-length", "64", "--out", str(tmp_path)]) == 0
    )
    assert (tmp_path / "attention_cost.png").stat().st_size > 10_000
    record = json.loads((tmp_path / "attention_cost.json").read_text())
    assert [row["length"] for row in record["lengths"]] == [32, 64]
    assert "of the counted FLOPs" in capsys.readouterr().out


def test_a_width_the_heads_do_not_divide_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attention-cost", "--d-model", "30", "--heads", "4", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scratch-transformer: error: --d-model 30 is not divisible by --heads 4"]
