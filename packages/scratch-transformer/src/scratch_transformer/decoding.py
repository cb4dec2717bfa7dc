r"""Greedy decoding and beam search, with a KV cache or by plain re-computation.

Both encode the source once, then extend the target one token at a time from ``<bos>``.

- ``use_cache=True`` (the default): each step feeds only the newest token. Every decoder layer
  appends that position's self-attention keys and values to its :class:`~scratch_transformer.attention.KVCache`
  and reads the memory's cross-attention keys and values, projected once on the first step
  (:meth:`Transformer.decode` with ``cache=``). Step :math:`t` runs the embedding, the
  projections, the feed-forward layers and the head on one position instead of :math:`t`.
- ``use_cache=False``: each step re-runs the decoder over the whole prefix and keeps the last
  position's logits. Same tokens, more work: the reference the cache is tested against.

Decoding runs the model in eval mode (no dropout) under ``torch.no_grad()`` with forward passes
only, and restores the model's mode afterwards.

Beam search keeps ``beam_size`` live hypotheses per sentence, ranked by their summed token
log-probabilities :math:`\log p(Y) = \sum_t \log p(y_t \mid y_{<t}, x)`. A hypothesis that ends in
``<eos>`` is *finished*: it is kept aside with the length-normalised score of GNMT (Wu et al.,
2016),

.. math::
    s(Y) = \frac{\log p(Y)}{lp(Y)}, \qquad lp(Y) = \left(\frac{5 + |Y|}{6}\right)^{\alpha}

where :math:`|Y|` counts the generated tokens, ``<eos>`` included (``<bos>`` not), and
:math:`\alpha` is ``length_penalty`` (0: no normalisation; larger values favour longer
outputs). A sentence is done once it has ``beam_size`` finished hypotheses (the rule of
fairseq); at ``max_len`` the live hypotheses are finished as they are (without ``<eos>``). The
answer is the finished hypothesis with the best :math:`s(Y)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from scratch_engine import no_cache
from scratch_transformer.layers import DecoderCache
from scratch_transformer.masks import check_mask
from scratch_transformer.model import Transformer


@contextmanager
def _eval_mode(model: Transformer) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), no_cache():  # no backward follows: the layers keep nothing for one
            yield
    finally:
        model.train(was_training)


class _NextToken:
    """Next-token logits ``(N, V)`` for a batch of prefixes ``(N, t)``, with or without a KV cache."""

    def __init__(self, model: Transformer, memory: Tensor, src_mask: Tensor | None, use_cache: bool) -> None:
        self.model, self.memory, self.src_mask = model, memory, src_mask
        self.cache: DecoderCache | None = model.new_cache() if use_cache else None

    def __call__(self, prefix: Tensor) -> Tensor:
        if self.cache is None:  # re-compute the whole prefix
            return self.model.decode(prefix, self.memory, self.src_mask)[:, -1]
        new = prefix[:, len(self.cache) :]  # only the positions not cached yet: one per step
        return self.model.decode(new, self.memory, self.src_mask, cache=self.cache)[:, -1]

    def reorder(self, index: Tensor) -> None:
        """Prefix row ``i`` now continues old row ``index[i]``."""
        if self.cache is not None:
            self.cache.reorder(index)


def _check_arguments(
    model: Transformer,
    src_ids: Tensor,
    src_mask: Tensor | None,
    bos_id: int,
    eos_id: int | None,
    max_len: int,
) -> Tensor | None:
    """Validate the common arguments; return ``src_mask`` expanded to ``(B, 1, 1, T_src)`` (or ``None``)."""
    if not isinstance(src_ids, Tensor) or src_ids.dim() != 2 or src_ids.is_floating_point():
        got = f"{tuple(src_ids.shape)} of dtype {src_ids.dtype}" if isinstance(src_ids, Tensor) else type(src_ids)
        raise ValueError(f"decoding expects src_ids as integer token ids of shape (B, T_src), got {got}")
    if src_ids.shape[0] < 1 or src_ids.shape[1] < 1:  # nothing to decode: fail here, not in a reshape
        raise ValueError(f"src_ids must have B >= 1 and T >= 1, got shape {tuple(src_ids.shape)}")
    vocab = model.head.out_features
    for name, token in (("bos_id", bos_id), ("eos_id", eos_id)):
        if token is not None and not 0 <= token < vocab:
            raise ValueError(f"{name} must be a target token id in [0, {vocab}), got {token}")
    limit = model.tgt_pos.max_len
    if not isinstance(max_len, int) or not 1 <= max_len <= limit:
        raise ValueError(
            f"max_len must be an int in [1, {limit}] (the model's positional encoding covers {limit} positions), "
            f"got {max_len!r}"
        )
    if src_mask is None:
        return None
    shape = (src_ids.shape[0], 1, 1, src_ids.shape[1])
    check_mask(src_mask, shape, "decoding src_mask")
    return src_mask.expand(shape)


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src_ids: Tensor,
    src_mask: Tensor | None,
    bos_id: int,
    eos_id: int | None,
    max_len: int,
    use_cache: bool = True,
    pad_id: int | None = None,
) -> Tensor:
    r"""Pick the most likely next token at every step: :math:`y_t = \arg\max_v p(v \mid y_{<t}, x)`.

    ``src_ids (B, T_src)`` (padded sources with ``src_mask``, e.g. ``padding_mask(src_ids,
    pad)``, broadcastable to ``(B, 1, 1, T_src)``). Returns the generated ids ``(B, T)``,
    ``<bos>`` not included, ``T <= max_len``: decoding stops when every row has produced
    ``eos_id`` (``None``: never stop early, e.g. to time ``max_len`` steps). A row that has
    finished is filled with ``pad_id`` after its ``<eos>`` (``None``: with ``eos_id``).
    """
    src_mask = _check_arguments(model, src_ids, src_mask, bos_id, eos_id, max_len)
    with _eval_mode(model):
        next_token = _NextToken(model, model.encode(src_ids, src_mask), src_mask, use_cache)
        batch, device = src_ids.shape[0], src_ids.device
        tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        for _ in range(max_len):
            chosen = next_token(tokens).argmax(dim=-1)
            if eos_id is not None:
                chosen = chosen.masked_fill(finished, eos_id if pad_id is None else pad_id)
                finished |= chosen == eos_id
            tokens = torch.cat((tokens, chosen[:, None]), dim=1)
            if eos_id is not None and bool(finished.all()):  # one host sync per step
                break
        return tokens[:, 1:]


def length_penalty_factor(length: int, alpha: float) -> float:
    r"""GNMT's :math:`lp(Y) = ((5 + |Y|) / 6)^\alpha`."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Transformer,
    src_ids: Tensor,
    src_mask: Tensor | None,
    bos_id: int,
    eos_id: int,
    max_len: int,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    use_cache: bool = True,
) -> list[list[int]]:
    r"""The best finished hypothesis of each source sentence (see the module docs), as token lists.

    ``src_ids (B, T_src)``, ``src_mask`` as in :func:`greedy_decode`. The ``B`` sentences are
    searched together as ``B * beam_size`` rows. Each step scores every continuation of every
    live beam, :math:`\log p(Y) + \log p(v \mid Y)`, and walks the ``2 * beam_size`` best of each
    sentence in order: an ``<eos>`` among the first ``beam_size`` finishes its hypothesis, any other
    token extends a live beam until ``beam_size`` are live. Returns ``B`` lists of ids, without
    ``<bos>`` and ``<eos>``. ``beam_size=1`` is greedy decoding.
    """
    src_mask = _check_arguments(model, src_ids, src_mask, bos_id, eos_id, max_len)
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    if not (isinstance(length_penalty, (int, float)) and math.isfinite(length_penalty) and length_penalty >= 0):
        raise ValueError(f"length_penalty (alpha) must be a finite number >= 0, got {length_penalty!r}")
    batch, k, device = src_ids.shape[0], beam_size, src_ids.device
    with _eval_mode(model):
        memory = model.encode(src_ids, src_mask).repeat_interleave(k, dim=0)  # row b * k + j: beam j of sentence b
        rows_mask = None if src_mask is None else src_mask.repeat_interleave(k, dim=0)
        next_token = _NextToken(model, memory, rows_mask, use_cache)
        tokens = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)
        scores = torch.full((batch, k), -math.inf, dtype=memory.dtype, device=device)
        scores[:, 0] = 0.0  # one live beam to start from: the others would only repeat it
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        done = [False] * batch
        first_row = torch.arange(batch, device=device)[:, None] * k

        for length in range(1, max_len + 1):
            logits = next_token(tokens)
            log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)  # (B * k, V)
            vocab = log_probs.shape[-1]
            candidates = (scores.reshape(-1, 1) + log_probs).reshape(batch, k * vocab)
            top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)

            new_scores = [[-math.inf] * k for _ in range(batch)]
            origin = [[0] * k for _ in range(batch)]
            new_tokens = [[bos_id] * k for _ in range(batch)]  # a filler for beams left without a hypothesis
            prefixes = tokens[:, 1:].tolist()
            for b, (row_scores, row_index) in enumerate(zip(top_scores.tolist(), top_index.tolist(), strict=True)):
                if done[b]:  # its rows keep decoding (a batch moves together) but are never read again
                    continue
                live = 0
                for rank, (score, index) in enumerate(zip(row_scores, row_index, strict=True)):
                    if score == -math.inf or live == k:
                        break
                    beam, token = divmod(index, vocab)
                    if token == eos_id:
                        if rank < k:
                            normalised = score / length_penalty_factor(length, length_penalty)
                            finished[b].append((normalised, prefixes[b * k + beam]))
                    else:
                        new_scores[b][live], origin[b][live], new_tokens[b][live] = score, beam, token
                        live += 1
                done[b] = len(finished[b]) >= k
            if all(done):
                break
            index = (first_row + torch.tensor(origin, device=device)).reshape(-1)
            next_token.reorder(index)
            tokens = torch.cat(
                (tokens.index_select(0, index), torch.tensor(new_tokens, device=device).reshape(-1, 1)), 1
            )
            scores = torch.tensor(new_scores, dtype=memory.dtype, device=device)

        if not all(done):  # max_len reached: the live hypotheses (max_len tokens each) are finished as they are
            final = tokens[:, 1:].tolist()
            lp = length_penalty_factor(max_len, length_penalty)
            for b, row_scores in enumerate(scores.tolist()):
                if not done[b]:
                    finished[b].extend((s / lp, final[b * k + j]) for j, s in enumerate(row_scores) if s > -math.inf)
        return [max(hypotheses, key=lambda h: h[0])[1] for hypotheses in finished]
