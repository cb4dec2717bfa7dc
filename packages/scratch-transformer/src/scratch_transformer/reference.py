"""The torch.nn twin of the translation model, for ``scratch-transformer train --reference torch``.

:class:`TorchTranslator` is ``nn.Transformer`` (``batch_first``, same sizes, same pre/post norm,
final norms as ``nn.Transformer`` has them) between two ``nn.Embedding`` tables (scaled by
:math:`\\sqrt{d}`, initialised :math:`\\mathcal{N}(0, 1/d)` like ours) plus the *same* sinusoidal
positional encoding, and an ``nn.Linear`` head. :func:`torch_twin` builds it and our
:class:`~scratch_transformer.translate.Translator` from it with ``Transformer.from_torch``, so
both start from equal weights; the engine's :func:`~scratch_engine.reference.twin_for` wraps it
with ``torch.optim``, the same schedule (a ``LambdaLR`` reading ours), the same clipping and loss,
so that ``Engine(..., reference=twin)`` trains both on the very same batches.

This module is a *reference*, not the training path: it is one of the two places in the
package (with ``bench.py``) that use ``torch.nn``, ``torch.optim`` and autograd.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from scratch_transformer.data import Vocabulary
from scratch_transformer.embedding import sinusoidal_table
from scratch_transformer.model import Transformer


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


def torch_twin(
    config: Any, src_vocab: int, tgt_vocab: int, max_len: int, device: Any = None, dtype: torch.dtype | None = None
) -> tuple[Any, TorchTranslator]:
    """``(our Translator, the torch twin)`` of ``config`` (a ``TranslateConfig``), with equal weights in ``dtype``."""
    from scratch_transformer.translate import Translator

    reference = TorchTranslator(
        src_vocab,
        tgt_vocab,
        config.d_model,
        config.heads,
        config.layers,
        config.d_ff,
        config.dropout,
        config.norm == "pre",
        max_len,
    )
    reference.to(device=device, dtype=dtype)
    ours = Transformer.from_torch(
        reference.transformer, reference.src_embedding, reference.tgt_embedding, reference.head, max_len
    )
    return Translator(ours), reference
