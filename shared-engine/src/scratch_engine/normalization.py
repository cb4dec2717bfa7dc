r"""Batch normalisation per channel, with a hand-written backward: BatchNorm1d (MLP) and BatchNorm2d (CNN)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scratch_engine.checks import check_floating, check_grad_output
from scratch_engine.module import Module, Parameter, caching, missing_forward, widened


class _BatchNorm(Module):
    r"""Normalise each feature (channel) over the batch, then scale and shift (Ioffe & Szegedy, 2015).

    Shapes: ``x`` and ``y`` ``(N, C, *)`` (each subclass names its layouts), ``gamma`` (``weight``) and
    ``beta`` (``bias``) ``(C,)``. Statistics are per channel, over its :math:`M` values :math:`x_i`
    (:math:`M = N`, :math:`N L` or :math:`N H W`):

    .. math::
        \mu = \frac1M \sum_i x_i, \quad
        \sigma^2 = \frac1M \sum_i (x_i - \mu)^2, \quad
        \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad
        y_i = \gamma \hat x_i + \beta

    **Train mode** normalises with these batch statistics and updates the buffers exactly as
    ``torch.nn.BatchNorm1d/2d`` do, with the *unbiased* variance :math:`\sigma^2 M / (M - 1)`:
    ``running = (1 - momentum) * running + momentum * batch_stat`` (``momentum=None``: the cumulative
    average, factor ``1 / num_batches_tracked``). **Eval mode** uses them as :math:`\mu, \sigma^2`.

    Backward, with :math:`g = \partial L / \partial y`, :math:`s = (\sigma^2 + \epsilon)^{-1/2}`
    and sums over the :math:`M` values of a channel:

    .. math::
        \frac{\partial L}{\partial \gamma} = \textstyle\sum_i g_i \hat x_i, \quad
        \frac{\partial L}{\partial \beta} = \textstyle\sum_i g_i, \quad
        \frac{\partial L}{\partial x_i} = \frac{\gamma s}{M}
            \Big(M g_i - \textstyle\sum_j g_j - \hat x_i \sum_j g_j \hat x_j\Big) \text{ (train)}, \quad
        \frac{\partial L}{\partial x_i} = \gamma s\, g_i \text{ (eval)}

    (in train mode :math:`\mu` and :math:`\sigma` depend on every :math:`x_j`, hence the two correction
    sums; in eval mode they are constants). ``affine=False`` fixes :math:`\gamma = 1, \beta = 0`: no parameters.
    """

    shapes: tuple[str, ...] = ()  # accepted input layouts, e.g. ("(N, C)", "(N, C, L)")
    running_mean: Tensor  # buffers, set by register_buffer in __init__
    running_var: Tensor
    num_batches_tracked: Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"{type(self).__name__} needs a positive num_features, got {num_features}")
        if not (math.isfinite(eps) and eps > 0.0):  # eps = 0 divides by zero on a constant channel
            raise ValueError(f"{type(self).__name__} eps must be a finite number > 0, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:  # also refuses nan
            raise ValueError(f"{type(self).__name__} momentum must be in [0, 1] or None (cumulative), got {momentum}")
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = affine
        self.weight = Parameter(torch.ones(num_features)) if affine else None
        self.bias = Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self._cache: tuple[Tensor, Tensor, bool, torch.dtype] | None = None  # x_hat, s, batch stats?, input dtype

    def _check(self, x: Tensor) -> None:
        check_floating(self, x)
        name = type(self).__name__
        ranks = [shape.count(",") + 1 for shape in self.shapes]
        if x.dim() not in ranks or x.shape[1] != self.num_features:
            expected = " or ".join(shape.replace("C", str(self.num_features)) for shape in self.shapes)
            raise ValueError(
                f"{name}(num_features={self.num_features}) expects input of shape {expected}, got {tuple(x.shape)}"
            )
        if self.training and x.numel() // self.num_features <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}: "
                "a last batch of one sample? use DataLoader(..., drop_last=True)"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        dims, view = self._view(x)
        dtype, x = x.dtype, widened(x)  # bfloat16 statistics and x_hat in float32: x - mean cancels digits
        if self.training:  # this batch's statistics; the running ones follow them
            m = x.numel() // self.num_features
            mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            self.running_var.mul_(1 - factor).add_(var.detach() * (m / (m - 1)), alpha=factor)  # unbiased
        else:
            mean, var = self.running_mean, self.running_var
        s = torch.rsqrt(var + self.eps).reshape(view)  # s = (σ² + ε)^(-1/2)
        x_hat = (x - mean.reshape(view)) * s  # x̂ = (x - μ) s
        self._cache = (x_hat, s, self.training, dtype) if caching() else None
        if self.weight is None or self.bias is None:
            return x_hat.to(dtype)
        return (x_hat * self.weight.data.reshape(view) + self.bias.data.reshape(view)).to(dtype)  # y = γ x̂ + β

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._cache is None:
            raise missing_forward(self)
        x_hat, s, batch_stats, dtype = self._cache
        check_grad_output(self, grad_output, x_hat.shape)  # else a (N, 1) gradient would broadcast
        dims, view = self._view(x_hat)
        g = grad_output.to(x_hat.dtype)
        if self.weight is not None and self.bias is not None:  # y = γ x̂ + β:
            self.weight.grad.add_((g * x_hat).sum(dim=dims))  # dL/dγ = Σ g x̂
            self.bias.grad.add_(g.sum(dim=dims))  # dL/dβ = Σ g
            g = g * self.weight.data.reshape(view)  # dL/dx̂ = g γ
        if not batch_stats:  # eval: x̂ = (x - μ) s with μ and s constants
            return (g * s).to(dtype)
        # (1/M)·s·(M·g − Σg − x̂·Σ(g·x̂)) written with means: s·(g − mean(g) − x̂·mean(g·x̂))
        mean_g = g.mean(dim=dims, keepdim=True)
        mean_gx = (g * x_hat).mean(dim=dims, keepdim=True)
        return (s * (g - mean_g - x_hat * mean_gx)).to(dtype)

    @staticmethod
    def _view(x: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Reduction dims (all but the channel) and the shape that broadcasts ``(C,)`` against ``x``."""
        return (0, *range(2, x.dim())), (1, -1, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` features or ``(N, C, L)`` sequences; see :class:`_BatchNorm`."""

    shapes = ("(N, C)", "(N, C, L)")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` feature maps, per channel; see :class:`_BatchNorm`."""

    shapes = ("(N, C, H, W)",)
