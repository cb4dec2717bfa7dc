r"""Pooling: MaxPool2D and AvgPool2D over sliding windows, GlobalAvgPool2D over the whole image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from scratch_cnn.windows import Pair, check_images, col2im, crop2d, output_shape, pad2d, pair, windows
from scratch_engine import Module

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

    def _windows(self, x: Tensor, fill: float) -> Tensor:
        """Validate ``x``, pad it with ``fill`` and return its windows ``(N, C, kh, kw, H_out, W_out)``."""
        name = type(self).__name__
        check_images(name, x)
        output_shape(name, (x.shape[2], x.shape[3]), self.kernel_size, self.stride, self.padding)
        return windows(pad2d(x, self.padding, fill), self.kernel_size, self.stride)

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
    torch. Caches the arg-max (an index into the flattened window) and the input shape.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self._cache: tuple[Tensor, torch.Size] | None = None  # arg-max (N, C, H_out, W_out), input shape

    @classmethod
    def from_torch(cls, pool: nn.MaxPool2d) -> MaxPool2D:
        if pool.return_indices:
            raise ValueError("MaxPool2D.from_torch does not support return_indices=True")
        if pool.dilation not in (1, (1, 1)):
            raise ValueError(f"MaxPool2D.from_torch supports dilation=1 only, got dilation={pool.dilation}")
        return cls(*_torch_settings(cls, pool))

    def forward(self, x: Tensor) -> Tensor:
        patches = self._windows(x, float("-inf"))  # (N, C, kh, kw, H_out, W_out)
        n, c, kh, kw, h_out, w_out = patches.shape
        y, argmax = patches.reshape(n, c, kh * kw, h_out, w_out).max(dim=2)  # first max on ties
        self._cache = (argmax, x.shape)
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._cache is None:
            raise RuntimeError("MaxPool2D.backward called before forward")
        argmax, shape = self._cache
        n, c, h_out, w_out = argmax.shape
        kh, kw = self.kernel_size
        grad_patches = grad_output.new_zeros(n, c, kh * kw, h_out, w_out)
        grad_patches.scatter_(2, argmax.unsqueeze(2), grad_output.unsqueeze(2))  # all of g to the winner
        grad_patches = grad_patches.reshape(n, c, kh, kw, h_out, w_out)
        if self.padding == (0, 0) and self.stride == self.kernel_size and shape[2:] == (h_out * kh, w_out * kw):
            # the windows tile the image (the usual 2x2, stride 2): every pixel is in exactly one window, so
            # col2im's sum has one term and is a mere reordering, [n, c, u, v, i, j] -> [n, c, i kh + u, j kw + v]
            return grad_patches.permute(0, 1, 4, 2, 5, 3).reshape(shape)
        return crop2d(col2im(grad_patches, self._padded_shape(shape), self.stride), self.padding)


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
        patches = self._windows(x, 0.0)  # (N, C, kh, kw, H_out, W_out)
        self._shape = x.shape
        return patches.mean(dim=(2, 3))

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._shape is None:
            raise RuntimeError("AvgPool2D.backward called before forward")
        n, c, h_out, w_out = grad_output.shape
        kh, kw = self.kernel_size
        share = (grad_output / (kh * kw)).reshape(n, c, 1, 1, h_out, w_out).expand(n, c, kh, kw, h_out, w_out)
        return crop2d(col2im(share, self._padded_shape(self._shape), self.stride), self.padding)


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
            raise RuntimeError("GlobalAvgPool2D.backward called before forward")
        n, c, h, w = self._shape
        return (grad_output / (h * w)).reshape(n, c, 1, 1).expand(n, c, h, w)
