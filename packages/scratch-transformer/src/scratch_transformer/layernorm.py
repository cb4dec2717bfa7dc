r"""Layer normalisation over the last (feature) dimension, with a hand-written backward."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from scratch_engine import Module, Parameter, caching, missing_forward
from scratch_engine.checks import check_dtype, check_grad_output
from scratch_engine.module import scalar, widened

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn


_FEW_ROWS = 4  # up to this many rows, mu and sigma^2 come from torch.var_mean (see forward)


class LayerNorm(Module):
    r"""Normalise each position's :math:`D` features, then scale and shift (Ba et al., 2016).

    Shapes: ``x (..., D)``, ``y`` like ``x``, ``weight`` :math:`\gamma` and ``bias``
    :math:`\beta` ``(D,)``. Per row (one position of one sequence), over its :math:`D` values:

    .. math::
        \mu = \frac1D \sum_j x_j, \quad
        \sigma^2 = \frac1D \sum_j (x_j - \mu)^2, \quad
        \hat x_j = (x_j - \mu)\,s, \quad s = (\sigma^2 + \epsilon)^{-1/2}, \quad
        y_j = \gamma_j \hat x_j + \beta_j

    Unlike batch norm, nothing is shared across the batch: train and eval modes agree.
    Backward, with :math:`g = \partial L/\partial y`, :math:`\hat g = g \odot \gamma` and sums
    over all rows for the parameters:

    .. math::
        \frac{\partial L}{\partial \gamma} = \textstyle\sum_\text{rows} g \odot \hat x, \quad
        \frac{\partial L}{\partial \beta} = \textstyle\sum_\text{rows} g, \quad
        \frac{\partial L}{\partial x_j} = s \Big(\hat g_j - \frac1D \textstyle\sum_k \hat g_k
            - \hat x_j\, \frac1D \sum_k \hat g_k \hat x_k\Big)

    (the two means come from :math:`\mu` and :math:`\sigma` depending on every :math:`x_k`).
    ``elementwise_affine=False`` fixes :math:`\gamma = 1, \beta = 0`; ``bias=False`` drops
    :math:`\beta`. Caches :math:`\hat x` and :math:`s`.
    """

    def __init__(
        self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(normalized_shape, int) or normalized_shape <= 0:
            raise ValueError(
                f"LayerNorm normalises the last dimension: expected a positive int, got {normalized_shape}"
            )
        if not (math.isfinite(eps) and eps > 0.0):  # eps = 0 divides by zero on a constant row: NaN, not an error
            raise ValueError(f"LayerNorm eps must be a finite number > 0, got {eps}")
        self.normalized_shape = normalized_shape
        self.eps = float(eps)
        self.weight = Parameter(torch.ones(normalized_shape)) if elementwise_affine else None
        self.bias = Parameter(torch.zeros(normalized_shape)) if elementwise_affine and bias else None
        self._cache: tuple[Tensor, Tensor, torch.dtype] | None = None  # x_hat, s, input dtype

    @classmethod
    def from_torch(cls, norm: nn.LayerNorm) -> LayerNorm:
        if len(norm.normalized_shape) != 1:
            raise ValueError(
                f"LayerNorm.from_torch supports normalising the last dimension only, "
                f"got normalized_shape={tuple(norm.normalized_shape)}"
            )
        layer = cls(norm.normalized_shape[0], eps=norm.eps, elementwise_affine=norm.elementwise_affine)
        if norm.weight is not None:
            layer.weight = Parameter(norm.weight.detach().clone())
        layer.bias = None if norm.bias is None else Parameter(norm.bias.detach().clone())
        return layer

    def _check(self, x: Tensor) -> None:
        d = self.normalized_shape
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() == 0 or x.shape[-1] != d:
            got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"LayerNorm({d}) expects a floating input of shape (..., {d}), got {got}")
        if self.weight is not None:
            check_dtype(self, x, self.weight.data)

    def forward(self, x: Tensor) -> Tensor:
        w, d = self.weight, self.normalized_shape
        if w is None or not (isinstance(x, Tensor) and x.dtype == w.data.dtype and x.dim() > 0 and x.shape[-1] == d):
            self._check(x)  # one test for the usual case: this layer runs thousands of times a second
        dtype = x.dtype
        x = widened(x)  # statistics and x_hat in float32: x - mean cancels digits
        if x.numel() <= _FEW_ROWS * d:  # mu and sigma^2 in one pass: the fastest for a decoding step's few rows
            var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
            centred = x - mean  # x - mu
        else:
            centred = x - x.mean(dim=-1, keepdim=True)  # x - mu
            # speed trick: sigma^2 as the mean of the centred squares, the same number as the plain var_mean above;
            # over many short rows torch's CPU var_mean is several times slower (128-wide rows: one row 8 against
            # 12 us, 64 rows 60 against 17 us)
            var = (centred * centred).mean(dim=-1, keepdim=True)  # sigma^2
        s = torch.rsqrt(var + scalar(self.eps, var))  # s = (sigma^2 + eps)^(-1/2)
        x_hat = centred * s  # x_hat = (x - mu) s
        self._cache = (x_hat, s, dtype) if caching() else None
        if self.weight is not None and self.bias is not None:  # the usual case: one pass, one tensor fewer
            y = torch.addcmul(self.bias.data, x_hat, self.weight.data)  # y = beta + gamma * x_hat
        else:
            y = x_hat if self.weight is None else x_hat * self.weight.data  # gamma * x_hat
            y = y if self.bias is None else y + self.bias.data  # ... + beta
        return y if y.dtype == dtype else y.to(dtype)  # a 16-bit input's dtype back

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._cache is None:
            raise missing_forward(self)
        x_hat, s, dtype = self._cache
        check_grad_output(self, grad_output, x_hat.shape)  # else it may broadcast against x_hat, silently wrong
        d = self.normalized_shape
        grad_output = grad_output.to(x_hat.dtype)
        if self.bias is not None:
            self.bias.grad.add_(grad_output.reshape(-1, d).sum(dim=0))  # ... + beta
        g = grad_output
        if self.weight is not None:
            self.weight.grad.add_((grad_output * x_hat).reshape(-1, d).sum(dim=0))  # gamma * x_hat, w.r.t. gamma
            g = grad_output * self.weight.data  # ... w.r.t. x_hat: g_hat = g * gamma
        # x_hat = (x - mu) s, through x itself and through mu and s, which depend on every x_k:
        # s (g_hat - mean(g_hat) - x_hat mean(g_hat x_hat)), its last product and difference fused in one addcmul
        centred = g - g.mean(dim=-1, keepdim=True)
        grad_x = torch.addcmul(centred, x_hat, (g * x_hat).mean(dim=-1, keepdim=True), value=-1.0).mul_(s)
        return grad_x.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"
