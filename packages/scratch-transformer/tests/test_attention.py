"""Scaled dot-product and multi-head attention against torch and autograd (float64, 1e-6).

Our masks mean True = may attend, like ``F.scaled_dot_product_attention``; for
``nn.MultiheadAttention`` (True = masked out) the tests pass ``~mask``.
"""

from __future__ import annotations

from typing import cast

import pytest
import torch
from _torch_reference import assert_grads_match_torch, perturbed
from torch import Tensor, nn
from torch.nn import functional as F

from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_transformer import (
    KVCache,
    MultiHeadAttention,
    ScaledDotProductAttention,
    causal_mask,
    scaled_dot_product_attention,
)

B, H, T, D = 2, 2, 5, 4  # batch, heads, sequence length, head size
D_MODEL = 8


def _keep(steps: int = T) -> Tensor:
    """``(B, steps)``: the second sequence ends in two padding positions."""
    keep = torch.ones(B, steps, dtype=torch.bool)
    keep[1, -2:] = False
    return keep


MASKS = {
    "none": lambda: None,
    "causal": lambda: causal_mask(T),
    "padding": lambda: _keep()[:, None, None, :],
    "causal+padding": lambda: causal_mask(T) & _keep()[:, None, None, :],
}


def _qkv(seed: int = 0, d_v: int = 3) -> list[Tensor]:
    return random_inputs((B, H, T, D), (B, H, T, D), (B, H, T, d_v), seed=seed)


# --------------------------------------------------------------------------- scaled dot-product attention


@pytest.mark.parametrize("mask_name", list(MASKS))
def test_sdpa_matches_torch(mask_name: str) -> None:
    mask = MASKS[mask_name]()
    q, k, v = _qkv()
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    want = F.scaled_dot_product_attention(*leaves, attn_mask=mask)
    assert_close(scaled_dot_product_attention(q, k, v, mask), want.detach(), name="functional forward")

    layer = ScaledDotProductAttention()
    assert_close(layer(q, k, v, mask), want.detach(), name="module forward")
    (g,) = random_inputs(want.shape, seed=1)
    want.backward(g)
    for label, got, leaf in zip("qkv", layer.backward(g), leaves, strict=True):
        assert_close(got, leaf.grad, name=f"grad of {label}")


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_sdpa_backward_matches_autograd(mask_name: str, dropout: float) -> None:
    torch.manual_seed(0)  # the dropout mask; check_backward checks against the mask the forward drew
    check_backward(ScaledDotProductAttention(dropout), *_qkv(), forward_kwargs={"mask": MASKS[mask_name]()})


def test_sdpa_dropout_is_identity_in_eval_mode() -> None:
    q, k, v = _qkv()
    layer = ScaledDotProductAttention(0.5).eval()
    assert_close(layer(q, k, v), scaled_dot_product_attention(q, k, v), name="eval mode")


def test_fully_masked_rows_give_zeros_not_nan() -> None:
    """Left padding under a causal mask: query 0 of sequence 1 may attend to no key at all."""
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[1, :2] = False
    mask = causal_mask(T) & keep[:, None, None, :]
    q, k, v = _qkv()
    layer = ScaledDotProductAttention()
    out = layer(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[1, :, :2]) == 0  # rows 0 and 1 of sequence 1 see only padding
    live = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(out[0], live[0], name="sequence without fully masked rows")
    assert_close(out[1, :, 2:], live[1, :, 2:], name="rows that see a key")
    grad_q, grad_k, grad_v = layer.backward(torch.ones_like(out))
    assert all(torch.isfinite(g).all() for g in (grad_q, grad_k, grad_v))
    assert torch.count_nonzero(grad_q[1, :, :2]) == 0
    check_backward(ScaledDotProductAttention(), q, k, v, forward_kwargs={"mask": mask})


def test_sdpa_rejects_bad_masks_and_shapes() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"boolean mask \(True = may attend\), got dtype torch\.float64"):
        scaled_dot_product_attention(q, k, v, torch.zeros(T, T, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"broadcastable to \(2, 2, 5, 5\), got shape \(4, 5\)"):
        scaled_dot_product_attention(q, k, v, torch.ones(4, T, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"got query \(2, 2, 5, 4\), key \(2, 2, 5, 3\)"):
        scaled_dot_product_attention(q, k[..., :3], v)


# --------------------------------------------------------------------------- multi-head attention


def _torch_masks(steps_q: int, causal: bool, padded: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Our mask and torch's ``(attn_mask, key_padding_mask)``, which mean the opposite."""
    ours = causal_mask(steps_q) if causal else None
    attn_mask = ~causal_mask(steps_q) if causal else None
    key_padding_mask = None
    if padded:
        keep = _keep()[:, None, None, :]
        ours = keep if ours is None else ours & keep
        key_padding_mask = ~_keep()
    return ours, attn_mask, key_padding_mask


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize(("kind", "causal"), [("self", False), ("self", True), ("cross", False)])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_matches_torch(num_heads: int, kind: str, causal: bool, padded: bool, bias: bool) -> None:
    torch.manual_seed(num_heads)
    reference = perturbed(nn.MultiheadAttention(D_MODEL, num_heads, bias=bias, batch_first=True))
    layer = MultiHeadAttention.from_torch(reference)
    steps_q = T if kind == "self" else 3
    x, memory = random_inputs((B, steps_q, D_MODEL), (B, T, D_MODEL))
    mask, attn_mask, key_padding_mask = _torch_masks(steps_q, causal, padded)

    if kind == "self":
        x_torch = x.clone().requires_grad_(True)
        inputs = (x_torch, x_torch, x_torch)
    else:
        inputs = tuple(t.clone().requires_grad_(True) for t in (x, memory, memory))
    want, _ = reference(*inputs, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=False)
    ours_inputs = (x, x, x) if kind == "self" else (x, memory, memory)
    assert_close(layer(*ours_inputs, mask=mask), want.detach(), name="MHA forward")

    (g,) = random_inputs(want.shape, seed=3)
    want.backward(g)
    grad_q, grad_k, grad_v = layer.backward(g)
    if kind == "self":
        assert_close(grad_q + grad_k + grad_v, inputs[0].grad, name="grad of x (query = key = value)")
    else:
        for label, got, leaf in zip(("query", "key", "value"), (grad_q, grad_k, grad_v), inputs, strict=True):
            assert_close(got, leaf.grad, name=f"grad of {label}")
    assert assert_grads_match_torch(layer, reference) == (4 if bias else 2)


def test_kv_cache_holds_every_position_appended_through_its_regrowths_and_reorders() -> None:
    """The cache's buffer regrows (a prompt of 3, then one position at a time past several doublings): what it
    returns is always every position appended so far, in order, as torch.cat would give; beam search's reorder
    keeps them; a mismatched append is refused."""
    torch.manual_seed(0)
    keys, values = torch.randn(2, 3, 40, 4, dtype=torch.float64), torch.randn(2, 3, 40, 4, dtype=torch.float64)
    cache = KVCache()
    assert len(cache) == 0
    assert cache.key is None
    for start, stop in [(0, 3)] + [(t, t + 1) for t in range(3, 40)]:
        got_keys, got_values = cache.append(keys[:, :, start:stop], values[:, :, start:stop])
        assert len(cache) == stop
        assert torch.equal(got_keys, keys[:, :, :stop])
        assert torch.equal(got_values, values[:, :, :stop])
    assert torch.equal(cache.tensors()[0], keys)
    assert torch.equal(cast(Tensor, cache.value), values)
    index = torch.tensor([1, 1, 0])  # three beams: two continue the second row, one the first
    cache.reorder(index)
    cache.append(keys[:1, :, :1].expand(3, -1, -1, -1), values[:1, :, :1].expand(3, -1, -1, -1))
    assert torch.equal(cache.tensors()[0][:, :, :40], keys[index])
    assert len(cache) == 41
    assert torch.equal(cache.tensors()[1][:, :, 40], values[[0, 0, 0], :, 0])
    with pytest.raises(ValueError, match="cannot append keys of shape"):
        cache.append(keys[:, :2, :1], values[:, :2, :1])


@pytest.mark.parametrize("bias", [True, False])
def test_cached_self_attention_is_the_plain_projection_and_attention(bias: bool) -> None:
    """self_attend_cached (q, k and v in one product) gives what project_kv, append and attend give, step by step."""
    torch.manual_seed(1)
    layer = MultiHeadAttention.from_torch(perturbed(nn.MultiheadAttention(D_MODEL, 2, bias=bias, batch_first=True)))
    (x,) = random_inputs((B, T, D_MODEL))
    fused, plain = KVCache(), KVCache()
    for start, stop in ((0, 2), (2, 4), (4, 5)):  # a prompt of 2, two more after it (a mask over all 4 keys), one
        new = x[:, start:stop]
        mask = causal_mask(stop)[start:] if stop - start > 1 else None  # the new rows of the causal mask
        got = layer.self_attend_cached(new, fused, mask)
        keys, values = plain.append(*layer.project_kv(new, new))
        assert_close(got, layer.attend(new, keys, values, mask), atol=1e-12, rtol=1e-12, name="cached self-attention")
        assert_close(fused.tensors()[0], keys, atol=1e-12, rtol=1e-12, name="cached keys")
    assert_close(
        layer.self_attend_cached(x, KVCache(), causal_mask(T)), layer(x, x, x, causal_mask(T)), name="vs forward"
    )
    with pytest.raises(ValueError, match="mask broadcastable"):  # checked against every key, the cached ones too
        layer.self_attend_cached(x[:, :2], fused, causal_mask(2))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_self_attend_is_forward_and_backward_with_the_three_gradients_added(bias: bool, dropout: float) -> None:
    """self_attend (q, k and v in one product) and self_attend_backward give what forward(x, x, x) and the sum of
    backward's three input gradients give, parameter gradients too; each backward refuses the other's forward."""
    layer = MultiHeadAttention(D_MODEL, 2, dropout=dropout, bias=bias).to(dtype=torch.float64)
    (x,) = random_inputs((B, T, D_MODEL))
    g = torch.randn(B, T, D_MODEL, dtype=torch.float64)
    mask = causal_mask(T) & _keep()[:, None, None, :]

    def run(stacked: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
        layer.zero_grad()
        torch.manual_seed(1)  # the same dropout mask on both paths
        if stacked:
            y, grad = layer.self_attend(x, mask), layer.self_attend_backward(g)
        else:
            y = layer(x, x, x, mask)
            grad_q, grad_k, grad_v = layer.backward(g)
            grad = grad_q + grad_k + grad_v
        return y, grad, [p.grad.clone() for p in layer.parameters()]

    (y, grad, params), (want_y, want_grad, want_params) = run(stacked=True), run(stacked=False)
    assert_close(y, want_y, atol=1e-12, rtol=1e-12, name="self_attend")
    assert_close(grad, want_grad, atol=1e-12, rtol=1e-12, name="self_attend_backward")
    assert len(params) == (8 if bias else 4)
    for i, (got, want) in enumerate(zip(params, want_params, strict=True)):
        assert_close(got, want, atol=1e-12, rtol=1e-12, name=f"parameter {i} gradient")
    with pytest.raises(RuntimeError, match="before forward"):  # the last forward was the plain one
        layer.self_attend_backward(g)
    layer.self_attend(x, mask)
    with pytest.raises(RuntimeError, match="use self_attend_backward"):
        layer.backward(g)


@pytest.mark.parametrize(("causal", "padded"), [(True, False), (False, True), (True, True)])
def test_mha_attention_weights_match_torch(causal: bool, padded: bool) -> None:
    """The per-head probabilities kept for plotting equal torch's ``need_weights`` (not averaged over heads)."""
    torch.manual_seed(0)
    reference = perturbed(nn.MultiheadAttention(D_MODEL, 2, batch_first=True))
    layer = MultiHeadAttention.from_torch(reference)
    (x,) = random_inputs((B, T, D_MODEL))
    mask, attn_mask, key_padding_mask = _torch_masks(T, causal, padded)
    _, want = reference(
        x, x, x, key_padding_mask=key_padding_mask, attn_mask=attn_mask, need_weights=True, average_attn_weights=False
    )
    layer(x, x, x, mask=mask)
    assert_close(layer.attention.weights, want.detach(), name="attention weights (B, H, T_q, T_k)")


@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_mha_backward_matches_autograd(kind: str, dropout: float) -> None:
    torch.manual_seed(0)
    layer = MultiHeadAttention(D_MODEL, 2, dropout=dropout).to(dtype=torch.float64)
    x, memory = random_inputs((B, T, D_MODEL), (B, 4 if kind == "cross" else T, D_MODEL))
    steps_k = memory.shape[1]
    keep = torch.ones(B, steps_k, dtype=torch.bool)
    keep[0, -1] = False
    mask = keep[:, None, None, :] & (causal_mask(T) if kind == "self" else True)
    key = x if kind == "self" else memory
    check_backward(layer, x, key, key, forward_kwargs={"mask": mask})


def test_mha_rejects_bad_configuration_and_input() -> None:
    with pytest.raises(ValueError, match=r"d_model divisible by num_heads .* got d_model=10, num_heads=4"):
        MultiHeadAttention(10, 4)
    layer = MultiHeadAttention(D_MODEL, 2)
    x = torch.zeros(B, T, D_MODEL)
    with pytest.raises(ValueError, match=r"expects query \(B, T_q, 8\) .* got query \(2, 5, 6\)"):
        layer(x[..., :6], x, x)
    with pytest.raises(ValueError, match=r"got query \(2, 5, 8\), key \(2, 5, 8\), value \(2, 4, 8\)"):
        layer(x, x, x[:, :4])
    with pytest.raises(ValueError, match=r"use mask\.unsqueeze\(1\)"):
        layer(x, x, x, mask=torch.ones(B, T, T, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"broadcastable to \(2, 2, 5, 5\), got shape \(3, 1, 1, 5\)"):
        layer(x, x, x, mask=torch.ones(3, 1, 1, T, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"boolean mask .* got dtype torch\.float32"):
        layer(x, x, x, mask=torch.zeros(T, T))


def test_mha_from_torch_rejects_unsupported_options() -> None:
    with pytest.raises(ValueError, match="kdim = vdim = embed_dim = 8, got kdim=4, vdim=8"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(D_MODEL, 2, kdim=4, vdim=8))
    with pytest.raises(ValueError, match="add_bias_kv or add_zero_attn"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(D_MODEL, 2, add_bias_kv=True))


def test_backward_checks_the_gradient_shape() -> None:
    layer = MultiHeadAttention(D_MODEL, 2)
    x = torch.zeros(B, T, D_MODEL)
    with pytest.raises(RuntimeError, match=r"MultiHeadAttention\.backward called before forward"):
        layer.backward(x)
    layer(x, x[:, :3], x[:, :3])
    with pytest.raises(ValueError, match=r"MultiHeadAttention\.backward expects .* shape \(2, 5, 8\), got \(2, 3, 8\)"):
        layer.backward(x[:, :3])
    core = ScaledDotProductAttention()
    q, k, v = _qkv()
    core(q, k, v)
    with pytest.raises(ValueError, match=r"ScaledDotProductAttention\.backward .* \(2, 2, 5, 3\), got \(2, 2, 5, 4\)"):
        core.backward(torch.zeros(B, H, T, D))


def test_inputs_of_another_dtype_are_value_errors() -> None:
    layer = MultiHeadAttention(D_MODEL, 2)  # float32 weights
    x = torch.zeros(B, T, D_MODEL)
    with pytest.raises(ValueError, match=r"MultiHeadAttention has torch\.float32 weights but got a torch\.float64"):
        layer(x.double(), x.double(), x.double())
    with pytest.raises(ValueError, match=r"torch\.float64 input"):
        layer(x, x.double(), x.double())  # cross-attention over a memory of another dtype
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"query, key and value of one dtype, got torch\.float64, torch\.float32"):
        scaled_dot_product_attention(q, k.float(), v)
    with pytest.raises(ValueError, match="one dtype"):
        ScaledDotProductAttention()(q, k, v.float())
