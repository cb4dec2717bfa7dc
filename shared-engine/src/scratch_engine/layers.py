"""Layers shared by more than one architecture: Dense, Dropout, Embedding."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from scratch_engine.checks import check_dtype, check_floating, check_grad_output, check_indices
from scratch_engine.module import Module, Parameter, caching, missing_forward


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

    ``input_grad=False`` suits a first layer, whose input is data: ``backward`` skips :math:`gW` (for a
    784-input layer the step's largest product) and returns ``None``, as autograd does for such an input.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: Literal["kaiming", "xavier"] = "kaiming",
        input_grad: bool = True,
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
        self.input_grad = input_grad
        self._x: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        weight, n = self.weight.data, self.in_features
        if not (isinstance(x, Tensor) and x.dtype == weight.dtype and x.dim() > 0 and x.shape[-1] == n):
            check_floating(self, x)  # one test for the usual case (this layer runs thousands of times a second)
            if x.dim() == 0 or x.shape[-1] != n:
                raise ValueError(f"Dense(in_features={n}) expects input of shape (..., {n}), got {tuple(x.shape)}")
            check_dtype(self, x, weight)
        self._x = x if caching() else None
        if self.bias is None:
            return x @ weight.t()  # y = x W^T
        y = torch.addmm(self.bias.data, x.reshape(-1, n), weight.t())  # y = x W^T + b, the sum fused in the product
        return y.reshape(*x.shape[:-1], self.out_features)

    def backward(self, grad_output: Tensor) -> Tensor | None:
        if self._x is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, (*self._x.shape[:-1], self.out_features))
        g = grad_output.reshape(-1, self.out_features)
        self.weight.grad.addmm_(g.t(), self._x.reshape(-1, self.in_features))  # y = x Wᵀ + b  ->  dL/dW = gᵀ x
        if self.bias is not None:
            self.bias.grad.add_(g.sum(dim=0))  # dL/db = Σ_n g_n
        if not self.input_grad:
            return None
        return (g @ self.weight.data).reshape(self._x.shape)  # dL/dx = g W

    def extra_repr(self) -> str:
        skip = "" if self.input_grad else ", input_grad=False"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{skip}"


class Dropout(Module):
    r"""Inverted dropout: zero each element with probability :math:`p` and rescale the survivors.

    In training mode, with a fresh mask :math:`m_i \sim \text{Bernoulli}(1-p)` drawn from the
    global torch RNG on every forward call (so ``torch.manual_seed`` makes it reproducible):

    .. math::
        y = x \odot \frac{m}{1-p}, \qquad
        \frac{\partial L}{\partial x} = g \odot \frac{m}{1-p}

    which keeps :math:`\mathbb{E}[y] = x`, so in eval mode (and for ``p = 0``) the layer is the identity.
    ``p = 1`` zeroes output and gradient alike, as ``torch.nn.Dropout`` does. Any input shape; only the
    scaled mask is cached.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1], got {p}")
        self.p = float(p)
        self._cache: tuple[tuple[int, ...], Tensor | None] | None = None  # output shape, mask (None: identity)

    def forward(self, x: Tensor) -> Tensor:
        check_floating(self, x)
        mask = None
        if self.training and self.p > 0.0:
            scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
            # a float mask, not a bool one: 4x the memory, but a bool operand makes both multiplies ~10x slower on CPU
            mask = (torch.rand_like(x) >= self.p).to(x.dtype) * scale
        self._cache = (tuple(x.shape), mask) if caching() else None
        return x if mask is None else x * mask

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._cache is None:
            raise missing_forward(self)
        shape, mask = self._cache
        check_grad_output(self, grad_output, shape)
        return grad_output if mask is None else grad_output * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Embedding(Module):
    r"""Lookup table: row :math:`i` of :math:`W` is the vector of token id :math:`i`.

    Shapes: ``indices (...)`` of any integer dtype, ``W (num_embeddings, embedding_dim)``,
    ``y (..., embedding_dim)`` with :math:`y_{\dots} = W_{\text{indices}_{\dots}}`.
    With the indices flattened into :math:`n = 1..N` and ``g = dL/dy`` flattened alike,
    each row's gradient is the sum over every position that looked it up:

    .. math::
        \frac{\partial L}{\partial W_i} = \sum_{n \,:\, \text{idx}_n = i} g_n

    Integer indices get no gradient (``backward`` returns ``None``). :math:`W` starts as
    :math:`\mathcal{N}(0, 1)` like ``torch.nn.Embedding``; the ``padding_idx`` row (negative
    values count from the end) starts at zero and never receives gradient.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(
                f"Embedding needs positive sizes, got num_embeddings={num_embeddings}, embedding_dim={embedding_dim}"
            )
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx must be in [-{num_embeddings}, {num_embeddings}), got {padding_idx}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = Parameter(torch.randn(num_embeddings, embedding_dim))
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0.0
        self._cache: tuple[Tensor, tuple[int, ...]] | None = None  # indices flattened to int64, output shape

    def forward(self, indices: Tensor) -> Tensor:
        if not isinstance(indices, Tensor):
            raise TypeError(f"Embedding expects a torch.Tensor of indices, got {type(indices).__name__}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ValueError(f"Embedding expects integer indices, got dtype {indices.dtype}")
        n = self.num_embeddings
        bounds = f"[0, {n}) (num_embeddings={n})"

        def describe() -> str:
            return f"Embedding indices must be in {bounds}, got min {int(indices.min())} and max {int(indices.max())}"

        indices = check_indices(indices, n, describe, f"Embedding indices out of range: they must be in {bounds}")
        flat = indices.reshape(-1).long()
        shape = (*indices.shape, self.embedding_dim)
        self._cache = (flat, shape) if caching() else None
        return self.weight.data.index_select(0, flat).reshape(shape)

    def backward(self, grad_output: Tensor) -> None:
        if self._cache is None:
            raise missing_forward(self)
        indices, shape = self._cache
        check_grad_output(self, grad_output, shape)  # a (T, B, d) gradient of a (B, T, d) output is not one
        g = grad_output.reshape(-1, self.embedding_dim)
        if self.padding_idx is None:
            self.weight.grad.index_add_(0, indices, g)
        else:  # restore the padding row afterwards: cheaper than masking every row of g
            kept = self.weight.grad[self.padding_idx].clone()
            self.weight.grad.index_add_(0, indices, g)
            self.weight.grad[self.padding_idx] = kept

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
