r"""A character-level language model: truncated-BPTT batches, ``CharLM`` and sampling.

``CharLM`` maps character ids ``(B, T)`` to next-character logits ``(B, T, V)``:

.. math::
    x_t = \text{onehot}(c_t) \text{ or } E[c_t], \qquad
    h^{(1..L)}_t = \text{RNN/LSTM/GRU stack}(x_t, h_{t-1}), \qquad
    z_t = h^{(L)}_t W^\top + b

and carries its recurrent state from one batch to the next (truncated backpropagation
through time): the final state of a chunk is the initial state of the next, detached, so
the gradient stops at the chunk boundary while the forward pass keeps the context.
:class:`CharStreams` cuts a text into the batches that make this carrying meaningful. The
Engine resets the state at the start of every epoch (a pass over the text), keeps it aside
while it evaluates, and saves it in a checkpoint (``reset_state``, ``carried_state``,
``set_carried_state``). The characters' ids come from the engine's
:class:`~scratch_engine.tools.text.Vocabulary`.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from scratch_engine.checks import check_grad_output, check_indices
from scratch_engine.data import EpochBatches, map_tensors
from scratch_engine.layers import Dense, Embedding
from scratch_engine.module import Module, missing_forward, no_cache
from scratch_engine.tools.distributed import shard
from scratch_engine.tools.text import Vocabulary, check_sampling, encode_prompt, next_token
from scratch_rnn.gru import GRU
from scratch_rnn.lstm import LSTM
from scratch_rnn.recurrent import HiddenState, _Recurrent, detach_state
from scratch_rnn.rnn import RNN, ReLURNN

ARCHITECTURES: dict[str, type[_Recurrent]] = {"rnn": RNN, "lstm": LSTM, "gru": GRU}  # what compare sets side by side
LAYERS: dict[str, type[_Recurrent]] = {**ARCHITECTURES, "rnn-relu": ReLURNN}  # what a CharLM may be built of


# --------------------------------------------------------------------------- batches


class CharStreams(EpochBatches):
    """Batches for truncated BPTT: ``B`` contiguous streams read ``seq_len`` characters at a time.

    The ids are cut into ``batch_size`` equal streams (row ``b`` is the ``b``-th slice of the
    text); batch ``i`` of a pass yields ``x = streams[:, o + iT : o + (i+1)T]`` and ``y`` the
    same window shifted by one character, so row ``b`` of a batch continues row ``b`` of the
    previous batch and the model's carried state stays meaningful. Nothing is shuffled.

    An epoch is one pass over the text: ``len(loader)`` is :attr:`chunks_per_pass` batches.
    With ``random_offset`` pass ``p`` starts at an offset ``o`` in ``[0, seq_len)`` drawn from
    ``seed + p`` (so chunk boundaries move from pass to pass); otherwise ``o = 0``. Batch ``i``
    of pass ``p`` is a pure function of ``(seed, p, i)``. Each new iteration moves on to the
    next pass, as the engine's ``DataLoader`` does; :meth:`set_epoch` chooses the pass, and the
    batch to start from (the engine resumes a run in the middle of a pass so).

    Data-parallel (``world_size > 1``; by default the process group's, as in ``ShardedDataLoader``):
    ``batch_size`` is per rank; the text is cut into ``batch_size *
    world_size`` streams, as one process with that batch would cut it, and rank ``r`` reads
    streams ``r * batch_size`` to ``(r + 1) * batch_size - 1``. Each rank carries the state
    of its own streams, so together the ranks train on exactly the single process's batches.
    """

    def __init__(
        self,
        ids: Tensor,
        batch_size: int,
        seq_len: int,
        *,
        random_offset: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if ids.dim() != 1:
            raise ValueError(f"CharStreams expects 1-D ids, got shape {tuple(ids.shape)}")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
        self.rank, self.world_size = shard(rank, world_size, seed, random_offset)
        streams = batch_size * self.world_size
        if batch_size > self.max_batch_size(len(ids), seq_len, random_offset, self.world_size):
            raise ValueError(
                f"a text of {len(ids)} characters is too short for {streams} streams of {seq_len}-character chunks"
            )
        stream_len = len(ids) // streams
        spare = seq_len - 1 if random_offset else 0
        mine = slice(self.rank * batch_size, (self.rank + 1) * batch_size)
        self.streams = ids[: streams * stream_len].reshape(streams, stream_len)[mine]
        self.batch_size, self.seq_len = batch_size, seq_len
        self.chunks_per_pass = (stream_len - 1 - spare) // seq_len  # >= 1, as max_batch_size allows
        self.random_offset = random_offset
        self.seed = seed

    @staticmethod
    def max_batch_size(length: int, seq_len: int, random_offset: bool = False, world_size: int = 1) -> int:
        """The most streams per process that ``length`` ids can feed one chunk each (0: not even one).

        A stream needs ``seq_len + 1`` ids (a chunk and its shifted targets), and ``seq_len - 1``
        more with ``random_offset``.
        """
        return length // (world_size * (seq_len + 1 + (seq_len - 1 if random_offset else 0)))

    def __len__(self) -> int:
        return self.chunks_per_pass

    def offset(self, pass_index: int) -> int:
        """Where pass ``pass_index`` starts in every stream: 0, or a draw from ``seed + pass_index``."""
        if not self.random_offset:
            return 0
        generator = torch.Generator().manual_seed(self.seed + pass_index)
        return int(torch.randint(0, self.seq_len, (1,), generator=generator, device="cpu"))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.next_epoch()  # a new iteration reads the next pass
        offset = self.offset(epoch)
        for i in range(start, self.chunks_per_pass):
            begin = offset + i * self.seq_len
            yield (
                self.streams[:, begin : begin + self.seq_len],
                self.streams[:, begin + 1 : begin + 1 + self.seq_len],
            )

    def __repr__(self) -> str:
        return (
            f"CharStreams(batch_size={self.batch_size}, seq_len={self.seq_len}, "
            f"chunks_per_pass={self.chunks_per_pass}, random_offset={self.random_offset}, seed={self.seed})"
        )


# --------------------------------------------------------------------------- the model


class CharLM(Module):
    r"""Characters ``(B, T)`` → logits ``(B, T, V)``: one-hot or embedding, a recurrent stack, a dense head.

    ``arch`` is ``"rnn"``, ``"lstm"`` or ``"gru"``; ``embedding=0`` feeds one-hot vectors
    (the first recurrent layer then skips :math:`\partial L/\partial x`: the input is data),
    ``embedding=d`` an :class:`~scratch_engine.Embedding` of width ``d``. The recurrent state
    is carried across calls (detached: truncated BPTT) until :meth:`reset_state` or a change
    of batch size. ``backward(grad_logits)`` runs head → recurrent stack → embedding and
    returns ``None`` (ids have no gradient).

    The layers are ``embedding`` (or none), ``rnn`` and ``head``, the names of
    :class:`scratch_rnn.reference.TorchCharLM`, so ``load_state_dict`` of its state dict
    copies a torch model exactly (and the other way round).
    """

    def __init__(
        self, vocab_size: int, arch: str = "lstm", hidden: int = 256, layers: int = 2, embedding: int = 0
    ) -> None:
        super().__init__()
        if arch not in LAYERS:
            raise ValueError(f"unknown arch {arch!r}; valid names: {', '.join(LAYERS)}")
        if vocab_size < 1 or embedding < 0:
            raise ValueError(f"CharLM needs vocab_size >= 1 and embedding >= 0, got {vocab_size} and {embedding}")
        self.vocab_size, self.arch, self.hidden, self.layers, self.embedding_dim = (
            vocab_size,
            arch,
            hidden,
            layers,
            embedding,
        )
        self.embedding = Embedding(vocab_size, embedding) if embedding else None
        self.rnn = LAYERS[arch](embedding or vocab_size, hidden, layers)
        self.rnn.input_grad = bool(embedding)
        self.head = Dense(hidden, vocab_size, init="xavier")
        self.state: HiddenState | None = None  # carried from one chunk to the next
        self._output_shape: tuple[int, ...] | None = None  # the last forward's (B, T, V), for backward's check

    @classmethod
    def from_torch(cls, model: Any) -> CharLM:
        """A copy of a :class:`scratch_rnn.reference.TorchCharLM` (same sizes, same weights; typed ``Any``:
        the twin's module imports this one, not the reverse)."""
        lm = cls(model.vocab_size, model.arch, model.hidden, model.layers, model.embedding_dim)
        weight = model.head.weight
        lm.to(device=weight.device, dtype=weight.dtype)
        lm.load_state_dict({name: value.detach().clone() for name, value in model.state_dict().items()})
        return lm

    def config(self) -> dict[str, int | str]:
        return {
            "vocab_size": self.vocab_size,
            "arch": self.arch,
            "hidden": self.hidden,
            "layers": self.layers,
            "embedding": self.embedding_dim,
        }

    # ------------------------------------------------------------------ the carried state (truncated BPTT)
    def reset_state(self) -> None:
        """Forget the carried state: the next chunk starts from zeros (a new pass over the text)."""
        self.state = None

    def carried_state(self) -> HiddenState | None:
        """The state the next chunk starts from: ``h`` (``(h, c)`` for LSTM), or ``None`` for zeros."""
        return self.state

    def set_carried_state(self, state: HiddenState | None) -> None:
        """Carry ``state`` into the next chunk, moved to the model's device and dtype (a checkpoint's is on the CPU)."""
        weight = self.head.weight.data
        moved = map_tensors(lambda t: t.to(device=weight.device, dtype=weight.dtype), state)
        self.state = tuple(moved) if isinstance(moved, list) else moved

    # ------------------------------------------------------------------ forward and backward
    def _check(self, ids: Tensor) -> Tensor:
        """``ids`` if they are integer character ids ``(B, T)`` in ``[0, V)`` (an embedding checks its own range)."""
        if not isinstance(ids, Tensor) or ids.dim() != 2:
            got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"CharLM expects integer character ids of shape (B, T), got {got}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"CharLM expects integer character ids of shape (B, T), got dtype {ids.dtype}")
        if self.embedding is not None:
            return ids
        v = self.vocab_size
        return check_indices(  # as the Embedding checks its ids; the one-hot scatter_ would fail with a raw error
            ids,
            v,
            lambda: (
                f"CharLM character ids must be in [0, {v}) (vocab_size={v}), got min {int(ids.min())} "
                f"and max {int(ids.max())}"
            ),
            f"CharLM character ids out of range: they must be in [0, {v}) (vocab_size={v})",
        )

    def _inputs(self, ids: Tensor) -> Tensor:
        """Time-major inputs ``(T, B, in)``: the embedding's rows, or one-hot vectors."""
        ids_t = ids.t()
        if self.embedding is not None:
            return self.embedding(ids_t)
        onehot = torch.zeros(*ids_t.shape, self.vocab_size, dtype=self.head.weight.data.dtype, device=ids.device)
        return onehot.scatter_(2, ids_t.long().unsqueeze(2), 1.0)  # scatter_ takes int64 (or int32) only

    def forward(self, ids: Tensor) -> Tensor:
        ids = self._check(ids)
        state = self.state
        if state is not None and (state if isinstance(state, Tensor) else state[0]).shape[1] != ids.shape[0]:
            state = None  # another batch size: nothing to carry
        output, final = self.rnn(self._inputs(ids), state)  # (T, B, H)
        self.state = detach_state(final)  # the next chunk's initial state; the gradient stops here
        logits = self.head(output).transpose(0, 1)  # (B, T, V), a view
        self._output_shape = tuple(logits.shape)
        return logits

    def backward(self, grad_output: Tensor) -> None:
        if self._output_shape is None:
            raise missing_forward(self)
        # checked here, not only by the head: a time-major (T, B, V) gradient is named against the logits' (B, T, V)
        check_grad_output(self, grad_output, self._output_shape)
        grad_hidden = self.head.backward(grad_output.transpose(0, 1))  # logits = head(output).transpose(0, 1)
        grad_input, _ = self.rnn.backward(grad_hidden)  # output, final = rnn(inputs, state): the state's gradient stops
        if self.embedding is not None and grad_input is not None:  # rnn.input_grad is True with an embedding
            self.embedding.backward(grad_input)  # inputs = embedding(ids_t)
        return None

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, arch={self.arch}, hidden={self.hidden}, layers={self.layers}"


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample(
    model: CharLM,
    vocab: Vocabulary,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """``prompt`` followed by ``length`` generated characters (the model's carried state is reset).

    Runs under ``no_cache()``: the layers keep nothing for a backward while sampling.
    """
    ids = encode_prompt(vocab, prompt, model.vocab_size)
    if isinstance(length, bool) or not isinstance(length, Integral):
        raise TypeError(f"length must be an integer, got {type(length).__name__}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    check_sampling(temperature, top_k)
    device = model.head.weight.data.device
    was_training = model.training
    model.eval()
    model.reset_state()
    try:
        with no_cache():
            logits = model(ids.to(device))[0, -1]
            out = []
            for _ in range(length):
                token = next_token(logits, temperature, top_k, generator)
                out.append(token)
                logits = model(torch.tensor([[token]], device=device))[0, -1]
        return prompt + vocab.decode(out)
    finally:
        model.reset_state()
        model.train(was_training)
