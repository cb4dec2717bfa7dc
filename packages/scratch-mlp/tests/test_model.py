"""MLP.from_sizes structure, forward against an equivalent torch.nn.Sequential, backward against autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_engine.tools.twin import from_torch
from scratch_mlp import MLP, BatchNorm1d, Dense, Dropout, ReLU, Tanh


def _from_torch(sequential: nn.Sequential) -> MLP:
    return MLP([from_torch(layer) for layer in sequential])


def test_from_sizes_structure() -> None:
    mlp = MLP.from_sizes([4, 8, 6, 3], activation="tanh", dropout=0.25, batch_norm=True)
    kinds = [type(layer) for layer in mlp]
    assert kinds == [Dense, BatchNorm1d, Tanh, Dropout] * 2 + [Dense]
    dense = [layer for layer in mlp if isinstance(layer, Dense)]
    assert [tuple(d.weight.shape) for d in dense] == [(8, 4), (6, 8), (3, 6)]
    assert [d.bias is None for d in dense] == [True, True, False]  # BatchNorm's beta replaces the bias
    assert mlp(torch.randn(5, 4)).shape == (5, 3)


def test_from_sizes_plain_and_single_layer() -> None:
    mlp = MLP.from_sizes([2, 16, 4])
    assert [type(layer) for layer in mlp] == [Dense, ReLU, Dense]
    assert [type(layer) for layer in MLP.from_sizes([3, 1])] == [Dense]
    assert mlp.num_parameters() == 2 * 16 + 16 + 16 * 4 + 4


def test_from_sizes_init_follows_activation() -> None:
    torch.manual_seed(0)
    tanh_weight = MLP.from_sizes([400, 400, 2], activation="tanh")[0].weight.data
    relu_weight = MLP.from_sizes([400, 400, 2], activation="relu")[0].weight.data
    assert tanh_weight.abs().max() <= (6 / 800) ** 0.5  # xavier: uniform within the Glorot bound
    assert abs(relu_weight.std().item() - (2 / 400) ** 0.5) < 0.005  # kaiming: N(0, 2/fan_in)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_torch_sequential(activation: str, training: bool) -> None:
    torch.manual_seed(0)
    act = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
    reference = nn.Sequential(
        nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), act[activation](), nn.Dropout(0.0),
        nn.Linear(8, 6, bias=False), nn.BatchNorm1d(6), act[activation](), nn.Dropout(0.0),
        nn.Linear(6, 3),
    ).double()  # fmt: skip
    for _ in range(2):  # move the running stats away from their initial values
        reference(torch.randn(16, 5, dtype=torch.float64))
    mlp = _from_torch(reference)
    structure = MLP.from_sizes([5, 8, 6, 3], activation=activation, dropout=0.5, batch_norm=True)
    assert [type(layer) for layer in mlp] == [type(layer) for layer in structure]
    reference.train(training)
    mlp.train(training)
    (x,) = random_inputs((10, 5))
    assert_close(mlp(x), reference(x).detach(), name="MLP forward")
    assert_close(mlp[1].running_var, reference[1].running_var, name="running_var")


def test_backward_of_batch_norm_tanh_mlp_matches_autograd() -> None:
    torch.manual_seed(0)
    mlp = MLP.from_sizes([4, 8, 8, 3], activation="tanh", batch_norm=True).to(dtype=torch.float64)
    (x,) = random_inputs((12, 4))
    check_backward(mlp, x)
    mlp.eval()
    check_backward(mlp, x)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_backward_with_dropout_matches_autograd(activation: str) -> None:
    torch.manual_seed(0)
    mlp = MLP.from_sizes([4, 8, 3], activation=activation, dropout=0.3).to(dtype=torch.float64)
    (x,) = random_inputs((6, 4))
    check_backward(mlp, x)


def test_invalid_activation_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"'swish'.*relu, leaky_relu, tanh, sigmoid, gelu"):
        MLP.from_sizes([2, 3, 1], activation="swish")


def test_too_few_sizes() -> None:
    with pytest.raises(ValueError, match="at least"):
        MLP.from_sizes([4])


@pytest.mark.parametrize("dropout", [-0.5, 1.5, float("nan")])
def test_dropout_out_of_range_is_refused_even_where_it_would_add_no_layer(dropout: float) -> None:
    with pytest.raises(ValueError, match=r"Dropout probability must be in \[0, 1\]"):
        MLP.from_sizes([4, 8, 3], dropout=dropout)
