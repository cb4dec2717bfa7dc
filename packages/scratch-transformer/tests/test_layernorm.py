"""LayerNorm: forward against nn.LayerNorm, backward against autograd (float64, 1e-6)."""

from __future__ import annotations

import pytest
import torch
from _torch_reference import perturbed
from torch import nn

from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_transformer import LayerNorm

# up to 4 rows (a decoding step's one position among them) the statistics come from torch.var_mean, past that from
# two means: both paths are here, and at the edge (4 and 5 rows)
SHAPES = [(1, 8), (1, 1, 32), (4, 8), (1, 5, 8), (1, 3, 4, 16), (3, 6, 12), (2, 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_forward_and_backward(shape: tuple[int, ...]) -> None:
    reference = perturbed(nn.LayerNorm(shape[-1]))
    layer = LayerNorm.from_torch(reference)
    (x,) = random_inputs(shape)
    x_torch = x.clone().requires_grad_(True)
    want = reference(x_torch)
    assert_close(layer(x), want.detach(), name="LayerNorm forward")
    (g,) = random_inputs(shape, seed=1)
    want.backward(g)
    assert_close(layer.backward(g), x_torch.grad, name="grad of x")
    assert_close(layer.weight.grad, reference.weight.grad, name="grad of weight")
    assert_close(layer.bias.grad, reference.bias.grad, name="grad of bias")


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_autograd(shape: tuple[int, ...]) -> None:
    layer = LayerNorm.from_torch(perturbed(nn.LayerNorm(shape[-1])))
    check_backward(layer, *random_inputs(shape))


@pytest.mark.parametrize("options", [{"elementwise_affine": False}, {"bias": False}, {"eps": 1e-2}])
def test_options_match_torch(options: dict[str, object]) -> None:
    reference = perturbed(nn.LayerNorm(6, **options))  # type: ignore[arg-type]
    layer = LayerNorm.from_torch(reference)
    assert len(layer.parameters()) == len(list(reference.parameters()))
    (x,) = random_inputs((2, 3, 6))
    assert_close(layer(x), reference(x).detach(), name=f"LayerNorm {options}")
    check_backward(layer, x)


def test_bad_input_is_a_value_error() -> None:
    layer = LayerNorm(8)
    with pytest.raises(ValueError, match=r"expects a floating input of shape \(\.\.\., 8\), got shape \(2, 6\)"):
        layer(torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"dtype torch\.int64"):
        layer(torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"last dimension only, got normalized_shape=\(3, 4\)"):
        LayerNorm.from_torch(nn.LayerNorm([3, 4]))
    for eps in (0.0, -1e-5, float("nan"), float("inf")):  # eps = 0 gave NaN on a constant row
        with pytest.raises(ValueError, match=r"LayerNorm eps must be a finite number > 0"):
            LayerNorm(8, eps=eps)


def test_backward_checks_the_gradient_and_forward_the_dtype() -> None:
    layer = LayerNorm(8)
    layer(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match=r"LayerNorm\.backward expects .* shape \(2, 3, 8\), got \(2, 1, 8\)"):
        layer.backward(torch.ones(2, 1, 8))  # would broadcast into a wrong gradient
    with pytest.raises(ValueError, match=r"LayerNorm has torch\.float32 weights but got a torch\.float64 input"):
        layer(torch.zeros(2, 8, dtype=torch.float64))
    LayerNorm(8, elementwise_affine=False)(torch.zeros(2, 8, dtype=torch.float64))  # no weights: any float dtype
