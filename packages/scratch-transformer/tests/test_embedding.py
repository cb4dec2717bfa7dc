"""TokenEmbedding (scaled by sqrt(d_model)) and the sinusoidal PositionalEncoding."""

from __future__ import annotations

import math

import pytest
import torch
from _torch_reference import sinusoid
from torch import nn

from scratch_engine.tools.testing import assert_close, check_backward, random_inputs
from scratch_transformer import PositionalEncoding, TokenEmbedding

VOCAB, D_MODEL = 11, 8


def test_token_embedding_is_scaled_lookup() -> None:
    torch.manual_seed(0)
    reference = nn.Embedding(VOCAB, D_MODEL).double()
    layer = TokenEmbedding.from_torch(reference)
    ids = torch.tensor([[1, 4, 4, 10], [0, 2, 3, 1]])
    assert_close(layer(ids), reference(ids).detach() * math.sqrt(D_MODEL), name="scaled embedding")


def test_token_embedding_backward() -> None:
    torch.manual_seed(0)
    layer = TokenEmbedding(VOCAB, D_MODEL).to(dtype=torch.float64)
    check_backward(layer, torch.tensor([[1, 4, 4, 0], [0, 2, 3, 1]]))  # integer input: backward returns None


def test_token_embedding_padding_row_gets_no_gradient() -> None:
    torch.manual_seed(0)
    layer = TokenEmbedding(VOCAB, D_MODEL, padding_idx=0)
    assert torch.count_nonzero(layer.embedding.weight.data[0]) == 0
    ids = torch.tensor([[1, 4, 4, 0], [0, 2, 3, 1]])
    layer(ids)
    assert layer.backward(torch.ones(2, 4, D_MODEL)) is None
    grad = layer.embedding.weight.grad
    assert torch.count_nonzero(grad[0]) == 0
    assert_close(grad[4], torch.full((D_MODEL,), 2 * math.sqrt(D_MODEL)), name="row 4, looked up twice")


@pytest.mark.parametrize("padding_idx", [None, 0, 3])
def test_token_embedding_matches_torch_forward_and_weight_grad(padding_idx: int | None) -> None:
    """``nn.Embedding(ids) * sqrt(d_model)``, its padding row included, value and weight gradient."""
    torch.manual_seed(0)
    reference = nn.Embedding(VOCAB, D_MODEL, padding_idx=padding_idx).double()
    layer = TokenEmbedding.from_torch(reference)
    assert layer.embedding.padding_idx == padding_idx
    ids = torch.tensor([[1, 4, 4, 0], [3, 2, 3, 10]])  # repeated ids, and both padding candidates
    want = reference(ids) * math.sqrt(D_MODEL)
    assert_close(layer(ids), want.detach(), name="scaled embedding")
    (g,) = random_inputs(want.shape, seed=1)
    want.backward(g)
    assert layer.backward(g) is None
    assert_close(layer.embedding.weight.grad, reference.weight.grad, name="grad of the embedding weight")


def test_token_embedding_init_has_unit_variance_after_scaling() -> None:
    torch.manual_seed(0)
    layer = TokenEmbedding(1000, 64)
    assert abs(layer(torch.arange(1000)).std().item() - 1.0) < 0.05


@pytest.mark.parametrize("d_model", [8, 7])
def test_positional_encoding_matches_the_formula(d_model: int) -> None:
    layer = PositionalEncoding(d_model, max_len=20)
    x = torch.zeros(2, 6, d_model, dtype=torch.float64)
    assert_close(layer(x), sinusoid(6, d_model).expand(2, 6, d_model), name="PE")
    assert_close(layer(x[:, :3], start=4), sinusoid(7, d_model)[4:].expand(2, 3, d_model), name="PE from start=4")


def test_positional_encoding_follows_input_dtype_and_is_not_state() -> None:
    layer = PositionalEncoding(D_MODEL, max_len=10)
    assert layer(torch.zeros(1, 3, D_MODEL)).dtype == torch.float32
    assert layer(torch.zeros(1, 3, D_MODEL, dtype=torch.float64)).dtype == torch.float64
    assert layer.state_dict() == {}
    assert layer.parameters() == []


def test_positional_encoding_backward_with_dropout() -> None:
    torch.manual_seed(0)
    layer = PositionalEncoding(D_MODEL, max_len=10, dropout=0.3)
    (x,) = random_inputs((2, 5, D_MODEL))
    check_backward(layer, x)
    layer.eval()
    assert_close(layer(x), x + sinusoid(5, D_MODEL), name="eval mode: no dropout")


def test_positional_encoding_rejects_positions_past_max_len() -> None:
    layer = PositionalEncoding(D_MODEL, max_len=4)
    with pytest.raises(ValueError, match=r"positions 0..3, got positions 2..4"):
        layer(torch.zeros(1, 3, D_MODEL), start=2)
    with pytest.raises(ValueError, match=r"expects a floating input \(B, T, 8\), got shape \(1, 3, 6\)"):
        layer(torch.zeros(1, 3, 6))


def test_backward_checks_the_gradient_shape() -> None:
    embedding = TokenEmbedding(VOCAB, D_MODEL)
    embedding(torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"TokenEmbedding\.backward expects .* shape \(1, 3, 8\), got \(3, 8\)"):
        embedding.backward(torch.ones(3, D_MODEL))
    encoding = PositionalEncoding(D_MODEL, 16, dropout=0.5)
    with pytest.raises(RuntimeError, match=r"PositionalEncoding\.backward called before forward"):
        encoding.backward(torch.ones(1, 3, D_MODEL))
    encoding(torch.zeros(2, 3, D_MODEL))
    with pytest.raises(ValueError, match=r"PositionalEncoding\.backward expects .* shape \(2, 3, 8\), got \(1, 3, 8\)"):
        encoding.backward(torch.ones(1, 3, D_MODEL))
