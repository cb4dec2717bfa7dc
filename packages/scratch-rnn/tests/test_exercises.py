"""The exercises: each checker passes its solution and names a wrong gradient, a learner's typical mistake is caught
by name, and each exercise's forward (and solution) is the package's own cell, so the exercise teaches the real layer.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from scratch_engine.tools.exercises import Exercise
from scratch_engine.tools.testing import assert_checks_both_ways
from scratch_rnn import GRUCell, LSTMCell, RNNCell
from scratch_rnn.exercises import EXERCISES, gru_cell, lstm_cell, rnn_cell

CELLS: dict[str, tuple[Exercise, type[Any]]] = {
    "rnn": (rnn_cell, RNNCell),
    "lstm": (lstm_cell, LSTMCell),
    "gru": (gru_cell, GRUCell),
}
PARAMETERS = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
TIGHT = {"atol": 1e-12, "rtol": 1e-12}


def package_cell(exercise: Exercise, layer: type[Any]) -> tuple[Any, dict[str, Tensor], Any]:
    """The package's cell holding the exercise's parameters (float64), the exercise's inputs, and the cell's state."""
    inputs = exercise.inputs()
    cell = layer(inputs["x"].shape[1], inputs["h"].shape[1]).to(dtype=torch.float64)
    device = cell.weight_ih.data.device  # the test device (SCRATCH_TEST_DEVICE); the exercises draw on the CPU
    for ours, theirs in PARAMETERS.items():
        getattr(cell, theirs).data.copy_(inputs[ours])
    state = (inputs["h"].to(device), inputs["c"].to(device)) if "c" in inputs else inputs["h"].to(device)
    return cell, inputs, state


def as_tuple(value: Any) -> tuple[Tensor, ...]:
    """A cell's state, ``h`` or ``(h, c)``, as a tuple of CPU tensors."""
    return tuple(t.cpu() for t in value) if isinstance(value, tuple) else (value.cpu(),)


def to_device(value: Any, device: torch.device) -> Any:
    return tuple(t.to(device) for t in value) if isinstance(value, tuple) else value.to(device)


def test_every_exercise_is_listed_once() -> None:
    assert (rnn_cell, lstm_cell, gru_cell) == EXERCISES
    assert len({exercise.title for exercise in EXERCISES}) == 3


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.title)
def test_the_checker_passes_the_solution_and_names_each_wrong_gradient(exercise: Exercise) -> None:
    assert_checks_both_ways(exercise)


@pytest.mark.parametrize("arch", list(CELLS))
def test_the_forward_is_the_package_cells_forward(arch: str) -> None:
    exercise, layer = CELLS[arch]
    cell, inputs, state = package_cell(exercise, layer)
    ours = cell(inputs["x"].to(cell.weight_ih.data.device), state)
    for got, want in zip(as_tuple(exercise.forward(**inputs)), as_tuple(ours), strict=True):
        torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("arch", list(CELLS))
def test_the_solution_is_the_package_cells_backward(arch: str) -> None:
    exercise, layer = CELLS[arch]
    cell, inputs, state = package_cell(exercise, layer)
    device = cell.weight_ih.data.device
    cell.zero_grad()
    output = cell(inputs["x"].to(device), state)
    generator = torch.Generator().manual_seed(7)
    grads = tuple(torch.randn(t.shape, generator=generator, dtype=t.dtype, device="cpu") for t in as_tuple(output))
    grad_output = grads if len(grads) == 2 else grads[0]  # (δh', δc') for the LSTM, δh' for the others
    dx, d_state = cell.backward(to_device(grad_output, device))
    ours = dict(zip(("x", "h", "c"), (dx.cpu(), *as_tuple(d_state)), strict=False))  # no c but for the LSTM
    ours |= {name: getattr(cell, theirs).grad.cpu() for name, theirs in PARAMETERS.items()}
    solution = dict(zip(exercise.wrt, exercise.solution(grad_output, **inputs), strict=True))
    assert ours.keys() == solution.keys()
    for name in exercise.wrt:
        torch.testing.assert_close(solution[name], ours[name], **TIGHT, msg=lambda m, n=name: f"grad of {n}: {m}")


# --------------------------------------------------------------------------- a learner's typical mistakes


def test_rnn_weight_gradient_with_the_output_instead_of_the_input_state_is_caught() -> None:
    def used_h_new(grad: Tensor, x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Any:
        h_new = torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
        da = grad * (1 - h_new**2)
        return da @ W_ih, da @ W_hh, da.T @ x, da.T @ h_new, da.sum(0), da.sum(0)  # δaᵀ h' instead of δaᵀ h

    verdict = rnn_cell.verdict(used_h_new)
    assert verdict.wrong == ("W_hh",)
    assert "hint: δa = δh' ⊙ (1 − h'²)" in str(verdict)


def test_rnn_bias_gradient_averaged_over_the_batch_is_caught() -> None:
    def mean(grad: Tensor, x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Any:
        da = grad * (1 - torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh) ** 2)
        return da @ W_ih, da @ W_hh, da.T @ x, da.T @ h, da.mean(0), da.mean(0)  # mean instead of sum

    assert rnn_cell.verdict(mean).wrong == ("b_ih", "b_hh")


def lstm_backward_with(forgot_h_path_in_dc: bool = False, gate_order: str = "ifgo") -> Any:
    """The LSTM solution with one mistake: ``δc = δc' ⊙ f`` (c' also feeds h'), or the gates concatenated in
    another order than the forward's chunk (i, f, g, o)."""

    def backward(grad_output: tuple[Tensor, Tensor], **inputs: Tensor) -> Any:
        x, h, c, W_ih, W_hh, b_ih, b_hh = (inputs[n] for n in lstm_cell.wrt)
        dh_new, dc_new = grad_output
        a_i, a_f, a_g, a_o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)
        i, f, g, o = a_i.sigmoid(), a_f.sigmoid(), a_g.tanh(), a_o.sigmoid()
        tanh_c = torch.tanh(f * c + i * g)
        dc_tot = dc_new + dh_new * o * (1 - tanh_c**2)
        blocks = {
            "i": dc_tot * g * i * (1 - i),
            "f": dc_tot * c * f * (1 - f),
            "g": dc_tot * i * (1 - g**2),
            "o": dh_new * tanh_c * o * (1 - o),
        }
        da = torch.cat([blocks[gate] for gate in gate_order], dim=1)
        dc = (dc_new if forgot_h_path_in_dc else dc_tot) * f
        return da @ W_ih, da @ W_hh, dc, da.T @ x, da.T @ h, da.sum(0), da.sum(0)

    return backward


def test_lstm_the_solution_rewritten_here_passes() -> None:  # so the mistakes below are the only difference
    assert lstm_cell.verdict(lstm_backward_with())


def test_lstm_cell_gradient_missing_the_path_through_h_is_caught() -> None:
    verdict = lstm_cell.verdict(lstm_backward_with(forgot_h_path_in_dc=True))
    assert verdict.wrong == ("c",)
    assert "hint: c' reaches the loss twice" in str(verdict)


def test_lstm_gates_concatenated_in_the_wrong_order_are_caught() -> None:
    verdict = lstm_cell.verdict(lstm_backward_with(gate_order="ifog"))  # the order of the formulas' names
    assert verdict.wrong == ("x", "h", "W_ih", "W_hh", "b_ih", "b_hh")  # everything but δc = δc'_tot ⊙ f


def gru_backward_with(reset_in_hidden_grad: bool = True, direct_path: bool = True) -> Any:
    """The GRU solution, or with one mistake: ``δg^h = δg^x`` (forgot that r scales the hidden n block), or
    ``δh = δg^h W_hh`` alone (forgot ``h' = ... + z ⊙ h``)."""

    def backward(grad: Tensor, x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Any:
        x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=1)
        h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=1)
        r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
        n = (x_n + r * h_n).tanh()
        da_n = grad * (1 - z) * (1 - n**2)
        da_z = grad * (h - n) * z * (1 - z)
        da_r = da_n * h_n * r * (1 - r)
        d_gx = torch.cat([da_r, da_z, da_n], dim=1)
        d_gh = torch.cat([da_r, da_z, da_n * r], dim=1) if reset_in_hidden_grad else d_gx
        dh = (grad * z if direct_path else 0) + d_gh @ W_hh
        return d_gx @ W_ih, dh, d_gx.T @ x, d_gh.T @ h, d_gx.sum(0), d_gh.sum(0)

    return backward


def test_gru_the_solution_rewritten_here_passes() -> None:
    assert gru_cell.verdict(gru_backward_with())


def test_gru_hidden_gradient_without_the_reset_gate_is_caught() -> None:
    verdict = gru_cell.verdict(gru_backward_with(reset_in_hidden_grad=False))
    assert verdict.wrong == ("h", "W_hh", "b_hh")  # the input side is right: δg^x has no r in it
    assert "hint: the hidden side's n block is scaled by r" in str(verdict)


def test_gru_state_gradient_without_the_update_gates_direct_path_is_caught() -> None:
    assert gru_cell.verdict(gru_backward_with(direct_path=False)).wrong == ("h",)


def test_a_stub_that_returns_nones_is_told_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    def stub(grad_output: object, **inputs: object) -> tuple[None, ...]:
        return (None,) * 7

    assert lstm_cell.verdict(stub).wrong == lstm_cell.wrt
    lstm_cell.check(stub)  # what a learner sees first
    assert capsys.readouterr().out.startswith("✗ LSTMCell: grad of x is missing (None)")
