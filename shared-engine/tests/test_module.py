"""The Module contract: parameter discovery, state dicts, devices and dtypes, modes."""

from __future__ import annotations

import pytest
import torch

from scratch_engine import Dense, Dropout, Module, Parameter, ReLU, Sequential
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
