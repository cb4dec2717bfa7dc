"""The Module contract: parameter discovery, state dicts, devices and dtypes, modes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scratch_engine import Dense, Dropout, Module, Parameter, ReLU, Sequential
from scratch_engine.module import scalar
from scratch_engine.tools.testing import check_backward


class Tied(Module):
    """A shared parameter held twice and a child in a dict: both must be found once."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = Parameter(torch.ones(3))
        self.blocks = {"first": Dense(3, 3), "second": Dense(3, 2)}
        self.again = self.scale
        self.register_buffer("running", torch.zeros(3))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks["second"](self.blocks["first"](x * self.scale.data))


def test_parameters_found_in_attributes_containers_and_once_when_shared() -> None:
    names = [name for name, _ in Tied().named_parameters()]
    assert names == ["scale", "blocks.first.weight", "blocks.first.bias", "blocks.second.weight", "blocks.second.bias"]
    nested = Sequential([Dense(2, 2, bias=False)])
    nested.extra = ([Dense(2, 1)], {"tied": nested.layers[0].weight})  # type: ignore[attr-defined]
    assert [name for name, _ in nested.named_parameters("net.")] == [
        "net.layers.0.weight",
        "net.extra.0.0.weight",
        "net.extra.0.0.bias",
    ]


def test_state_dict_includes_buffers_and_round_trips() -> None:
    torch.manual_seed(0)
    a, b = Tied(), Tied()
    a.running += 5
    assert set(a.state_dict()) == {n for n, _ in a.named_parameters()} | {"running", "count"}
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_load_state_dict_from_another_model_names_the_problem() -> None:
    model = Sequential(Dense(4, 8), ReLU(), Dense(8, 2))
    with pytest.raises(ValueError, match=r"missing keys \['layers.2.weight'") as info:
        model.load_state_dict(Sequential(Dense(4, 8)).state_dict())
    assert "another model" in str(info.value)
    with pytest.raises(ValueError, match=r"shape mismatch.*layers.0.weight: checkpoint \(8, 5\) vs model \(8, 4\)"):
        model.load_state_dict(Sequential(Dense(5, 8), ReLU(), Dense(8, 2)).state_dict())
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        model.load_state_dict({**model.state_dict(), "extra": torch.zeros(1)})


def test_to_changes_dtype_of_parameters_grads_and_floating_buffers_only() -> None:
    model = Tied().to(dtype=torch.float64)
    assert all(p.data.dtype == torch.float64 and p.grad.dtype == torch.float64 for p in model.parameters())
    assert model.running.dtype == torch.float64
    assert model.count.dtype == torch.long


def test_to_takes_a_dtype_first_like_torch_and_refuses_non_floating_dtypes() -> None:
    model = Tied().to(torch.float64)  # positional, as torch.nn.Module.to(torch.float64): it failed deep in torch
    assert {p.data.dtype for p in model.parameters()} == {torch.float64}
    assert model.running.dtype == torch.float64
    assert model.count.dtype == torch.long
    assert {p.grad.dtype for p in model.parameters()} == {torch.float64}
    for dtype in (torch.int64, torch.bool):
        with pytest.raises(ValueError, match=f"parameters must stay floating point .*got dtype {dtype}"):
            Dense(2, 2).to(dtype=dtype)
    with pytest.raises(TypeError, match="two dtypes"):
        Dense(2, 2).to(torch.float64, dtype=torch.float32)


def test_train_eval_reaches_every_descendant() -> None:
    model = Sequential(Dense(2, 2), Sequential(Dropout(0.5), ReLU()))
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad_and_num_parameters() -> None:
    model = Sequential(Dense(3, 4), ReLU(), Dense(4, 2))
    assert model.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2
    model(torch.randn(5, 3))
    model.backward(torch.ones(5, 2))
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad.abs().sum() == 0 for p in model.parameters())


@pytest.mark.parametrize("batch", [1, 7])
def test_sequential_backward_matches_autograd(batch: int) -> None:
    torch.manual_seed(batch)
    model = Sequential(Dense(6, 5), ReLU(), Dense(5, 5, init="xavier"), ReLU(), Dense(5, 3)).to(dtype=torch.float64)
    check_backward(model, torch.randn(batch, 6, dtype=torch.float64))


def test_sequential_rejects_non_modules_and_parameter_rejects_non_tensors() -> None:
    with pytest.raises(TypeError, match="Sequential item 1 is a builtin_function_or_method, not a Module"):
        Sequential(Dense(2, 2), torch.relu)
    with pytest.raises(TypeError, match=r"expects a torch\.Tensor"):
        Parameter([1.0, 2.0])  # type: ignore[arg-type]


def test_repr_shows_the_tree() -> None:
    text = repr(Sequential(Dense(2, 3), ReLU()))
    assert "Dense(in_features=2, out_features=3, bias=True)" in text
    assert "(layers.1): ReLU()" in text


class Flat(Module):  # a parameter-free first layer, as Flatten is
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), -1)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the layer before the one that skips dL/dx is never asked for its gradient")


def test_skip_data_gradient_spares_one_product_and_no_parameter_gradient() -> None:
    from scratch_engine import skip_data_gradient

    torch.manual_seed(0)
    x, grad = torch.randn(7, 2, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    results = []
    for skip in (False, True):
        torch.manual_seed(1)
        first, inner = Dense(6, 5), Dense(5, 3)
        model = Sequential(Sequential(Flat(), first, ReLU()), inner).to(torch.float64)
        if skip:
            skip_data_gradient(model)
            assert (first.input_grad, inner.input_grad) == (False, True)
            assert model(x).shape == (7, 3)
            assert model.backward(grad) is None  # Flat.backward is never called
        else:
            model(x)
            with pytest.raises(AssertionError, match="never asked"):
                model.backward(grad)
            model.zero_grad()
            model(x)
            first.input_grad = False  # by hand, as before the engine did it
            model.backward(grad)
        results.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_skip_data_gradient_leaves_models_without_such_a_layer_alone() -> None:
    from scratch_engine import Embedding, skip_data_gradient

    embedding = Embedding(10, 4)
    skip_data_gradient(embedding)  # no input_grad: nothing to do
    assert not hasattr(embedding, "input_grad")
    activation = Sequential(ReLU())
    skip_data_gradient(activation)  # no layer with parameters: its backward still returns dL/dx
    x = torch.tensor([[-1.0, 2.0]])
    activation(x)
    assert torch.equal(activation.backward(torch.ones(1, 2)), torch.tensor([[0.0, 1.0]]))


def test_the_engine_skips_the_data_gradient_of_the_model_it_trains() -> None:
    from scratch_engine import CrossEntropyLoss, DataLoader, Engine, GradientDescent

    model = Sequential(Dense(4, 8), ReLU(), Dense(8, 3))
    Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.1), progress=False).fit(
        DataLoader(torch.randn(16, 4), torch.randint(0, 3, (16,)), batch_size=8), 1
    )
    assert (model[0].input_grad, model[2].input_grad) == (False, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scalar_is_the_number_an_operation_would_use(dtype: torch.dtype) -> None:
    x = torch.randn(5, 7, dtype=torch.float64).to(dtype)
    value = 1.0 / 3.0  # not exact in any binary format: its rounding to the dtype is the point
    constant = scalar(value, x)
    assert isinstance(constant, Tensor)
    assert constant.dim() == 0
    assert constant.dtype == dtype
    assert torch.equal(x * constant, x * value)
    assert torch.equal(x + constant, x + value)
    assert scalar(value, x) is constant  # made once


def test_scalar_made_while_sampling_is_an_ordinary_tensor_autograd_can_use() -> None:
    with torch.inference_mode():
        scalar(0.125, torch.ones(2, dtype=torch.float64))  # a sampler asks for it first
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (x * scalar(0.125, x)).sum().backward()  # autograd saves it for the backward: an inference tensor would fail
    assert x.grad is not None
    assert x.grad.tolist() == [0.125] * 3


def test_scalar_leaves_a_16_bit_operation_its_number() -> None:
    x = torch.randn(5, 7).bfloat16()  # torch keeps the number in float32 here: a bfloat16 one would round it
    assert scalar(1.0 / 3.0, x) == 1.0 / 3.0
