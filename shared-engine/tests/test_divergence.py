"""A finite but diverged loss stops the run (#18): named step, non-zero exit, recorded in metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_runner import TOY, ToyConfig, main

from scratch_engine import CrossEntropyLoss, DataLoader, Dense, Engine, GradientDescent, MSELoss, ReLU, Sequential
from scratch_engine.tools.callbacks import DivergenceError, StopOnDivergence
from scratch_engine.tools.runner import run


def _regression(learning_rate: float) -> tuple[Engine, DataLoader]:
    torch.manual_seed(0)
    X = torch.randn(64, 3)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]])
    model = Sequential(Dense(3, 16), ReLU(), Dense(16, 1))
    engine = Engine(model, MSELoss(), GradientDescent(model, learning_rate), progress=False)
    return engine, DataLoader(X, y, batch_size=16, seed=0)


def test_a_loss_far_above_the_first_steps_stops_the_fit_naming_the_step() -> None:
    engine, data = _regression(learning_rate=0.5)  # diverges: the loss grows by orders of magnitude, still finite
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: training loss .* over 10x the first step's"):
        engine.fit(data, epochs=20, callbacks=[StopOnDivergence()])
    assert all(math.isfinite(loss) for loss in engine.history["loss"])  # NaN would be the engine's own error
    engine, data = _regression(learning_rate=0.01)  # trains: no false alarm
    engine.fit(data, epochs=20, callbacks=[StopOnDivergence()])
    assert engine.history["loss"][-1] < engine.history["loss"][0]


def test_a_classifier_worse_than_a_uniform_guess_after_its_first_row_stops() -> None:
    torch.manual_seed(0)
    y = torch.arange(3).repeat_interleave(20)
    X = torch.tensor([[3.0, 0.0], [-3.0, 3.0], [-3.0, -3.0]])[y] + 0.3 * torch.randn(60, 2)
    model = Sequential(Dense(2, 3))
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.5), progress=False)
    guard = StopOnDivergence()
    wrong = DataLoader(X, (y + 1) % 3)  # validation labels it learns to get confidently wrong
    with pytest.raises(DivergenceError, match=r"validation loss .* over 1.5x a uniform guess's ln 3 = 1.099"):
        engine.fit(DataLoader(X, y, batch_size=20, seed=0), epochs=20, val_loader=wrong, callbacks=[guard])
    assert guard.classes == 3
    assert engine.history["loss"][-1] < guard.first_loss  # the training loss itself fell


def test_the_runner_records_the_divergence_and_the_cli_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DivergenceError):
        run(TOY, ToyConfig(learning_rate=1e6), out=tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert record["diverged"]["step"] > 0
    assert "diverged at step" in record["diverged"]["error"]
    assert "test_accuracy" not in record  # not reported as a result
    assert main(["train", "toy", "--lr", "1e6", "--out", str(tmp_path / "cli"), "--quiet"]) == 1
    assert "the run diverged at step" in capsys.readouterr().err
    off = run(TOY, ToyConfig(learning_rate=1e6, stop_on_divergence=False), progress=False)  # for experiments
    assert off["steps"] == 28
    again = run(TOY, ToyConfig(learning_rate=0.05), out=tmp_path / "run", progress=False)  # a diverged run is done:
    assert again["steps"] == 28  # a new one may take its folder (no "unfinished run, add --resume")
