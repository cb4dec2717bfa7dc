r"""Conv2D: the 2-D convolution, twice — as loops that read like the formula, and as one im2col matmul."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from scratch_cnn.windows import as_int, check_images, col2im, crop2d, output_shape, pad2d, pair, windows
from scratch_engine import Module, Parameter, caching, missing_forward
from scratch_engine.checks import check_dtype, check_grad_output
from scratch_engine.module import HALF

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn

Impl = Literal["loop", "im2col"]
IMPLS: tuple[str, ...] = ("loop", "im2col")


class Conv2D(Module):
    r"""2-D convolution (a cross-correlation, as in every deep-learning library), the layout of ``nn.Conv2d``.

    Shapes: ``x (N, C, H, W)``, ``weight (O, C, kh, kw)``, ``bias (O,)``, ``y (N, O, H_out, W_out)``
    with :math:`H_\text{out} = \lfloor (H + 2 p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1` (``W_out``
    alike). With :math:`\tilde x` the input padded by :math:`p_h` rows and :math:`p_w` columns
    of zeros on each side and the kernel offsets :math:`(u, v)`:

    .. math::
        y_{n,o,i,j} = b_o + \sum_{c} \sum_{u=0}^{k_h-1} \sum_{v=0}^{k_w-1}
            w_{o,c,u,v}\, \tilde x_{n,c,\; i s_h + u d_h,\; j s_w + v d_w}

    Backward, with :math:`g = \partial L / \partial y`: each product above sends :math:`g`
    back to both of its factors, so

    .. math::
        \frac{\partial L}{\partial b_o} = \sum_{n,i,j} g_{n,o,i,j}, \quad
        \frac{\partial L}{\partial w_{o,c,u,v}} = \sum_{n,i,j} g_{n,o,i,j}\,
            \tilde x_{n,c,\, i s_h + u d_h,\, j s_w + v d_w}, \quad
        \frac{\partial L}{\partial \tilde x_{n,c,\, i s_h + u d_h,\, j s_w + v d_w}}
            \mathrel{+}= \sum_o g_{n,o,i,j}\, w_{o,c,u,v}

    (a pixel under several windows collects from all of them), and :math:`\partial L / \partial x`
    is :math:`\partial L / \partial \tilde x` with the padding cropped off.

    ``impl="loop"`` is the slow teaching version: Python loops over the output positions
    :math:`(i, j)`, each one taking the window under the kernel and summing it against the
    weight over :math:`(c, u, v)` — one small matmul, vectorised over the batch and the output
    channels only — and, in backward, sending :math:`g_{:,:,i,j}` back to that window and
    to the weight.
    ``impl="im2col"`` copies every window of image :math:`n` into a column of :math:`X_n \in
    \mathbb{R}^{C k_h k_w \times H_\text{out} W_\text{out}}` (gathered through a strided view, see
    :mod:`scratch_cnn.windows`; one column per output pixel), so that with :math:`W_2` the weight
    reshaped to :math:`O \times C k_h k_w` and :math:`G_n` the output gradient of image :math:`n`
    as :math:`O \times H_\text{out} W_\text{out}` the convolution is one matmul per image (one
    batched matmul, ``torch.bmm``, or ``torch.baddbmm`` with the bias) and its backward two:

    .. math::
        Y_n = W_2 X_n + b, \quad
        \frac{\partial L}{\partial W_2} = \sum_n G_n X_n^\top, \quad
        \frac{\partial L}{\partial X_n} = W_2^\top G_n

    :math:`Y_n` and :math:`G_n` are ``y`` and ``g`` of image :math:`n` as they lie in memory,
    ``(O, H_out, W_out)``, so no transposing copy comes before or after a product; ``backward``
    writes :math:`\partial L / \partial X` over the cached columns (one ``backward`` per
    ``forward``), and ``col2im`` adds each column's gradient back onto the pixels it was copied
    from. Both give the same numbers; ``impl`` can be switched at any time between steps.
    Weights start Kaiming-normal, :math:`w \sim \mathcal{N}(0, 2 / (C k_h k_w))`, biases at zero.

    ``input_grad=False`` suits a first layer, whose input is data: ``backward`` then skips
    :math:`\partial L / \partial x` (the matmul :math:`W_2^\top g` and the col2im scatter) and
    returns ``None``, as autograd skips the gradient of an input that does not require one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        impl: Impl = "im2col",
        input_grad: bool = True,
    ) -> None:
        super().__init__()
        channels = as_int(in_channels), as_int(out_channels)
        if channels[0] is None or channels[1] is None or channels[0] <= 0 or channels[1] <= 0:
            raise ValueError(
                f"Conv2D needs positive int channel counts, got in_channels={in_channels!r}, "
                f"out_channels={out_channels!r}"
            )
        if not isinstance(bias, bool):
            raise ValueError(f"Conv2D bias must be True or False, got {bias!r}")
        self.in_channels, self.out_channels = channels[0], channels[1]
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.dilation = pair(dilation, "dilation")
        self.impl = impl
        self.input_grad = input_grad
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self.weight = Parameter(torch.randn(self.out_channels, self.in_channels, kh, kw) * math.sqrt(2.0 / fan_in))
        self.bias = Parameter(torch.zeros(self.out_channels)) if bias else None
        self._cache: tuple[str, Tensor, torch.Size] | None = None  # impl, x_pad (loop) or columns, x_pad's shape

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLS:
            raise ValueError(f"Conv2D impl must be one of {IMPLS}, got {value!r}")
        self._impl = value

    @classmethod
    def from_torch(cls, conv: nn.Conv2d, impl: Impl = "im2col") -> Conv2D:
        """Copy an ``nn.Conv2d`` (``groups=1``, ``padding_mode="zeros"``, symmetric padding) and its weights."""
        if conv.groups != 1:
            raise ValueError(f"Conv2D.from_torch supports groups=1 only, got groups={conv.groups}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"Conv2D.from_torch supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        padding = conv.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":  # total d(k-1) split over both sides: symmetric only when it is even
            totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
            if any(t % 2 for t in totals):
                raise ValueError(f"Conv2D.from_torch: padding='same' with kernel_size={conv.kernel_size} is asymmetric")
            padding = (totals[0] // 2, totals[1] // 2)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            tuple(conv.kernel_size),  # type: ignore[arg-type]
            stride=tuple(conv.stride),  # type: ignore[arg-type]
            padding=tuple(padding),  # type: ignore[arg-type]
            dilation=tuple(conv.dilation),  # type: ignore[arg-type]
            bias=conv.bias is not None,
            impl=impl,
        )
        layer.weight = Parameter(conv.weight.detach().clone())
        if conv.bias is not None:
            layer.bias = Parameter(conv.bias.detach().clone())
        return layer

    # ------------------------------------------------------------------ dispatch
    def forward(self, x: Tensor) -> Tensor:
        h_out, w_out = self._check(x)
        self._cache = None  # free the last columns (after a forward with no backward) before taking new ones
        x_pad = pad2d(x, self.padding)  # x̃
        if self.impl == "im2col":
            return self._forward_im2col(x_pad)  # adds the bias inside its matmul
        y = self._forward_loop(x_pad, h_out, w_out)
        if self.bias is not None:
            y = y + self.bias.data.reshape(1, -1, 1, 1)  # + b_o
        return y

    # Nothing in the hand-written backward is for autograd to record; and after a forward on an input that requires
    # grad, the cached columns do too, which bmm(out=columns) refuses to write over while autograd records
    @torch.no_grad()
    def backward(self, grad_output: Tensor) -> Tensor | None:
        if self._cache is None:
            raise missing_forward(self)  # each backward needs its own forward: im2col's consumes the cache
        impl, saved, padded_shape = self._cache
        n, _, h_pad, w_pad = padded_shape
        h_out, w_out = output_shape("Conv2D", (h_pad, w_pad), self.kernel_size, self.stride, (0, 0), self.dilation)
        check_grad_output(self, grad_output, (n, self.out_channels, h_out, w_out))
        self._cache = None  # used up: im2col writes the gradient of its columns over them
        if self.bias is not None:  # inverts + b_o, which broadcasts b over n, i and j: sum g over them
            self.bias.grad += grad_output.sum(dim=(0, 2, 3))
        if impl == "loop":
            grad_x_pad = self._backward_loop(grad_output, saved)
        else:
            grad_x_pad = self._backward_im2col(grad_output, saved, padded_shape)
        return None if grad_x_pad is None else crop2d(grad_x_pad, self.padding)  # inverts x̃ = pad2d(x, padding)

    def _check(self, x: Tensor) -> tuple[int, int]:
        """Every check of the input, in one place: an ``(N, in_channels, H, W)`` floating batch in the weight's
        dtype, large enough for the kernel. Returns ``(H_out, W_out)``."""
        check_images(f"Conv2D(in_channels={self.in_channels})", x, self.in_channels)
        check_dtype(self, x, self.weight.data)
        hw = (x.shape[2], x.shape[3])
        return output_shape("Conv2D", hw, self.kernel_size, self.stride, self.padding, self.dilation)

    # ------------------------------------------------------------------ impl="loop": the formula, slowly
    def _window(self, i: int, j: int) -> tuple[slice, slice]:
        """Rows and columns of the padded input under the kernel for output pixel ``(i, j)``."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return slice(i * sh, i * sh + dh * (kh - 1) + 1, dh), slice(j * sw, j * sw + dw * (kw - 1) + 1, dw)

    def _forward_loop(self, x_pad: Tensor, h_out: int, w_out: int) -> Tensor:
        n = x_pad.shape[0]
        w2 = self.weight.data.reshape(self.out_channels, -1)  # (O, C kh kw): one row per output channel
        y = x_pad.new_zeros(n, self.out_channels, h_out, w_out)
        for i in range(h_out):
            for j in range(w_out):
                rows, cols = self._window(i, j)
                patch = x_pad[:, :, rows, cols].reshape(n, w2.shape[1])  # (N, C kh kw): the window under the kernel
                y[:, :, i, j] = patch @ w2.t()  # Σ_c Σ_u Σ_v w[o, c, u, v] · x̃[n, c, i s_h + u d_h, j s_w + v d_w]
        self._cache = ("loop", x_pad, x_pad.shape) if caching() else None
        return y

    def _backward_loop(self, grad_output: Tensor, x_pad: Tensor) -> Tensor | None:
        n = x_pad.shape[0]
        w2 = self.weight.data.reshape(self.out_channels, -1)
        # Sums over every window: in float32 for 16-bit inputs, whose 8 bits would drop the small terms
        total = torch.float32 if x_pad.dtype in HALF else x_pad.dtype
        grad_w2 = torch.zeros_like(w2, dtype=total)
        grad_x_pad = torch.zeros_like(x_pad, dtype=total) if self.input_grad else None
        for i in range(grad_output.shape[2]):
            for j in range(grad_output.shape[3]):  # inverts y[:, :, i, j] = patch @ w2.t(), window by window
                rows, cols = self._window(i, j)
                g = grad_output[:, :, i, j]  # (N, O)
                grad_w2 += g.t() @ x_pad[:, :, rows, cols].reshape(n, w2.shape[1])  # Σ_n g[n, o] · window[n, c, u, v]
                if grad_x_pad is not None:  # Σ_o g[n, o] · w[o, c, u, v], added: a pixel under several windows
                    grad_x_pad[:, :, rows, cols] += (g @ w2).reshape(n, self.in_channels, *self.kernel_size)
        self.weight.grad += grad_w2.reshape(self.weight.shape)
        return None if grad_x_pad is None else grad_x_pad.to(x_pad.dtype)

    # ------------------------------------------------------------------ impl="im2col": one matmul per image
    def _forward_im2col(self, x_pad: Tensor) -> Tensor:
        patches = windows(x_pad, self.kernel_size, self.stride, self.dilation)  # (N, C, kh, kw, H_out, W_out) view
        n, c, kh, kw, h_out, w_out = patches.shape
        # The copy: for each image one column per output pixel, X_n (C kh kw, H_out W_out), in the view's own
        # order (so the gather reads whole window rows), giving columns (N, C kh kw, H_out W_out). Always a copy,
        # never a reshape: for a 1x1 kernel with stride 1, or a kernel as large as the image, the windows already
        # lie in column order and reshape would return the input itself, which backward, writing over its cache
        # (see _backward_im2col), would then overwrite.
        columns = patches.clone(memory_format=torch.contiguous_format).view(n, c * kh * kw, h_out * w_out)
        w2 = self.weight.data.reshape(self.out_channels, -1).expand(n, -1, -1)  # (N, O, C kh kw), no copy
        # (O, C kh kw) @ (C kh kw, H_out W_out) for every image at once: (N, O, H_out W_out) is already the
        # layout of y, so no transpose follows; with a bias, b + W2 X_n in one pass (baddbmm: torch.bmm(w2,
        # columns) + b, without a second pass over y)
        y = (
            torch.bmm(w2, columns)
            if self.bias is None
            else torch.baddbmm(self.bias.data.reshape(1, -1, 1), w2, columns)
        )
        self._cache = ("im2col", columns, x_pad.shape) if caching() else None
        return y.reshape(n, self.out_channels, h_out, w_out)

    def _backward_im2col(self, grad_output: Tensor, columns: Tensor, padded_shape: torch.Size) -> Tensor | None:
        n, _, h_out, w_out = grad_output.shape
        g = grad_output.reshape(n, self.out_channels, h_out * w_out)  # G_n (O, H_out W_out): y's layout, a view
        w2 = self.weight.data.reshape(self.out_channels, -1)  # (O, C kh kw)
        # inverts Y_n = W2 X_n + b for W2: dL/dW2 = Σ_n G_n X_n^T, one product per image, then the sum over the batch
        self.weight.grad += torch.bmm(g, columns.transpose(1, 2)).sum(0).reshape(self.weight.shape)
        if not self.input_grad:
            return None
        # inverts Y_n = W2 X_n + b for X_n: dL/dX_n = W2^T G_n, (N, C kh kw, H_out W_out). Plain form:
        #     grad_columns = torch.bmm(w2.t().expand(n, -1, -1), g)
        # Speed trick, "im2col writes over its cache": out=columns puts the result in the cached columns, which are
        # done with and have its shape, so no new block of many MB for the allocator to fetch (and the CPU to
        # fault in) every step. Its price: the cache is used up, one backward per forward.
        grad_columns = torch.bmm(w2.t().expand(n, -1, -1), g, out=columns)
        # inverts the im2col copy: the columns' layout is the windows view's, (N, C, kh, kw, H_out, W_out), and
        # col2im adds each element back onto the pixel it was copied from
        grad_patches = grad_columns.reshape(n, self.in_channels, *self.kernel_size, h_out, w_out)
        return col2im(grad_patches, padded_shape, self.stride, self.dilation)

    def extra_repr(self) -> str:
        skip = "" if self.input_grad else ", input_grad=False"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, impl={self.impl!r}{skip}"
        )
