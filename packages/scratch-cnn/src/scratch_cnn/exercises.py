r"""Exercises: write the backward of Conv2D, MaxPool2D and Flatten yourself; autograd says whether it is right.

Each :class:`~scratch_engine.tools.exercises.Exercise` below holds a layer's forward as plain tensor code, with the
shapes and the parameter layout of the package's own layer (the tests check that both forwards agree), so the
backward you write *is* that layer's backward. You write ``backward(grad_output, **inputs)`` and return the
gradients named in ``exercise.wrt``, in that order::

    from scratch_cnn.exercises import conv2d

    conv2d.inputs()                   # the float64 inputs the check draws: x, weight, bias (print their shapes)
    conv2d.check(my_conv2d_backward)  # ✓, or ✗ naming the wrong gradient, how far off and where
    conv2d.show_solution()            # prints the solution (try first!)

- :data:`conv2d`: ``Conv2D`` with stride 1 and no padding; gradients of ``x``, ``weight`` and ``bias``.
- :data:`maxpool2d`: ``MaxPool2D(2)``; the gradient of ``x`` (inputs without ties).
- :data:`flatten`: ``Flatten``; the gradient of ``x``.

The notebook ``notebooks/cnn_from_scratch.ipynb`` poses them after deriving each formula.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratch_engine.tools.exercises import Exercise

__all__ = ["EXERCISES", "conv2d", "flatten", "maxpool2d"]


def _randn(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- Conv2D
def conv2d_forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    r"""``Conv2D(C, O, (kh, kw))``, stride 1, no padding: ``x (N, C, H, W)``, ``weight (O, C, kh, kw)``, ``bias (O,)``
    give ``y (N, O, H - kh + 1, W - kw + 1)`` with

        y[n, o, i, j] = bias[o] + Σ_c Σ_u Σ_v weight[o, c, u, v] · x[n, c, i + u, j + v]

    (a cross-correlation: no kernel flip). As the layer's ``impl="loop"``: one output pixel at a time.
    """
    n = x.shape[0]
    out_channels, _, kh, kw = weight.shape
    h_out, w_out = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    w2 = weight.reshape(out_channels, -1)  # (O, C kh kw): one row per output channel
    y = x.new_zeros(n, out_channels, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            window = x[:, :, i : i + kh, j : j + kw].reshape(n, -1)  # (N, C kh kw): the pixels under the kernel
            y[:, :, i, j] = window @ w2.T + bias  # (N, O): the window summed against every kernel, plus its bias
    return y


def conv2d_backward(grad_output: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The solution: one output pixel at a time, each product of the forward sends ``g`` back to both factors."""
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    w2 = weight.reshape(out_channels, -1)
    grad_x = torch.zeros_like(x)
    grad_w2 = torch.zeros_like(w2)
    for i in range(grad_output.shape[2]):
        for j in range(grad_output.shape[3]):
            window = x[:, :, i : i + kh, j : j + kw].reshape(n, -1)
            g = grad_output[:, :, i, j]  # (N, O): dL/dy at this output pixel
            # y[:, :, i, j] = window @ w2ᵀ + b  ->  dL/dw2 += gᵀ window (the matmul sums over the batch)
            grad_w2 += g.T @ window
            # y[:, :, i, j] = window @ w2ᵀ + b  ->  dL/dwindow = g w2, ADDED: a pixel under several windows
            # collects from each of them
            grad_x[:, :, i : i + kh, j : j + kw] += (g @ w2).reshape(n, in_channels, kh, kw)
    # y[:, :, i, j] = ... + b, b broadcast over the batch and every pixel  ->  dL/db = Σ_{n,i,j} g
    grad_bias = grad_output.sum(dim=(0, 2, 3))
    return grad_x, grad_w2.reshape(weight.shape), grad_bias  # w2 = weight.reshape(O, -1)  ->  reshape back


def conv2d_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    """A batch of 2 images, 2 channels of 5x6, into 3 output channels with a 3x3 kernel: y is (2, 3, 3, 4)."""
    return {
        "x": _randn(generator, 2, 2, 5, 6),
        "weight": _randn(generator, 3, 2, 3, 3),
        "bias": _randn(generator, 3),
    }


conv2d = Exercise(
    "Conv2D",
    conv2d_forward,
    conv2d_inputs,
    ("x", "weight", "bias"),
    conv2d_backward,
    hint="a pixel lies under several windows: add (+=) each window's g·W into grad_x; dL/db sums g over n, i and j",
)


# ---------------------------------------------------------------------------------------------- MaxPool2D
POOL = 2  # MaxPool2D(2): 2x2 windows side by side (the stride defaults to the kernel size), as in lenet()


def maxpool2d_forward(x: Tensor) -> Tensor:
    r"""``MaxPool2D(2)``: ``x (N, C, H, W) -> y (N, C, H // 2, W // 2)``, the largest value of each 2x2 window,

        y[n, c, i, j] = max_{u, v} x[n, c, 2i + u, 2j + v]

    (an odd last row or column lies in no window and is dropped, as torch's floor does).
    """
    n, channels = x.shape[:2]
    h_out, w_out = x.shape[2] // POOL, x.shape[3] // POOL
    y = x.new_zeros(n, channels, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            window = x[:, :, POOL * i : POOL * i + POOL, POOL * j : POOL * j + POOL]  # (N, C, 2, 2)
            y[:, :, i, j] = window.amax(dim=(2, 3))
    return y


def maxpool2d_backward(grad_output: Tensor, x: Tensor) -> Tensor:
    """The solution: only the window's maximum moved the output, so all of ``g`` goes there."""
    grad_x = torch.zeros_like(x)  # a pixel that wins no window (and a dropped odd row) gets nothing
    for i in range(grad_output.shape[2]):
        for j in range(grad_output.shape[3]):
            rows, cols = slice(POOL * i, POOL * i + POOL), slice(POOL * j, POOL * j + POOL)
            window = x[:, :, rows, cols]
            winner = window == window.amax(dim=(2, 3), keepdim=True)  # one True per window: the inputs have no ties
            # y[:, :, i, j] = window.amax(dim=(2, 3))  ->  g[:, :, i, j] to the winner, 0 to the other three
            # (added: windows that overlap, stride < kernel, can share a winner)
            grad_x[:, :, rows, cols] += winner * grad_output[:, :, i, j, None, None]
    return grad_x


def maxpool2d_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    """2 images of 3 channels, 5x6: y is (2, 3, 2, 3), and the fifth row is in no window. Random normal values
    have no ties, so every window has one maximum."""
    return {"x": _randn(generator, 2, 3, 5, 6)}


maxpool2d = Exercise(
    "MaxPool2D",
    maxpool2d_forward,
    maxpool2d_inputs,
    ("x",),
    maxpool2d_backward,
    hint="all of g[n, c, i, j] goes to the one pixel of window (i, j) that holds the maximum; the other pixels get 0",
)


# ---------------------------------------------------------------------------------------------- Flatten
def flatten_forward(x: Tensor) -> Tensor:
    """``Flatten``: ``x (N, C, H, W) -> (N, C·H·W)``, the feature maps of each image in one row, in memory order."""
    return x.reshape(x.shape[0], -1)


def flatten_backward(grad_output: Tensor, x: Tensor) -> Tensor:
    """The solution: no value changed, only the shape."""
    return grad_output.reshape(x.shape)  # y = x.reshape(N, -1)  ->  dL/dx = g.reshape(x.shape)


def flatten_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    """2 images of 3 channels, 4x5: y is (2, 60)."""
    return {"x": _randn(generator, 2, 3, 4, 5)}


flatten = Exercise(
    "Flatten",
    flatten_forward,
    flatten_inputs,
    ("x",),
    flatten_backward,
    hint="Flatten moves no value: reshape g back to x's (N, C, H, W), in the same (channels-first) order",
)


EXERCISES: tuple[Exercise, ...] = (conv2d, maxpool2d, flatten)
