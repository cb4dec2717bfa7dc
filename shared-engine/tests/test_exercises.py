"""The exercise checker: a right backward passes, a wrong one is named, with how far off and where."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scratch_engine.tools.exercises import Exercise


def dense_forward(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    return x @ W.T + b


def dense_backward(grad_y: Tensor, x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return grad_y @ W, grad_y.T @ x, grad_y.sum(0)


def dense_inputs(g: torch.Generator) -> dict[str, Tensor]:
    shapes = {"x": (5, 3), "W": (4, 3), "b": (4,)}
    return {name: torch.randn(shape, generator=g, dtype=torch.float64) for name, shape in shapes.items()}


DENSE = Exercise("Dense", dense_forward, dense_inputs, ("x", "W", "b"), dense_backward, hint="dL/dW = gᵀx")


def test_the_solution_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert DENSE.check(DENSE.solution) is None  # it prints
    verdict = DENSE.verdict(DENSE.solution)
    assert verdict.passed
    assert verdict.wrong == ()
    assert capsys.readouterr().out.startswith("✓ Dense: every gradient matches autograd")


def test_a_wrong_gradient_is_named_with_its_error() -> None:
    def wrong(grad_y: Tensor, x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return grad_y @ W, grad_y.T @ x, grad_y.mean(0)  # mean instead of sum

    verdict = DENSE.verdict(wrong)
    assert not verdict
    assert verdict.wrong == ("b",)
    first = verdict.lines[0]
    assert first.startswith("✗ Dense: grad of b is wrong: max abs difference")
    assert "at index (" in first
    assert "grad of x, W match" in str(verdict)
    assert "hint: dL/dW" in str(verdict)


def test_shapes_missing_gradients_counts_and_exceptions_are_one_line() -> None:
    def transposed(grad_y: Tensor, x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, None]:
        return grad_y @ W, x.T @ grad_y, None

    verdict = DENSE.verdict(transposed)
    assert verdict.wrong == ("W", "b")
    assert "grad of W has shape (3, 4); it should be (4, 3)" in str(verdict)
    assert "grad of b is missing" in str(verdict)

    two = DENSE.verdict(lambda g, x, W, b: (x, W))
    assert "returned 2 gradients; it should return 3: x, W, b" in str(two)

    def broken(grad_y: Tensor, x: Tensor, W: Tensor, b: Tensor) -> Tensor:
        return grad_y @ x  # (5, 4) @ (5, 3): a shape error

    line = str(DENSE.verdict(broken))
    assert line.startswith("✗ Dense: your backward raised RuntimeError")
    assert "return grad_y @ x" in line
    assert "\n" not in line


def test_a_dict_of_gradients_is_read_by_name() -> None:
    assert DENSE.verdict(lambda g, x, W, b: {"b": g.sum(0), "W": g.T @ x, "x": g @ W})


def test_the_both_ways_helper_accepts_a_right_checker_and_rejects_a_wrong_solution() -> None:
    from scratch_engine.tools.testing import assert_checks_both_ways

    assert_checks_both_ways(DENSE)
    wrong = Exercise("Dense", dense_forward, dense_inputs, ("x", "W", "b"), lambda g, x, W, b: (g @ W, g.T @ x, g[0]))
    with pytest.raises(AssertionError, match="solution fails its own check"):
        assert_checks_both_ways(wrong)
