"""Activations against torch.nn (forward) and autograd (backward)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from scratch_engine.activations import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from scratch_engine.module import Module
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_engine.tools.twin import from_torch

SHAPES = [(1, 5), (7, 5), (4, 3, 5), (6,)]

# (scratch class, torch reference) pairs; from_torch builds the scratch layer from the reference
PAIRS: list[tuple[type, Callable[[], nn.Module]]] = [
    (ReLU, nn.ReLU),
    (LeakyReLU, lambda: nn.LeakyReLU(0.2)),
    (Tanh, nn.Tanh),
    (Sigmoid, nn.Sigmoid),
    (GELU, nn.GELU),
    (GELU, lambda: nn.GELU(approximate="tanh")),
]
IDS = ["relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_tanh"]


def _inputs(shape: tuple[int, ...]) -> torch.Tensor:
    (x,) = random_inputs(shape)
    return 3 * x  # reach the saturated tails too


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("cls", "make_reference"), PAIRS, ids=IDS)
def test_forward_matches_torch(cls: type, make_reference: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    reference = make_reference()
    layer = from_torch(reference)
    x = _inputs(shape)
    assert_close(layer(x), reference(x), name=f"{cls.__name__} forward")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("cls", "make_reference"), PAIRS, ids=IDS)
def test_backward_matches_autograd(cls: type, make_reference: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    layer = from_torch(make_reference()).to(dtype=torch.float64)
    check_backward(layer, _inputs(shape))


@pytest.mark.parametrize(("cls", "make_reference"), PAIRS, ids=IDS)
def test_backward_at_special_points_matches_torch(cls: type, make_reference: Callable[[], nn.Module]) -> None:
    # against torch's own module, not autograd through our forward: at x = 0 autograd of
    # clamp / abs picks a different subgradient than torch.relu and the true sigmoid'(0)
    reference = make_reference()
    layer = from_torch(reference)
    x = torch.tensor([-50.0, -1.0, 0.0, 1e-300, 1.0, 50.0], dtype=torch.float64, requires_grad=True)
    g = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)
    (want,) = torch.autograd.grad(reference(x), x, g)
    layer(x.detach())
    assert_close(layer.backward(g), want, name=f"{cls.__name__} grad at special points")


def _bfloat16_ulps(value: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``|value - exact|`` in units of bfloat16's spacing at ``exact`` (8 significant bits)."""
    exponent = torch.floor(torch.log2(exact.abs().clamp(min=2.0**-126)))
    return (value.double() - exact).abs() / 2.0 ** (exponent - 7)


@pytest.mark.parametrize(("cls", "make_reference"), PAIRS, ids=IDS)
def test_bfloat16_is_as_accurate_as_torch(cls: type, make_reference: Callable[[], nn.Module]) -> None:
    # torch computes its 16-bit activations in float32 and rounds once. Computed in bfloat16 itself,
    # GELU's 1 + erf(x) lost its negative tail (x = -3 was 44% off) and the sigmoid's 1 + e^{-x} rounded
    # to 1 for x in (5.55, 6.24), where the gradient became 0. Point by point, against the exact value
    # in float64, we may be no further off than torch's bfloat16 result, give or take half a spacing.
    reference = make_reference()
    layer = from_torch(reference)
    x = torch.linspace(-8.0, 8.0, 257, dtype=torch.bfloat16)
    g = torch.linspace(-1.0, 2.0, 257, dtype=torch.bfloat16)
    exact_x = x.double().requires_grad_()
    exact_y = reference(exact_x)
    (exact_grad,) = torch.autograd.grad(exact_y, exact_x, g.double())
    torch_x = x.clone().requires_grad_()
    torch_y = reference(torch_x)
    (torch_grad,) = torch.autograd.grad(torch_y, torch_x, g)
    y = layer(x)
    grad = layer.backward(g)
    assert y.dtype == grad.dtype == torch.bfloat16
    for name, ours, theirs, exact in (("forward", y, torch_y, exact_y), ("gradient", grad, torch_grad, exact_grad)):
        excess = _bfloat16_ulps(ours, exact) - _bfloat16_ulps(theirs.detach(), exact.detach())
        worst = int(excess.argmax())
        where = f"{cls.__name__} {name} at x = {x[worst].item()}"
        assert excess[worst] <= 0.5, f"{where}: {excess[worst]:.1f} spacings worse than torch"


@pytest.mark.parametrize(("cls", "make_reference"), PAIRS, ids=IDS)
def test_train_and_eval_agree(cls: type, make_reference: Callable[[], nn.Module]) -> None:
    layer = from_torch(make_reference())
    x = _inputs((4, 3, 5))
    g = torch.randn_like(x)
    train_out, train_grad = layer(x), layer.backward(g)
    layer.eval()
    assert torch.equal(layer(x), train_out)
    assert torch.equal(layer.backward(g), train_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("cls", "make_reference"), PAIRS, ids=IDS)
def test_keeps_dtype(cls: type, make_reference: Callable[[], nn.Module], dtype: torch.dtype) -> None:
    layer = from_torch(make_reference())
    x = torch.randn(3, 4, dtype=dtype)
    assert layer(x).dtype == dtype
    assert layer.backward(torch.ones_like(x)).dtype == dtype


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Tanh, Sigmoid, GELU])
def test_integer_input_raises(cls: type) -> None:
    with pytest.raises(ValueError, match="int64"):
        cls()(torch.arange(3))


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Tanh, Sigmoid, GELU])
def test_backward_before_forward_raises(cls: type) -> None:
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward(torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_is_stable_at_extremes(dtype: torch.dtype) -> None:
    layer = Sigmoid()
    y = layer(torch.tensor([-1000.0, 1000.0], dtype=dtype))
    assert torch.isfinite(y).all()
    assert y.tolist() == [0.0, 1.0]
    grad = layer.backward(torch.ones(2, dtype=dtype))
    assert grad.tolist() == [0.0, 0.0]
    tiny = layer(torch.tensor([-80.0], dtype=dtype))  # keeps relative precision in the tail
    assert_close(tiny, torch.sigmoid(torch.tensor([-80.0], dtype=dtype)), atol=0, rtol=1e-5, name="sigmoid(-80)")


def test_leaky_relu_copies_slope() -> None:
    layer = from_torch(nn.LeakyReLU(0.2))
    assert layer.negative_slope == 0.2
    assert repr(layer) == "LeakyReLU(negative_slope=0.2)"
    assert LeakyReLU().negative_slope == 0.01


def test_gelu_copies_approximate_and_rejects_unknown() -> None:
    assert from_torch(nn.GELU(approximate="tanh")).approximate == "tanh"
    assert GELU().approximate == "none"
    with pytest.raises(ValueError, match="sigmoid"):
        GELU(approximate="sigmoid")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Tanh, Sigmoid, GELU])
def test_activations_have_no_parameters(cls: type) -> None:
    layer: Module = cls()
    assert layer.parameters() == []
