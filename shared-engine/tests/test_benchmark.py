"""The shared benchmark harness: alternating timing, peak memory, the table and the JSON record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from scratch_engine import CrossEntropyLoss, Dense, GradientDescent, ReLU, Sequential
from scratch_engine.tools.benchmark import (
    bench_parser,
    compare_steps,
    format_comparisons,
    peak_memory,
    report,
    scratch_training_step,
    step_gflop,
    step_line,
    time_per_step,
    torch_training_step,
    write_json,
)
from scratch_engine.tools.cli import config_from_args
from scratch_engine.tools.twin import from_torch

CPU = torch.device("cpu")


def test_peak_memory_sees_the_tensors_a_step_keeps() -> None:
    def build() -> object:
        kept = torch.zeros(256, 1024)  # 1 MiB, alive for the whole window

        def step() -> torch.Tensor:
            return (kept + 1).sum()  # another MiB, freed after each step

        return step

    peak = peak_memory(build, CPU)
    assert 2 * 2**20 <= peak < 3 * 2**20


def test_compare_steps_alternates_and_reports_the_ratio() -> None:
    calls: list[str] = []

    def side(name: str, loss: float) -> object:
        def step() -> torch.Tensor:
            calls.append(name)
            return torch.tensor(loss)

        return step

    result = compare_steps(
        "case",
        side("scratch", 1.0),
        side("torch", 1.25),
        fresh_scratch=lambda: side("fresh", 0.0),
        fresh_reference=lambda: side("fresh", 0.0),
        device=CPU,
        warmup=1,
        repeats=4,
        steps=2,
    )
    assert result.first_loss_difference == pytest.approx(0.25)
    assert len(result.scratch_ms_all) == len(result.torch_ms_all) == 4
    assert result.ratio == pytest.approx(result.scratch_ms / result.torch_ms)
    timed = calls[4:-6]  # after the first-loss check and warm-up, before the memory windows
    assert timed[:4] == ["scratch", "scratch", "torch", "torch"]
    assert timed[4:8] == ["torch", "torch", "scratch", "scratch"]
    assert time_per_step(lambda: None, 3, CPU) >= 0.0
    table = format_comparisons([result], label="model")
    assert "scratch/torch" in table
    assert "case" in table
    assert "scratch/torch" in step_line(result)
    assert "autograd" not in step_line(result)  # no yardstick was timed


def test_write_json_records_config_results_and_environment(tmp_path: Path) -> None:
    result = compare_steps(
        "x",
        lambda: torch.tensor(0.0),
        lambda: torch.tensor(0.0),
        fresh_scratch=lambda: lambda: None,
        fresh_reference=lambda: lambda: None,
        device=CPU,
        warmup=0,
        repeats=1,
        steps=1,
    )
    path = write_json(tmp_path / "b.json", {"batch": 4}, [result], CPU)
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["config"] == {"batch": 4}
    assert record["results"][0]["name"] == "x"
    assert record["environment"]["threads"] == torch.get_num_threads()


@dataclass(frozen=True)
class _Config:
    sizes: tuple[int, ...] = (8, 4)
    batch_size: int = 16
    optimizer: str = "adam"
    input_grad: bool = False
    layer_sizes: tuple[tuple[int, int], ...] = ((2, 3),)
    device: str = "cpu"


def _pair(text: str) -> tuple[int, int]:
    first, second = text.split(",")
    return int(first), int(second)


def test_a_benchmark_command_line_is_its_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = bench_parser(
        "bench",
        "a test",
        _Config(),
        optimizer={"choices": ["adam", "sgd"]},
        layer_sizes={"flag": "--layers", "type": _pair},
    )
    assert config_from_args(_Config(), parser.parse_args([])) == _Config()
    flags = [
        "--sizes",
        "5",
        "6",
        "7",
        "--batch-size",
        "2",
        "--optimizer",
        "sgd",
        "--input-grad",
        "--layers",
        "1,2",
        "3,4",
    ]
    args = parser.parse_args(flags)
    config = config_from_args(_Config(), args)
    assert config == _Config((5, 6, 7), 2, "sgd", True, ((1, 2), (3, 4)), "cpu")
    with pytest.raises(SystemExit):
        parser.parse_args(["--optimizer", "rmsprop"])
    assert "invalid choice: 'rmsprop'" in capsys.readouterr().err
    assert report("the table", config, {"case": [1.5]}, tmp_path / "out.json") == 0
    assert capsys.readouterr().out == "the table\n"
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["config"]["layer_sizes"] == [[1, 2], [3, 4]]
    assert record["results"] == {"case": [1.5]}
    assert record["environment"]["device"] == "cpu"


def test_the_two_training_steps_take_the_same_step() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 3).double()
    dense = from_torch(linear)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    resets: list[str] = []
    mine = scratch_training_step(
        dense, CrossEntropyLoss(), GradientDescent(dense, 0.1), x, y, lambda: resets.append("s")
    )
    theirs = torch_training_step(
        linear, torch.nn.CrossEntropyLoss(), torch.optim.SGD(linear.parameters(), 0.1), x, y, lambda: resets.append("t")
    )
    for _ in range(3):
        torch.testing.assert_close(mine(), theirs(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense.weight.data, linear.weight.detach(), rtol=1e-12, atol=1e-12)  # same updates
    assert resets == ["s", "t"] * 3


def test_the_autograd_yardstick_takes_the_same_step_and_is_timed_in_the_same_rounds() -> None:
    from scratch_engine import Dense, ReLU, Sequential
    from scratch_engine.tools.benchmark import autograd_step

    torch.manual_seed(0)
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    models = []
    for _ in range(2):
        torch.manual_seed(1)
        models.append(Sequential(Dense(5, 4), ReLU(), Dense(4, 3)).to(torch.float64))
    mine = scratch_training_step(models[0], CrossEntropyLoss(), GradientDescent(models[0], 0.1), x, y)
    yardstick = autograd_step(models[1], CrossEntropyLoss(), GradientDescent(models[1], 0.1), x, y)
    for _ in range(3):
        torch.testing.assert_close(mine(), yardstick(), rtol=1e-12, atol=1e-12)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a.data, b.data, rtol=1e-12, atol=1e-12)  # autograd's gradients, the same updates
    calls: list[str] = []

    def side(name: str) -> object:
        return lambda: (calls.append(name), torch.tensor(1.0))[1]

    result = compare_steps(
        "case",
        side("scratch"),
        side("torch"),
        fresh_scratch=lambda: side("fresh"),
        fresh_reference=lambda: side("fresh"),
        device=CPU,
        warmup=0,
        repeats=2,
        steps=1,
        yardstick=side("autograd"),
    )
    assert calls[2:8] == ["scratch", "torch", "autograd", "autograd", "torch", "scratch"]
    assert result.autograd_ratio == pytest.approx(result.scratch_ms / result.autograd_ms)
    assert "scratch/autograd" in format_comparisons([result])
    assert step_line(result).endswith(f"scratch/autograd {result.autograd_ratio:.3f}")


def test_step_gflop_counts_every_matrix_product_of_the_step() -> None:
    """784-256-10, batch 2: the forward's products, the weight gradients' as many again (accumulated in place by
    addmm_, which torch's counter leaves out unless told), and g W for the second layer only: the first layer's input
    is data, and the step skips its gradient as the engine does (``data_gradient=True`` keeps it)."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 784), torch.randint(0, 10, (2,))
    forward = 2 * 2 * (784 * 256 + 256 * 10)
    for data_gradient, want in ((False, 2 * forward + 2 * 2 * 256 * 10), (True, 3 * forward)):
        model = Sequential(Dense(784, 256), ReLU(), Dense(256, 10))
        optimizer = GradientDescent(model, 0.1)
        step = scratch_training_step(model, CrossEntropyLoss(), optimizer, x, y, data_gradient=data_gradient)
        assert step_gflop(step) * 1e9 == pytest.approx(want)
