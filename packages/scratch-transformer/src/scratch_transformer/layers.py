r"""Add & Norm, the encoder and decoder layers, and their stacks.

Every sublayer (self-attention, cross-attention, feed-forward) sits inside a residual
connection with layer normalisation, :class:`AddNorm`. Post-norm (the paper, torch's
default) normalises after the addition; pre-norm (``norm_first=True``) normalises the
sublayer's input and leaves the residual path untouched.

**Final norms.** The paper's post-norm stacks end with the last layer's own norm and have
no extra one; a pre-norm stack needs a final ``LayerNorm`` (its residual path is never
normalised). ``torch.nn.Transformer`` always adds one after the encoder and the decoder
stack. ``final_norm=None`` follows the paper and the pre-norm practice (a final norm exactly
when ``norm_first``); ``from_torch`` copies torch's norms, so a model built from torch has them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from torch import Tensor

from scratch_engine import Dropout, Module, missing_forward
from scratch_engine.checks import check_grad_output
from scratch_transformer.attention import KVCache, MultiHeadAttention
from scratch_transformer.feedforward import Activation, FeedForward
from scratch_transformer.layernorm import LayerNorm

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn


class AddNorm(Module):
    r"""Residual connection with dropout and layer normalisation around one sublayer.

    The layer asks :meth:`sublayer_input` what the sublayer reads, runs the sublayer to get
    :math:`s`, then calls ``forward(x, s)``:

    .. math::
        \text{post-norm:}\ y = \operatorname{LN}(x + \operatorname{Dropout}(s)),\ s = \operatorname{Sub}(x); \qquad
        \text{pre-norm:}\ y = x + \operatorname{Dropout}(s),\ s = \operatorname{Sub}(\operatorname{LN}(x))

    ``backward(g)`` returns ``(grad_x, grad_s)`` for the residual path and the sublayer's
    output: post-norm :math:`(\hat g, \operatorname{Dropout}'(\hat g))` with
    :math:`\hat g = \operatorname{LN}'(g)`; pre-norm :math:`(g, \operatorname{Dropout}'(g))`.
    :meth:`sublayer_input_backward` takes the gradient of the sublayer's input back through
    :math:`\operatorname{LN}` (pre-norm) or unchanged (post-norm); the layer adds it to ``grad_x``.
    Shapes: ``x``, ``s``, ``y`` all ``(B, T, d_model)``.
    """

    def __init__(
        self, d_model: int, dropout: float = 0.0, norm_first: bool = False, eps: float = 1e-5, bias: bool = True
    ) -> None:
        super().__init__()
        self.norm = LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout = Dropout(dropout)
        self.norm_first = norm_first
        self._shape: tuple[int, ...] | None = None  # the last output's shape, for backward

    def sublayer_input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.norm_first else x

    def sublayer_input_backward(self, grad: Tensor) -> Tensor:
        return self.norm.backward(grad) if self.norm_first else grad

    def forward(self, x: Tensor, sublayer_output: Tensor) -> Tensor:
        y = x + self.dropout(sublayer_output)  # x + Dropout(s)
        self._shape = tuple(y.shape)
        return y if self.norm_first else self.norm(y)  # post-norm: LN(x + Dropout(s))

    def backward(self, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        _check_backward(self, self._shape, grad_output)
        g = grad_output if self.norm_first else self.norm.backward(grad_output)  # post-norm: LN(...)
        return g, self.dropout.backward(g)  # x + Dropout(s): the sum passes g to both terms

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"


def _layer_config(layer: Any) -> dict[str, Any]:
    """The constructor arguments of our layer that mirror ``layer``, a torch encoder or decoder layer.

    ``layer`` is ``Any``: it comes out of an ``nn.ModuleList``, which types its items as ``nn.Module``.
    """
    act = layer.activation  # a function (F.relu, F.gelu) or a module (nn.ReLU(), nn.GELU())
    name = str(getattr(act, "__name__", type(act).__name__)).lower()
    if name not in ("relu", "gelu") or getattr(act, "approximate", "none") != "none":
        raise ValueError(f"from_torch supports the activations relu and gelu (exact), got {act!r}")
    return {
        "d_model": layer.self_attn.embed_dim,
        "num_heads": layer.self_attn.num_heads,
        "d_ff": layer.linear1.out_features,
        "dropout": layer.dropout.p,
        "activation": name,
        "norm_first": layer.norm_first,
        "eps": layer.norm1.eps,
    }


def _check_backward(layer: Module, shape: tuple[int, ...] | None, grad_output: Tensor) -> None:
    """The layer's forward ran, and ``grad_output`` has its output's ``shape`` (a residual sum would broadcast)."""
    if shape is None:
        raise missing_forward(layer)
    check_grad_output(layer, grad_output, shape)


def _copy_add_norm(add_norm: AddNorm, norm: nn.LayerNorm, dropout: nn.Dropout) -> None:
    add_norm.norm = LayerNorm.from_torch(norm)
    add_norm.dropout = Dropout(dropout.p)


class EncoderLayer(Module):
    r"""Self-attention then feed-forward, each inside :class:`AddNorm` (``x (B, T, d_model)`` in and out).

    .. math::
        x' = \operatorname{AddNorm}_1\big(x, \operatorname{MHA}(h_1, h_1, h_1)\big), \quad
        y = \operatorname{AddNorm}_2\big(x', \operatorname{FFN}(h_2)\big), \quad
        h_1 = \operatorname{in}_1(x),\ h_2 = \operatorname{in}_2(x')

    with :math:`\operatorname{in}_k` the ``sublayer_input`` of each AddNorm. ``mask``: boolean,
    ``True`` = may attend, broadcastable to ``(B, H, T, T)`` (e.g. ``padding_mask(src_ids,
    pad_id)``, or ``causal_mask(T)``: then it is a GPT block). Backward: the residual gradient plus
    the sublayer's, taken back through its ``sublayer_input``; self-attention's three input
    gradients add up (:math:`h_1` is query, key and value). ``bias=False`` drops every bias (the
    projections', the feed-forward's, the norms' :math:`\beta`), as GPT-2 style models may.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: Activation = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, bias=bias)
        self.add_norm1 = AddNorm(d_model, dropout, norm_first, eps, bias)
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.add_norm2 = AddNorm(d_model, dropout, norm_first, eps, bias)
        self._shape: tuple[int, ...] | None = None  # the last output's shape, for backward

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> EncoderLayer:
        ours = cls(**_layer_config(layer))
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        ours.feed_forward = FeedForward.from_torch(
            layer.linear1, layer.linear2, ours.feed_forward.activation_name, layer.dropout.p
        )
        _copy_add_norm(ours.add_norm1, layer.norm1, layer.dropout1)
        _copy_add_norm(ours.add_norm2, layer.norm2, layer.dropout2)
        return ours

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h1 = self.add_norm1.sublayer_input(x)  # h_1 = in_1(x)
        x1 = self.add_norm1(x, self.self_attn.self_attend(h1, mask))  # x' = AddNorm_1(x, MHA(h_1, h_1, h_1))
        h2 = self.add_norm2.sublayer_input(x1)  # h_2 = in_2(x')
        self._shape = tuple(x1.shape)
        return self.add_norm2(x1, self.feed_forward(h2))  # y = AddNorm_2(x', FFN(h_2))

    def forward_incremental(self, x: Tensor, cache: KVCache, mask: Tensor | None = None) -> Tensor:
        """``forward`` for the new positions ``x (B, T_new, d_model)`` only, in eval mode (no backward).

        Their keys and values are appended to ``cache`` and their queries attend over every cached
        position (``mask`` broadcastable to ``(B, H, T_new, T_past + T_new)``; ``None`` for one new
        position, which may see every key): the outputs equal ``forward``'s last ``T_new`` positions.
        """
        h = self.add_norm1.sublayer_input(x)
        x = self.add_norm1(x, self.self_attn.self_attend_cached(h, cache, mask))
        return self.add_norm2(x, self.feed_forward(self.add_norm2.sublayer_input(x)))

    def backward(self, grad_output: Tensor) -> Tensor:
        _check_backward(self, self._shape, grad_output)
        g1, g_ff = self.add_norm2.backward(grad_output)  # y = AddNorm_2(x', FFN(h_2))
        g1 = g1 + self.add_norm2.sublayer_input_backward(self.feed_forward.backward(g_ff))  # FFN(h_2), h_2 = in_2(x')
        g, g_attn = self.add_norm1.backward(g1)  # x' = AddNorm_1(x, MHA(...))
        g_h1 = self.self_attn.self_attend_backward(g_attn)  # MHA(h_1, h_1, h_1): the sum of its three input gradients
        return g + self.add_norm1.sublayer_input_backward(g_h1)  # h_1 = in_1(x): query, key and value


class DecoderLayer(Module):
    r"""Masked self-attention, cross-attention over the encoder's ``memory``, feed-forward; each in :class:`AddNorm`.

    .. math::
        x_1 = \operatorname{AddNorm}_1\big(x, \operatorname{MHA}_\text{self}(h_1, h_1, h_1)\big), \quad
        x_2 = \operatorname{AddNorm}_2\big(x_1, \operatorname{MHA}_\text{cross}(h_2, m, m)\big), \quad
        y = \operatorname{AddNorm}_3\big(x_2, \operatorname{FFN}(h_3)\big)

    with :math:`h_k = \operatorname{in}_k(x_{k-1})` and memory :math:`m` (not normalised here;
    the encoder's last norm does that). Shapes: ``x (B, T_tgt, d_model)``, ``memory
    (B, T_src, d_model)``; ``self_mask`` broadcastable to ``(B, H, T_tgt, T_tgt)`` (usually
    ``causal_mask``), ``cross_mask`` to ``(B, H, T_tgt, T_src)`` (the source padding mask).
    ``backward(g)`` returns ``(grad_x, grad_memory)``, with
    :math:`\partial m = \partial K + \partial V` of the cross-attention.

    Incremental decoding (inference only): ``forward(x_new, memory, ..., cache=(self_cache,
    cross_cache))`` takes only the new positions ``x_new (B, T_new, d_model)``; see
    :meth:`forward_incremental`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: Activation = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.add_norm1 = AddNorm(d_model, dropout, norm_first, eps)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.add_norm2 = AddNorm(d_model, dropout, norm_first, eps)
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.add_norm3 = AddNorm(d_model, dropout, norm_first, eps)
        self._shape: tuple[int, ...] | None = None  # the last (non-incremental) output's shape, for backward

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> DecoderLayer:
        ours = cls(**_layer_config(layer))
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        ours.cross_attn = MultiHeadAttention.from_torch(layer.multihead_attn)
        ours.feed_forward = FeedForward.from_torch(
            layer.linear1, layer.linear2, ours.feed_forward.activation_name, layer.dropout.p
        )
        _copy_add_norm(ours.add_norm1, layer.norm1, layer.dropout1)
        _copy_add_norm(ours.add_norm2, layer.norm2, layer.dropout2)
        _copy_add_norm(ours.add_norm3, layer.norm3, layer.dropout3)
        return ours

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        cross_mask: Tensor | None = None,
        cache: tuple[KVCache, KVCache] | None = None,
    ) -> Tensor:
        if cache is not None:
            return self.forward_incremental(x, memory, self_mask, cross_mask, *cache)
        h1 = self.add_norm1.sublayer_input(x)  # h_1 = in_1(x)
        x1 = self.add_norm1(x, self.self_attn.self_attend(h1, self_mask))  # x_1 = AddNorm_1(x, MHA_self(h_1, h_1, h_1))
        h2 = self.add_norm2.sublayer_input(x1)  # h_2 = in_2(x_1)
        cross = self.cross_attn(h2, memory, memory, cross_mask)  # MHA_cross(h_2, m, m)
        x2 = self.add_norm2(x1, cross)  # x_2 = AddNorm_2(x_1, MHA_cross(h_2, m, m))
        h3 = self.add_norm3.sublayer_input(x2)  # h_3 = in_3(x_2)
        self._shape = tuple(x2.shape)
        return self.add_norm3(x2, self.feed_forward(h3))  # y = AddNorm_3(x_2, FFN(h_3))

    def forward_incremental(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None,
        cross_mask: Tensor | None,
        self_cache: KVCache,
        cross_cache: KVCache,
    ) -> Tensor:
        r"""``forward`` for the new positions ``x (B, T_new, d_model)`` only, in eval mode (no backward).

        The new positions' self-attention keys and values are appended to ``self_cache`` and the
        queries attend over all of them (``self_mask`` broadcastable to ``(B, H, T_new,
        T_past + T_new)``; ``None`` for a single new position, which may see every key). The
        memory's cross-attention keys and values are projected on the first call, kept in
        ``cross_cache`` and reused after, so later calls must pass the same memory. The sublayers
        are the same as in ``forward``, so the outputs equal ``forward``'s last ``T_new`` positions.
        """
        h = self.add_norm1.sublayer_input(x)
        x = self.add_norm1(x, self.self_attn.self_attend_cached(h, self_cache, self_mask))
        h = self.add_norm2.sublayer_input(x)
        if len(cross_cache) == 0:
            cross_cache.append(*self.cross_attn.project_kv(memory, memory))
        x = self.add_norm2(x, self.cross_attn.attend(h, *cross_cache.tensors(), cross_mask))
        h = self.add_norm3.sublayer_input(x)
        return self.add_norm3(x, self.feed_forward(h))

    def backward(self, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        _check_backward(self, self._shape, grad_output)
        g2, g_ff = self.add_norm3.backward(grad_output)  # y = AddNorm_3(x_2, FFN(h_3))
        g2 = g2 + self.add_norm3.sublayer_input_backward(self.feed_forward.backward(g_ff))  # FFN(h_3), h_3 = in_3(x_2)
        g1, g_cross = self.add_norm2.backward(g2)  # x_2 = AddNorm_2(x_1, MHA_cross(...))
        g_q, g_k, g_v = self.cross_attn.backward(g_cross)  # MHA_cross(h_2, m, m)
        g1 = g1 + self.add_norm2.sublayer_input_backward(g_q)  # h_2 = in_2(x_1): the query; m gets the key and value's
        g, g_self = self.add_norm1.backward(g1)  # x_1 = AddNorm_1(x, MHA_self(...))
        g_h1 = self.self_attn.self_attend_backward(g_self)  # MHA_self(h_1, h_1, h_1): its three input gradients added
        g = g + self.add_norm1.sublayer_input_backward(g_h1)  # h_1 = in_1(x)
        return g, g_k + g_v


def _final_norm(d_model: int, norm_first: bool, final_norm: bool | None, eps: float) -> LayerNorm | None:
    return LayerNorm(d_model, eps=eps) if (norm_first if final_norm is None else final_norm) else None


def _final_norm_from_torch(norm: nn.Module | None) -> LayerNorm | None:
    """A copy of a torch stack's final norm, if it has one (``nn.Transformer`` gives its stacks an ``nn.LayerNorm``)."""
    return None if norm is None else LayerNorm.from_torch(cast("nn.LayerNorm", norm))


class DecoderCache:
    """What incremental decoding keeps between steps: two :class:`KVCache` per decoder layer.

    ``self_attn[l]`` grows by the new positions at every call (keys and values of every target
    position decoded so far); ``cross_attn[l]`` holds the memory's keys and values, projected
    once on the first call. ``len(cache)`` is the number of positions decoded so far.
    """

    def __init__(self, num_layers: int) -> None:
        if num_layers <= 0:
            raise ValueError(f"DecoderCache needs num_layers >= 1, got {num_layers}")
        self.self_attn = [KVCache() for _ in range(num_layers)]
        self.cross_attn = [KVCache() for _ in range(num_layers)]

    def __len__(self) -> int:
        return len(self.self_attn[0])

    def layers(self, num_layers: int) -> list[tuple[KVCache, KVCache]]:
        """``(self_cache, cross_cache)`` of each layer, checking that there are ``num_layers``."""
        if len(self.self_attn) != num_layers:
            raise ValueError(f"DecoderCache has {len(self.self_attn)} layers, the decoder has {num_layers}")
        return list(zip(self.self_attn, self.cross_attn, strict=True))

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` of the self-attention caches (beam search: new beam <- old beam).

        The cross-attention keys and values are left alone: beam search only moves a row among
        the beams of the same sentence, whose memory rows are identical.
        """
        for cache in self.self_attn:
            cache.reorder(index)


class Encoder(Module):
    r"""``num_layers`` :class:`EncoderLayer` in turn, then the final ``LayerNorm`` if any (see module docs).

    ``forward(x, mask=None)``: ``x (B, T_src, d_model)`` -> memory of the same shape; every
    layer sees the same mask. ``backward(g)`` runs the norm and the layers in reverse.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        *,
        activation: Activation = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ValueError(f"Encoder needs num_layers >= 1, got {num_layers}")
        self.layers = [
            EncoderLayer(d_model, num_heads, d_ff, dropout, activation, norm_first, eps) for _ in range(num_layers)
        ]
        self.norm = _final_norm(d_model, norm_first, final_norm, eps)

    @classmethod
    def from_torch(cls, encoder: nn.TransformerEncoder) -> Encoder:
        ours = cls(len(encoder.layers), **_layer_config(encoder.layers[0]), final_norm=encoder.norm is not None)
        ours.layers = [EncoderLayer.from_torch(layer) for layer in encoder.layers]
        ours.norm = _final_norm_from_torch(encoder.norm)
        return ours

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.norm is None else self.norm(x)

    def backward(self, grad_output: Tensor) -> Tensor:
        g = grad_output if self.norm is None else self.norm.backward(grad_output)  # the final norm
        for layer in reversed(self.layers):  # the layers, last first
            g = layer.backward(g)
        return g


class Decoder(Module):
    r"""``num_layers`` :class:`DecoderLayer` over the same ``memory``, then the final ``LayerNorm`` if any.

    ``forward(x, memory, self_mask=None, cross_mask=None)`` -> ``(B, T_tgt, d_model)``; with a
    ``cache`` (:meth:`new_cache`, inference only) ``x`` holds only the new positions (see
    :meth:`DecoderLayer.forward_incremental`).
    ``backward(g)`` returns ``(grad_x, grad_memory)``; every layer reads the memory, so
    :math:`\partial L/\partial m = \sum_\ell \partial m_\ell` accumulates over the layers.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        *,
        activation: Activation = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ValueError(f"Decoder needs num_layers >= 1, got {num_layers}")
        self.layers = [
            DecoderLayer(d_model, num_heads, d_ff, dropout, activation, norm_first, eps) for _ in range(num_layers)
        ]
        self.norm = _final_norm(d_model, norm_first, final_norm, eps)

    @classmethod
    def from_torch(cls, decoder: nn.TransformerDecoder) -> Decoder:
        ours = cls(len(decoder.layers), **_layer_config(decoder.layers[0]), final_norm=decoder.norm is not None)
        ours.layers = [DecoderLayer.from_torch(layer) for layer in decoder.layers]
        ours.norm = _final_norm_from_torch(decoder.norm)
        return ours

    def new_cache(self) -> DecoderCache:
        """An empty :class:`DecoderCache` for incremental decoding with this decoder."""
        return DecoderCache(len(self.layers))

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        cross_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        if cache is None:
            for layer in self.layers:
                x = layer(x, memory, self_mask, cross_mask)
        else:
            for layer, layer_cache in zip(self.layers, cache.layers(len(self.layers)), strict=True):
                x = layer(x, memory, self_mask, cross_mask, cache=layer_cache)
        return x if self.norm is None else self.norm(x)

    def backward(self, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        g = grad_output if self.norm is None else self.norm.backward(grad_output)  # the final norm
        g, grad_memory = self.layers[-1].backward(g)  # the layers, last first
        for layer in reversed(self.layers[:-1]):
            g, grad_memory_layer = layer.backward(g)
            grad_memory = grad_memory + grad_memory_layer  # every layer reads the same memory: their gradients add up
        return g, grad_memory
