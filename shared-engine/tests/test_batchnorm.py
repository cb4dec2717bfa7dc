"""BatchNorm1d against torch.nn.BatchNorm1d (forward, running stats) and autograd (backward)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scratch_engine import BatchNorm1d, BatchNorm2d
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_engine.tools.twin import from_torch

BATCHES = [2, 5, 64]
FEATURES = [1, 3, 16]


def _pair(features: int, affine: bool = True, momentum: float | None = 0.1) -> tuple[nn.BatchNorm1d, BatchNorm1d]:
    """A float64 torch reference with non-trivial weights and running stats, and its copy."""
    torch.manual_seed(features)
    reference = nn.BatchNorm1d(features, eps=1e-3, momentum=momentum, affine=affine).double()
    with torch.no_grad():
        if affine:
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.normal_()
        reference.running_mean.normal_()
        reference.running_var.uniform_(0.5, 2.0)
    return reference, from_torch(reference)


def _assert_same_state(layer: BatchNorm1d, reference: nn.BatchNorm1d) -> None:
    assert_close(layer.running_mean, reference.running_mean, name="running_mean")
    assert_close(layer.running_var, reference.running_var, name="running_var")
    assert int(layer.num_batches_tracked) == int(reference.num_batches_tracked)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("features", FEATURES)
def test_train_forward_and_running_stats_match_torch(batch: int, features: int) -> None:
    reference, layer = _pair(features)
    for seed in range(3):
        (x,) = random_inputs((batch, features), seed=seed)
        x = 3.0 * x + 1.0
        assert_close(layer(x), reference(x).detach(), name=f"train forward, call {seed}")
    _assert_same_state(layer, reference)
    assert int(layer.num_batches_tracked) == 3


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("features", FEATURES)
def test_eval_forward_matches_torch_and_freezes_stats(batch: int, features: int) -> None:
    reference, layer = _pair(features)
    reference.eval()
    layer.eval()
    (x,) = random_inputs((batch, features), seed=1)
    before = layer.running_mean.clone()
    assert_close(layer(x), reference(x).detach(), name="eval forward")
    assert torch.equal(layer.running_mean, before)
    assert int(layer.num_batches_tracked) == 0


def test_three_dimensional_input_matches_torch() -> None:
    reference, layer = _pair(3)
    (x,) = random_inputs((4, 3, 7))
    assert_close(layer(x), reference(x).detach(), name="(N, C, L) train forward")
    _assert_same_state(layer, reference)
    reference.eval()
    layer.eval()
    assert_close(layer(x), reference(x).detach(), name="(N, C, L) eval forward")


def test_momentum_none_is_cumulative_average_like_torch() -> None:
    reference, layer = _pair(3, momentum=None)
    for seed in range(3):
        (x,) = random_inputs((6, 3), seed=seed)
        layer(x)
        reference(x)
    _assert_same_state(layer, reference)


def test_train_output_is_normalised() -> None:
    layer = BatchNorm1d(4).to(dtype=torch.float64)
    (x,) = random_inputs((32, 4))
    y = layer(5.0 * x - 2.0)
    assert_close(y.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12, name="mean")
    assert_close(y.var(0, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-3, name="variance")


@pytest.mark.parametrize("shape", [(2, 3), (5, 3), (64, 3), (4, 3, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_autograd(shape: tuple[int, ...], training: bool) -> None:
    _, layer = _pair(3)
    layer.train(training)
    (x,) = random_inputs(shape, seed=2)
    check_backward(layer, x)


@pytest.mark.parametrize("training", [True, False])
def test_affine_false(training: bool) -> None:
    reference, layer = _pair(3, affine=False)
    assert layer.parameters() == []
    reference.train(training)
    layer.train(training)
    (x,) = random_inputs((8, 3))
    assert_close(layer(x), reference(x).detach(), name="affine=False forward")
    check_backward(layer, x)


def test_state_dict_has_parameters_and_buffers() -> None:
    assert list(BatchNorm1d(3).state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def test_wrong_feature_count_names_expected_and_got() -> None:
    layer = BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"num_features=3.*\(N, 3\).*got \(5, 4\)"):
        layer(torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"got \(5,\)"):
        layer(torch.zeros(5))


def test_single_value_per_channel_in_training_is_an_error() -> None:
    layer = BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        layer(torch.zeros(1, 3))
    layer.eval()
    assert layer(torch.zeros(1, 3)).shape == (1, 3)  # eval mode uses running stats: fine


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eps": 0.0}, "eps must be a finite number > 0, got 0.0"),
        ({"eps": -1e-5}, "eps must be a finite number > 0"),
        ({"eps": float("nan")}, "eps must be a finite number > 0, got nan"),
        ({"momentum": 1.5}, r"momentum must be in \[0, 1\] or None \(cumulative\), got 1.5"),
        ({"momentum": -0.1}, r"momentum must be in \[0, 1\]"),
        ({"momentum": float("nan")}, r"momentum must be in \[0, 1\] or None \(cumulative\), got nan"),
    ],
)
def test_eps_and_momentum_are_checked(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchNorm1d(3, **settings)


def test_integer_input_and_backward_before_forward_are_errors() -> None:
    layer = BatchNorm1d(3)
    with pytest.raises(ValueError, match="floating-point"):
        layer(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(torch.zeros(4, 3))


# --------------------------------------------------------------------------- BatchNorm2d (the CNN's)


def _pair_2d(channels: int) -> tuple[nn.BatchNorm2d, BatchNorm2d]:
    torch.manual_seed(channels)
    reference = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.2).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.normal_()
        reference.running_mean.normal_()
        reference.running_var.uniform_(0.5, 2.0)
    return reference, from_torch(reference)


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (2, 3, 5, 5), (8, 3, 7, 4)])
def test_batchnorm2d_train_and_eval_match_torch(shape: tuple[int, ...]) -> None:
    reference, layer = _pair_2d(shape[1])
    for seed in range(3):
        (x,) = random_inputs(shape, seed=seed)
        assert_close(layer(2.0 * x - 1.0), reference(2.0 * x - 1.0).detach(), name=f"train forward, call {seed}")
    _assert_same_state(layer, reference)
    reference.eval()
    layer.eval()
    (x,) = random_inputs(shape, seed=9)
    assert_close(layer(x), reference(x).detach(), name="eval forward")


@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (4, 3, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_backward_matches_autograd(shape: tuple[int, ...], training: bool) -> None:
    _, layer = _pair_2d(shape[1])
    layer.train(training)
    (x,) = random_inputs(shape, seed=3)
    check_backward(layer, x)


def test_batchnorm2d_wrong_shape_names_the_layout() -> None:
    with pytest.raises(
        ValueError, match=r"BatchNorm2d\(num_features=3\) expects input of shape \(N, 3, H, W\), got \(2, 3, 4\)"
    ):
        BatchNorm2d(3)(torch.zeros(2, 3, 4))


@pytest.mark.parametrize("momentum", [None, 0.3], ids=["cumulative", "momentum"])
@pytest.mark.parametrize("affine", [False, True])
def test_batchnorm2d_options_match_torch(affine: bool, momentum: float | None) -> None:
    """affine=False and momentum=None (the cumulative average) for the 2-D layer too: forward, stats, backward."""
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(3, eps=1e-3, momentum=momentum, affine=affine).double()
    if affine:
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.normal_()
    layer = from_torch(reference)
    assert len(layer.parameters()) == (2 if affine else 0)
    for seed in range(3):
        (x,) = random_inputs((4, 3, 5, 2), seed=seed)
        x = 2.0 * x + 0.5
        x_torch = x.clone().requires_grad_(True)
        want = reference(x_torch)
        assert_close(layer(x), want.detach(), name=f"train forward, call {seed}")
    (g,) = random_inputs(want.shape, seed=7)
    want.backward(g)
    layer.zero_grad()
    assert_close(layer.backward(g), x_torch.grad, name="train grad of x vs torch")
    if affine:
        assert_close(layer.weight.grad, reference.weight.grad, name="grad of weight vs torch")  # type: ignore[union-attr]
        assert_close(layer.bias.grad, reference.bias.grad, name="grad of bias vs torch")  # type: ignore[union-attr]
    _assert_same_state(layer, reference)
    reference.eval()
    layer.eval()
    (x,) = random_inputs((2, 3, 5, 2), seed=9)
    assert_close(layer(x), reference(x).detach(), name="eval forward")
    check_backward(layer, x)
