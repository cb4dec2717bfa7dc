"""The torch.nn twin of :class:`~scratch_rnn.charlm.CharLM`, for ``--reference torch`` and the tests.

``TorchCharLM`` is ``nn.Embedding`` (or one-hot) + ``nn.RNN``/``nn.LSTM``/``nn.GRU`` +
``nn.Linear`` with the same sizes, parameter names and carried state as ``CharLM``; build it
first and copy it with ``CharLM.from_torch`` so both start from the same weights.
The engine's :func:`~scratch_engine.reference.twin_for` trains it, with ``torch.optim`` and
autograd, as the :class:`~scratch_engine.reference.TorchTwin` of a run.

This module is a *reference*, not part of the training path: with ``bench.py`` it is the
one place in the package that uses ``torch.nn``, ``torch.optim`` and autograd.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

TORCH_LAYERS: dict[str, type[nn.Module]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


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

    def reset_state(self) -> None:
        self.state = None

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
