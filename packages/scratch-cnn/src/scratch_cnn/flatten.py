r"""Flatten: the bridge from feature maps ``(N, C, H, W)`` to the rows ``(N, CHW)`` a Dense layer takes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from scratch_engine import Module, missing_forward
from scratch_engine.checks import check_grad_output

if TYPE_CHECKING:  # torch.nn is only the source of settings to copy, never used to compute
    from torch import nn


class Flatten(Module):
    r"""Keep the batch dimension, merge all others: ``(N, d_1, ..., d_k) -> (N, d_1 \cdots d_k)``.

    No value changes place in memory order, so the backward is the inverse reshape,
    :math:`\partial L / \partial x = \operatorname{reshape}(g, \text{shape of } x)`. Caches
    only the input shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: torch.Size | None = None

    @classmethod
    def from_torch(cls, flatten: nn.Flatten) -> Flatten:
        if flatten.start_dim != 1 or flatten.end_dim != -1:
            raise ValueError(
                f"Flatten.from_torch supports start_dim=1, end_dim=-1 only, "
                f"got start_dim={flatten.start_dim}, end_dim={flatten.end_dim}"
            )
        return cls()

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"Flatten expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"Flatten expects input of shape (N, ...) with 2 or more dimensions, got {tuple(x.shape)}")
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1, which an empty batch leaves undetermined

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._shape is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, (self._shape[0], math.prod(self._shape[1:])))
        return grad_output.reshape(self._shape)  # inverts x.reshape(N, d_1 ... d_k)
