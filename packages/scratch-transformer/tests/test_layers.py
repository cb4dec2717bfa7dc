"""Add & Norm, encoder/decoder layers and stacks against torch.nn and autograd (float64, 1e-6).

torch's layers run in training mode with dropout 0: its eval-mode fast path (nested tensors)
would zero padded positions instead of computing them.
"""

from __future__ import annotations

import re

import pytest
import torch
from _torch_reference import assert_grads_match_torch, perturbed
from torch import Tensor, nn

from scratch_engine import Module
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_transformer import AddNorm, Decoder, DecoderLayer, Encoder, EncoderLayer, causal_mask

B, T_SRC, T_TGT, D_MODEL, HEADS, D_FF = 2, 5, 4, 8, 2, 16

norm_modes = pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])


def _keep(steps: int) -> Tensor:
    keep = torch.ones(B, steps, dtype=torch.bool)
    keep[1, -2:] = False
    return keep


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor]:
    x, memory = random_inputs((B, T_TGT, D_MODEL), (B, T_SRC, D_MODEL), seed=seed)
    return x, memory


@norm_modes
def test_add_norm_backward(norm_first: bool) -> None:
    torch.manual_seed(0)
    layer = AddNorm(D_MODEL, dropout=0.2, norm_first=norm_first).to(dtype=torch.float64)
    x, s = random_inputs((B, T_SRC, D_MODEL), (B, T_SRC, D_MODEL))
    check_backward(layer, x, s)  # backward returns (grad_x, grad_sublayer_output)
    check_backward(_SublayerInput(layer), x)


class _SublayerInput(Module):
    """``AddNorm.sublayer_input`` as a forward, for check_backward (LN with norm_first, else the identity)."""

    def __init__(self, add_norm: AddNorm) -> None:
        super().__init__()
        self.add_norm = add_norm

    def forward(self, x: Tensor) -> Tensor:
        return self.add_norm.sublayer_input(x)

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.add_norm.sublayer_input_backward(grad_output)


@norm_modes
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first: bool, activation: str) -> None:
    torch.manual_seed(0)
    reference = perturbed(
        nn.TransformerEncoderLayer(
            D_MODEL, HEADS, D_FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
        )
    )
    layer = EncoderLayer.from_torch(reference)
    (x,) = random_inputs((B, T_SRC, D_MODEL))
    x_torch = x.clone().requires_grad_(True)
    want = reference(x_torch, src_key_padding_mask=~_keep(T_SRC))
    assert_close(layer(x, _keep(T_SRC)[:, None, None, :]), want.detach(), name="EncoderLayer forward")
    (g,) = random_inputs(want.shape, seed=1)
    want.backward(g)
    assert_close(layer.backward(g), x_torch.grad, name="grad of x")
    assert assert_grads_match_torch(layer, reference) == 12


@norm_modes
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_layer_matches_torch(norm_first: bool, activation: str) -> None:
    torch.manual_seed(0)
    reference = perturbed(
        nn.TransformerDecoderLayer(
            D_MODEL, HEADS, D_FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
        )
    )
    layer = DecoderLayer.from_torch(reference)
    x, memory = _inputs()
    x_torch, memory_torch = x.clone().requires_grad_(True), memory.clone().requires_grad_(True)
    want = reference(
        x_torch,
        memory_torch,
        tgt_mask=~causal_mask(T_TGT),
        tgt_key_padding_mask=~_keep(T_TGT),
        memory_key_padding_mask=~_keep(T_SRC),
    )
    self_mask = causal_mask(T_TGT) & _keep(T_TGT)[:, None, None, :]
    got = layer(x, memory, self_mask, _keep(T_SRC)[:, None, None, :])
    assert_close(got, want.detach(), name="DecoderLayer forward")
    (g,) = random_inputs(want.shape, seed=1)
    want.backward(g)
    grad_x, grad_memory = layer.backward(g)
    assert_close(grad_x, x_torch.grad, name="grad of x")
    assert_close(grad_memory, memory_torch.grad, name="grad of memory")
    assert assert_grads_match_torch(layer, reference) == 18


@norm_modes
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_layers_backward_match_autograd(norm_first: bool, dropout: float) -> None:
    torch.manual_seed(0)
    options = {"dropout": dropout, "norm_first": norm_first}
    encoder_layer = EncoderLayer(D_MODEL, HEADS, D_FF, **options).to(dtype=torch.float64)  # type: ignore[arg-type]
    decoder_layer = DecoderLayer(D_MODEL, HEADS, D_FF, **options).to(dtype=torch.float64)  # type: ignore[arg-type]
    x, memory = _inputs()
    check_backward(encoder_layer, memory, forward_kwargs={"mask": _keep(T_SRC)[:, None, None, :]})
    masks = {"self_mask": causal_mask(T_TGT), "cross_mask": _keep(T_SRC)[:, None, None, :]}
    check_backward(decoder_layer, x, memory, forward_kwargs=masks)


@norm_modes
def test_stacks_match_torch(norm_first: bool) -> None:
    """Two layers and torch's final norm: the memory gradient is the sum over every decoder layer."""
    torch.manual_seed(0)
    options = {"dropout": 0.0, "batch_first": True, "norm_first": norm_first}
    torch_encoder = perturbed(
        nn.TransformerEncoder(
            nn.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, **options),  # type: ignore[arg-type]
            num_layers=2,
            norm=nn.LayerNorm(D_MODEL),
            enable_nested_tensor=False,
        )
    )
    torch_decoder = perturbed(
        nn.TransformerDecoder(
            nn.TransformerDecoderLayer(D_MODEL, HEADS, D_FF, **options),  # type: ignore[arg-type]
            num_layers=2,
            norm=nn.LayerNorm(D_MODEL),
        ),
        seed=1,
    )
    encoder, decoder = Encoder.from_torch(torch_encoder), Decoder.from_torch(torch_decoder)
    assert encoder.norm is not None
    assert decoder.norm is not None
    x, src = _inputs()
    src_torch, x_torch = src.clone().requires_grad_(True), x.clone().requires_grad_(True)
    memory_torch = torch_encoder(src_torch, src_key_padding_mask=~_keep(T_SRC))
    want = torch_decoder(x_torch, memory_torch, tgt_mask=~causal_mask(T_TGT), memory_key_padding_mask=~_keep(T_SRC))
    src_mask = _keep(T_SRC)[:, None, None, :]
    memory = encoder(src, src_mask)
    assert_close(memory, memory_torch.detach(), name="Encoder forward")
    assert_close(decoder(x, memory, causal_mask(T_TGT), src_mask), want.detach(), name="Decoder forward")

    (g,) = random_inputs(want.shape, seed=2)
    want.backward(g)
    grad_x, grad_memory = decoder.backward(g)
    assert_close(grad_x, x_torch.grad, name="grad of decoder input")
    assert_close(encoder.backward(grad_memory), src_torch.grad, name="grad of encoder input")
    assert assert_grads_match_torch(encoder, torch_encoder) == 2 * 12 + 2
    assert assert_grads_match_torch(decoder, torch_decoder) == 2 * 18 + 2


@norm_modes
def test_stacks_backward_match_autograd(norm_first: bool) -> None:
    torch.manual_seed(0)
    encoder = Encoder(2, D_MODEL, HEADS, D_FF, dropout=0.1, norm_first=norm_first).to(dtype=torch.float64)
    decoder = Decoder(3, D_MODEL, HEADS, D_FF, dropout=0.1, norm_first=norm_first).to(dtype=torch.float64)
    x, memory = _inputs()
    check_backward(encoder, memory, forward_kwargs={"mask": _keep(T_SRC)[:, None, None, :]})
    check_backward(decoder, x, memory, forward_kwargs={"self_mask": causal_mask(T_TGT)})


@pytest.mark.parametrize(
    ("norm_first", "final_norm", "expected"),
    [(False, None, False), (True, None, True), (False, True, True), (True, False, False)],
)
def test_final_norm_defaults_to_norm_first(norm_first: bool, final_norm: bool | None, expected: bool) -> None:
    options = {"norm_first": norm_first, "final_norm": final_norm}
    assert (Encoder(1, D_MODEL, HEADS, D_FF, **options).norm is not None) == expected  # type: ignore[arg-type]
    assert (Decoder(1, D_MODEL, HEADS, D_FF, **options).norm is not None) == expected  # type: ignore[arg-type]


def test_from_torch_rejects_other_activations() -> None:
    layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, D_FF, activation=nn.GELU(approximate="tanh"), batch_first=True)
    with pytest.raises(ValueError, match="relu and gelu"):
        EncoderLayer.from_torch(layer)


@norm_modes
def test_backward_checks_the_gradient_shape(norm_first: bool) -> None:
    x, memory = _inputs()
    encoder_layer = EncoderLayer(D_MODEL, HEADS, D_FF, norm_first=norm_first).to(dtype=torch.float64)
    decoder_layer = DecoderLayer(D_MODEL, HEADS, D_FF, norm_first=norm_first).to(dtype=torch.float64)
    add_norm = AddNorm(D_MODEL, norm_first=norm_first).to(dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"EncoderLayer\.backward called before forward"):
        encoder_layer.backward(x)
    encoder_layer(memory)
    decoder_layer(x, memory)
    add_norm(x, x)
    wrong = x[:1]  # one sequence of the two: a residual sum would broadcast it
    for layer, shape in ((encoder_layer, memory.shape), (decoder_layer, x.shape), (add_norm, x.shape)):
        name = type(layer).__name__
        with pytest.raises(ValueError, match=rf"{name}\.backward expects .* shape {re.escape(str(tuple(shape)))}"):
            layer.backward(wrong)
