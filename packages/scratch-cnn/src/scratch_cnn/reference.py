"""The torch.nn twins of the CNN's layers, for whole-run parity (``scratch-cnn train ... --reference torch``).

Registered with :func:`scratch_engine.tools.twin.register_to_torch`, so that
:func:`scratch_engine.tools.twin.to_torch` turns a network of these layers into the same
``torch.nn.Sequential`` with the same weights. The image task imports it only for a run with
``--reference torch`` (:meth:`scratch_cnn.images.Images.torch_twin`). Like the engine's
:mod:`scratch_engine.tools.twin`, this is a reference, not part of the training path: with
:mod:`scratch_cnn.bench` (which times the torch.nn twin of the default network) one of the two
places in the package that use torch.nn.
"""

from __future__ import annotations

from torch import nn

from scratch_cnn.conv import Conv2D
from scratch_cnn.flatten import Flatten
from scratch_cnn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from scratch_engine.tools.twin import copy_parameters, register_to_torch


def _conv(layer: Conv2D) -> nn.Module:
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        bias=layer.bias is not None,
    )
    return copy_parameters(conv, layer)


register_to_torch(Conv2D, _conv)
register_to_torch(MaxPool2D, lambda p: nn.MaxPool2d(p.kernel_size, p.stride, p.padding))
register_to_torch(AvgPool2D, lambda p: nn.AvgPool2d(p.kernel_size, p.stride, p.padding))
register_to_torch(GlobalAvgPool2D, lambda _: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
register_to_torch(Flatten, lambda _: nn.Flatten())
