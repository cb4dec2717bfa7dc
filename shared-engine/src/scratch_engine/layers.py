"""Layers shared by more than one architecture: Dense, Dropout, Embedding."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from scratch_engine.module import Module, Parameter

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn


def _check_floating(layer: Module, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(layer).__name__} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{type(layer).__name__} expects a floating-point input, got dtype {x.dtype}")


class Dense(Module):
    r"""Fully connected layer :math:`y = x W^\top + b` (the layout of ``torch.nn.Linear``).

    Shapes: ``x (..., in)``, ``W (out, in)``, ``b (out,)``, ``y (..., out)``.
    With the leading dimensions flattened into ``N`` rows and ``g = dL/dy``:

    .. math::
        \frac{\partial L}{\partial W} = g^\top x, \quad
        \frac{\partial L}{\partial b} = \textstyle\sum_n g_n, \quad
        \frac{\partial L}{\partial x} = g W

    ``init="kaiming"`` (He, for ReLU nets) draws :math:`W \sim \mathcal{N}(0, 2/\text{in})`;
    ``init="xavier"`` (Glorot, for tanh/sigmoid) draws
    :math:`W \sim \mathcal{U}(\pm\sqrt{6/(\text{in}+\text{out})})`. Biases start at zero.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: Literal["kaiming", "xavier"] = "kaiming",
    ) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Dense needs positive sizes, got in_features={in_features}, out_features={out_features}")
        self.in_features = in_features
        self.out_features = out_features
        if init == "kaiming":
            weight = torch.randn(out_features, in_features) * math.sqrt(2.0 / in_features)
        elif init == "xavier":
            bound = math.sqrt(6.0 / (in_features + out_features))
            weight = torch.empty(out_features, in_features).uniform_(-bound, bound)
        else:
            raise ValueError(f"Dense init must be 'kaiming' or 'xavier', got {init!r}")
        self.weight = Parameter(weight)
        self.bias = Parameter(torch.zeros(out_features)) if bias else None
        self._x: Tensor | None = None

    @classmethod
    def from_torch(cls, linear: nn.Linear) -> Dense:
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.weight = Parameter(linear.weight.detach().clone())
        if linear.bias is not None:
            layer.bias = Parameter(linear.bias.detach().clone())
        return layer

    def forward(self, x: Tensor) -> Tensor:
        _check_floating(self, x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Dense(in_features={self.in_features}) expects input of shape (..., {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        self._x = x
        x2 = x.reshape(-1, self.in_features)
        if self.bias is None:
            y = x2 @ self.weight.data.t()
        else:
            y = torch.addmm(self.bias.data, x2, self.weight.data.t())
        return y.reshape(*x.shape[:-1], self.out_features)

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._x is None:
            raise RuntimeError("Dense.backward called before forward")
        g = grad_output.reshape(-1, self.out_features)
        x2 = self._x.reshape(-1, self.in_features)
        self.weight.grad.addmm_(g.t(), x2)
        if self.bias is not None:
            self.bias.grad.add_(g.sum(dim=0))
        grad_input = g @ self.weight.data
        return grad_input.reshape(self._x.shape)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Dropout:  # placeholder
    pass


class Embedding:  # placeholder
    pass
