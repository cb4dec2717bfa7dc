"""Position-wise feed-forward: linear1 -> ReLU/GELU -> dropout -> linear2, as inside torch's Transformer layers."""

from __future__ import annotations

import pytest
import torch
from _torch_reference import perturbed
from torch import nn

from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_transformer import FeedForward

D_MODEL, D_FF = 8, 16


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_matches_torch(activation: str) -> None:
    linear1, linear2 = perturbed(nn.Linear(D_MODEL, D_FF)), perturbed(nn.Linear(D_FF, D_MODEL), seed=1)
    act = nn.ReLU() if activation == "relu" else nn.GELU()
    layer = FeedForward.from_torch(linear1, linear2, activation)  # type: ignore[arg-type]
    (x,) = random_inputs((2, 5, D_MODEL))
    assert_close(layer(x), linear2(act(linear1(x))).detach(), name=f"FFN {activation}")
    check_backward(layer, x)


def test_backward_with_dropout() -> None:
    torch.manual_seed(0)
    layer = FeedForward(D_MODEL, D_FF, dropout=0.3).to(dtype=torch.float64)
    check_backward(layer, *random_inputs((3, 4, D_MODEL)))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="activation must be 'relu' or 'gelu', got 'tanh'"):
        FeedForward(D_MODEL, D_FF, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="got 8 -> 16 and 12 -> 8"):
        FeedForward.from_torch(nn.Linear(8, 16), nn.Linear(12, 8))


def test_backward_checks_the_gradient_and_forward_the_dtype() -> None:
    layer = FeedForward(4, 8)
    layer(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"FeedForward\.backward expects .* shape \(2, 3, 4\), got \(3, 4\)"):
        layer.backward(torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"FeedForward has torch\.float32 weights but got a torch\.float64 input"):
        layer(torch.zeros(2, 4, dtype=torch.float64))
