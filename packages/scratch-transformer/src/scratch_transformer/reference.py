"""The torch.nn twins of the translation model and the GPT, for ``scratch-transformer train ... --reference torch``.

:class:`TorchTranslator` is ``nn.Transformer`` (``batch_first``, same sizes, same pre/post norm)
between two ``nn.Embedding`` tables (scaled by :math:`\\sqrt{d}`) plus the *same* sinusoidal
positional encoding, and an ``nn.Linear`` head. :func:`torch_twin` builds the twin of one of our
:class:`~scratch_transformer.translator.Translator` and copies our weights into it, name by name
(:func:`torch_to_ours` says which of ours each torch parameter is), so both start equal. The
runner wraps it with ``torch.optim``, the same schedule, the same clipping and loss
(:func:`scratch_engine.tools.twin.twin_for`) and trains both on the very same batches.

This module is a *reference*, not the training path: it is one of the two places in the
package (with ``bench.py``) that use ``torch.nn``, ``torch.optim`` and autograd.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import cast

import torch
from torch import Tensor, nn

from scratch_transformer.data import Vocabulary
from scratch_transformer.embedding import sinusoidal_table
from scratch_transformer.gpt import GPT, GPTConfig
from scratch_transformer.translator import Translator


class TorchTranslator(nn.Module):
    """``head(nn.Transformer(E_src(src)·√d + PE, E_tgt(tgt)·√d + PE, masks))`` on ``x = (src_ids, tgt_in)``."""

    pe: Tensor  # the sinusoidal table, a buffer

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 128,
        heads: int = 4,
        layers: int = 2,
        d_ff: int = 512,
        dropout: float = 0.0,
        norm_first: bool = True,
        max_len: int = 512,
        pad_id: int = Vocabulary.PAD,
    ) -> None:
        super().__init__()
        self.d_model, self.pad_id = d_model, pad_id
        with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... norm_first": an eval fast path only
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                d_model, heads, layers, layers, d_ff, dropout, batch_first=True, norm_first=norm_first
            )
        self.src_embedding = nn.Embedding(src_vocab, d_model)
        self.tgt_embedding = nn.Embedding(tgt_vocab, d_model)
        for embedding in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(embedding.weight, std=d_model**-0.5)
        self.head = nn.Linear(d_model, tgt_vocab)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)

    def embed(self, embedding: nn.Embedding, ids: Tensor) -> Tensor:
        return embedding(ids) * math.sqrt(self.d_model) + self.pe[: ids.shape[1]].to(embedding.weight.dtype)

    def forward(self, x: tuple[Tensor, Tensor]) -> Tensor:
        src, tgt_in = x
        pad = src == self.pad_id  # torch's convention: True = may NOT attend
        causal = torch.ones(tgt_in.shape[1], tgt_in.shape[1], dtype=torch.bool, device=src.device).triu(1)
        y = self.transformer(
            self.embed(self.src_embedding, src),
            self.embed(self.tgt_embedding, tgt_in),
            tgt_mask=causal,
            src_key_padding_mask=pad,
            memory_key_padding_mask=pad,
        )
        return self.head(y)


def torch_twin(model: Translator) -> TorchTranslator:
    """The torch.nn twin of ``model``: its sizes, norm placement and dropout, a copy of its weights (device, dtype).

    ``nn.Transformer`` always ends each stack with a ``LayerNorm``; where ours has none (post-norm,
    as in the paper) the twin's is removed, so both compute the same function.
    """
    ours = model.model
    first = ours.encoder.layers[0]
    if len(ours.encoder.layers) != len(ours.decoder.layers) or ours.tie_embeddings:
        raise ValueError("the torch twin has as many encoder as decoder layers and untied embeddings")
    with torch.random.fork_rng(devices=[]):  # its own initial weights are overwritten: leave the generator alone
        twin = TorchTranslator(
            ours.src_embed.embedding.num_embeddings,
            ours.tgt_embed.embedding.num_embeddings,
            ours.d_model,
            ours.num_heads,
            len(ours.encoder.layers),
            first.feed_forward.linear1.out_features,
            first.add_norm1.dropout.p,
            first.add_norm1.norm_first,
            ours.src_pos.max_len,
            model.pad_id,
        )
    if ours.encoder.norm is None:
        twin.transformer.encoder.norm = None
    if ours.decoder.norm is None:
        twin.transformer.decoder.norm = None
    weights = ours.state_dict()
    head = ours.head.weight.data
    twin.to(device=head.device, dtype=head.dtype)
    with torch.no_grad():
        for name, value in twin.state_dict().items():
            value.copy_(torch.cat([weights[our_name] for our_name in torch_to_ours(name)]))
    return twin


def torch_to_ours(torch_name: str) -> list[str]:
    """Our parameter name(s) for a :class:`TorchTranslator` one; ``in_proj_*`` is our q, k, v projections stacked."""
    name = torch_name.removeprefix("transformer.")
    name = name.replace("multihead_attn.", "cross_attn.")
    name = re.sub(r"\bnorm(\d)\.", r"add_norm\1.norm.", name)
    name = re.sub(r"\blinear(\d)\.", r"feed_forward.linear\1.", name)
    name = re.sub(r"^(src|tgt)_embedding\.", r"\1_embed.embedding.", name)
    if "in_proj_" in name:
        prefix, kind = name.split("in_proj_")
        return [f"{prefix}{p}_proj.{kind}" for p in "qkv"]
    return [name]


# --------------------------------------------------------------------------- the GPT's twin


class TorchGPTBlock(nn.Module):
    """One pre-norm block as nanoGPT writes it: ``nn.LayerNorm``, one ``nn.Linear`` for q, k and v, torch's
    ``scaled_dot_product_attention(is_causal=True)``, ``nn.Linear`` -> ``nn.GELU`` -> ``nn.Linear``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d, bias = config.d_model, config.bias
        self.heads, self.dropout = config.heads, config.dropout
        self.norm1 = nn.LayerNorm(d, bias=bias)
        self.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.out = nn.Linear(d, d, bias=bias)
        self.norm2 = nn.LayerNorm(d, bias=bias)
        self.fc1 = nn.Linear(d, 4 * d, bias=bias)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(4 * d, d, bias=bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, steps, d = x.shape
        q, k, v = (
            t.view(batch, steps, self.heads, -1).transpose(1, 2) for t in self.qkv(self.norm1(x)).split(d, dim=2)
        )
        p = self.dropout if self.training else 0.0
        a = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(batch, steps, d)))
        return x + self.drop(self.fc2(self.drop(self.gelu(self.fc1(self.norm2(x))))))

    def forward_cached(self, x: Tensor, cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``forward`` for the positions after the ``cache``'s (keys and values ``(B, H, T, d_k)``, or ``None``):
        the new positions attend to the cached ones and to themselves; returns the output and the longer cache."""
        batch, steps, d = x.shape
        q, k, v = (
            t.view(batch, steps, self.heads, -1).transpose(1, 2) for t in self.qkv(self.norm1(x)).split(d, dim=2)
        )
        if cache is not None:
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
        causal = cache is None and steps > 1  # one new position after a cache sees every key: no mask
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.out(a.transpose(1, 2).reshape(batch, steps, d))
        return x + self.fc2(self.gelu(self.fc1(self.norm2(x)))), (k, v)


class TorchGPT(nn.Module):
    """The torch.nn twin of :class:`~scratch_transformer.gpt.GPT`: the same sizes, positions and weight tying."""

    pe: Tensor

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = (
            nn.Embedding(config.block_size, config.d_model) if config.positions == "learned" else None
        )
        self.register_buffer("pe", sinusoidal_table(config.block_size, config.d_model), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TorchGPTBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model, bias=config.bias)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.token_embedding.weight

    def embed(self, ids: Tensor, start: int = 0) -> Tensor:
        """Token plus position embeddings of ``ids (B, T)`` at positions ``start .. start + T - 1``."""
        x = self.token_embedding(ids)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        if self.position_embedding is not None:
            return x + self.position_embedding(positions)
        return x + self.pe[positions].to(x.dtype)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.drop(self.embed(ids))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


@torch.inference_mode()  # as sample() runs ours: like for like
def torch_generate_cached(model: TorchGPT, ids: Tensor, new_tokens: int) -> Tensor:
    """Greedy decoding with a key/value cache, as a torch.nn user would write it: the yardstick for
    :func:`~scratch_transformer.gpt.generate`'s cache (within the block; ``ids (B, T)``)."""
    model.eval()
    caches: list[tuple[Tensor, Tensor] | None] = [None] * len(model.blocks)
    out, new, start = ids, ids, 0
    for _ in range(new_tokens):
        x = model.embed(new, start)
        for i, block in enumerate(model.blocks):
            x, caches[i] = cast(TorchGPTBlock, block).forward_cached(x, caches[i])
        start += new.shape[1]
        new = model.head(model.norm(x[:, -1:])).argmax(dim=-1)
        out = torch.cat((out, new), dim=1)
    return out


def torch_gpt_twin(model: GPT) -> TorchGPT:
    """The torch.nn twin of ``model`` with a copy of its weights (device, dtype)."""
    with torch.random.fork_rng(devices=[]):  # its own initial weights are overwritten: leave the generator alone
        twin = TorchGPT(model.config)
    weight = model.head.weight.data
    twin.to(device=weight.device, dtype=weight.dtype)
    ours = model.state_dict()  # tied: the head's weight is listed once, as the token embedding's
    ours.setdefault("head.weight", model.head.weight.data)
    with torch.no_grad():
        for name, value in twin.state_dict().items():
            value.copy_(torch.cat([ours[our_name] for our_name in gpt_torch_to_ours(name)]))
    return twin


GPT_NAMES = {
    "norm1.": "add_norm1.norm.",
    "out.": "self_attn.out_proj.",
    "norm2.": "add_norm2.norm.",
    "fc1.": "feed_forward.linear1.",
    "fc2.": "feed_forward.linear2.",
}


def gpt_torch_to_ours(torch_name: str) -> list[str]:
    """Our parameter name(s) for a :class:`TorchGPT` one; ``qkv`` is our q, k and v projections stacked."""
    match = re.match(r"blocks\.(\d+)\.(.*)", torch_name)
    if match is None:
        return [torch_name]
    layer, rest = match.groups()
    if rest.startswith("qkv."):
        return [f"blocks.{layer}.self_attn.{p}_proj.{rest[4:]}" for p in "qkv"]
    for theirs, ours in GPT_NAMES.items():
        if rest.startswith(theirs):
            return [f"blocks.{layer}.{ours}{rest[len(theirs) :]}"]
    raise KeyError(torch_name)
