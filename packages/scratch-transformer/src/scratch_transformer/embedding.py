r"""The Transformer's input: token embeddings scaled by :math:`\sqrt{d_\text{model}}`, plus sinusoidal positions."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from scratch_engine import Dropout, Embedding, Module, missing_forward
from scratch_engine.checks import check_grad_output

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn


class TokenEmbedding(Module):
    r"""Embedding lookup multiplied by :math:`\sqrt{d_\text{model}}` (section 3.4 of the paper).

    Shapes: integer ``ids (...)``, ``weight (vocab_size, d_model)``, ``y (..., d_model)``:

    .. math::
        y = \sqrt{d_\text{model}}\; W[\text{ids}], \qquad
        \frac{\partial L}{\partial W_i} = \sqrt{d_\text{model}} \sum_{n \,:\, \text{ids}_n = i} g_n

    A wrapper around the engine's ``Embedding`` (``self.embedding``): the scale is applied
    to the output and to the incoming gradient. :math:`W` starts as
    :math:`\mathcal{N}(0, 1/d_\text{model})`, so the scaled output has unit variance, the
    scale of the positional encoding. ``backward`` returns ``None`` (integer input).
    """

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.embedding = Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.embedding.weight.data.mul_(1.0 / math.sqrt(d_model))
        self.d_model = d_model
        self.scale = math.sqrt(d_model)
        self._shape: tuple[int, ...] | None = None  # the last output's shape, for backward

    @classmethod
    def from_torch(cls, embedding: nn.Embedding) -> TokenEmbedding:
        from scratch_engine.tools.twin import from_torch  # torch.nn only on request

        layer = cls(embedding.num_embeddings, embedding.embedding_dim, padding_idx=embedding.padding_idx)
        layer.embedding = from_torch(embedding)
        return layer

    def forward(self, ids: Tensor) -> Tensor:
        y = self.embedding(ids) * self.scale  # y = sqrt(d) W[ids] (the Embedding checks the ids)
        self._shape = tuple(y.shape)
        return y

    def backward(self, grad_output: Tensor) -> None:
        if self._shape is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, self._shape)  # else a wrong layout reshapes into wrong rows
        self.embedding.backward(grad_output * self.scale)  # y = sqrt(d) W[ids]: the scale, then the lookup's scatter
        return None

    def extra_repr(self) -> str:
        return f"{self.embedding.num_embeddings}, {self.d_model}"


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    r"""The ``(max_len, d_model)`` float64 table :math:`PE` of :class:`PositionalEncoding`.

    Cached: the source and target encodings of a model share one table (read it, never write it). The cache
    is per default device: a model built on ``meta`` (a checkpoint's config tried before anything is
    allocated) gets a table without storage, and the real model built next a real one.
    """
    return _sinusoidal_table(max_len, d_model, torch.empty(0).device)


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)  # kept: an ordinary tensor, even when sampling (in inference mode) builds it
def _sinusoidal_table(max_len: int, d_model: int, device: torch.device) -> Tensor:
    position = torch.arange(max_len, dtype=torch.float64, device=device).unsqueeze(1)
    frequency = torch.arange(0, d_model, 2, dtype=torch.float64, device=device)
    frequency = torch.exp(frequency * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])  # odd d_model: one cosine column fewer
    return table


class PositionalEncoding(Module):
    r"""Add the sinusoidal position signal, then dropout (section 3.5 and 5.4 of the paper).

    Shapes: ``x (B, T, d_model)``, ``y`` like ``x``; positions ``start .. start + T - 1``
    (``start > 0`` for decoding one step at a time):

    .. math::
        y = \operatorname{Dropout}(x + PE_{\text{start}:\text{start}+T}), \qquad
        PE_{p,2i} = \sin\frac{p}{10000^{2i/d}}, \quad PE_{p,2i+1} = \cos\frac{p}{10000^{2i/d}}, \qquad
        \frac{\partial L}{\partial x} = \operatorname{Dropout}'(g)

    The table is fixed (no parameter) and is not saved in ``state_dict``: it is a function
    of ``(max_len, d_model)``, kept in float64 and copied once to the input's device and dtype.
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model <= 0 or max_len <= 0:
            raise ValueError(f"PositionalEncoding needs positive sizes, got d_model={d_model}, max_len={max_len}")
        self.d_model = d_model
        self.max_len = max_len
        self.table = sinusoidal_table(max_len, d_model)
        self._table_like = self.table  # the table on the last input's device and dtype
        self.dropout = Dropout(dropout)
        self._shape: tuple[int, ...] | None = None  # the last input's (= output's) shape, for backward

    def _check(self, x: Tensor, start: int) -> None:
        d = self.d_model
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 3 or x.shape[-1] != d:
            got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"PositionalEncoding(d_model={d}) expects a floating input (B, T, {d}), got {got}")
        if start < 0 or start + x.shape[1] > self.max_len:
            raise ValueError(
                f"PositionalEncoding(max_len={self.max_len}) covers positions 0..{self.max_len - 1}, "
                f"got positions {start}..{start + x.shape[1] - 1}"
            )

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        self._check(x, start)
        # Speed trick: one copy of the table on x's device and dtype, kept for the next calls
        # (plain form: self.table.to(x) on every call, a host-to-device copy each time).
        if self._table_like.device != x.device or self._table_like.dtype != x.dtype:
            self._table_like = self.table.to(device=x.device, dtype=x.dtype)
        self._shape = tuple(x.shape)
        return self.dropout(x + self._table_like[start : start + x.shape[1]])  # y = Dropout(x + PE[start:start+T])

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._shape is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, self._shape)  # else it may broadcast against the dropout mask
        return self.dropout.backward(grad_output)  # y = Dropout(x + PE): PE is a constant, x gets Dropout'(g)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"
