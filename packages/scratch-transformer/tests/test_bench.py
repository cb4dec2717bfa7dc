"""The benchmark runs end to end on a tiny configuration (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratch_transformer.bench import main

TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--batch-size", "4", "--vocab", "12"]
FAST = [
    "--warmup",
    "1",
    "--repeats",
    "2",
    "--steps",
    "1",
    "--decode-batch",
    "2",
    "--decode-len",
    "6",
    "--gpt-repeats",
    "1",
]


def test_bench_smoke(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bench.json"
    assert main([*TINY, *FAST, "--threads", "1", "--decode-repeats", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "scratch/torch" in out
    assert "speed-up" in out
    record = json.loads(path.read_text())
    assert record["results"]["training_step"]["ratio"] > 0
    assert record["results"]["training_step"]["first_loss_difference"] < 1e-4  # same weights, same batch
    assert record["results"]["training_step"]["autograd_ratio"] > 0  # the autograd yardstick, timed beside them
    assert record["results"]["decoding"]["speedup"] > 0
    assert record["results"]["gpt_training_step"]["name"] == "GPT training step"  # nanoGPT's baby shape
    assert "GPT (nanoGPT's baby shape" in out
    assert record["results"]["gpt_sampling"]["same_tokens"] is True  # ours, recomputed and the torch.nn twin's cache
    assert set(record["environment"]) >= {"torch", "threads"}


def test_heads_that_do_not_divide_d_model_are_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        main(["--d-model", "10", "--heads", "3"])
    assert exit_.value.code == 2
    assert "d_model (10) must be divisible by heads (3)" in capsys.readouterr().err


def test_gpt_bench_smoke(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from scratch_transformer.gpt_bench import main as gpt_main

    path = tmp_path / "gpt.json"
    argv = "--layers 1 --heads 2 --d-model 16 --block-size 8 --batch-size 2 --warmup 0 --repeats 1 --steps 1"
    argv += " --sample-length 6 --sample-repeats 1 --threads 1"
    assert gpt_main([*argv.split(), "--json", str(path)]) == 0
    assert "scratch/autograd" in capsys.readouterr().out
    record = json.loads(path.read_text())
    assert record["results"]["training_step"]["autograd_ratio"] > 0
    assert record["results"]["sampling"]["same_tokens"] is True
