"""Boolean attention masks: ``True`` means *may attend*.

One convention for the whole package: a mask is a ``torch.bool`` tensor that broadcasts to
the attention scores ``(B, num_heads, T_q, T_k)``; entry ``[b, h, i, j]`` is ``True`` when
query ``i`` may attend to key ``j``. This is the convention of torch's functional
``scaled_dot_product_attention`` and the *opposite* of ``nn.MultiheadAttention``'s and
``nn.Transformer``'s boolean ``attn_mask`` / ``key_padding_mask`` (``True`` = masked out):
pass ``~mask`` to those. Masks combine with ``&``, e.g.
``causal_mask(T) & padding_mask(tgt_ids, pad_id)`` is ``(B, 1, T, T)``.

A query row with no allowed key at all (a padded query under a query-and-key padding mask,
or a left-padded first position under a causal mask) attends to nothing: its attention
weights and output are zeros, and so is its gradient (never NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(size: int, device: torch.device | str | None = None) -> Tensor:
    """``(T, T)``, ``True`` on and below the diagonal: query ``i`` may attend to keys ``j <= i``."""
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"causal_mask expects a positive sequence length, got {size!r}")
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """``(B, 1, 1, T)`` key mask from token ids ``(B, T)``: ``True`` at real tokens, ``False`` at ``pad_id``."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
        got = f"{tuple(ids.shape)} of dtype {ids.dtype}" if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"padding_mask expects integer token ids of shape (B, T), got {got}")
    return (ids != pad_id)[:, None, None, :]


def check_mask(mask: Tensor, shape: tuple[int, ...], who: str) -> None:
    """Raise ``ValueError`` unless ``mask`` is boolean and broadcasts to the scores' ``shape``."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{who} expects a boolean mask (True = may attend), got {got}")
    try:
        fits = mask.dim() <= len(shape) and torch.broadcast_shapes(mask.shape, shape) == torch.Size(shape)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{who} expects a mask broadcastable to {tuple(shape)}, got shape {tuple(mask.shape)}")
