"""The engine's view of a :class:`~scratch_transformer.Transformer`: one input ``x = (src_ids, tgt_in)``.

The engine calls ``model(x)`` and ``loss(output, y)`` on each batch ``(x, y)``; a Transformer takes
the source, the target and the source padding mask separately. :class:`Translator` is the
adapter, and :func:`build_translator` makes one from the sizes a config names (``MODEL_KEYS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from scratch_engine import Module
from scratch_transformer.data import Vocabulary
from scratch_transformer.masks import padding_mask
from scratch_transformer.model import Transformer

MODEL_KEYS = ("d_model", "heads", "layers", "d_ff", "dropout", "norm")  # the config entries that build the model


class Translator(Module):
    r"""``forward(x)`` with ``x = (src_ids, tgt_in)``: the logits ``(B, T_tgt, tgt_vocab)`` of the Transformer.

    That is ``model(src_ids, tgt_in, padding_mask(src_ids, pad_id))``: the source padding is hidden
    from the encoder's self-attention and from the decoder's cross-attention; the decoder's
    self-attention is causal (padding at the end of a target row is only ever seen by padded
    positions, which the loss ignores). ``backward(g)`` passes straight through to the
    Transformer's and returns ``None`` (integer inputs).
    """

    def __init__(self, model: Transformer, pad_id: int = Vocabulary.PAD) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, x: tuple[Tensor, Tensor]) -> Tensor:
        src, tgt_in = x
        return self.model(src, tgt_in, padding_mask(src, self.pad_id))

    def backward(self, grad_output: Tensor) -> None:
        return self.model.backward(grad_output)


def build_translator(config: Mapping[str, Any], src_vocab: int, tgt_vocab: int, max_len: int = 512) -> Translator:
    """A :class:`Translator` around a fresh Transformer with the ``MODEL_KEYS`` entries of ``config``.

    ``layers`` encoder layers and as many decoder layers; ``norm`` is ``"pre"`` or ``"post"``;
    the positional encodings cover ``max_len`` positions.
    """
    transformer = Transformer(
        src_vocab,
        tgt_vocab,
        config["d_model"],
        config["heads"],
        config["layers"],
        config["layers"],
        config["d_ff"],
        config["dropout"],
        max_len,
        norm_first=config["norm"] == "pre",
    )
    return Translator(transformer)
