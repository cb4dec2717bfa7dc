"""Conv2D against torch.nn.functional.conv2d and autograd, over a grid of configurations, for both impls."""

from __future__ import annotations

import itertools
import random
import re
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratch_cnn import Conv2D, ReLU, Sequential
from scratch_cnn.windows import output_size, window_indices, windows
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs

KERNELS = [1, 3, 5, (3, 2), (1, 5)]
STRIDES = [1, 2, 3]
PADDINGS = [0, 1, 2]
DILATIONS = [1, 2]
CHANNELS = [1, 3, 8]
BATCHES = [1, 2, 3]
IMAGES = [(7, 9), (9, 6)]  # small and non-square


class Config(NamedTuple):
    kernel: int | tuple[int, int]
    stride: int
    padding: int
    dilation: int
    in_channels: int
    out_channels: int
    batch: int
    image: tuple[int, int]
    bias: bool


def _fits(kernel: int | tuple[int, int], stride: int, padding: int, dilation: int, image: tuple[int, int]) -> bool:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return all(output_size(size, k, stride, padding, dilation) > 0 for size, k in zip(image, (kh, kw), strict=True))


def _grid() -> list[Config]:
    """Every (kernel, stride, padding, dilation) that fits; channels, batch, image and bias drawn per config."""
    rng = random.Random(0)
    configs = []
    for kernel, stride, padding, dilation in itertools.product(KERNELS, STRIDES, PADDINGS, DILATIONS):
        in_channels, out_channels, batch = rng.choice(CHANNELS), rng.choice(CHANNELS), rng.choice(BATCHES)
        image, bias = rng.choice(IMAGES), rng.random() < 0.75
        if _fits(kernel, stride, padding, dilation, image):
            configs.append(Config(kernel, stride, padding, dilation, in_channels, out_channels, batch, image, bias))
    return configs


GRID = _grid()
LOOP_GRID = GRID[::3]  # the loop implementation is slow: a third of the grid, still covering every value


def _ids(config: Config) -> str:
    k = config.kernel if isinstance(config.kernel, int) else "{}x{}".format(*config.kernel)
    return (
        f"k{k}-s{config.stride}-p{config.padding}-d{config.dilation}-c{config.in_channels}to{config.out_channels}"
        f"-n{config.batch}-{config.image[0]}x{config.image[1]}" + ("" if config.bias else "-nobias")
    )


def _reference(config: Config) -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(
        config.in_channels,
        config.out_channels,
        config.kernel,
        stride=config.stride,
        padding=config.padding,
        dilation=config.dilation,
        bias=config.bias,
    ).double()
    if config.bias:  # torch's default bias is small; make it matter
        with torch.no_grad():
            conv.bias.normal_()
    return conv


def _input(config: Config) -> Tensor:
    (x,) = random_inputs((config.batch, config.in_channels, *config.image), seed=1)
    return x


def _torch_conv(reference: nn.Conv2d, x: Tensor) -> Tensor:
    return F.conv2d(
        x, reference.weight, reference.bias, reference.stride, reference.padding, reference.dilation
    )  # fmt: skip


def _assert_matches_torch(layer: Conv2D, reference: nn.Conv2d, x: Tensor) -> None:
    """Forward equals F.conv2d; backward equals autograd through F.conv2d and through our own forward."""
    expected = _torch_conv(reference, x)
    layer.zero_grad()
    assert_close(layer(x), expected.detach(), name="Conv2D forward")
    x_ref = x.clone().requires_grad_(True)
    expected = _torch_conv(reference, x_ref)
    (g,) = random_inputs(expected.shape, seed=2)
    params = [reference.weight] + ([reference.bias] if reference.bias is not None else [])
    want = torch.autograd.grad(expected, [x_ref, *params], g)
    assert_close(layer.backward(g), want[0], name="Conv2D grad of input vs F.conv2d")
    for p, w in zip(layer.parameters(), want[1:], strict=True):
        assert_close(p.grad, w, name="Conv2D grad of parameter vs F.conv2d")
    check_backward(layer, x)


@pytest.mark.parametrize("config", GRID, ids=_ids)
def test_im2col_matches_torch(config: Config) -> None:
    reference = _reference(config)
    _assert_matches_torch(Conv2D.from_torch(reference, impl="im2col"), reference, _input(config))


@pytest.mark.parametrize("config", LOOP_GRID, ids=_ids)
def test_loop_matches_torch_and_im2col(config: Config) -> None:
    reference = _reference(config)
    x = _input(config)
    loop = Conv2D.from_torch(reference, impl="loop")
    _assert_matches_torch(loop, reference, x)

    im2col = Conv2D.from_torch(reference, impl="im2col")
    (g,) = random_inputs(loop(x).shape, seed=3)
    loop.zero_grad()
    y_loop, y_im2col = loop(x), im2col(x)
    assert_close(y_loop, y_im2col, atol=1e-10, rtol=1e-10, name="loop vs im2col forward")
    assert_close(loop.backward(g), im2col.backward(g), atol=1e-10, rtol=1e-10, name="loop vs im2col grad of input")
    for (name, p), q in zip(loop.named_parameters(), im2col.parameters(), strict=True):
        assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-10, name=f"loop vs im2col grad of {name}")


def test_grids_cover_every_value() -> None:
    for grid in (GRID, LOOP_GRID):
        for field, values in [
            ("kernel", KERNELS),
            ("stride", STRIDES),
            ("padding", PADDINGS),
            ("dilation", DILATIONS),
            ("in_channels", CHANNELS),
            ("out_channels", CHANNELS),
            ("batch", BATCHES),
            ("image", IMAGES),
            ("bias", [True, False]),
        ]:
            seen = {getattr(config, field) for config in grid}
            assert seen == set(values), f"{field}: grid of {len(grid)} covers {seen}, not {values}"
    assert len(LOOP_GRID) >= 25


@pytest.mark.parametrize("impl", ["loop", "im2col"])
def test_non_contiguous_input(impl: str) -> None:
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 4, 3, stride=(1, 2), padding=(0, 1)).double()
    layer = Conv2D.from_torch(reference, impl=impl)  # type: ignore[arg-type]
    (x,) = random_inputs((2, 3, 9, 7))
    x = x.transpose(2, 3)  # (2, 3, 7, 9), not contiguous
    _assert_matches_torch(layer, reference, x)


@pytest.mark.parametrize("impl", ["loop", "im2col"])
@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"),
    [((3, 2), (2, 1), (1, 2), (2, 1)), ((2, 3), (1, 3), (2, 0), (1, 2))],
    ids=["k3x2-s2x1-p1x2-d2x1", "k2x3-s1x3-p2x0-d1x2"],
)
def test_asymmetric_settings_match_torch(
    impl: str,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> None:
    """The grid uses one value for both axes; here every setting differs between height and width."""
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation).double()
    with torch.no_grad():
        reference.bias.normal_()
    layer = Conv2D.from_torch(reference, impl=impl)  # type: ignore[arg-type]
    assert (layer.stride, layer.padding, layer.dilation) == (stride, padding, dilation)
    (x,) = random_inputs((2, 3, 8, 9))
    _assert_matches_torch(layer, reference, x)


def test_float32_matches_torch() -> None:
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(4, 3, 12, 10)
    for impl in ("loop", "im2col"):
        layer = Conv2D.from_torch(reference, impl=impl)
        assert layer(x).dtype == torch.float32
        assert_close(layer(x), reference(x).detach(), atol=1e-5, rtol=1e-5, name=f"{impl} float32")


@pytest.mark.parametrize(("kernel", "stride", "dilation"), [((3, 2), (1, 1), (1, 1)), ((2, 3), (2, 3), (2, 1))])
def test_window_indices_are_where_the_windows_read(
    kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> None:
    pixels = torch.arange(7 * 9, dtype=torch.float64).reshape(1, 1, 7, 9)  # each pixel holds its flat index
    expected = windows(pixels, kernel, stride, dilation)[0, 0].long()
    assert torch.equal(window_indices((7, 9), kernel, stride, dilation), expected)


def test_bfloat16_runs_close_to_float32() -> None:
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 8, 3, padding=1)
    x, g = torch.randn(4, 3, 12, 10), torch.randn(4, 8, 12, 10)
    exact = Conv2D.from_torch(reference)
    half = Conv2D.from_torch(reference).to(dtype=torch.bfloat16)
    y = half(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert_close(y.float(), exact(x), atol=0.1, rtol=0.05, name="bfloat16 forward")
    assert_close(half.backward(g.bfloat16()).float(), exact.backward(g), atol=0.1, rtol=0.05, name="bfloat16 dL/dx")
    assert_close(half.weight.grad.float(), exact.weight.grad, atol=1.0, rtol=0.05, name="bfloat16 dL/dw")


@pytest.mark.parametrize("impl", ["loop", "im2col"])
def test_bfloat16_gradients_are_as_accurate_as_torch(impl: str) -> None:
    # Both sum the gradients over every window; the loop's running sums, kept in bfloat16 itself, dropped the
    # small terms: its dL/dw was 0.026 off (relative), torch's bfloat16 conv 0.0022
    torch.manual_seed(0)
    reference = nn.Conv2d(8, 16, 3, padding=1).double()
    x, g = torch.randn(64, 8, 16, 16, dtype=torch.float64), torch.randn(64, 16, 16, 16, dtype=torch.float64)
    exact_x = x.clone().requires_grad_()
    exact_dx, exact_dw = torch.autograd.grad(reference(exact_x), (exact_x, reference.weight), g)
    half_reference = nn.Conv2d(8, 16, 3, padding=1).bfloat16()
    half_reference.load_state_dict(reference.state_dict())
    torch_x = x.bfloat16().requires_grad_()
    torch_dx, torch_dw = torch.autograd.grad(half_reference(torch_x), (torch_x, half_reference.weight), g.bfloat16())
    layer = Conv2D.from_torch(reference, impl=impl).to(dtype=torch.bfloat16)  # type: ignore[arg-type]
    layer(x.bfloat16())
    dx = layer.backward(g.bfloat16())
    assert dx is not None
    assert dx.dtype == layer.weight.grad.dtype == torch.bfloat16

    def off(value: Tensor, exact: Tensor) -> float:
        return float((value.double() - exact).norm() / exact.norm())

    assert off(layer.weight.grad, exact_dw) <= 2 * off(torch_dw, exact_dw), (
        off(layer.weight.grad, exact_dw),
        off(torch_dw, exact_dw),
    )
    assert off(dx, exact_dx) <= 2 * off(torch_dx, exact_dx), (off(dx, exact_dx), off(torch_dx, exact_dx))


def test_im2col_repeated_steps_and_one_backward_per_forward() -> None:
    """backward writes dL/dX over the cached columns: the next step starts clean, a second backward is an error."""
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 4, 3, padding=1).double()
    layer = Conv2D.from_torch(reference)
    (x, g) = random_inputs((2, 3, 7, 9), (2, 4, 7, 9))
    grads = []
    for _ in range(2):
        layer.zero_grad()
        layer(x)
        grads.append((layer.backward(g), layer.weight.grad.clone()))
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(g)
    # equal up to the order of atomic additions, which a GPU's scatter-add does not fix
    assert_close(grads[0][0], grads[1][0], atol=1e-12, rtol=1e-12, name="dL/dX of the second step")
    assert_close(grads[0][1], grads[1][1], atol=1e-12, rtol=1e-12, name="dL/dW of the second step")


def test_init_shapes_and_kaiming_scale() -> None:
    torch.manual_seed(0)
    layer = Conv2D(16, 32, (3, 5))
    assert layer.weight.shape == (32, 16, 3, 5)
    assert layer.bias is not None
    assert torch.equal(layer.bias.data, torch.zeros(32))
    fan_in = 16 * 3 * 5
    assert abs(layer.weight.data.std().item() - (2 / fan_in) ** 0.5) < 0.005
    assert abs(layer.weight.data.mean().item()) < 0.005
    assert layer.num_parameters() == 32 * 16 * 15 + 32
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == ((3, 5), (1, 1), (0, 0), (1, 1))


def test_bias_false() -> None:
    torch.manual_seed(0)
    layer = Conv2D(3, 4, 3, bias=False).to(dtype=torch.float64)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    (x,) = random_inputs((2, 3, 7, 9))
    assert_close(layer(x), F.conv2d(x, layer.weight.data), name="bias=False forward")
    check_backward(layer, x)


def test_impl_is_switchable() -> None:
    torch.manual_seed(0)
    reference = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    layer = Conv2D.from_torch(reference, impl="loop")
    assert layer.impl == "loop"
    (x,) = random_inputs((2, 2, 7, 9))
    y_loop = layer(x)
    layer.impl = "im2col"
    assert_close(layer(x), y_loop, atol=1e-10, rtol=1e-10, name="after switching impl")
    check_backward(layer, x)
    with pytest.raises(ValueError, match="impl must be one of"):
        layer.impl = "fft"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="impl must be one of"):
        Conv2D(1, 1, 3, impl="fft")  # type: ignore[arg-type]


def test_from_torch_string_padding() -> None:
    torch.manual_seed(0)
    (x,) = random_inputs((1, 2, 7, 9))
    for padding, kernel, dilation in [("same", 3, 1), ("same", (5, 3), 2), ("valid", 3, 1)]:
        reference = nn.Conv2d(2, 3, kernel, padding=padding, dilation=dilation).double()
        layer = Conv2D.from_torch(reference)
        assert_close(layer(x), reference(x).detach(), name=f"padding={padding!r}")
    with pytest.raises(ValueError, match="asymmetric"):
        Conv2D.from_torch(nn.Conv2d(2, 3, (2, 3), padding="same"))


def test_from_torch_rejects_groups_and_padding_modes() -> None:
    with pytest.raises(ValueError, match="groups=1 only, got groups=2"):
        Conv2D.from_torch(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="padding_mode='zeros' only, got 'reflect'"):
        Conv2D.from_torch(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))


@pytest.mark.parametrize("impl", ["loop", "im2col"])
def test_invalid_inputs(impl: str) -> None:
    layer = Conv2D(3, 4, 5, dilation=2, impl=impl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\), got \(2, 4, 9, 9\)"):
        layer(torch.randn(2, 4, 9, 9))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\), got \(3, 9, 9\)"):
        layer(torch.randn(3, 9, 9))
    with pytest.raises(ValueError, match=r"too small.*output would be 0x1"):
        layer(torch.randn(1, 3, 8, 9))  # effective kernel d(k-1)+1 = 9
    with pytest.raises(ValueError, match=r"floating-point input, got dtype torch\.int64"):
        layer(torch.ones(1, 3, 9, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"torch\.float32 weights but got a torch\.float64 input"):
        layer(torch.randn(1, 3, 9, 9, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(torch.randn(1, 4, 1, 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_size": 0}, "kernel_size must be an int >= 1"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size must be"),
        ({"kernel_size": 3, "stride": 0}, "stride must be an int >= 1"),
        ({"kernel_size": 3, "padding": -1}, "padding must be an int >= 0"),
        ({"kernel_size": 3, "dilation": (1, 0)}, "dilation must be an int >= 1"),
        ({"kernel_size": 3.0}, "kernel_size must be"),
    ],
)
def test_invalid_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Conv2D(3, 4, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive int channel counts"):
        Conv2D(0, 4, 3)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((2.5, 4, 3), {}, "positive int channel counts, got in_channels=2.5"),
        (("3", 4, 3), {}, "positive int channel counts, got in_channels='3'"),
        ((3, True, 3), {}, "positive int channel counts, got in_channels=3, out_channels=True"),
        ((3, 4, 3), {"bias": 1}, "bias must be True or False, got 1"),
        ((3, 4, 3), {"stride": True}, "stride must be an int >= 1"),
    ],
)
def test_invalid_types(args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Conv2D(*args, **kwargs)  # type: ignore[arg-type]


def test_integer_likes_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    layer = Conv2D(np.int64(3), np.int32(4), np.int64(3), stride=(np.int64(2), 1), padding=np.int8(1))
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (3, 4, (3, 3))
    assert (layer.stride, layer.padding) == ((2, 1), (1, 1))
    assert all(type(v) is int for v in (layer.in_channels, *layer.kernel_size, *layer.stride, *layer.padding))
    assert layer(torch.randn(1, 3, 6, 6)).shape == (1, 4, 3, 6)


# Windows that already lie in column order, where im2col's columns could be the input itself: a 1x1 kernel with
# stride 1, a kernel as large as the image; and an expanded input, whose images are one block of memory.
ALIASING: dict[str, tuple[tuple[int, int], bool]] = {
    "1x1": ((1, 1), False),
    "kernel=image": ((5, 7), False),
    "1x1-expanded": ((1, 1), True),
    "3x3-expanded": ((3, 3), True),
}


@pytest.mark.parametrize("impl", ["loop", "im2col"])
@pytest.mark.parametrize("case", ALIASING)
def test_backward_leaves_its_input_alone(impl: str, case: str) -> None:
    """backward writes only into memory of its own: the input is unchanged, every gradient equals autograd's."""
    kernel, expanded = ALIASING[case]
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 4, kernel).double()
    (x,) = random_inputs((1 if expanded else 2, 3, 5, 7))
    x = x.expand(2, -1, -1, -1) if expanded else x
    before = x.clone()
    _assert_matches_torch(Conv2D.from_torch(reference, impl=impl), reference, x)  # type: ignore[arg-type]
    assert torch.equal(x, before)


@pytest.mark.parametrize("impl", ["loop", "im2col"])
@pytest.mark.parametrize("kernel", [1, 6])  # 1x1, and a kernel as large as the 6x6 feature map
def test_gradient_of_the_layer_before(impl: str, kernel: int) -> None:
    """A convolution's backward must not disturb what the layer before it cached: its gradients equal autograd's."""
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, kernel)).double()
    model = Sequential(
        Conv2D.from_torch(reference[0], impl=impl),  # type: ignore[arg-type]
        ReLU(),
        Conv2D.from_torch(reference[2], impl=impl),  # type: ignore[arg-type]
    )
    x, g = random_inputs((2, 2, 6, 6), (2, 3, 7 - kernel, 7 - kernel))
    x_ref = x.clone().requires_grad_(True)
    want = torch.autograd.grad(reference(x_ref), [x_ref, *reference.parameters()], g)
    assert_close(model(x), reference(x).detach(), name="forward")
    model.zero_grad()
    assert_close(model.backward(g), want[0], name="dL/dx")
    for (name, p), w in zip(model.named_parameters(), want[1:], strict=True):
        assert_close(p.grad, w, name=f"dL/d{name}")


@pytest.mark.parametrize("impl", ["loop", "im2col"])
def test_backward_after_a_forward_recorded_by_autograd(impl: str) -> None:
    """An input that requires grad: the forward is recorded, and the hand-written backward still runs and agrees."""
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 4, 3, padding=1).double()
    layer = Conv2D.from_torch(reference, impl=impl)  # type: ignore[arg-type]
    x, g = random_inputs((2, 3, 5, 7), (2, 4, 5, 7))
    x.requires_grad_(True)
    y = layer(x)
    assert y.requires_grad
    (want,) = torch.autograd.grad(_torch_conv(reference, x), x, g)
    grad = layer.backward(g)
    assert grad is not None
    assert not grad.requires_grad
    assert_close(grad, want, name="dL/dx")


@pytest.mark.parametrize("impl", ["loop", "im2col"])
def test_backward_checks_the_shape_of_grad_output(impl: str) -> None:
    torch.manual_seed(0)
    layer = Conv2D(3, 4, 3, impl=impl)  # type: ignore[arg-type]
    layer(torch.randn(2, 3, 8, 8))  # y: (2, 4, 6, 6)
    for wrong in [(2, 4, 5, 5), (3, 4, 6, 6), (2, 4, 36)]:
        shape = r"\(2, 4, 6, 6\), got " + re.escape(str(wrong))
        with pytest.raises(ValueError, match=r"Conv2D\.backward expects grad_output of .* shape " + shape):
            layer.backward(torch.ones(wrong))
    grad = layer.backward(torch.ones(2, 4, 6, 6))  # a wrong grad_output used nothing up
    assert grad is not None
    assert grad.shape == (2, 3, 8, 8)
    assert layer.bias is not None
    assert torch.equal(layer.bias.grad, torch.full((4,), 72.0))


@pytest.mark.parametrize("impl", ["loop", "im2col"])
@pytest.mark.parametrize("input_grad", [True, False])
def test_empty_batch(impl: str, input_grad: bool) -> None:
    layer = Conv2D(3, 4, 3, padding=1, impl=impl, input_grad=input_grad)  # type: ignore[arg-type]
    y = layer(torch.randn(0, 3, 8, 6))
    assert y.shape == (0, 4, 8, 6)
    grad = layer.backward(y)
    assert (grad.shape if grad is not None else None) == ((0, 3, 8, 6) if input_grad else None)
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight.grad))
