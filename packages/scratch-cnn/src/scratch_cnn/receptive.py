r"""The receptive field: which input pixels one unit of a layer can see, computed and then measured.

    scratch-cnn receptive-field --out runs/scratch-cnn/receptive-field

A unit after a :math:`k \times k` convolution sees :math:`k` positions of the layer below; each of those saw
:math:`r_{l-1}` input pixels, spaced :math:`j_{l-1}` pixels apart (the *jump*: the product of the strides so far).
So, per axis, with dilation :math:`d_l` and stride :math:`s_l` (pooling is the same with :math:`d_l = 1`):

.. math::
    r_l = r_{l-1} + (k_l - 1)\, d_l\, j_{l-1}, \qquad j_l = j_{l-1}\, s_l, \qquad r_0 = j_0 = 1

:func:`receptive_fields` applies it to a network's layers. :func:`gradient_map` measures it with the network's own
hand-written backward: a gradient of one at the centre unit of a layer's output, sent back to the input, is
nonzero exactly on the pixels that unit depends on (averaged over random inputs, since a ReLU or a max-pool passes
gradient only where it was active). :func:`plot_receptive_fields` draws both.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scratch_cnn.conv import Conv2D
from scratch_cnn.pooling import _Pool2D
from scratch_engine import Module, Sequential
from scratch_engine.tools.plots import new_figure, save_figure


@dataclass(frozen=True)
class Field:
    """The receptive field after one convolution or pooling layer (per axis: rows, columns)."""

    index: int  # the layer's position in the network
    name: str  # e.g. "conv 1", "pool 1"
    size: tuple[int, int]  # r: input pixels one unit sees
    jump: tuple[int, int]  # j: input pixels between neighbouring units


def receptive_fields(model: Sequential) -> list[Field]:
    """:math:`r_l` and :math:`j_l` after each ``Conv2D`` and pooling layer of ``model``, in order."""
    size, jump = (1, 1), (1, 1)
    fields: list[Field] = []
    counts = {"conv": 0, "pool": 0}
    for index, layer in enumerate(model.layers):
        if isinstance(layer, (Conv2D, _Pool2D)):
            dilation = layer.dilation if isinstance(layer, Conv2D) else (1, 1)
            # r_l = r_{l-1} + (k_l - 1) d_l j_{l-1},  j_l = j_{l-1} s_l
            size = (
                size[0] + (layer.kernel_size[0] - 1) * dilation[0] * jump[0],
                size[1] + (layer.kernel_size[1] - 1) * dilation[1] * jump[1],
            )
            jump = (jump[0] * layer.stride[0], jump[1] * layer.stride[1])
            kind = "conv" if isinstance(layer, Conv2D) else "pool"
            counts[kind] += 1
            fields.append(Field(index, f"{kind} {counts[kind]}", size, jump))
    return fields


@torch.no_grad()
def gradient_map(model: Sequential, upto: int, image_size: int, in_channels: int = 1, samples: int = 32) -> Tensor:
    r"""Mean :math:`|\partial y_\text{centre} / \partial x|` over ``samples`` random images, ``(H, W)``.

    ``y_centre`` is the sum over channels of layer ``upto``'s output at its centre position. A float64 copy of
    the layers runs in evaluation mode (``model`` is left as it is), its first layer asked for the input gradient
    even if it was built without (``input_grad=False``, as a network's first convolution is).
    """
    layers: list[Module] = [copy.deepcopy(layer) for layer in model.layers[: upto + 1]]
    if hasattr(layers[0], "input_grad"):
        layers[0].input_grad = True
    prefix = Sequential(layers).to(dtype=torch.float64)
    prefix.eval()  # BatchNorm with its running statistics: in training mode a unit would see the whole batch
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, in_channels, image_size, image_size, generator=generator, dtype=torch.float64)
    y = prefix(x)
    grad = torch.zeros_like(y)
    grad[:, :, y.shape[2] // 2, y.shape[3] // 2] = 1.0  # a one at the centre unit, every channel
    grad_x = prefix.backward(grad)
    if grad_x is None:
        raise ValueError(f"layer 0 ({type(layers[0]).__name__}) returns no input gradient to measure a field with")
    return grad_x.abs().sum(dim=1).mean(dim=0)


def _bounding_box(grad_map: Tensor) -> tuple[int, int, int, int] | None:
    """``(top, left, rows, columns)`` of the nonzero entries of a :func:`gradient_map`; ``None`` if there are none."""
    rows = torch.nonzero(grad_map.sum(dim=1)).flatten()
    cols = torch.nonzero(grad_map.sum(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1


def measured_size(grad_map: Tensor) -> tuple[int, int]:
    """Rows and columns spanned by the nonzero entries of a :func:`gradient_map` (its bounding box)."""
    box = _bounding_box(grad_map)
    return (0, 0) if box is None else (box[2], box[3])


def plot_receptive_fields(
    maps: list[tuple[Field, Tensor]], path: Path, title: str = "receptive field of the centre unit"
) -> Path:
    """One panel per layer: the measured :math:`|\\partial y/\\partial x|`, the computed field as a box."""
    figure = new_figure(2.4 * len(maps), 3.2)
    for i, (field, grad_map) in enumerate(maps, start=1):
        axes = figure.add_subplot(1, len(maps), i)
        axes.imshow((grad_map / grad_map.max()).numpy(), cmap="magma", vmin=0.0, vmax=1.0)
        height, width = grad_map.shape
        box = _bounding_box(grad_map)  # the computed box is drawn at the measured box's corner
        top, left = box[:2] if box else ((height // 2) - field.size[0] // 2, (width // 2) - field.size[1] // 2)
        x0, y0, x1, y1 = left - 0.5, top - 0.5, left - 0.5 + field.size[1], top - 0.5 + field.size[0]
        axes.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="cyan", lw=1.5)  # the computed box
        axes.set_xlim(-0.5, width - 0.5)
        axes.set_ylim(height - 0.5, -0.5)  # imshow's limits (row 0 at the top), which plot() would widen
        axes.set_title(f"after {field.name}\n{field.size[0]}×{field.size[1]} pixels", fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"{title} (box: the formula; colour: |∂y/∂x|, measured)", fontsize=11)
    return save_figure(figure, path)
