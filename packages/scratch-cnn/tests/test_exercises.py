"""The exercises: each checker passes its solution and names a wrong gradient, catches the mistakes learners
really make, and poses the package's own layer (its forward equals the layer's forward)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scratch_cnn import Conv2D, Flatten, MaxPool2D
from scratch_cnn.conv import IMPLS
from scratch_cnn.exercises import EXERCISES, conv2d, flatten, maxpool2d
from scratch_engine import Parameter
from scratch_engine.tools.exercises import Exercise
from scratch_engine.tools.testing import assert_checks_both_ways, assert_close

POOL = 2


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.title)
def test_checks_both_ways(exercise: Exercise) -> None:
    assert_checks_both_ways(exercise)


def _conv2d_layer(inputs: dict[str, Tensor], impl: str) -> Conv2D:
    out_channels, in_channels, kh, kw = inputs["weight"].shape
    layer = Conv2D(in_channels, out_channels, (kh, kw), impl=impl).to(torch.float64)  # type: ignore[arg-type]
    layer.weight = Parameter(inputs["weight"].clone())
    layer.bias = Parameter(inputs["bias"].clone())
    return layer


# ---------------------------------------------------------------------------------------------- the package's layers
@pytest.mark.parametrize("impl", IMPLS)
def test_conv2d_forward_and_solution_are_the_layers(impl: str) -> None:
    inputs = conv2d.inputs()
    layer = _conv2d_layer(inputs, impl)
    y = layer(inputs["x"])
    assert_close(conv2d.forward(**inputs), y, atol=1e-12, rtol=0, name=f"Conv2D forward ({impl})")
    grad_output = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grad_x, grad_weight, grad_bias = conv2d.solution(grad_output, **inputs)
    assert_close(layer.backward(grad_output), grad_x, atol=1e-12, rtol=0, name="grad x")
    assert_close(layer.weight.grad, grad_weight, atol=1e-12, rtol=0, name="grad weight")
    assert layer.bias is not None
    assert_close(layer.bias.grad, grad_bias, atol=1e-12, rtol=0, name="grad bias")


def test_maxpool2d_forward_and_solution_are_the_layers() -> None:
    x = maxpool2d.inputs()["x"]
    layer = MaxPool2D(POOL)
    y = layer(x)
    assert y.shape == (2, 3, 2, 3)  # the fifth row lies in no window
    assert_close(maxpool2d.forward(x), y, atol=1e-12, rtol=0, name="MaxPool2D forward")
    grad_output = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_close(layer.backward(grad_output), maxpool2d.solution(grad_output, x), atol=1e-12, rtol=0, name="grad x")


def test_flatten_forward_is_the_layer() -> None:
    x = flatten.inputs()["x"]
    assert torch.equal(flatten.forward(x), Flatten()(x))


# ---------------------------------------------------------------------------------------------- realistic mistakes
def _conv2d_backward(grad_output: Tensor, x: Tensor, weight: Tensor, overwrite: bool) -> tuple[Tensor, Tensor]:
    """The solution's loop for grad_x and grad_weight; ``overwrite``: ``=`` where windows overlap, not ``+=``."""
    n, (out_channels, in_channels, kh, kw) = x.shape[0], weight.shape
    w2 = weight.reshape(out_channels, -1)
    grad_x, grad_w2 = torch.zeros_like(x), torch.zeros_like(w2)
    for i in range(grad_output.shape[2]):
        for j in range(grad_output.shape[3]):
            g = grad_output[:, :, i, j]
            grad_w2 += g.T @ x[:, :, i : i + kh, j : j + kw].reshape(n, -1)
            share = (g @ w2).reshape(n, in_channels, kh, kw)
            if overwrite:
                grad_x[:, :, i : i + kh, j : j + kw] = share
            else:
                grad_x[:, :, i : i + kh, j : j + kw] += share
    return grad_x, grad_w2.reshape(weight.shape)


def test_conv2d_overwriting_instead_of_adding_where_windows_overlap_is_caught() -> None:
    def overwrites(grad_output: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        grad_x, grad_weight = _conv2d_backward(grad_output, x, weight, overwrite=True)
        return grad_x, grad_weight, grad_output.sum(dim=(0, 2, 3))

    verdict = conv2d.verdict(overwrites)
    assert verdict.wrong == ("x",), verdict
    assert "hint: a pixel lies under several windows" in str(verdict)


def test_conv2d_bias_gradient_averaged_instead_of_summed_is_caught() -> None:
    def averages(grad_output: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        grad_x, grad_weight = _conv2d_backward(grad_output, x, weight, overwrite=False)
        return grad_x, grad_weight, grad_output.mean(dim=(0, 2, 3))

    assert conv2d.verdict(averages).wrong == ("bias",)


def test_conv2d_grad_x_with_the_unflipped_kernel_is_caught() -> None:
    # dL/dx is the *full convolution* of g with the kernel, i.e. the full cross-correlation with the kernel
    # flipped by 180°; a learner who cross-correlates the zero-padded g with the kernel as it is gets x wrong
    def unflipped(grad_output: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        _, grad_weight = _conv2d_backward(grad_output, x, weight, overwrite=False)
        kernel = weight.transpose(0, 1)  # (C, O, kh, kw): channels swap roles, the kernel itself is not flipped
        grad_x = conv2d.forward(_pad(grad_output, weight.shape[2] - 1), kernel, torch.zeros(x.shape[1]))
        return grad_x, grad_weight, grad_output.sum(dim=(0, 2, 3))

    assert conv2d.verdict(unflipped).wrong == ("x",)

    def flipped(grad_output: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        _, grad_weight = _conv2d_backward(grad_output, x, weight, overwrite=False)
        kernel = weight.transpose(0, 1).flip(2, 3)
        grad_x = conv2d.forward(_pad(grad_output, weight.shape[2] - 1), kernel, torch.zeros(x.shape[1]))
        return grad_x, grad_weight, grad_output.sum(dim=(0, 2, 3))

    assert conv2d.verdict(flipped).passed  # the formula the notebook states is right


def _pad(t: Tensor, p: int) -> Tensor:
    padded = t.new_zeros(*t.shape[:2], t.shape[2] + 2 * p, t.shape[3] + 2 * p)
    padded[:, :, p : p + t.shape[2], p : p + t.shape[3]] = t
    return padded


def test_maxpool2d_gradient_shared_out_as_in_average_pooling_is_caught() -> None:
    def shares(grad_output: Tensor, x: Tensor) -> Tensor:
        grad_x = torch.zeros_like(x)
        for i in range(grad_output.shape[2]):
            for j in range(grad_output.shape[3]):
                rows, cols = slice(POOL * i, POOL * i + POOL), slice(POOL * j, POOL * j + POOL)
                grad_x[:, :, rows, cols] += grad_output[:, :, i, j, None, None] / POOL**2
        return grad_x

    verdict = maxpool2d.verdict(shares)
    assert verdict.wrong == ("x",)
    assert "hint: all of g[n, c, i, j] goes to the one pixel" in str(verdict)


def test_maxpool2d_winner_placed_without_its_window_offset_is_caught() -> None:
    def no_offset(grad_output: Tensor, x: Tensor) -> Tensor:
        grad_x = torch.zeros_like(x)
        for i in range(grad_output.shape[2]):
            for j in range(grad_output.shape[3]):
                window = x[:, :, POOL * i : POOL * i + POOL, POOL * j : POOL * j + POOL]
                winner = window == window.amax(dim=(2, 3), keepdim=True)
                grad_x[:, :, :POOL, :POOL] += winner * grad_output[:, :, i, j, None, None]  # always the top left
        return grad_x

    assert maxpool2d.verdict(no_offset).wrong == ("x",)


def test_flatten_mistakes_are_caught() -> None:
    not_reshaped = flatten.verdict(lambda grad_output, x: grad_output)
    assert not_reshaped.wrong == ("x",)
    assert "has shape (2, 60); it should be (2, 3, 4, 5)" in str(not_reshaped)

    def channels_last(grad_output: Tensor, x: Tensor) -> Tensor:  # as if Flatten read (N, H, W, C), Keras' layout
        n, c, h, w = x.shape
        return grad_output.reshape(n, h, w, c).permute(0, 3, 1, 2)

    verdict = flatten.verdict(channels_last)
    assert verdict.wrong == ("x",)
    assert "is wrong: max abs difference" in str(verdict)


def test_a_stub_prints_missing_for_every_gradient(capsys: pytest.CaptureFixture[str]) -> None:
    def stub(grad_output: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[None, None, None]:
        return None, None, None  # the notebook's stub, before the learner fills it in

    assert conv2d.verdict(stub).wrong == ("x", "weight", "bias")
    conv2d.check(stub)
    assert capsys.readouterr().out.startswith("✗ Conv2D: grad of x is missing (None)")
