r"""Scaled dot-product attention and multi-head attention, forward and backward side by side.

Masks are boolean, ``True`` = *may attend* (see :mod:`scratch_transformer.masks`).

The attention *core* (:class:`ScaledDotProductAttention`) only sees per-head queries, keys and
values; the projections live in :class:`MultiHeadAttention` as separate ``Dense`` layers
(``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``). A key/value cache for decoding can then
project only the new positions and concatenate them with the cached heads before the core.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from scratch_engine import Dense, Dropout, Module, Parameter, caching, missing_forward
from scratch_engine.checks import check_dtype, check_grad_output
from scratch_engine.module import scalar
from scratch_transformer.masks import check_mask

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn

_NEG_INF = float("-inf")
_LOG2_E = math.log2(math.e)


def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Softmax over the last dimension, restricted to the keys where ``mask`` is ``True``.

    Stable: :math:`P_{ij} = e^{S_{ij} - m_i} / \sum_{j'} e^{S_{ij'} - m_i}` with
    :math:`m_i = \max_j S_{ij}` over the allowed keys; masked keys get :math:`P_{ij} = 0`.
    A row with no allowed key is all zeros (instead of 0/0 = NaN). ``scores`` is overwritten (it is the
    fresh product of :func:`attention_weights`): each in-place step below is one ``(..., T_q, T_k)`` tensor
    fewer to allocate and fill.
    """
    if mask is not None:
        # speed trick, the mask as an addition: the plain form is scores.masked_fill_(~mask, -inf); adding the
        # mask as a small 0 / -inf tensor gives the same scores and is ~5x faster than a broadcast boolean fill
        scores = scores.add_(
            torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(~mask, _NEG_INF)
        )
    row_max = scores.detach().amax(dim=-1, keepdim=True)  # a constant: softmax does not depend on the shift
    if mask is not None:  # only a mask can leave a row without keys
        row_max = row_max.masked_fill(row_max == _NEG_INF, 0.0)  # fully masked row: every exp below is 0
    # speed trick, exp through exp2: the plain form is (S - m).exp_(); 2^((S - m) log2 e) is the same number and
    # torch's exp2 is 2-3x faster than its exp on the CPU (flash attention kernels do the same)
    e = scores.sub_(row_max).mul_(scalar(_LOG2_E, scores)).exp2_()  # e^{S - m}
    total = e.sum(dim=-1, keepdim=True)
    return e / (total if mask is None else total.masked_fill(total == 0, 1.0))  # fully masked row: 0 / 1 = 0


def softmax_backward(probs: Tensor, grad_probs: Tensor) -> Tensor:
    r"""Gradient through a row softmax: :math:`\partial S = P \odot (\partial P - \sum_j \partial P_j P_j)`.

    Masked keys (:math:`P = 0`) and fully masked rows get zero gradient.
    """
    weighted = grad_probs * probs  # P dP, then P dP - P sum_j(P_j dP_j): the product distributed, one pass fewer
    return weighted.addcmul_(probs, weighted.sum(dim=-1, keepdim=True), value=-1.0)


def _check_inputs(who: str, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> None:
    """All the checks of the attention core's inputs, before any math.

    Floating ``(..., T, d)`` tensors whose shapes fit, one dtype, and a boolean mask that
    broadcasts to the scores ``(..., T_q, T_k)``.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() < 2:
            got = f"shape {tuple(t.shape)}, dtype {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{who} expects a floating {name} of shape (..., T, d), got {got}")
    if query.shape[:-2] != key.shape[:-2] or key.shape[:-1] != value.shape[:-1] or query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"{who} expects query (..., T_q, d_k), key (..., T_k, d_k) and value (..., T_k, d_v) with the same "
            f"leading dimensions, got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    if not query.dtype == key.dtype == value.dtype:  # the matrix products below would fail without naming them
        raise ValueError(
            f"{who} expects query, key and value of one dtype, got {query.dtype}, {key.dtype} and {value.dtype}"
        )
    if mask is not None:
        check_mask(mask, (*query.shape[:-1], key.shape[-2]), who)


def attention_weights(query: Tensor, key: Tensor, mask: Tensor | None = None) -> Tensor:
    r""":math:`P = \operatorname{softmax}(Q K^\top / \sqrt{d_k})` over the allowed keys, ``(..., T_q, T_k)``.

    The scale multiplies :math:`Q` (``(..., T_q, d_k)``) rather than the scores (``(..., T_q, T_k)``): the same
    :math:`S`, a smaller tensor to multiply.
    """
    return masked_softmax((query * scalar(1.0 / math.sqrt(query.shape[-1]), query)) @ key.transpose(-2, -1), mask)


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
    r""":math:`\operatorname{softmax}(Q K^\top / \sqrt{d_k}) V` (forward only, no dropout).

    The stateless form for inference; :class:`ScaledDotProductAttention` is the same with
    attention dropout and a backward.
    """
    _check_inputs("scaled_dot_product_attention", query, key, value, mask)
    return attention_weights(query, key, mask) @ value


class ScaledDotProductAttention(Module):
    r"""The attention core: :math:`O = \operatorname{Dropout}(\operatorname{softmax}(QK^\top/\sqrt{d_k}))\,V`.

    Shapes: ``query (..., T_q, d_k)``, ``key (..., T_k, d_k)``, ``value (..., T_k, d_v)`` with
    the same leading dimensions (``(B, H)`` in multi-head attention), boolean ``mask``
    broadcastable to ``(..., T_q, T_k)`` (``True`` = may attend), output ``(..., T_q, d_v)``.
    With :math:`S = QK^\top/\sqrt{d_k}` (:math:`S_{ij} = -\infty` where the mask is ``False``),
    :math:`P = \operatorname{softmax}_j(S)` (a row with no allowed key is zeros) and
    :math:`\tilde P = \operatorname{Dropout}(P)` (engine ``Dropout``, applied to the weights):

    .. math::
        \frac{\partial L}{\partial V} = \tilde P^\top G, \quad
        \frac{\partial L}{\partial \tilde P} = G V^\top, \quad
        \partial S = P \odot \Big(\partial P - \textstyle\sum_j \partial P_j P_j\Big), \quad
        \frac{\partial L}{\partial Q} = \frac{\partial S\, K}{\sqrt{d_k}}, \quad
        \frac{\partial L}{\partial K} = \frac{\partial S^\top Q}{\sqrt{d_k}}

    where :math:`G = \partial L/\partial O` and :math:`\partial P` is the dropout's backward
    of :math:`\partial L/\partial \tilde P`. ``backward(grad_output)`` returns
    ``(grad_query, grad_key, grad_value)``.
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = Dropout(dropout)
        self._cache: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # q, k, v, P

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_inputs(type(self).__name__, query, key, value, mask)
        probs = attention_weights(query, key, mask)  # P = softmax(S), S = Q K^T / sqrt(d_k)
        self._cache = (query, key, value, probs) if caching() else None
        return self.dropout(probs) @ value  # O = Dropout(P) V

    def backward(self, grad_output: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self._cache is None:
            raise missing_forward(self)
        query, key, value, probs = self._cache
        check_grad_output(self, grad_output, (*query.shape[:-1], value.shape[-1]))
        # Memory trick: Dropout(P) is rebuilt here by the dropout's backward (it multiplies by the very mask and
        # scale its forward drew) instead of being cached beside P, a second (..., T_q, T_k) tensor.
        dropped = self.dropout.backward(probs)
        grad_value = dropped.transpose(-2, -1) @ grad_output  # O = Dropout(P) V, w.r.t. V
        grad_probs = self.dropout.backward(grad_output @ value.transpose(-2, -1))  # ... w.r.t. P, through the dropout
        grad_scores = softmax_backward(probs, grad_probs)  # P = softmax(S)
        scale = scalar(1.0 / math.sqrt(query.shape[-1]), query)  # S = (Q / sqrt(d_k)) K^T: to the d_k-wide side
        grad_query = (grad_scores @ key).mul_(scale)  # ... w.r.t. Q
        grad_key = grad_scores.transpose(-2, -1) @ (query * scale)  # ... w.r.t. K
        return grad_query, grad_key, grad_value

    @property
    def weights(self) -> Tensor:
        """The attention probabilities :math:`P` ``(..., T_q, T_k)`` of the last forward (before dropout)."""
        if self._cache is None:
            raise RuntimeError(
                "ScaledDotProductAttention.weights read before any forward (or after one under no_cache())"
            )
        return self._cache[3]

    def extra_repr(self) -> str:
        return f"dropout={self.dropout.p}"


class KVCache:
    r"""The keys and values one attention layer has seen, projected and split into heads: ``(B, H, T, d_k)``.

    Incremental decoding feeds only the new positions: their keys and values
    (:meth:`MultiHeadAttention.project_kv`) are appended along the time axis, so step :math:`t`
    projects one position instead of :math:`t` (the attention itself still reads all :math:`t`
    keys). A cross-attention cache is filled once, from the encoder's memory, and only read after.

    Appending copies the new positions into a buffer with room to spare, which doubles its length when full (as a
    Python list grows): each position is copied once, or a few times over all regrowths, where ``torch.cat`` of
    the cache and the new position would copy all :math:`t` cached ones at every step, :math:`O(T^2)` in all.
    ``key`` and ``value`` are the filled part, views of the buffer.
    """

    def __init__(self) -> None:
        self._key: Tensor | None = None  # (B, H, capacity, d_k): the first `_length` positions are filled
        self._value: Tensor | None = None
        self._length = 0
        self.projection: tuple[Tensor, Tensor | None] | None = None  # see MultiHeadAttention.self_attend_cached

    def __len__(self) -> int:
        """How many positions are cached."""
        return self._length

    @property
    def key(self) -> Tensor | None:
        return None if self._key is None else self._key[:, :, : self._length]

    @property
    def value(self) -> Tensor | None:
        return None if self._value is None else self._value[:, :, : self._length]

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new positions' ``(B, H, T_new, d_k)`` keys and values; return all of them."""
        if self._key is None or self._value is None:  # the first positions are kept as they are, no copy
            self._key, self._value, self._length = key, value, key.shape[2]
            return key, value
        if key.shape[:2] != self._key.shape[:2] or key.shape[3] != self._key.shape[3]:
            raise ValueError(
                f"KVCache holds keys of shape {tuple(self.tensors()[0].shape)} (B, H, T, d_k); cannot append keys of "
                f"shape {tuple(key.shape)}"
            )
        start, stop = self._length, self._length + key.shape[2]
        if stop > self._key.shape[2]:  # full: move into a buffer of twice the length needed now
            self._key, self._value = self._grown(self._key, 2 * stop), self._grown(self._value, 2 * stop)
        self._key[:, :, start:stop] = key
        self._value[:, :, start:stop] = value
        self._length = stop
        return self.tensors()

    def _grown(self, buffer: Tensor, capacity: int) -> Tensor:
        batch, heads, _, size = buffer.shape
        grown = buffer.new_empty(batch, heads, capacity, size)
        grown[:, :, : self._length] = buffer[:, :, : self._length]
        return grown

    def tensors(self) -> tuple[Tensor, Tensor]:
        """The cached ``(keys, values)``."""
        if self._key is None or self._value is None:
            raise RuntimeError("KVCache is empty")
        return self._key[:, :, : self._length], self._value[:, :, : self._length]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (in that order): beam search continues each new beam from an old one."""
        if self._key is not None and self._value is not None:
            self._key = self._key.index_select(0, index)
            self._value = self._value.index_select(0, index)


class MultiHeadAttention(Module):
    r"""Multi-head attention, for self-attention (``query = key = value``) and cross-attention.

    Shapes: ``query (B, T_q, d_model)``, ``key`` and ``value (B, T_k, d_model)``, boolean
    ``mask`` ``(T_q, T_k)`` or 4-D broadcastable to ``(B, H, T_q, T_k)`` (``True`` = may
    attend), output ``(B, T_q, d_model)``. With :math:`H` heads of size
    :math:`d_k = d_\text{model}/H` and :math:`\operatorname{split}` reshaping
    ``(B, T, d_model)`` to ``(B, H, T, d_k)`` (:math:`\operatorname{merge}` is its inverse):

    .. math::
        O = \operatorname{merge}\Big(\operatorname{Attention}\big(\operatorname{split}(x_q W_Q^\top + b_Q),
            \operatorname{split}(x_k W_K^\top + b_K), \operatorname{split}(x_v W_V^\top + b_V)\big)\Big)
            W_O^\top + b_O

    Backward runs the same chain in reverse: ``out_proj``, :math:`\operatorname{split}` (the
    backward of a merge), the attention core, :math:`\operatorname{merge}`, then each input
    projection. ``backward(grad_output)`` returns ``(grad_query, grad_key, grad_value)``;
    self-attention callers add the three, cross-attention callers add the last two into the
    memory's gradient. ``from_torch`` copies ``nn.MultiheadAttention`` (its ``in_proj_weight``
    is :math:`[W_Q; W_K; W_V]`); remember torch's boolean masks mean the opposite (``~mask``).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if d_model <= 0 or num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(
                f"MultiHeadAttention needs d_model divisible by num_heads (both positive), got d_model={d_model}, "
                f"num_heads={num_heads}"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.q_proj = Dense(d_model, d_model, bias=bias, init="xavier")
        self.k_proj = Dense(d_model, d_model, bias=bias, init="xavier")
        self.v_proj = Dense(d_model, d_model, bias=bias, init="xavier")
        self.attention = ScaledDotProductAttention(dropout)
        self.out_proj = Dense(d_model, d_model, bias=bias, init="xavier")
        self._out_shape: tuple[int, ...] | None = None  # (B, T_q, d_model) of the last forward, for backward
        self._stacked: tuple[Tensor, Tensor] | None = None  # x (B T, d_model) and [W_Q; W_K; W_V] of self_attend

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        from scratch_engine.tools.twin import from_torch  # torch.nn only on request

        if not mha._qkv_same_embed_dim:
            raise ValueError(
                f"MultiHeadAttention.from_torch needs kdim = vdim = embed_dim = {mha.embed_dim}, "
                f"got kdim={mha.kdim}, vdim={mha.vdim}"
            )
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("MultiHeadAttention.from_torch does not support add_bias_kv or add_zero_attn")
        bias = mha.in_proj_bias is not None
        layer = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=bias)
        weights = mha.in_proj_weight.detach().chunk(3)
        biases = mha.in_proj_bias.detach().chunk(3) if bias else (None, None, None)
        for proj, weight, b in zip((layer.q_proj, layer.k_proj, layer.v_proj), weights, biases, strict=True):
            proj.weight = Parameter(weight.clone())
            if b is not None:
                proj.bias = Parameter(b.clone())
        layer.out_proj = from_torch(mha.out_proj)
        return layer

    def split_heads(self, x: Tensor) -> Tensor:
        """``(B, T, d_model)`` -> ``(B, H, T, d_k)``, contiguous (else every matrix product below would copy it)."""
        batch, steps, _ = x.shape
        return x.reshape(batch, steps, self.num_heads, -1).transpose(1, 2).contiguous()

    def merge_heads(self, x: Tensor) -> Tensor:
        """``(B, H, T, d_k)`` -> ``(B, T, d_model)``."""
        batch, _, steps, _ = x.shape
        return x.transpose(1, 2).reshape(batch, steps, self.d_model)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        self._check_inputs(query, key, value, mask)
        self._stacked = None  # backward goes through the three projections
        q = self.split_heads(self.q_proj(query))  # Q = split(x_q W_Q^T + b_Q)
        k = self.split_heads(self.k_proj(key))  # K = split(x_k W_K^T + b_K)
        v = self.split_heads(self.v_proj(value))  # V = split(x_v W_V^T + b_V)
        self._out_shape = tuple(query.shape)
        return self.out_proj(self.merge_heads(self.attention(q, k, v, mask)))  # merge(Attention(Q, K, V)) W_O^T + b_O

    def backward(self, grad_output: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self._out_shape is None:
            raise missing_forward(self)
        if self._stacked is not None:
            raise RuntimeError("MultiHeadAttention: the last forward was self_attend, so use self_attend_backward")
        check_grad_output(self, grad_output, self._out_shape)
        # The projections keep input_grad=True, so each Dense.backward returns a Tensor (the casts tell mypy).
        grad_merged = cast(Tensor, self.out_proj.backward(grad_output))  # ... W_O^T + b_O
        grad_q, grad_k, grad_v = self.attention.backward(self.split_heads(grad_merged))  # merge(Attention(Q, K, V))
        grad_query = cast(Tensor, self.q_proj.backward(self.merge_heads(grad_q)))  # Q = split(x_q W_Q^T + b_Q)
        grad_key = cast(Tensor, self.k_proj.backward(self.merge_heads(grad_k)))  # K = split(x_k W_K^T + b_K)
        grad_value = cast(Tensor, self.v_proj.backward(self.merge_heads(grad_v)))  # V = split(x_v W_V^T + b_V)
        return grad_query, grad_key, grad_value

    # ------------------------------------------------------------------ self-attention, its projections stacked
    def self_attend(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        r"""``forward(x, x, x, mask)``: self-attention, ``x (B, T, d_model)`` as query, key and value.

        Speed trick: :math:`[Q\ K\ V] = x\,[W_Q; W_K; W_V]^\top`, one product where ``forward`` makes three,
        and :meth:`self_attend_backward` one product for :math:`\partial L/\partial x` where ``backward`` makes
        three for the caller to add (``nn.MultiheadAttention`` stacks its weights the same way).
        """
        self._check_inputs(x, x, x, mask)
        weight, bias = self._stacked_projection()  # [W_Q; W_K; W_V] (3 d_model, d_model), [b_Q b_K b_V]
        batch, steps, _ = x.shape
        flat = x.reshape(batch * steps, self.d_model)
        # [Q K V] = x [W_Q; W_K; W_V]^T + [b_Q b_K b_V]
        qkv = flat @ weight.t() if bias is None else torch.addmm(bias, flat, weight.t())
        heads = qkv.view(batch, steps, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # split(Q), split(K), split(V)
        q, k, v = heads.contiguous().unbind(0)  # (B, H, T, d_k) each, in one copy
        self._stacked = (flat, weight) if caching() else None
        self._out_shape = tuple(x.shape)
        return self.out_proj(self.merge_heads(self.attention(q, k, v, mask)))  # merge(Attention(Q, K, V)) W_O^T + b_O

    def self_attend_backward(self, grad_output: Tensor) -> Tensor:
        r""":math:`\partial L/\partial x` of :meth:`self_attend`: ``backward``'s three input gradients, added."""
        if self._stacked is None or self._out_shape is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, self._out_shape)
        flat, weight = self._stacked
        grad_merged = cast(Tensor, self.out_proj.backward(grad_output))  # ... W_O^T + b_O
        grads = self.attention.backward(self.split_heads(grad_merged))  # merge(Attention(Q, K, V))
        # split(Q), split(K), split(V): their gradients back to (B T, 3 d_model), the layout of [Q K V]
        grad_qkv = torch.stack([g.transpose(1, 2) for g in grads], dim=2).view(flat.shape[0], -1)
        grad_weight = grad_qkv.t() @ flat  # [Q K V] = x [W_Q; W_K; W_V]^T  ->  dL/d[W_Q; W_K; W_V] = g^T x
        projections = (self.q_proj, self.k_proj, self.v_proj)
        for projection, part in zip(projections, grad_weight.split(self.d_model), strict=True):
            projection.weight.grad.add_(part)
        if self.q_proj.bias is not None:  # ... + [b_Q b_K b_V]  ->  dL/db = sum_n g_n
            for projection, part in zip(projections, grad_qkv.sum(dim=0).split(self.d_model), strict=True):
                cast(Parameter, projection.bias).grad.add_(part)
        return (grad_qkv @ weight).view(self._out_shape)  # dL/dx = g [W_Q; W_K; W_V]

    # ------------------------------------------------------------------ inference with a KV cache
    def project_kv(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values projected and split into heads, ``(B, H, T_k, d_k)`` each: what a :class:`KVCache` keeps.

        Inference only (no backward): with :meth:`attend`, ``forward`` in two halves.
        """
        self._check_inputs(key, key, value, None)
        return self.split_heads(self.k_proj(key)), self.split_heads(self.v_proj(value))

    def attend(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
        """Queries ``(B, T_q, d_model)`` over already projected ``keys``, ``values`` ``(B, H, T_k, d_k)``.

        Returns ``(B, T_q, d_model)``, the same as ``forward`` would over the inputs of those keys
        and values, in eval mode. Inference only: no attention dropout, no backward. ``mask`` must
        broadcast to ``(B, H, T_q, T_k)``.
        """
        q = self.split_heads(self.q_proj(query))
        return self.out_proj(self.merge_heads(scaled_dot_product_attention(q, keys, values, mask)))

    def self_attend_cached(self, x: Tensor, cache: KVCache, mask: Tensor | None = None) -> Tensor:
        r"""Self-attention of the new positions ``x (B, T_new, d_model)`` over the cached ones and themselves.

        The same as ``attend(x, *cache.append(*project_kv(x, x)), mask)``: their keys and values join ``cache``.
        Speed trick: :math:`[Q\ K\ V] = x\,[W_Q; W_K; W_V]^\top`, one product where the plain form makes three,
        with the stacked weight made once per cache (the weights stay put while it decodes), and the scores'
        :math:`1/\sqrt{d_k}` folded into its :math:`W_Q` and :math:`b_Q`: :math:`Q` comes out scaled, as
        ``attention_weights`` would scale it, one operation fewer at every step.
        """
        if cache.projection is None:
            weight, bias = self._stacked_projection()  # fresh tensors (a concatenation): ours to scale
            scale = 1.0 / math.sqrt(self.d_model // self.num_heads)
            weight[: self.d_model] *= scale  # x (W_Q / sqrt(d_k))^T + b_Q / sqrt(d_k) = Q / sqrt(d_k)
            if bias is not None:
                bias[: self.d_model] *= scale
            cache.projection = (weight.t().contiguous(), bias)  # (d_model, 3 d_model)
        weight, bias = cache.projection
        if not (isinstance(x, Tensor) and x.dim() == 3 and x.shape[2] == self.d_model and x.dtype == weight.dtype):
            self._check_inputs(x, x, x, None)  # one test for the usual case: a decoding step runs this per layer
        batch, steps, _ = x.shape
        qkv = x @ weight if bias is None else torch.addmm(bias, x.reshape(batch * steps, -1), weight)
        q, k, v = qkv.view(batch, steps, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, d_k)
        keys, values = cache.append(k, v)
        if mask is not None:  # checked against every key, the cached ones too
            check_mask(mask, (batch, self.num_heads, steps, keys.shape[2]), type(self).__name__)
        # as attend, through the core's math without its input checks (q, keys and values were all made just above)
        # and without its scale (already in q)
        return self.out_proj(self.merge_heads(masked_softmax(q @ keys.transpose(-2, -1), mask) @ values))

    def _stacked_projection(self) -> tuple[Tensor, Tensor | None]:
        """``[W_Q; W_K; W_V]`` ``(3 d_model, d_model)`` and ``[b_Q b_K b_V]`` (``None`` without biases): q, k and v
        in one product, for :meth:`self_attend` and :meth:`self_attend_cached`."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight.data for p in projections])
        bias = None if self.q_proj.bias is None else torch.cat([cast(Parameter, p.bias).data for p in projections])
        return weight, bias

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> None:
        name, d = type(self).__name__, self.d_model
        shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (query, key, value)]
        ok = all(isinstance(t, Tensor) and t.dim() == 3 and t.shape[-1] == d for t in (query, key, value))
        if not ok or query.shape[0] != key.shape[0] or key.shape != value.shape:
            raise ValueError(
                f"{name}(d_model={d}) expects query (B, T_q, {d}) and key, value (B, T_k, {d}), "
                f"got query {shapes[0]}, key {shapes[1]}, value {shapes[2]}"
            )
        for t in (query, key, value):  # named here, not by the Dense inside
            check_dtype(self, t, self.q_proj.weight.data)
        if mask is not None:
            scores = (query.shape[0], self.num_heads, query.shape[1], key.shape[1])
            if isinstance(mask, Tensor) and mask.dim() not in (2, 4):
                raise ValueError(
                    f"{name} expects a mask (T_q, T_k) or (B or 1, H or 1, T_q, T_k) broadcastable to {scores}, "
                    f"got shape {tuple(mask.shape)} (for a (B, T_q, T_k) mask use mask.unsqueeze(1))"
                )
            check_mask(mask, scores, name)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, dropout={self.attention.dropout.p}"
