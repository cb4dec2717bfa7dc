"""MaxPool2D, AvgPool2D and GlobalAvgPool2D against torch.nn.functional and autograd."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratch_cnn import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from scratch_engine import Module
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs, seeded_generator

KERNELS = [1, 2, 3, (2, 3), (3, 1)]
STRIDES = [None, 1, 2, 3]
PADDINGS = [0, 1, (1, 0)]
IMAGES = [(7, 9), (8, 5)]


class Config(NamedTuple):
    kernel: int | tuple[int, int]
    stride: int | None
    padding: int | tuple[int, int]
    channels: int
    batch: int
    image: tuple[int, int]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def _grid() -> list[Config]:
    """Every (kernel, stride, padding) torch accepts (padding at most half the kernel); the rest drawn per config."""
    rng = random.Random(0)
    configs = []
    for kernel, stride, padding in itertools.product(KERNELS, STRIDES, PADDINGS):
        channels, batch, image = rng.choice([1, 3, 8]), rng.choice([1, 2, 3]), rng.choice(IMAGES)
        if all(p <= k // 2 for p, k in zip(_pair(padding), _pair(kernel), strict=True)):
            configs.append(Config(kernel, stride, padding, channels, batch, image))
    return configs


GRID = _grid()


def _ids(config: Config) -> str:
    kernel, padding, image = ("{}x{}".format(*_pair(v)) for v in (config.kernel, config.padding, config.image))
    return f"k{kernel}-s{config.stride}-p{padding}-c{config.channels}-n{config.batch}-{image}"


def _assert_matches_torch(layer: Module, torch_op: Callable[[Tensor], Tensor], x: Tensor) -> None:
    """Forward equals ``torch_op``; backward equals autograd through ``torch_op`` and through our own forward."""
    x_ref = x.clone().requires_grad_(True)
    expected = torch_op(x_ref)
    assert_close(layer(x), expected.detach(), name=f"{type(layer).__name__} forward")
    (g,) = random_inputs(expected.shape, seed=2)
    (want,) = torch.autograd.grad(expected, x_ref, g)
    assert_close(layer.backward(g), want, name=f"{type(layer).__name__} grad of input vs torch")
    check_backward(layer, x)


@pytest.mark.parametrize("config", GRID, ids=_ids)
def test_max_pool_matches_torch(config: Config) -> None:
    (x,) = random_inputs((config.batch, config.channels, *config.image), seed=1)
    layer = MaxPool2D(config.kernel, config.stride, config.padding)
    _assert_matches_torch(layer, lambda t: F.max_pool2d(t, config.kernel, config.stride, config.padding), x)


@pytest.mark.parametrize("config", GRID, ids=_ids)
def test_avg_pool_matches_torch(config: Config) -> None:
    (x,) = random_inputs((config.batch, config.channels, *config.image), seed=1)
    layer = AvgPool2D(config.kernel, config.stride, config.padding)
    _assert_matches_torch(layer, lambda t: F.avg_pool2d(t, config.kernel, config.stride, config.padding), x)


def test_grid_covers_every_value() -> None:
    assert {c.kernel for c in GRID} == set(KERNELS)
    assert {c.stride for c in GRID} == set(STRIDES)
    assert {c.padding for c in GRID} == set(PADDINGS)
    assert {c.image for c in GRID} == set(IMAGES)
    assert {c.channels for c in GRID} == {1, 3, 8}
    assert {c.batch for c in GRID} == {1, 2, 3}


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), 1, (1, 0))])
def test_max_pool_ties_go_to_the_first_max(kernel: int, stride: int, padding: int) -> None:
    """Few distinct values, so most windows hold several maxima: the gradient must go where torch sends it."""
    generator = seeded_generator(0)
    x = torch.randint(0, 3, (2, 3, 7, 9), generator=generator).double()
    layer = MaxPool2D(kernel, stride, padding)
    _assert_matches_torch(layer, lambda t: F.max_pool2d(t, kernel, stride, padding), x)


def test_max_pool_equal_window_routes_to_its_top_left() -> None:
    layer = MaxPool2D(2)
    layer(torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    grad = layer.backward(torch.ones(1, 1, 2, 2, dtype=torch.float64))
    assert grad[0, 0].tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_max_pool_padding_is_minus_infinity() -> None:
    x = -torch.ones(1, 1, 2, 2, dtype=torch.float64)
    assert MaxPool2D(2, 1, padding=1)(x).max().item() == -1.0  # zero padding would give 0


def test_avg_pool_counts_padding() -> None:
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    y = AvgPool2D(2, 2, padding=1)(x)  # each corner window holds one pixel and three zeros
    assert y.tolist() == [[[[0.25, 0.25], [0.25, 0.25]]]]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_stride_defaults_to_kernel(cls: type[MaxPool2D] | type[AvgPool2D]) -> None:
    layer = cls((2, 3))
    assert layer.stride == (2, 3)
    assert layer(torch.randn(1, 2, 8, 9)).shape == (1, 2, 4, 3)


def test_non_contiguous_input() -> None:
    (x,) = random_inputs((2, 3, 9, 7))
    x = x.transpose(2, 3)
    _assert_matches_torch(MaxPool2D(3, 2, 1), lambda t: F.max_pool2d(t, 3, 2, 1), x)
    _assert_matches_torch(AvgPool2D(3, 2, 1), lambda t: F.avg_pool2d(t, 3, 2, 1), x)


def test_float32() -> None:
    x = torch.randn(2, 3, 8, 8)
    assert_close(MaxPool2D(2)(x), F.max_pool2d(x, 2), name="float32 max")
    assert_close(AvgPool2D(3, 1, 1)(x), F.avg_pool2d(x, 3, 1, 1), atol=1e-6, name="float32 avg")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_max_pool_low_precision_routes_as_torch(dtype: torch.dtype) -> None:
    """The arg-max keys are float32 whatever x's dtype: bfloat16 values and their ties route exactly as torch's."""
    generator = seeded_generator(0)  # on the default device: the GPU under SCRATCH_TEST_DEVICE
    x = torch.randint(0, 4, (2, 3, 9, 8), generator=generator).to(dtype) / 4  # many ties
    g = torch.randn(2, 3, 4, 4, generator=generator).to(dtype)
    x_ref = x.clone().requires_grad_(True)
    expected = F.max_pool2d(x_ref, 2)
    expected.backward(g)
    layer = MaxPool2D(2)
    y = layer(x)
    assert y.dtype == dtype
    assert torch.equal(y, expected.detach())
    assert torch.equal(layer.backward(g), x_ref.grad)


@pytest.mark.parametrize("fill", [float("-inf"), float("nan")])
def test_max_pool_padding_never_wins(fill: float) -> None:
    """A window of -inf or NaN that overlaps the padding sends its gradient into the image (torch: -inf the same)."""
    x = torch.full((1, 1, 4, 4), fill, dtype=torch.float64)
    layer = MaxPool2D(3, 2, 1)
    y = layer(x)
    grad = layer.backward(torch.ones_like(y))
    assert grad.sum().item() == 4.0  # each of the 4 windows' gradient reaches a pixel
    assert grad[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]  # its first pixel
    if fill == float("-inf"):
        x_ref = x.clone().requires_grad_(True)
        expected = F.max_pool2d(x_ref, 3, 2, 1)
        expected.backward(torch.ones_like(expected))
        assert torch.equal(y, expected.detach())
        assert torch.equal(grad, x_ref.grad)


def test_max_pool_nan_window() -> None:
    """A window holding NaN gives NaN, recorded by autograd or not; its gradient goes to its first element."""
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    layer = MaxPool2D(2)
    with torch.no_grad():
        y = layer(x)
    assert y[0, 0, 0, 0].isnan()
    assert torch.equal(y.flatten()[1:], F.max_pool2d(x, 2).flatten()[1:])
    grad = layer.backward(torch.ones(1, 1, 2, 2, dtype=torch.float64))
    assert grad[0, 0].tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1]]
    assert layer(x.clone().requires_grad_(True))[0, 0, 0, 0].isnan()


def test_from_torch() -> None:
    (x,) = random_inputs((2, 3, 7, 9))
    for reference in [nn.MaxPool2d(3), nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0))]:
        layer = MaxPool2D.from_torch(reference)
        assert_close(layer(x), reference(x), name=repr(reference))
    for reference in [nn.AvgPool2d(2), nn.AvgPool2d((3, 2), stride=1, padding=(1, 1))]:
        layer = AvgPool2D.from_torch(reference)
        assert_close(layer(x), reference(x), name=repr(reference))
    assert_close(GlobalAvgPool2D.from_torch(nn.AdaptiveAvgPool2d((1, 1)))(x), nn.AdaptiveAvgPool2d(1)(x).flatten(1))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MaxPool2D.from_torch(nn.MaxPool2d(2, ceil_mode=True)), "ceil_mode=False only"),
        (lambda: MaxPool2D.from_torch(nn.MaxPool2d(2, dilation=2)), "dilation=1 only, got dilation=2"),
        (lambda: MaxPool2D.from_torch(nn.MaxPool2d(2, return_indices=True)), "return_indices"),
        (lambda: AvgPool2D.from_torch(nn.AvgPool2d(2, ceil_mode=True)), "ceil_mode=False only"),
        (lambda: AvgPool2D.from_torch(nn.AvgPool2d(2, count_include_pad=False)), "count_include_pad=True only"),
        (lambda: AvgPool2D.from_torch(nn.AvgPool2d(2, divisor_override=3)), "divisor_override=3"),
        (lambda: GlobalAvgPool2D.from_torch(nn.AdaptiveAvgPool2d(2)), "output_size 1, got 2"),
    ],
)
def test_from_torch_rejects_unsupported(make: Callable[[], Module], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_invalid_settings_and_inputs(cls: type[MaxPool2D] | type[AvgPool2D]) -> None:
    name = cls.__name__
    with pytest.raises(ValueError, match=r"padding must be at most half the kernel size.*padding=\(2, 2\)"):
        cls(3, padding=2)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        cls(2, stride=0)
    with pytest.raises(ValueError, match="kernel_size must be"):
        cls((2, 2, 2))
    layer = cls(5, stride=1)
    with pytest.raises(ValueError, match=rf"{name}: input of size 4x9 is too small.*output would be 0x5"):
        layer(torch.randn(1, 1, 4, 9))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, C, H, W\), got \(7, 9\)"):
        layer(torch.randn(7, 9))
    with pytest.raises(ValueError, match=r"floating-point input, got dtype torch\.int64"):
        layer(torch.ones(1, 1, 7, 9, dtype=torch.long))
    with pytest.raises(RuntimeError, match="before forward"):
        cls(2).backward(torch.randn(1, 1, 2, 2))


@pytest.mark.parametrize(
    ("layer", "shape", "wrong"),
    [
        (MaxPool2D(2), "(2, 3, 4, 4)", (2, 3, 4, 3)),
        (MaxPool2D(3, 2, 1), "(2, 3, 4, 4)", (1, 3, 4, 4)),
        (AvgPool2D(2), "(2, 3, 4, 4)", (2, 3, 16)),
        (AvgPool2D(3, 1, 1), "(2, 3, 8, 8)", (2, 3, 4, 4)),
        (GlobalAvgPool2D(), "(2, 3)", (2, 3, 1, 1)),
    ],
    ids=["max", "max-padded", "avg", "avg-padded", "global"],
)
def test_backward_checks_the_shape_of_grad_output(layer: Module, shape: str, wrong: tuple[int, ...]) -> None:
    layer(torch.randn(2, 3, 8, 8))
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"{name}\.backward expects grad_output of .* shape {re.escape(shape)}"):
        layer.backward(torch.ones(wrong))
    good = torch.ones(tuple(int(n) for n in shape.strip("()").split(", ")))
    assert layer.backward(good).shape == (2, 3, 8, 8)  # a wrong one used nothing up


@pytest.mark.parametrize(
    "layer",
    [MaxPool2D(2), MaxPool2D(3, 2, 1), AvgPool2D(3, 2, 1), GlobalAvgPool2D()],
    ids=["max", "max-padded", "avg-padded", "global"],
)
def test_empty_batch(layer: Module) -> None:
    y = layer(torch.randn(0, 3, 8, 8))
    assert y.shape[0] == 0
    assert layer.backward(y).shape == (0, 3, 8, 8)


def test_pool_settings_accept_integer_likes_and_have_no_dilation() -> None:
    np = pytest.importorskip("numpy")
    assert MaxPool2D(np.int64(3), stride=(np.int32(2), 1)).stride == (2, 1)
    with pytest.raises(ValueError, match=r"too small for kernel_size=\(3, 3\), padding=\(0, 0\), stride=") as error:
        AvgPool2D(3)(torch.randn(1, 1, 2, 2))
    assert "dilation" not in str(error.value)


def test_global_avg_pool() -> None:
    (x,) = random_inputs((3, 4, 7, 9))
    layer = GlobalAvgPool2D()
    _assert_matches_torch(layer, lambda t: nn.AdaptiveAvgPool2d(1)(t).flatten(1), x)
    assert layer(x).shape == (3, 4)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, C, H, W\), got \(3, 4, 7\)"):
        layer(torch.randn(3, 4, 7))
    with pytest.raises(RuntimeError, match="before forward"):
        GlobalAvgPool2D().backward(torch.randn(3, 4))
