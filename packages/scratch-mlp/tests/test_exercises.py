"""The exercises: each checker passes its solution, catches a learner's usual mistake by name, and poses the
package's own layer (its forward is the layer's forward, to float64 rounding)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from scratch_engine.tools.exercises import Exercise
from scratch_engine.tools.testing import assert_checks_both_ways
from scratch_mlp import CrossEntropyLoss, Dense, Sigmoid
from scratch_mlp.exercises import EXERCISES, cross_entropy, dense, sigmoid


@pytest.fixture(autouse=True)
def on_the_cpu() -> Iterator[None]:
    """The exercises are CPU float64 work (their generators are CPU ones), also under ``SCRATCH_TEST_DEVICE``."""
    with torch.device("cpu"):
        yield


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.title for e in EXERCISES])
def test_the_checker_passes_the_solution_and_names_each_wrong_gradient(exercise: Exercise) -> None:
    assert_checks_both_ways(exercise)


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.title for e in EXERCISES])
def test_inputs_are_float64_with_a_hint(exercise: Exercise) -> None:
    inputs = exercise.inputs()
    assert all(inputs[name].dtype == torch.float64 for name in exercise.wrt)
    assert exercise.hint
    assert "\n" not in exercise.hint


# --------------------------------------------------------------------------- a learner's usual mistakes


def test_dense_with_the_weight_gradient_transposed_is_caught_on_the_weight_alone() -> None:
    def transposed(grad_output: Tensor, x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return grad_output @ W, x.T @ grad_output, grad_output.sum(dim=0)  # xᵀ g: (in, out), as if W were (in, out)

    verdict = dense.verdict(transposed)
    assert not verdict
    assert verdict.wrong == ("W",)
    assert "grad of W has shape (4, 3); it should be (3, 4)" in str(verdict)
    assert "grad of x, b match" in str(verdict)
    assert "hint: dL/dW = gᵀ x" in str(verdict)


def test_dense_with_the_mean_over_the_batch_for_the_bias_is_caught_on_b_alone() -> None:
    def mean_bias(grad_output: Tensor, x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return grad_output @ W, grad_output.T @ x, grad_output.mean(dim=0)  # the loss's 1/N is already in g

    verdict = dense.verdict(mean_bias)
    assert not verdict
    assert verdict.wrong == ("b",)
    assert verdict.lines[0].startswith("✗ Dense: grad of b is wrong: max abs difference")


def test_sigmoid_differentiated_at_the_input_instead_of_the_output_is_caught() -> None:
    def with_the_input(grad_output: Tensor, x: Tensor) -> Tensor:
        return grad_output * x * (1 - x)  # y (1 - y) written with x: σ'(x) needs y = σ(x)

    verdict = sigmoid.verdict(with_the_input)
    assert not verdict
    assert verdict.wrong == ("x",)
    assert "hint: σ'(x) = y (1 - y)" in str(verdict)


def test_cross_entropy_without_the_batch_mean_is_caught() -> None:
    def summed(grad_output: Tensor, logits: Tensor, target: Tensor) -> Tensor:
        probs = logits.softmax(dim=-1)
        one_hot = torch.zeros_like(probs).scatter_(1, target.unsqueeze(1), 1.0)
        return (probs - one_hot) * grad_output  # forgot the 1/N of the mean over the batch

    verdict = cross_entropy.verdict(summed)
    assert not verdict
    assert verdict.wrong == ("logits",)
    assert verdict.lines[0].startswith("✗ softmax cross-entropy: grad of logits is wrong")
    assert "/ N" in str(verdict)  # the hint names the mean


def test_cross_entropy_ignoring_grad_output_is_caught() -> None:
    def unscaled(grad_output: Tensor, logits: Tensor, target: Tensor) -> Tensor:
        probs = logits.softmax(dim=-1)
        one_hot = torch.zeros_like(probs).scatter_(1, target.unsqueeze(1), 1.0)
        return (probs - one_hot) / len(target)  # right for L alone, wrong once L feeds something else

    assert cross_entropy.verdict(unscaled).wrong == ("logits",)


# --------------------------------------------------------------------------- the exercises pose the real layers


def test_dense_exercise_is_the_package_dense() -> None:
    inputs = dense.inputs()
    layer = Dense(inputs["W"].shape[1], inputs["W"].shape[0]).to(torch.float64)
    layer.weight.data, layer.bias.data = inputs["W"].clone(), inputs["b"].clone()  # W (out, in), as Dense keeps it
    assert layer.weight.shape == inputs["W"].shape
    torch.testing.assert_close(layer(inputs["x"]), dense.forward(**inputs), atol=1e-12, rtol=0)


def test_sigmoid_exercise_is_the_package_sigmoid() -> None:
    x = sigmoid.inputs()["x"]
    torch.testing.assert_close(Sigmoid()(x), sigmoid.forward(x=x), atol=1e-12, rtol=0)


def test_cross_entropy_exercise_is_the_package_loss_and_its_gradient() -> None:
    inputs = cross_entropy.inputs()
    loss = CrossEntropyLoss()
    value = loss(inputs["logits"], inputs["target"])
    torch.testing.assert_close(value, cross_entropy.forward(**inputs), atol=1e-12, rtol=0)
    grad_output = torch.tensor(0.7, dtype=torch.float64)
    torch.testing.assert_close(
        loss.backward(grad_output), cross_entropy.solution(grad_output, **inputs), atol=1e-12, rtol=0
    )
