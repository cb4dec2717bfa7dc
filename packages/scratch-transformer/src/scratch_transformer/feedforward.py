r"""The position-wise feed-forward network: two ``Dense`` layers around a ReLU (or GELU)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from torch import Tensor

from scratch_engine import GELU, Dense, Dropout, Module, ReLU, missing_forward
from scratch_engine.checks import check_dtype, check_grad_output

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn

Activation = Literal["relu", "gelu"]


def make_activation(name: str) -> Module:
    """The engine's ``ReLU()`` or ``GELU()`` (exact, as torch's ``"gelu"``)."""
    if name == "relu":
        return ReLU()
    if name == "gelu":
        return GELU()
    raise ValueError(f"activation must be 'relu' or 'gelu', got {name!r}")


class FeedForward(Module):
    r""":math:`\operatorname{FFN}(x) = \operatorname{Dropout}(f(x W_1^\top + b_1))\, W_2^\top + b_2`, at every position.

    Shapes: ``x (..., d_model)``, ``W_1 (d_ff, d_model)``, ``W_2 (d_model, d_ff)``,
    ``y (..., d_model)``; :math:`f` is ReLU (the paper) or GELU. The layout of torch's
    ``linear1 -> activation -> dropout -> linear2`` inside ``nn.TransformerEncoderLayer``.
    Backward chains the engine layers in reverse, with :math:`h = x W_1^\top + b_1`:

    .. math::
        \partial a = \operatorname{Dropout}'(\partial_{\text{out}} W_2), \quad
        \partial h = \partial a \odot f'(h), \quad
        \frac{\partial L}{\partial x} = \partial h\, W_1

    (and the ``Dense`` weight gradients :math:`\partial W = \partial^\top \cdot \text{input}`). ``bias=False``
    drops :math:`b_1, b_2` (GPT-style).
    """

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, activation: Activation = "relu", bias: bool = True
    ) -> None:
        super().__init__()
        self.activation_name = activation
        self.linear1 = Dense(d_model, d_ff, bias=bias, init="kaiming" if activation == "relu" else "xavier")
        self.activation = make_activation(activation)
        self.dropout = Dropout(dropout)
        self.linear2 = Dense(d_ff, d_model, bias=bias, init="xavier")
        self._shape: tuple[int, ...] | None = None  # the last output's shape, for backward

    @classmethod
    def from_torch(
        cls, linear1: nn.Linear, linear2: nn.Linear, activation: Activation = "relu", dropout: float = 0.0
    ) -> FeedForward:
        from scratch_engine.tools.twin import from_torch  # torch.nn only on request

        if linear1.out_features != linear2.in_features or linear1.in_features != linear2.out_features:
            raise ValueError(
                "FeedForward.from_torch expects linear1 (d_model -> d_ff) and linear2 (d_ff -> d_model), got "
                f"{linear1.in_features} -> {linear1.out_features} and {linear2.in_features} -> {linear2.out_features}"
            )
        layer = cls(linear1.in_features, linear1.out_features, dropout=dropout, activation=activation)
        layer.linear1 = from_torch(linear1)
        layer.linear2 = from_torch(linear2)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor):  # named after this layer, not the Dense inside (which checks the rest)
            check_dtype(self, x, self.linear1.weight.data)
        h = self.linear1(x)  # h = x W_1^T + b_1
        a = self.dropout(self.activation(h))  # a = Dropout(f(h))
        y = self.linear2(a)  # y = a W_2^T + b_2
        self._shape = tuple(y.shape)
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._shape is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, self._shape)
        # Both layers keep input_grad=True, so each Dense.backward returns a Tensor (the casts tell mypy).
        grad_a = cast(Tensor, self.linear2.backward(grad_output))  # y = a W_2^T + b_2
        grad_h = self.activation.backward(self.dropout.backward(grad_a))  # a = Dropout(f(h))
        return cast(Tensor, self.linear1.backward(grad_h))  # h = x W_1^T + b_1

    def extra_repr(self) -> str:
        return f"activation={self.activation_name!r}"
