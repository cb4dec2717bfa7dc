"""The torch.nn twin of :class:`~scratch_rnn.charlm.CharLM`, for ``--reference torch`` and the tests.

``TorchCharLM`` is ``nn.Embedding`` (or one-hot) + ``nn.RNN``/``nn.LSTM``/``nn.GRU`` +
``nn.Linear`` with the same sizes, parameter names and carried state as ``CharLM``, so the
weights copy either way: ``TorchCharLM.from_scratch(model)`` (what ``--reference torch``
trains beside a run) and ``CharLM.from_torch(twin)`` (the tests). The engine's
:func:`~scratch_engine.tools.twin.twin_for` trains it, with ``torch.optim`` and autograd, as the
:class:`~scratch_engine.tools.twin.TorchTwin` of a run.

This module is a *reference*, not part of the training path: with ``bench.py`` it is the
one place in the package that uses ``torch.nn``, ``torch.optim`` and autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from scratch_rnn.charlm import CharLM

TORCH_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "rnn": nn.RNN,
    "lstm": nn.LSTM,
    "gru": nn.GRU,
    "rnn-relu": partial(nn.RNN, nonlinearity="relu"),
}


class TorchCharLM(nn.Module):
    """One-hot or ``nn.Embedding`` → torch recurrent stack (time-major) → ``nn.Linear``; state carried, detached."""

    def __init__(self, vocab_size: int, arch: str = "lstm", hidden: int = 256, layers: int = 2, embedding: int = 0):
        super().__init__()
        if arch not in TORCH_LAYERS:
            raise ValueError(f"unknown arch {arch!r}; valid names: {', '.join(TORCH_LAYERS)}")
        self.vocab_size, self.arch, self.hidden, self.layers, self.embedding_dim = (
            vocab_size,
            arch,
            hidden,
            layers,
            embedding,
        )
        self.embedding = nn.Embedding(vocab_size, embedding) if embedding else None
        self.rnn = TORCH_LAYERS[arch](embedding or vocab_size, hidden, layers)
        self.head = nn.Linear(hidden, vocab_size)
        self.state: Any = None

    @classmethod
    def from_scratch(cls, model: CharLM) -> TorchCharLM:
        """The twin of ``model``: the same sizes and weights, on its device and in its dtype."""
        with torch.random.fork_rng(devices=[]):  # its own initial weights, overwritten, draw nothing from the run's
            twin = cls(model.vocab_size, model.arch, model.hidden, model.layers, model.embedding_dim)
        weight = model.head.weight.data
        twin.to(device=weight.device, dtype=weight.dtype)
        twin.load_state_dict(model.state_dict())  # the same parameter names
        return twin

    def reset_state(self) -> None:
        self.state = None

    def carried_state(self) -> Any:
        return self.state

    def set_carried_state(self, state: Any) -> None:
        weight = self.head.weight
        if isinstance(state, Tensor):
            state = state.to(device=weight.device, dtype=weight.dtype)
        elif state is not None:
            state = tuple(s.to(device=weight.device, dtype=weight.dtype) for s in state)
        self.state = state

    def forward(self, ids: Tensor) -> Tensor:
        ids_t = ids.t()
        if self.embedding is not None:
            x = self.embedding(ids_t)
        else:
            x = nn.functional.one_hot(ids_t, self.vocab_size).to(self.head.weight.dtype)
        state = self.state
        if state is not None and (state if isinstance(state, Tensor) else state[0]).shape[1] != ids.shape[0]:
            state = None
        output, final = self.rnn(x, state)
        self.state = final.detach() if isinstance(final, Tensor) else tuple(s.detach() for s in final)
        return self.head(output).transpose(0, 1)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
