"""Flatten against nn.Flatten, and a small CNN of every layer (Flatten the bridge to Dense) against torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scratch_cnn import (
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Sequential,
)
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_engine.tools.twin import from_torch


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7), (1, 2, 3)])
def test_flatten_matches_torch(shape: tuple[int, ...]) -> None:
    (x,) = random_inputs(shape)
    layer = Flatten.from_torch(nn.Flatten())
    assert_close(layer(x), nn.Flatten()(x), name="Flatten forward")
    check_backward(layer, x)
    (g,) = random_inputs((shape[0], x[0].numel()), seed=1)
    assert torch.equal(layer.backward(g), g.reshape(shape))


def test_flatten_invalid() -> None:
    with pytest.raises(ValueError, match=r"2 or more dimensions, got \(5,\)"):
        Flatten()(torch.randn(5))
    with pytest.raises(ValueError, match="start_dim=1, end_dim=-1 only, got start_dim=2"):
        Flatten.from_torch(nn.Flatten(start_dim=2))
    with pytest.raises(RuntimeError, match="before forward"):
        Flatten().backward(torch.randn(2, 3))


def test_flatten_checks_the_shape_of_grad_output() -> None:
    layer = Flatten()
    layer(torch.randn(2, 3, 4, 5))
    with pytest.raises(
        ValueError, match=r"Flatten\.backward expects grad_output of .* shape \(2, 60\), got \(2, 3, 20\)"
    ):
        layer.backward(torch.randn(2, 3, 20))  # the same number of values: a reshape alone would accept it
    assert layer.backward(torch.randn(2, 60)).shape == (2, 3, 4, 5)


def test_flatten_empty_batch() -> None:
    layer = Flatten()
    y = layer(torch.randn(0, 3, 4, 5))
    assert y.shape == (0, 60)
    assert layer.backward(y).shape == (0, 3, 4, 5)


def _small_cnn(impl: str) -> tuple[nn.Sequential, Sequential]:
    torch.manual_seed(0)
    reference = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, (3, 2), stride=(1, 2), dilation=(1, 2)), nn.ReLU(), nn.AvgPool2d(2, 1, 1),
        nn.Flatten(), nn.Dropout(0.0), nn.Linear(6 * 3 * 3, 3),
    ).double()  # fmt: skip
    layers = [
        Conv2D.from_torch(reference[0], impl=impl),  # type: ignore[arg-type]
        from_torch(reference[1]),
        ReLU(),
        MaxPool2D.from_torch(reference[3]),
        Conv2D.from_torch(reference[4], impl=impl),  # type: ignore[arg-type]
        ReLU(),
        AvgPool2D.from_torch(reference[6]),
        Flatten.from_torch(reference[7]),
        from_torch(reference[8]),
        from_torch(reference[9]),
    ]
    return reference, Sequential(layers)


@pytest.mark.parametrize("impl", ["loop", "im2col"])
def test_small_cnn_matches_torch(impl: str) -> None:
    reference, model = _small_cnn(impl)
    (x,) = random_inputs((3, 2, 8, 10))
    assert_close(model(x), reference(x).detach(), name="CNN forward")
    check_backward(model, x)


def test_global_pool_head() -> None:
    torch.manual_seed(0)
    model = Sequential(Conv2D(3, 5, 3, padding=1), ReLU(), GlobalAvgPool2D(), Dense(5, 2)).to(dtype=torch.float64)
    (x,) = random_inputs((2, 3, 6, 7))
    assert model(x).shape == (2, 2)
    check_backward(model, x)
