r"""Pooling: MaxPool2D and AvgPool2D over sliding windows, GlobalAvgPool2D over the whole image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from scratch_cnn.windows import (
    Pair,
    check_images,
    col2im,
    crop2d,
    output_shape,
    pad2d,
    pair,
    window_indices,
    windows,
)
from scratch_engine import Module, caching, missing_forward
from scratch_engine.checks import check_grad_output

if TYPE_CHECKING:  # torch.nn is only the source of settings to copy, never used to compute
    from torch import nn


class _Pool2D(Module):
    """Shared settings of the windowed pools: kernel, stride (default: the kernel) and padding."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(
                f"{name}: padding must be at most half the kernel size (as in torch), "
                f"got padding={self.padding} for kernel_size={self.kernel_size}"
            )

    def _check(self, x: Tensor) -> None:
        """Every check of the input, in one place: a floating ``(N, C, H, W)`` batch large enough for the window."""
        check_images(type(self).__name__, x)
        self._output_shape(x.shape)

    def _output_shape(self, shape: torch.Size) -> tuple[int, int, int, int]:
        """``(N, C, H_out, W_out)`` for an input of ``shape``; a ``ValueError`` when the window does not fit."""
        n, c, h, w = shape
        return (n, c, *output_shape(type(self).__name__, (h, w), self.kernel_size, self.stride, self.padding))

    def _padded_shape(self, shape: torch.Size) -> tuple[int, int, int, int]:
        n, c, h, w = shape
        return (n, c, h + 2 * self.padding[0], w + 2 * self.padding[1])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _torch_settings(cls: type, pool: nn.MaxPool2d | nn.AvgPool2d) -> tuple[Pair, Pair, Pair]:
    """``(kernel_size, stride, padding)`` of a torch pool; ``ceil_mode=True`` is a ``ValueError``."""
    if pool.ceil_mode:
        raise ValueError(f"{cls.__name__}.from_torch supports ceil_mode=False only")
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return pool.kernel_size, stride, pool.padding  # type: ignore[return-value]


class MaxPool2D(_Pool2D):
    r"""The largest value of each window; padding counts as :math:`-\infty` (as in ``nn.MaxPool2d``).

    Shapes: ``x (N, C, H, W)``, ``y (N, C, H_out, W_out)`` with
    :math:`H_\text{out} = \lfloor (H + 2p_h - k_h) / s_h \rfloor + 1` (``W_out`` alike), per channel:

    .. math::
        y_{n,c,i,j} = \max_{u, v}\ \tilde x_{n,c,\, i s_h + u,\, j s_w + v}, \qquad
        \frac{\partial L}{\partial \tilde x_{n,c,\, i s_h + u^*,\, j s_w + v^*}} \mathrel{+}= g_{n,c,i,j}

    where :math:`(u^*, v^*)` is the arg-max of the window: the whole gradient goes to the one
    value that won, none to the others. Ties go to the first maximum in row-major order, as in
    torch; the padding never wins, so a window of :math:`-\infty` sends its gradient to its first
    element inside the image, as torch does. A window holding NaN gives NaN, as in torch, and its
    gradient goes to its first element inside the image (torch's to its last NaN). Caches each
    window's arg-max as a flat index into the padded image, and the input shape.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self._cache: tuple[Tensor, torch.Size] | None = None  # winners (N, C, H_out, W_out), input shape

    @classmethod
    def from_torch(cls, pool: nn.MaxPool2d) -> MaxPool2D:
        if pool.return_indices:
            raise ValueError("MaxPool2D.from_torch does not support return_indices=True")
        if pool.dilation not in (1, (1, 1)):
            raise ValueError(f"MaxPool2D.from_torch supports dilation=1 only, got dilation={pool.dilation}")
        return cls(*_torch_settings(cls, pool))

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        x_pad = pad2d(x, self.padding, float("-inf"))  # x̃
        patches = windows(x_pad, self.kernel_size, self.stride)  # (N, C, kh, kw, H_out, W_out) view
        n, c, kh, kw, h_out, w_out = patches.shape
        h_pad, w_pad = x_pad.shape[2:]
        flat = patches.reshape(n, c, kh * kw, h_out, w_out)  # one copy; every window along dim 2
        y = flat.amax(dim=2)
        recorded = torch.is_grad_enabled() and x.requires_grad  # by autograd (its opt-in mode, the tests)
        if not caching() and not recorded:  # inference: no backward will need the winners
            self._cache = None
            return y
        # The winners: where each window's first maximum lies in the padded image, as a flat index row * w_pad + col.
        # Plain form: (u*, v*) = flat.argmax(dim=2), the first maximum's place in its window, and the winner the
        # pixel window_indices gives for that place. Speed trick, "arg-max as the smallest key" (torch's arg-max
        # reduction is several times slower on the CPU than this): give every window element a key, its own flat
        # index if it is a maximum and that plus h_pad * w_pad (more than any index) if not. The smallest key is
        # the first maximum in row-major order, as in torch, since the indices grow along a window. The padding's
        # keys get h_pad * w_pad more, so it wins no window, not even one holding NaN or only -inf: that one's
        # gradient goes to its first pixel inside the image (for -inf, as torch's does).
        # The keys, below 3 h_pad w_pad, are float32 (exact integers up to 2^24), or float64 for larger images.
        size = h_pad * w_pad
        key_dtype = torch.promote_types(x.dtype, torch.float32) if 3 * size <= 2**24 else torch.float64
        positions = window_indices((h_pad, w_pad), self.kernel_size, self.stride, device=x.device).to(key_dtype)
        if self.padding != (0, 0):  # (kh, kw, H_out, W_out) numbers, whatever the batch: nothing measurable
            outside = pad2d(positions.new_zeros(1, 1, *x.shape[2:]), self.padding, float(size))
            positions += windows(outside, self.kernel_size, self.stride)[0, 0]
        positions = positions.reshape(kh * kw, h_out, w_out)
        keys = torch.lt(flat, y.unsqueeze(2), out=torch.empty(flat.shape, dtype=key_dtype, device=x.device))
        keys.mul_(size).add_(positions)  # (a window holding NaN has no element below it: all are maxima)
        winners = keys.amin(dim=2).long()
        self._cache = (winners, x.shape) if caching() else None
        if recorded:
            # read y at the winners, so that autograd too sends all of g to the first maximum (amax's would
            # split it among tied maxima); a NaN window keeps its NaN
            at_winners = x_pad.reshape(n, c, size).gather(2, winners.reshape(n, c, h_out * w_out))
            y = torch.where(y.isnan(), y, at_winners.reshape(n, c, h_out, w_out))
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._cache is None:
            raise missing_forward(self)
        winners, shape = self._cache
        check_grad_output(self, grad_output, winners.shape)  # one winner per output value
        n, c, h_pad, w_pad = self._padded_shape(shape)
        # inverts y = flat.amax(dim=2): all of g to the winner; a pixel that won several overlapping windows
        # collects from each
        grad = grad_output.new_zeros(n, c, h_pad * w_pad)
        outputs = winners.shape[2] * winners.shape[3]  # not -1, which an empty batch leaves undetermined
        grad.scatter_add_(2, winners.reshape(n, c, outputs), grad_output.reshape(n, c, outputs))
        return crop2d(grad.reshape(n, c, h_pad, w_pad), self.padding)  # inverts x̃ = pad2d(x, padding, -inf)


class AvgPool2D(_Pool2D):
    r"""The mean of each window, zero padding included in the count (``nn.AvgPool2d``'s default).

    Shapes as :class:`MaxPool2D`. Every window holds :math:`k_h k_w` values, so

    .. math::
        y_{n,c,i,j} = \frac{1}{k_h k_w} \sum_{u, v} \tilde x_{n,c,\, i s_h + u,\, j s_w + v}, \qquad
        \frac{\partial L}{\partial \tilde x_{n,c,\, i s_h + u,\, j s_w + v}} \mathrel{+}= \frac{g_{n,c,i,j}}{k_h k_w}

    for every :math:`(u, v)`: each value of the window gets an equal share. Caches only the input shape.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self._shape: torch.Size | None = None

    @classmethod
    def from_torch(cls, pool: nn.AvgPool2d) -> AvgPool2D:
        if not pool.count_include_pad:
            raise ValueError("AvgPool2D.from_torch supports count_include_pad=True only")
        if pool.divisor_override is not None:
            raise ValueError(f"AvgPool2D.from_torch does not support divisor_override={pool.divisor_override}")
        return cls(*_torch_settings(cls, pool))

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        x_pad = pad2d(x, self.padding, 0.0)  # x̃
        patches = windows(x_pad, self.kernel_size, self.stride)  # (N, C, kh, kw, H_out, W_out) view
        self._shape = x.shape
        return patches.mean(dim=(2, 3))

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._shape is None:
            raise missing_forward(self)
        n, c, h_out, w_out = self._output_shape(self._shape)
        check_grad_output(self, grad_output, (n, c, h_out, w_out))
        kh, kw = self.kernel_size
        # inverts patches.mean(dim=(2, 3)): every element of window (i, j) gets g / (kh kw)
        share = (grad_output / (kh * kw)).reshape(n, c, 1, 1, h_out, w_out).expand(n, c, kh, kw, h_out, w_out)
        grad_x_pad = col2im(share, self._padded_shape(self._shape), self.stride)  # inverts windows(x_pad, ...)
        return crop2d(grad_x_pad, self.padding)  # inverts x̃ = pad2d(x, padding)


class GlobalAvgPool2D(Module):
    r"""The mean over all positions of each channel: ``(N, C, H, W) -> (N, C)``.

    .. math::
        y_{n,c} = \frac{1}{HW} \sum_{i,j} x_{n,c,i,j}, \qquad
        \frac{\partial L}{\partial x_{n,c,i,j}} = \frac{g_{n,c}}{HW}

    ``nn.AdaptiveAvgPool2d(1)`` computes the same values shaped ``(N, C, 1, 1)``; here the
    two unit dimensions are dropped so a :class:`~scratch_engine.Dense` classifier can follow
    directly. Caches only the input shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: torch.Size | None = None

    @classmethod
    def from_torch(cls, pool: nn.AdaptiveAvgPool2d) -> GlobalAvgPool2D:
        if pool.output_size not in (1, (1, 1)):
            raise ValueError(f"GlobalAvgPool2D.from_torch needs output_size 1, got {pool.output_size}")
        return cls()

    def forward(self, x: Tensor) -> Tensor:
        check_images("GlobalAvgPool2D", x)
        self._shape = x.shape
        return x.mean(dim=(2, 3))

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._shape is None:
            raise missing_forward(self)
        n, c, h, w = self._shape
        check_grad_output(self, grad_output, (n, c))
        return (grad_output / (h * w)).reshape(n, c, 1, 1).expand(n, c, h, w)  # inverts x.mean(dim=(2, 3))
