r"""A decoder-only Transformer (GPT): predict the next character from all the characters before it.

The translator's decoder reads the French prefix *and* the English sentence; a GPT keeps only
the first half: causal self-attention over its own past. A GPT block is exactly this package's
:class:`~scratch_transformer.layers.EncoderLayer`, pre-norm, given a causal mask (position
:math:`t` may attend to positions :math:`\le t`). For ids :math:`c_1..c_T` and :math:`L` blocks:

.. math::
    x^{(0)}_t = E[c_t] + P_t, \qquad
    x^{(\ell)} = \operatorname{Block}_\ell\big(x^{(\ell-1)}, \text{causal}\big), \qquad
    z_t = \operatorname{LN}\big(x^{(L)}_t\big)\, E^\top

with :math:`E` the ``(V, d)`` token embedding, :math:`P` learned (``(block_size, d)``) or
sinusoidal positions, and the output projection *tied* to :math:`E` (``tie_weights``): the
same matrix reads a character in and scores it out, and its gradient is the sum of both uses.
Training predicts every position at once (``z_t`` scores :math:`c_{t+1}`); the causal mask is
what keeps position :math:`t` from reading the answer.

**Backward** runs the chain in reverse: the head (into :math:`E`'s gradient), the final norm,
the blocks last first, the dropout, then the token lookup (its rows scatter-add into :math:`E`)
and the positions (summed over the batch, added into the table's first :math:`T` rows).

**Sampling** (:func:`generate`) appends one character at a time. Recomputing the whole prefix
costs a full forward per character; the KV cache (``use_cache=True``) keeps every block's keys
and values, so each new character runs the blocks on one position and attends over the cache:
the same logits, :math:`O(T)` work instead of :math:`O(T^2)` per character. Positions only go
up to ``block_size``: past it the context is the last ``block_size`` characters, whose positions
all shift, so every later character is recomputed over that window, with or without the cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from numbers import Integral
from typing import Any, cast

import torch
from torch import Tensor

from scratch_engine import Dense, Dropout, Embedding, Module, missing_forward, no_cache
from scratch_engine.tools.text import Vocabulary, check_sampling, encode_prompt, next_token
from scratch_transformer.attention import KVCache
from scratch_transformer.embedding import sinusoidal_table
from scratch_transformer.layernorm import LayerNorm
from scratch_transformer.layers import EncoderLayer

POSITIONS = ("learned", "sinusoidal")


@dataclass
class GPTConfig:
    """The model's sizes, passed whole. The defaults are nanoGPT's CPU "baby" character model."""

    vocab_size: int
    block_size: int = 64  # the longest context, in characters
    layers: int = 4
    heads: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in the projections, the feed-forward and the norms
    tie_weights: bool = True  # the output projection is the token embedding
    positions: str = "learned"  # or "sinusoidal" (fixed, as in the translator)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "layers", "heads", "d_model"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"GPTConfig.positions must be one of {POSITIONS}, got {self.positions!r}")


class GPT(Module):
    r"""Token ids ``(B, T)`` (``T <= block_size``) -> next-token logits ``(B, T, V)``, with a hand-written backward.

    Initialised as GPT-2: every matrix :math:`\mathcal N(0, 0.02^2)`, the two projections that
    write into the residual stream (attention output, second feed-forward layer) scaled by
    :math:`1/\sqrt{2L}` so that the stream's variance does not grow with depth, biases zero.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        d, V = config.d_model, config.vocab_size
        self.token_embedding = Embedding(V, d)
        self.position_embedding = Embedding(config.block_size, d) if config.positions == "learned" else None
        self.dropout = Dropout(config.dropout)
        self.blocks = [
            EncoderLayer(d, config.heads, 4 * d, config.dropout, "gelu", norm_first=True, bias=config.bias)
            for _ in range(config.layers)
        ]
        self.norm = LayerNorm(d, bias=config.bias)
        self.head = Dense(d, V, bias=False)
        if config.tie_weights:
            self.head.weight = self.token_embedding.weight  # one Parameter: both uses add into its grad
        self._init_weights()
        self._masks: dict[tuple[int, torch.device], Tensor] = {}  # causal masks by length and device
        self._steps: int | None = None  # T of the last forward, for backward

    def _init_weights(self) -> None:
        residual_std = 0.02 / math.sqrt(2 * self.config.layers)
        for name, param in self.named_parameters():
            if param.data.dim() == 1:  # a norm's gain starts at 1, a bias at 0
                param.data.fill_(0.0 if name.endswith("bias") else 1.0)
            elif name.endswith(("out_proj.weight", "linear2.weight")):
                param.data.normal_(0.0, residual_std)
            else:
                param.data.normal_(0.0, 0.02)

    def positions_for(self, start: int, steps: int, like: Tensor) -> Tensor:
        """:math:`P_{start:start+T}` ``(T, d)``: rows of the learned or the sinusoidal table.

        Positions are consecutive and ours (always in range), so the rows are a slice of the table, not a lookup:
        no index tensor and no range check, in training and sampling alike.
        """
        if self.position_embedding is None:
            return sinusoidal_table(self.config.block_size, self.config.d_model)[start : start + steps].to(like)
        return self.position_embedding.weight.data[start : start + steps]

    def causal_mask(self, steps: int, device: torch.device) -> Tensor:
        """``(T, T)``, True on and below the diagonal; built once per length and device."""
        key = (steps, device)
        if key not in self._masks:
            with torch.inference_mode(False):  # kept: an ordinary tensor, even when sampling builds it
                self._masks[key] = torch.ones(steps, steps, dtype=torch.bool, device=device).tril()
        return self._masks[key]

    def _check_ids(self, ids: Tensor, start: int = 0) -> None:  # the token embedding checks the ids' values
        if not isinstance(ids, Tensor) or ids.dim() != 2:
            got = f"shape {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"GPT expects token ids of shape (B, T), got {got}")
        self._check_positions(start, ids.shape[1])

    def _check_positions(self, start: int, steps: int) -> None:
        if start + steps > self.config.block_size:
            raise ValueError(
                f"GPT(block_size={self.config.block_size}) reads at most {self.config.block_size} positions, "
                f"got positions {start}..{start + steps - 1}"
            )

    def forward(self, ids: Tensor) -> Tensor:
        self._check_ids(ids)
        steps = ids.shape[1]
        x = self.token_embedding(ids)  # E[c_t]
        x = self.dropout(x + self.positions_for(0, steps, x))  # x^(0) = Dropout(E[c_t] + P_t)
        mask = self.causal_mask(steps, ids.device)
        for block in self.blocks:
            x = block(x, mask)  # x^(l) = Block_l(x^(l-1), causal)
        self._steps = steps
        return self.head(self.norm(x))  # z = LN(x^(L)) E^T

    def backward(self, grad_output: Tensor) -> None:
        if self._steps is None:
            raise missing_forward(self)
        g = self.norm.backward(cast(Tensor, self.head.backward(grad_output)))  # z = LN(x^(L)) E^T
        for block in reversed(self.blocks):
            g = block.backward(g)  # x^(l) = Block_l(x^(l-1), causal)
        g = self.dropout.backward(g)  # x^(0) = Dropout(E[c_t] + P_t)
        self.token_embedding.backward(g)  # ... E[c_t]: each row's gradient, summed where it was read
        if self.position_embedding is not None:  # ... + P_t: rows 0..T-1, the same P_t for every sequence
            self.position_embedding.weight.grad[: self._steps].add_(g.sum(dim=0))
        return None

    # ------------------------------------------------------------------ inference with a KV cache
    def new_cache(self) -> list[KVCache]:
        """One empty :class:`KVCache` per block."""
        return [KVCache() for _ in self.blocks]

    def forward_incremental(self, ids: Tensor, cache: list[KVCache]) -> Tensor:
        """Logits ``(B, T_new, V)`` of the new ids ``(B, T_new)``, after the ``len(cache[0])`` cached positions.

        Inference only: equal to ``forward(all ids)[:, -T_new:]`` in eval mode, each block's keys
        and values appended to its cache.
        """
        start, steps = len(cache[0]), ids.shape[1]
        self._check_ids(ids, start)
        x = self.token_embedding(ids)
        x = x + self.positions_for(start, steps, x)
        # the new queries see every cached key and the new keys up to their own position
        mask = None if steps == 1 else torch.ones(steps, start + steps, dtype=torch.bool, device=ids.device).tril(start)
        return self._blocks_incremental(x, cache, mask)

    def forward_drawn(self, token: int, cache: list[KVCache]) -> Tensor:
        """Logits ``(1, 1, V)`` of one ``token`` this model drew, after the cached positions: ``forward_incremental``
        of ``[[token]]``.

        Speed trick (plain form: ``forward_incremental(torch.tensor([[token]]), cache)``): the token came from this
        model's own ``V`` logits, so it is in range, and its embedding row is a slice, as the positions' are: no id
        tensor to build and no range check to read back, for every character sampled.
        """
        start = len(cache[0])
        self._check_positions(start, 1)
        row = self.token_embedding.weight.data[token : token + 1]  # E[c_t], (1, d)
        x = (row + self.positions_for(start, 1, row)).unsqueeze(0)  # E[c_t] + P_t, (1, 1, d)
        return self._blocks_incremental(x, cache, None)

    def _blocks_incremental(self, x: Tensor, cache: list[KVCache], mask: Tensor | None) -> Tensor:
        for block, block_cache in zip(self.blocks, cache, strict=True):
            x = block.forward_incremental(x, block_cache, mask)
        return self.head(self.norm(x))

    def num_parameters_without_positions(self) -> int:
        """Parameters besides the position table (the count GPT papers report)."""
        table = self.position_embedding.weight.data.numel() if self.position_embedding is not None else 0
        return self.num_parameters() - table

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def generate(
    model: GPT,
    ids: Tensor,
    new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """``ids (1, T)`` followed by ``new_tokens`` drawn one at a time (:func:`~scratch_engine.tools.text.next_token`).

    ``use_cache=False`` recomputes the whole (last ``block_size``) prefix for every character:
    the plain form the cache must agree with. Runs in eval mode under ``no_cache()`` and
    ``torch.inference_mode()``: no_grad would still keep autograd's version counters and views, a sixth of a
    character's time at batch 1. The ids it returns are an ordinary tensor.
    """
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, Integral) or new_tokens < 0:
        raise ValueError(f"new_tokens must be an integer >= 0, got {new_tokens!r}")
    check_sampling(temperature, top_k)
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
        raise ValueError(f"generate expects one prompt of ids (1, T) with T >= 1, got shape {tuple(ids.shape)}")
    was_training = model.training
    model.eval()
    try:
        with no_cache(), torch.inference_mode():
            drawn = list(_draws(model, ids, new_tokens, use_cache, temperature, top_k, generator))
    finally:
        model.train(was_training)
    return torch.tensor([[*(int(i) for i in ids[0]), *drawn]], dtype=ids.dtype, device=ids.device)


def _draws(
    model: GPT,
    ids: Tensor,
    count: int,
    use_cache: bool,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> Iterator[int]:
    """The ``count`` drawn ids, one at a time: cached while the context fits the block, else over the window."""
    block = model.config.block_size
    context = ids[:, -block:]
    cache = model.new_cache() if use_cache else None
    logits = model.forward_incremental(context, cache) if cache is not None else model(context)
    window = context[0].tolist()  # the ids the next character is predicted from
    for _ in range(count):
        token = next_token(logits[0, -1], temperature, top_k, generator)
        yield token
        window.append(token)
        if cache is not None and len(window) <= block:
            logits = model.forward_drawn(token, cache)  # one position, over the cached keys and values
        else:
            window = window[-block:]  # past the block: the window's positions shift, recompute it
            logits = model(torch.tensor([window], dtype=ids.dtype, device=ids.device))


def sample(
    model: GPT,
    vocabulary: Vocabulary,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> str:
    """``prompt`` followed by ``length`` generated characters."""
    ids = encode_prompt(vocabulary, prompt, model.config.vocab_size).to(model.head.weight.data.device)
    out = generate(model, ids, length, temperature, top_k, generator, use_cache)
    return prompt + vocabulary.decode(out[0, len(prompt) :])
