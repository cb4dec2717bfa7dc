"""The multi-layer perceptron: a :class:`~scratch_engine.Sequential` of Dense layers and activations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Literal

from scratch_engine import GELU, BatchNorm1d, Dense, Dropout, LeakyReLU, Module, ReLU, Sequential, Sigmoid, Tanh

ACTIVATIONS: dict[str, Callable[[], Module]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "gelu": GELU,
}
_XAVIER_ACTIVATIONS = ("tanh", "sigmoid")


class MLP(Sequential):
    """Layers applied in order, e.g. ``MLP([Dense(2, 16), ReLU(), Dense(16, 4)])``.

    :meth:`from_sizes` builds the usual stack; forward/backward are those of ``Sequential``.
    """

    @classmethod
    def from_sizes(
        cls,
        sizes: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init: Literal["kaiming", "xavier"] | None = None,
        input_grad: bool = True,
    ) -> MLP:
        r"""``sizes = [in, h1, ..., out]``: each hidden layer is Dense (+BatchNorm1d) + activation (+Dropout).

        The last Dense has no activation (it outputs logits or regression values). ``init``
        defaults to ``"xavier"`` for tanh/sigmoid and ``"kaiming"`` otherwise. With
        ``batch_norm`` the hidden Dense layers have no bias: BatchNorm's ``beta`` replaces it.
        ``input_grad=False`` spares the first layer's :math:`\partial L/\partial x` when the
        input is data that needs no gradient (as autograd skips it for a tensor without
        ``requires_grad``): one of the two matmuls of that layer's backward.
        """
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid names: {', '.join(ACTIVATIONS)}")
        if len(sizes) < 2:
            raise ValueError(f"MLP.from_sizes needs at least [in, out] sizes, got {list(sizes)}")
        init = init or ("xavier" if activation in _XAVIER_ACTIVATIONS else "kaiming")
        if not 0.0 <= dropout <= 1.0:  # also nan; checked here as well, since dropout=0 adds no Dropout layer
            raise ValueError(f"Dropout probability must be in [0, 1], got {dropout}")
        layers: list[Module] = []
        for fan_in, fan_out in pairwise(sizes[:-1]):
            grad = input_grad or bool(layers)  # only the first layer's input is the data
            layers.append(Dense(fan_in, fan_out, bias=not batch_norm, init=init, input_grad=grad))
            if batch_norm:
                layers.append(BatchNorm1d(fan_out))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout))
        layers.append(Dense(sizes[-2], sizes[-1], init=init, input_grad=input_grad or bool(layers)))
        return cls(layers)
