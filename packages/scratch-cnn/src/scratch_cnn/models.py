r"""The networks: a LeNet-style default and a slightly larger "best", both plain :class:`Sequential` stacks.

``lenet`` (the default of ``scratch-cnn train``), for ``(N, 1, 28, 28)`` images::

    Conv2D(1, 32, 3, padding=1) - ReLU - MaxPool2D(2)     -> (N, 32, 14, 14)
    Conv2D(32, 64, 3, padding=1) - ReLU - MaxPool2D(2)    -> (N, 64, 7, 7)
    Flatten - Dense(3136, 128) - ReLU - Dropout(0.25) - Dense(128, 10)

``best`` doubles the convolutions (two 3x3 ones per stage, as VGG does), puts a BatchNorm2d
after each (the convolutions then have no bias: BatchNorm's :math:`\beta` replaces it) and
adds dropout before each Dense::

    [Conv2D(3x3, padding=1, bias=False) - BatchNorm2d - ReLU] x2 at 32 channels, MaxPool2D(2)
    [Conv2D(3x3, padding=1, bias=False) - BatchNorm2d - ReLU] x2 at 64 channels, MaxPool2D(2)
    Flatten - Dropout(0.3) - Dense(3136, 256) - ReLU - Dropout(0.3) - Dense(256, 10)

The first convolution's input is data, so it is built with ``input_grad=False``: its
backward computes the weight and bias gradients and skips :math:`\partial L / \partial x`.
"""

from __future__ import annotations

from collections.abc import Callable

from scratch_cnn.conv import Conv2D, Impl
from scratch_cnn.flatten import Flatten
from scratch_cnn.pooling import MaxPool2D
from scratch_engine import BatchNorm2d, Dense, Dropout, Module, ReLU, Sequential

__all__ = ["MODELS", "best", "lenet"]


def lenet(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    channels: tuple[int, int] = (32, 64),
    kernel_size: int = 3,
    hidden: int = 128,
    dropout: float = 0.25,
    impl: Impl = "im2col",
) -> Sequential:
    """Two ``conv (same padding) - ReLU - 2x2 max-pool`` blocks, then ``Dense - ReLU - Dropout - Dense``.

    ``image_size`` must be divisible by 4 (two halvings).
    """
    _check_size(image_size)
    c1, c2 = channels
    pad = kernel_size // 2
    layers: list[Module] = [
        Conv2D(in_channels, c1, kernel_size, padding=pad, impl=impl, input_grad=False),
        ReLU(),
        MaxPool2D(2),
        Conv2D(c1, c2, kernel_size, padding=pad, impl=impl),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(c2 * (image_size // 4) ** 2, hidden),
        ReLU(),
    ]
    if dropout > 0:
        layers.append(Dropout(dropout))
    layers.append(Dense(hidden, num_classes))
    return Sequential(layers)


def best(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    channels: tuple[int, int] = (32, 64),
    hidden: int = 256,
    dropout: float = 0.3,
    impl: Impl = "im2col",
) -> Sequential:
    """Two stages of two ``3x3 conv - BatchNorm2d - ReLU`` each, a 2x2 max-pool after each stage, then a dropout MLP."""
    _check_size(image_size)
    c1, c2 = channels
    layers: list[Module] = []
    for i, (fan_in, fan_out) in enumerate([(in_channels, c1), (c1, c1), (c1, c2), (c2, c2)]):
        layers += [
            Conv2D(fan_in, fan_out, 3, padding=1, bias=False, impl=impl, input_grad=i > 0),
            BatchNorm2d(fan_out),
            ReLU(),
        ]
        if i % 2 == 1:
            layers.append(MaxPool2D(2))
    layers += [
        Flatten(),
        Dropout(dropout),
        Dense(c2 * (image_size // 4) ** 2, hidden),
        ReLU(),
        Dropout(dropout),
        Dense(hidden, num_classes),
    ]
    return Sequential(layers)


def _check_size(image_size: int) -> None:
    if image_size <= 0 or image_size % 4:
        raise ValueError(f"image_size must be a positive multiple of 4 (two 2x2 poolings), got {image_size}")


MODELS: dict[str, Callable[..., Sequential]] = {"lenet": lenet, "best": best}
