"""The receptive field by the formula equals the one the hand-written backward measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratch_cnn import ReLU, Sequential
from scratch_cnn.cli import main
from scratch_cnn.conv import Conv2D
from scratch_cnn.models import best, lenet
from scratch_cnn.pooling import MaxPool2D
from scratch_cnn.receptive import gradient_map, measured_size, receptive_fields


@pytest.mark.parametrize(
    ("build", "sizes"),
    [(lenet, [3, 4, 8, 10]), (best, [3, 5, 6, 10, 14, 16])],
)
def test_the_formula_matches_the_backward(build: object, sizes: list[int]) -> None:
    torch.manual_seed(0)
    model = build()  # type: ignore[operator]
    fields = receptive_fields(model)
    assert [f.size for f in fields] == [(s, s) for s in sizes]
    for field in fields:
        assert measured_size(gradient_map(model, field.index, 28)) == field.size, field.name


def test_dilation_and_stride_widen_the_field_as_the_formula_says() -> None:
    torch.manual_seed(0)
    # r: 1 + 2*2*1 = 5 (dilation 2), j = 2; then 5 + 2*1*2 = 9 (the stride-2 jump), j = 2; then 9 + 1*2 = 11
    model = Sequential([Conv2D(1, 2, 3, dilation=2, stride=2), ReLU(), Conv2D(2, 2, 3), MaxPool2D(2, stride=1)])
    fields = receptive_fields(model)
    assert [(f.size, f.jump) for f in fields] == [((5, 5), (2, 2)), ((9, 9), (2, 2)), ((11, 11), (2, 2))]
    assert measured_size(gradient_map(model, 3, 31)) == (11, 11)


def test_measuring_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = lenet()
    before = [p.data.clone() for p in model.parameters()]
    gradient_map(model, 3, 28)
    first = model.layers[0]
    assert isinstance(first, Conv2D)
    assert first.input_grad is False
    after = list(model.parameters())
    assert all(torch.equal(a, p.data) and p.data.dtype == torch.float32 for a, p in zip(before, after, strict=True))
    assert all(p.grad.abs().sum() == 0 for p in model.parameters())


def test_the_command_writes_the_picture_and_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["receptive-field", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "receptive_field.png").stat().st_size > 10_000
    layers = json.loads((tmp_path / "receptive_field.json").read_text())["layers"]
    assert [(row["layer"], row["computed"], row["measured"]) for row in layers][-1] == ("pool 2", [10, 10], [10, 10])
    assert "pool 2  sees 10x10 pixels (measured 10x10), neighbours 4 pixels apart" in capsys.readouterr().out


def test_the_command_draws_the_same_picture_for_the_same_seed(tmp_path: Path) -> None:
    pictures = []
    for run, seed in enumerate(("0", "0", "1")):
        assert main(["receptive-field", "--out", str(tmp_path / str(run)), "--seed", seed]) == 0
        pictures.append((tmp_path / str(run) / "receptive_field.png").read_bytes())
    assert pictures[0] == pictures[1]  # the untrained weights are seeded: the heat map repeats
    assert pictures[0] != pictures[2]
