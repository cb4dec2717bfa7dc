"""Dense, Dropout and Embedding against torch.nn (forward) and autograd (backward)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scratch_engine.layers import Dense, Dropout, Embedding
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs, seeded_generator
from scratch_engine.tools.twin import from_torch

SHAPES = [(1, 5), (7, 5), (4, 3, 5)]  # batch size 1, a batch, (batch, time, features)

# --------------------------------------------------------------------------- Dense


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_dense_forward_matches_torch(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    reference = nn.Linear(5, 4, bias=bias).double()
    layer = from_torch(reference)
    (x,) = random_inputs(shape)
    assert_close(layer(x), reference(x).detach(), name="Dense forward")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_dense_backward_matches_autograd(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    layer = Dense(5, 4, bias=bias).to(dtype=torch.float64)
    (x,) = random_inputs(shape)
    check_backward(layer, x)


def test_dense_bias_false_has_only_weight() -> None:
    layer = Dense(3, 2, bias=False)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]


def test_dense_kaiming_std() -> None:
    torch.manual_seed(0)
    weight = Dense(512, 512, init="kaiming").weight.data
    expected = math.sqrt(2.0 / 512)
    assert abs(weight.std().item() - expected) < 0.1 * expected
    assert abs(weight.mean().item()) < 0.1 * expected


def test_dense_xavier_bound() -> None:
    torch.manual_seed(0)
    weight = Dense(512, 256, init="xavier").weight.data
    bound = math.sqrt(6.0 / (512 + 256))
    assert weight.abs().max().item() <= bound
    assert weight.abs().max().item() > 0.99 * bound
    expected_std = bound / math.sqrt(3.0)  # std of U(-b, b)
    assert abs(weight.std().item() - expected_std) < 0.1 * expected_std


def test_dense_bias_starts_at_zero() -> None:
    assert torch.equal(Dense(3, 2).bias.data, torch.zeros(2))  # type: ignore[union-attr]


def test_dense_unknown_init_raises() -> None:
    with pytest.raises(ValueError, match="init"):
        Dense(3, 2, init="normal")  # type: ignore[arg-type]


def test_dense_gradient_accumulates() -> None:
    torch.manual_seed(0)
    layer = Dense(5, 4).to(dtype=torch.float64)
    x, g = random_inputs((3, 5), (3, 4))
    layer(x)
    layer.backward(g)
    once_w, once_b = layer.weight.grad.clone(), layer.bias.grad.clone()  # type: ignore[union-attr]
    layer(x)
    layer.backward(g)
    assert_close(layer.weight.grad, 2 * once_w, name="weight grad after two backward")
    assert_close(layer.bias.grad, 2 * once_b, name="bias grad after two backward")  # type: ignore[union-attr]
    layer.zero_grad()
    assert not layer.weight.grad.any()


def test_dense_wrong_last_dimension_raises() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        Dense(5, 4)(torch.randn(3, 6))


def test_dense_integer_input_raises() -> None:
    with pytest.raises(ValueError, match="int64"):
        Dense(5, 4)(torch.ones(3, 5, dtype=torch.int64))


def test_dense_backward_before_forward_raises() -> None:
    with pytest.raises(RuntimeError, match="before forward"):
        Dense(5, 4).backward(torch.randn(3, 4))


def test_dense_repr() -> None:
    assert repr(Dense(5, 4, bias=False)) == "Dense(in_features=5, out_features=4, bias=False)"


# --------------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5])
def test_dropout_eval_is_identity_like_torch(shape: tuple[int, ...], p: float) -> None:
    layer = from_torch(nn.Dropout(p)).eval()
    assert layer.p == p
    (x,) = random_inputs(shape)
    out = layer(x)
    assert torch.equal(out, x)
    assert_close(out, nn.Dropout(p).eval()(x), name="Dropout eval forward")
    check_backward(layer, x)  # gradient passes straight through


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_train_backward_uses_the_same_mask(shape: tuple[int, ...], p: float) -> None:
    torch.manual_seed(0)
    layer = Dropout(p)
    (x,) = random_inputs(shape)
    check_backward(layer, x)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_train_statistics(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, dtype=torch.float64)
    out = Dropout(p)(x)
    zero_fraction = (out == 0).double().mean().item()
    assert abs(zero_fraction - p) < 0.005
    assert abs(out.mean().item() - 1.0) < 0.01  # E[output] = input
    survivors = out[out != 0]
    assert torch.equal(survivors, torch.full_like(survivors, 1.0 / (1.0 - p)))


def test_dropout_train_scales_survivors_of_a_random_input_exactly() -> None:
    torch.manual_seed(0)
    (x,) = random_inputs((50, 40))
    out = Dropout(0.25)(x)
    kept = out != 0
    assert_close(out[kept], x[kept] / 0.75, atol=0, rtol=1e-15, name="survivors")


def test_dropout_train_draws_a_new_mask_each_call_and_follows_the_seed() -> None:
    x = torch.ones(64, 64)
    layer = Dropout(0.5)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)


def test_dropout_p_zero_is_identity_in_train() -> None:
    (x,) = random_inputs((4, 3, 5))
    layer = Dropout(0.0)
    assert layer.training
    assert torch.equal(layer(x), x)
    g = torch.randn_like(x)
    assert torch.equal(layer.backward(g), g)


def test_dropout_p_one_zeroes_output_and_gradient() -> None:
    (x,) = random_inputs((4, 5))
    layer = Dropout(1.0)
    out = layer(x)
    assert torch.equal(out, torch.zeros_like(x))
    assert torch.equal(out, nn.Dropout(1.0)(x))
    assert torch.equal(layer.backward(torch.ones_like(x)), torch.zeros_like(x))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_p_out_of_range_raises(p: float) -> None:
    with pytest.raises(ValueError, match=str(p)):
        Dropout(p)


def test_dropout_keeps_dtype_and_rejects_integers() -> None:
    assert Dropout(0.5)(torch.randn(3, 4, dtype=torch.float16)).dtype == torch.float16
    with pytest.raises(ValueError, match="int32"):
        Dropout(0.5)(torch.ones(3, dtype=torch.int32))


def test_dropout_repr() -> None:
    assert repr(Dropout(0.1)) == "Dropout(p=0.1)"


# --------------------------------------------------------------------------- Embedding

INDEX_SHAPES = [(), (1,), (9,), (3, 4), (2, 3, 4)]  # () is a single token id


def _indices(shape: tuple[int, ...], high: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=seeded_generator(seed))


@pytest.mark.parametrize("shape", INDEX_SHAPES)
@pytest.mark.parametrize("padding_idx", [None, 0, 3])
def test_embedding_forward_matches_torch(shape: tuple[int, ...], padding_idx: int | None) -> None:
    torch.manual_seed(0)
    reference = nn.Embedding(10, 6, padding_idx=padding_idx).double()
    layer = from_torch(reference)
    assert layer.padding_idx == padding_idx
    idx = _indices(shape)
    assert_close(layer(idx), reference(idx).detach(), name="Embedding forward")


@pytest.mark.parametrize("shape", INDEX_SHAPES)
def test_embedding_backward_matches_autograd(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer = Embedding(10, 6).to(dtype=torch.float64)
    check_backward(layer, _indices(shape))


@pytest.mark.parametrize("shape", INDEX_SHAPES)
@pytest.mark.parametrize("padding_idx", [0, 3])
def test_embedding_padding_grad_matches_torch(shape: tuple[int, ...], padding_idx: int) -> None:
    torch.manual_seed(0)
    reference = nn.Embedding(10, 6, padding_idx=padding_idx).double()
    layer = from_torch(reference)
    idx = _indices(shape)
    idx.view(-1)[0] = padding_idx  # make sure the padding row is looked up
    out = reference(idx)
    (g,) = random_inputs(out.shape, seed=1)
    out.backward(g)
    layer(idx)
    assert layer.backward(g) is None
    assert reference.weight.grad is not None
    assert_close(layer.weight.grad, reference.weight.grad, name="Embedding weight grad with padding")
    assert not layer.weight.grad[padding_idx].any()


def test_embedding_repeated_indices_accumulate() -> None:
    layer = Embedding(5, 3).to(dtype=torch.float64)
    idx = torch.tensor([[2, 2], [2, 4]])
    layer(idx)
    layer.backward(torch.ones(2, 2, 3, dtype=torch.float64))
    expected = torch.zeros(5, 3, dtype=torch.float64)
    expected[2] = 3.0
    expected[4] = 1.0
    assert torch.equal(layer.weight.grad, expected)
    layer(idx)
    layer.backward(torch.ones(2, 2, 3, dtype=torch.float64))  # and across calls
    assert torch.equal(layer.weight.grad, 2 * expected)


def test_embedding_init_like_torch() -> None:
    torch.manual_seed(0)
    layer = Embedding(1000, 64, padding_idx=-1)
    assert layer.padding_idx == 999
    assert not layer.weight.data[999].any()
    assert abs(layer.weight.data.std().item() - 1.0) < 0.02
    assert abs(layer.weight.data.mean().item()) < 0.02


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_embedding_accepts_any_integer_dtype(dtype: torch.dtype) -> None:
    layer = Embedding(10, 4)
    idx = _indices((3, 2))
    assert torch.equal(layer(idx.to(dtype)), layer(idx))


@pytest.mark.parametrize("bad", [-1, 10])
def test_embedding_out_of_range_raises(bad: int) -> None:
    idx = torch.tensor([[1, bad], [3, 4]])
    with pytest.raises(ValueError, match=rf"\[0, 10\).*{bad}"):
        Embedding(10, 4)(idx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_embedding_non_integer_indices_raise(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=str(dtype)):
        Embedding(10, 4)(torch.zeros(3, dtype=dtype))


def test_embedding_bad_construction_raises() -> None:
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(10, 4, padding_idx=10)
    with pytest.raises(ValueError, match="positive"):
        Embedding(0, 4)


def test_embedding_from_torch_rejects_unsupported_options() -> None:
    with pytest.raises(ValueError, match="max_norm"):
        from_torch(nn.Embedding(10, 4, max_norm=1.0))


def test_embedding_repr() -> None:
    assert repr(Embedding(10, 4, padding_idx=0)) == "Embedding(10, 4, padding_idx=0)"
