r"""Sliding windows over an image: the one idea behind convolution and pooling.

A layer with kernel :math:`k`, stride :math:`s`, padding :math:`p` and dilation :math:`d`
reads, for output row :math:`i`, the input rows :math:`i s + a d` for :math:`a = 0..k-1`
of the padded image. The last window must fit, which gives the output size

.. math::
    H_\text{out} = \left\lfloor \frac{H + 2p - d(k-1) - 1}{s} \right\rfloor + 1

(the same formula for the width). :func:`windows` returns every window at once as a
*strided view* ``(N, C, kh, kw, H_out, W_out)`` of the padded input — no copy, the
same memory read with other strides — and :func:`col2im` is its adjoint: it adds a
gradient for every window element back onto the pixel it was read from.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor

Pair = tuple[int, int]


def as_int(value: Any) -> int | None:
    """``value`` as an ``int`` if it is an integer (``3``, ``numpy.int64(3)``: what ``operator.index`` takes),
    else ``None``. A bool is not a size."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def pair(value: int | tuple[int, ...] | list[int], name: str, minimum: int = 1) -> Pair:
    """``3 -> (3, 3)``, ``(3, 2)`` stays; a ``ValueError`` naming ``name`` unless both are ints ``>= minimum``."""
    values = [as_int(v) for v in (value if isinstance(value, (tuple, list)) else (value, value))]
    valid = [v for v in values if v is not None and v >= minimum]
    if len(values) != 2 or len(valid) != 2:
        raise ValueError(f"{name} must be an int >= {minimum} or a pair (h, w) of them, got {value!r}")
    return (valid[0], valid[1])


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    r""":math:`\lfloor (\text{size} + 2p - d(k-1) - 1) / s \rfloor + 1`, the number of window positions."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_shape(layer: str, hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair | None = None) -> Pair:
    """``(H_out, W_out)``; a ``ValueError`` naming ``layer`` when the window does not fit the image.

    ``dilation=None`` (the pools, which have none) counts as ``(1, 1)`` and is left out of the message.
    """
    d = (1, 1) if dilation is None else dilation
    h_out, w_out = (output_size(hw[k], kernel[k], stride[k], padding[k], d[k]) for k in range(2))
    if h_out <= 0 or w_out <= 0:
        dilated = "" if dilation is None else f"dilation={dilation}, "
        raise ValueError(
            f"{layer}: input of size {hw[0]}x{hw[1]} is too small for kernel_size={kernel}, padding={padding}, "
            f"{dilated}stride={stride}: the output would be {h_out}x{w_out}"
        )
    return h_out, w_out


def check_images(layer: str, x: Tensor, channels: int | None = None) -> None:
    """A ``ValueError`` naming ``layer`` unless ``x`` is a floating ``(N, C, H, W)`` batch (with ``channels``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer} expects a torch.Tensor, got {type(x).__name__}")
    expected = f"(N, {'C' if channels is None else channels}, H, W)"
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{layer} expects input of shape {expected}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{layer} expects a floating-point input, got dtype {x.dtype}")


def pad2d(x: Tensor, padding: Pair, value: float = 0.0) -> Tensor:
    """``(N, C, H, W) -> (N, C, H + 2ph, W + 2pw)``: ``x`` written into the middle of a tensor full of ``value``."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    padded = x.new_full((n, c, h + 2 * ph, w + 2 * pw), value)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    return padded


def crop2d(x: Tensor, padding: Pair) -> Tensor:
    """The inverse of :func:`pad2d`'s placement: drop ``padding`` rows and columns on each side."""
    ph, pw = padding
    return x[:, :, ph : x.shape[2] - ph, pw : x.shape[3] - pw]


def windows(x: Tensor, kernel: Pair, stride: Pair, dilation: Pair = (1, 1)) -> Tensor:
    r"""All windows of an (already padded) ``x (N, C, H, W)`` as a view ``(N, C, kh, kw, H_out, W_out)``.

    Element ``[n, c, a, b, i, j]`` is ``x[n, c, i*sh + a*dh, j*sw + b*dw]``. Stepping one
    kernel row moves ``dh`` image rows, stepping one output row moves ``sh`` image rows,
    so the view's strides are the image's row and column strides times ``d`` and ``s``.
    Where windows share a pixel (for ``d = 1``: when ``s < k``), the view reads the same memory more than once.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    h_out, w_out = output_size(h, kh, sh, 0, dh), output_size(w, kw, sw, 0, dw)
    s_n, s_c, s_h, s_w = x.stride()
    return x.as_strided(
        (n, c, kh, kw, h_out, w_out),
        (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw),
        x.storage_offset(),
    )


def window_indices(
    hw: Pair, kernel: Pair, stride: Pair, dilation: Pair = (1, 1), device: torch.device | str | None = None
) -> Tensor:
    r"""Where each element of :func:`windows` lies in its ``(H, W)`` image, as a flat index ``row * W + col``.

    Returns ``(kh, kw, H_out, W_out)`` integers: element ``[a, b, i, j]`` is ``(i*sh + a*dh) * W +
    (j*sw + b*dw)``, the pixel that ``windows(x, ...)[n, c, a, b, i, j]`` reads from every image of the batch.
    """
    h, w = hw
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    h_out, w_out = output_size(h, kh, sh, 0, dh), output_size(w, kw, sw, 0, dw)
    rows = (
        torch.arange(kh, device=device).reshape(kh, 1, 1, 1) * dh
        + torch.arange(h_out, device=device).reshape(1, 1, h_out, 1) * sh
    )
    cols = torch.arange(kw, device=device).reshape(1, kw, 1, 1) * dw + torch.arange(w_out, device=device) * sw
    return rows * w + cols


def col2im(grad_windows: Tensor, shape: torch.Size | tuple[int, ...], stride: Pair, dilation: Pair = (1, 1)) -> Tensor:
    r"""The adjoint of :func:`windows`: scatter-add ``grad_windows (N, C, kh, kw, H_out, W_out)`` onto ``shape``.

    A pixel read by several windows receives the sum of their gradients: every window element's
    gradient is added at the pixel :func:`window_indices` says it was read from — one ``scatter_add_``
    over the flattened images, rather than one strided slice addition per kernel offset (the same sums;
    far fewer, larger operations, which matters most when the threads share their cores).
    """
    n, c, kh, kw, _, _ = grad_windows.shape
    h, w = shape[2], shape[3]
    index = window_indices((h, w), (kh, kw), stride, dilation, device=grad_windows.device)
    grad = grad_windows.new_zeros(n, c, h * w)
    # Plain form, one strided slice per kernel offset (a, b), each the pixels that offset read:
    #     grad[:, :, a*dh :: sh][:, :, :H_out, b*dw :: sw][..., :W_out] += grad_windows[:, :, a, b]
    # Speed trick, "col2im as one scatter": every element's pixel from window_indices, one scatter_add_.
    # Explicit sizes, not -1, which an empty batch (n = 0) leaves undetermined.
    grad.scatter_add_(2, index.reshape(1, 1, -1).expand(n, c, -1), grad_windows.reshape(n, c, index.numel()))
    return grad.reshape(n, c, h, w)
