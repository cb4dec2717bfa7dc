r"""The encoder-decoder Transformer of *Attention Is All You Need*, from token ids to logits and back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from scratch_engine import Dense, Module, missing_forward
from scratch_engine.checks import check_grad_output
from scratch_transformer.embedding import PositionalEncoding, TokenEmbedding
from scratch_transformer.feedforward import Activation
from scratch_transformer.layers import Decoder, DecoderCache, Encoder
from scratch_transformer.masks import causal_mask, check_mask

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn


class Transformer(Module):
    r"""Token ids of a source and a (shifted) target sequence in, next-token logits out.

    .. math::
        m = \operatorname{Encoder}\big(\operatorname{PE}(\sqrt{d}\,E_\text{src}[\text{src}])\big), \quad
        h = \operatorname{Decoder}\big(\operatorname{PE}(\sqrt{d}\,E_\text{tgt}[\text{tgt}]),\ m\big), \quad
        z = h W_\text{out}^\top + b_\text{out}

    Shapes: ``src_ids (B, T_src)``, ``tgt_ids (B, T_tgt)`` (integers), logits
    ``(B, T_tgt, tgt_vocab)``. Masks are boolean, ``True`` = may attend:

    - ``src_mask``: a key mask over source positions, broadcastable to ``(B, 1, 1, T_src)``
      (e.g. ``padding_mask(src_ids, pad_id)``); used by the encoder's self-attention and the
      decoder's cross-attention. ``None``: every source position is visible.
    - ``tgt_mask``: an extra mask for the decoder's self-attention, broadcastable to
      ``(B, H, T_tgt, T_tgt)`` (e.g. ``padding_mask(tgt_ids, pad_id)``). The causal mask is
      always applied on top of it (``causal_mask(T_tgt) & tgt_mask``).

    ``backward(grad_logits)`` runs the chain rule all the way down, through the head, the
    decoder (whose memory gradient feeds the encoder's backward), the positional encodings
    and both embeddings, and returns ``None`` (integer inputs).

    ``tie_embeddings=True`` makes the output projection's weight the *same* ``Parameter`` as the
    target embedding table (both ``(tgt_vocab, d_model)``, section 3.4 of the paper): the head
    and the embedding add their gradients into the one ``.grad``. The head keeps its own bias.
    ``final_norm``: see :mod:`scratch_transformer.layers` (``None``: a final norm after each
    stack only with ``norm_first``; ``from_torch`` mirrors ``nn.Transformer``, which has them).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 512,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        d_ff: int = 2048,
        dropout: float = 0.1,
        max_len: int = 5000,
        tie_embeddings: bool = False,
        *,
        activation: Activation = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.tie_embeddings = tie_embeddings
        self.src_embed = TokenEmbedding(src_vocab, d_model)
        self.src_pos = PositionalEncoding(d_model, max_len, dropout)
        self.tgt_embed = TokenEmbedding(tgt_vocab, d_model)
        self.tgt_pos = PositionalEncoding(d_model, max_len, dropout)
        stack: dict[str, Any] = dict(activation=activation, norm_first=norm_first, final_norm=final_norm, eps=eps)
        self.encoder = Encoder(num_encoder_layers, d_model, num_heads, d_ff, dropout, **stack)
        self.decoder = Decoder(num_decoder_layers, d_model, num_heads, d_ff, dropout, **stack)
        self.head = Dense(d_model, tgt_vocab, init="xavier")
        if tie_embeddings:
            self.head.weight = self.tgt_embed.embedding.weight
        self._logits_shape: tuple[int, ...] | None = None  # of the last forward: what backward must be given

    @classmethod
    def from_torch(
        cls,
        transformer: nn.Transformer,
        src_embedding: nn.Embedding,
        tgt_embedding: nn.Embedding,
        head: nn.Linear,
        max_len: int = 5000,
    ) -> Transformer:
        """Copy ``nn.Transformer`` (with its final norms) plus the embeddings and the output ``head``.

        The torch pipeline this matches is ``head(transformer(E_src(src) * sqrt(d) + PE,
        E_tgt(tgt) * sqrt(d) + PE, ...))``. Tied weights (``head.weight is tgt_embedding.weight``)
        stay tied.
        """
        from scratch_engine.tools.twin import from_torch  # torch.nn only on request

        d = transformer.d_model
        if (src_embedding.embedding_dim, tgt_embedding.embedding_dim, head.in_features) != (d, d, d):
            raise ValueError(
                f"Transformer.from_torch needs embeddings of dimension d_model={d} and a head from d_model, got "
                f"{src_embedding.embedding_dim}, {tgt_embedding.embedding_dim} and {head.in_features}"
            )
        if head.out_features != tgt_embedding.num_embeddings:
            raise ValueError(
                f"Transformer.from_torch needs head.out_features = tgt vocabulary {tgt_embedding.num_embeddings}, "
                f"got {head.out_features}"
            )
        encoder, decoder = Encoder.from_torch(transformer.encoder), Decoder.from_torch(transformer.decoder)
        first = transformer.encoder.layers[0]
        model = cls(  # one layer per stack as a placeholder: the stacks are replaced by torch's below
            src_embedding.num_embeddings,
            tgt_embedding.num_embeddings,
            d,
            transformer.nhead,
            1,
            1,
            first.linear1.out_features,
            first.dropout.p,
            max_len,
            tie_embeddings=head.weight is tgt_embedding.weight,
        )
        model.encoder, model.decoder = encoder, decoder
        model.src_embed = TokenEmbedding.from_torch(src_embedding)
        model.tgt_embed = TokenEmbedding.from_torch(tgt_embedding)
        model.head = from_torch(head)
        if model.tie_embeddings:
            model.head.weight = model.tgt_embed.embedding.weight
        model.to(dtype=head.weight.dtype)
        return model

    def _check(
        self,
        src_ids: Tensor | None = None,
        tgt_ids: Tensor | None = None,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> None:
        """All the model's own input checks (of those given), before any math: integer ids ``(B, T)`` with
        ``B, T >= 1``, one batch size, and boolean masks that broadcast as the class docs say."""
        for name, ids in (("src_ids", src_ids), ("tgt_ids", tgt_ids)):
            if ids is None:
                continue
            if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
                got = f"{tuple(ids.shape)} of dtype {ids.dtype}" if isinstance(ids, Tensor) else type(ids).__name__
                raise ValueError(f"Transformer expects {name} as integer token ids of shape (B, T), got {got}")
            if ids.shape[0] < 1 or ids.shape[1] < 1:  # an empty batch or sentence would fail deep in a reshape
                raise ValueError(f"{name} must have B >= 1 and T >= 1, got shape {tuple(ids.shape)}")
        if src_ids is not None and tgt_ids is not None and src_ids.shape[0] != tgt_ids.shape[0]:
            raise ValueError(
                f"Transformer expects src_ids and tgt_ids with the same batch size, got {tuple(src_ids.shape)} "
                f"and {tuple(tgt_ids.shape)}"
            )
        if src_mask is not None and src_ids is not None:
            check_mask(src_mask, (src_ids.shape[0], 1, 1, src_ids.shape[1]), "Transformer src_mask")
        if tgt_mask is not None and tgt_ids is not None:
            batch, steps = tgt_ids.shape
            check_mask(tgt_mask, (batch, self.num_heads, steps, steps), "Transformer tgt_mask")

    def encode(self, src_ids: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """The memory ``(B, T_src, d_model)``."""
        self._check(src_ids, src_mask=src_mask)
        return self.encoder(self.src_pos(self.src_embed(src_ids)), src_mask)

    def new_cache(self) -> DecoderCache:
        """An empty :class:`~scratch_transformer.layers.DecoderCache` for ``decode(..., cache=...)``."""
        return self.decoder.new_cache()

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Logits ``(B, T_tgt, tgt_vocab)`` given the memory; causal self-attention (``& tgt_mask``).

        Incremental decoding (inference only, eval mode, no backward): with ``cache`` (from
        :meth:`new_cache`) ``tgt_ids (B, T_new)`` are only the positions that follow the
        ``len(cache)`` already decoded, usually one. They attend causally to the cached keys and
        values and their own, which are appended to the cache; the first call also caches each
        layer's cross-attention keys and values of ``memory`` (later calls reuse them: pass the
        same memory). Returns the logits of the new positions, ``(B, T_new, tgt_vocab)``, equal to
        the last ``T_new`` positions of ``decode`` over the whole prefix.
        """
        if cache is not None:
            return self._decode_incremental(tgt_ids, memory, src_mask, tgt_mask, cache)
        self._check(tgt_ids=tgt_ids, tgt_mask=tgt_mask)
        self_mask = causal_mask(tgt_ids.shape[1], device=tgt_ids.device)
        if tgt_mask is not None:
            self_mask = self_mask & tgt_mask
        y = self.decoder(self.tgt_pos(self.tgt_embed(tgt_ids)), memory, self_mask, src_mask)  # h = Decoder(..., m)
        return self.head(y)  # z = h W_out^T + b_out

    def _decode_incremental(
        self, tgt_ids: Tensor, memory: Tensor, src_mask: Tensor | None, tgt_mask: Tensor | None, cache: DecoderCache
    ) -> Tensor:
        self._check(tgt_ids=tgt_ids)
        if self.training:
            raise RuntimeError("Transformer.decode with a cache is for inference: call model.eval() first")
        if tgt_mask is not None:
            raise ValueError("Transformer.decode with a cache takes no tgt_mask (a decoded prefix has no padding)")
        past, steps = len(cache), tgt_ids.shape[1]
        # new query i sits at position past + i: it may see keys 0 .. past + i (all of them when steps == 1)
        self_mask = None if steps == 1 else causal_mask(past + steps, device=tgt_ids.device)[past:]
        y = self.decoder(self.tgt_pos(self.tgt_embed(tgt_ids), start=past), memory, self_mask, src_mask, cache=cache)
        return self.head(y)

    def forward(
        self, src_ids: Tensor, tgt_ids: Tensor, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None
    ) -> Tensor:
        self._check(src_ids, tgt_ids, src_mask, tgt_mask)
        memory = self.encode(src_ids, src_mask)  # m = Encoder(PE(sqrt(d) E_src[src]))
        logits = self.decode(tgt_ids, memory, src_mask, tgt_mask)  # z = Decoder(PE(sqrt(d) E_tgt[tgt]), m) W_out^T + b
        self._logits_shape = tuple(logits.shape)
        return logits

    @torch.no_grad()
    def cross_attention_weights(self, src_ids: Tensor, tgt_ids: Tensor, src_mask: Tensor | None = None) -> list[Tensor]:
        """Each decoder layer's cross-attention probabilities ``(B, H, T_tgt, T_src)``, in eval mode.

        Runs one forward over the whole target prefix ``tgt_ids`` (``<bos>`` + the translation
        for a plot of which source characters each output character looked at); the train/eval
        mode is restored afterwards. Row ``i`` is the distribution that predicted token ``i + 1``.
        """
        was_training = self.training
        self.eval()
        try:
            self.forward(src_ids, tgt_ids, src_mask)
            return [layer.cross_attn.attention.weights for layer in self.decoder.layers]
        finally:
            self.train(was_training)

    def backward(self, grad_output: Tensor) -> None:
        if self._logits_shape is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, self._logits_shape)
        if grad_output.dtype != self.head.weight.data.dtype:  # else a bare matmul dtype error deep inside
            raise ValueError(
                f"Transformer.backward expects grad_output of the logits' dtype {self.head.weight.data.dtype}, "
                f"got {grad_output.dtype}"
            )
        g = cast(Tensor, self.head.backward(grad_output))  # z = h W_out^T + b_out (input_grad=True: a Tensor)
        g, grad_memory = self.decoder.backward(g)  # h = Decoder(PE(sqrt(d) E_tgt[tgt]), m)
        self.tgt_embed.backward(self.tgt_pos.backward(g))  # PE(sqrt(d) E_tgt[tgt])
        grad_src = self.encoder.backward(grad_memory)  # m = Encoder(PE(sqrt(d) E_src[src]))
        self.src_embed.backward(self.src_pos.backward(grad_src))  # PE(sqrt(d) E_src[src])
        return None
