"""The exercises check both ways, catch the mistakes learners make, and pose the package's own layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from scratch_engine import Parameter
from scratch_engine.tools.exercises import Exercise
from scratch_engine.tools.testing import assert_checks_both_ways
from scratch_transformer.attention import ScaledDotProductAttention, masked_softmax
from scratch_transformer.exercises import EXERCISES, attention, layer_norm, softmax
from scratch_transformer.layernorm import LayerNorm


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.title)
def test_solution_passes_and_each_wrong_gradient_is_named(exercise: Exercise) -> None:
    assert_checks_both_ways(exercise)


def test_the_notebooks_stub_is_told_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    def stub(grad_output: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[None, None, None]:
        return None, None, None  # the notebook's cell before the learner fills it in

    assert attention.verdict(stub).wrong == ("q", "k", "v")
    attention.check(stub)
    printed = capsys.readouterr().out
    assert printed.startswith("✗ scaled dot-product attention: grad of q is missing (None)")
    assert "hint: " in printed


# --------------------------------------------------------------------------- realistic mistakes


def test_softmax_without_the_row_sum_term_is_caught() -> None:
    def elementwise(grad_output: Tensor, scores: Tensor) -> Tensor:
        probs = softmax.forward(scores)
        return probs * grad_output  # as if P_i depended on S_i alone: the Jacobian's diagonal only

    verdict = softmax.verdict(elementwise)
    assert verdict.wrong == ("scores",)
    assert "hint:" in str(verdict)


def test_softmax_summed_over_the_wrong_axis_is_caught() -> None:
    def wrong_axis(grad_output: Tensor, scores: Tensor) -> Tensor:
        probs = softmax.forward(scores)
        return probs * (grad_output - (grad_output * probs).sum(dim=-2, keepdim=True))  # over the queries

    assert softmax.verdict(wrong_axis).wrong == ("scores",)


def test_attention_without_the_scale_breaks_q_and_k_only() -> None:
    def forgot_the_scale(grad_output: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        probs = attention_probs(q, k)
        grad_v = probs.transpose(-2, -1) @ grad_output
        grad_probs = grad_output @ v.transpose(-2, -1)
        grad_scores = probs * (grad_probs - (grad_probs * probs).sum(dim=-1, keepdim=True))
        return grad_scores @ k, grad_scores.transpose(-2, -1) @ q, grad_v  # no 1/√d on the way back

    verdict = attention.verdict(forgot_the_scale)
    assert verdict.wrong == ("q", "k")
    assert "grad of v matches" in str(verdict)


def test_attention_taking_the_softmax_backward_of_the_scores_is_caught() -> None:
    def used_the_scores(grad_output: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = q @ k.transpose(-2, -1) * scale
        probs = attention_probs(q, k)
        grad_probs = grad_output @ v.transpose(-2, -1)
        grad_scores = scores * (grad_probs - (grad_probs * scores).sum(dim=-1, keepdim=True))  # S where P belongs
        return grad_scores @ k * scale, grad_scores.transpose(-2, -1) @ q * scale, probs.transpose(-2, -1) @ grad_output

    assert attention.verdict(used_the_scores).wrong == ("q", "k")


def test_layer_norm_treating_the_mean_and_variance_as_constants_is_caught() -> None:
    def constant_statistics(
        grad_output: Tensor, x: Tensor, gamma: Tensor, beta: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        _, grad_gamma, grad_beta = layer_norm.solution(grad_output, x, gamma, beta)
        centred = x - x.mean(dim=-1, keepdim=True)
        s = 1.0 / torch.sqrt((centred**2).mean(dim=-1, keepdim=True) + 1e-5)
        return grad_output * gamma * s, grad_gamma, grad_beta  # dx̂/dx = s, as if μ and σ did not move with x

    verdict = layer_norm.verdict(constant_statistics)
    assert verdict.wrong == ("x",)
    assert "grad of gamma, beta match" in str(verdict)


def test_layer_norm_averaging_the_parameter_gradients_over_the_rows_is_caught() -> None:
    def mean_over_rows(grad_output: Tensor, x: Tensor, gamma: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        grad_x, _, _ = layer_norm.solution(grad_output, x, gamma, beta)
        x_hat = (x - x.mean(dim=-1, keepdim=True)) / torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + 1e-5)
        return grad_x, (grad_output * x_hat).mean(dim=(0, 1)), grad_output.mean(dim=(0, 1))  # mean, not sum

    assert layer_norm.verdict(mean_over_rows).wrong == ("gamma", "beta")


# --------------------------------------------------------------------------- the exercises pose the package's layers


def attention_probs(q: Tensor, k: Tensor) -> Tensor:
    return softmax.forward(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))


def test_softmax_forward_is_the_packages() -> None:
    scores = softmax.inputs()["scores"]
    torch.testing.assert_close(softmax.forward(scores), masked_softmax(scores.clone()), rtol=0, atol=1e-12)


def test_attention_forward_is_the_packages() -> None:
    inputs = attention.inputs()
    ours = ScaledDotProductAttention()(inputs["q"], inputs["k"], inputs["v"])
    torch.testing.assert_close(attention.forward(**inputs), ours, rtol=0, atol=1e-12)


def test_layer_norm_forward_is_the_packages() -> None:
    inputs = layer_norm.inputs()
    norm = LayerNorm(5).to(dtype=torch.float64)
    norm.weight = Parameter(inputs["gamma"].clone())
    norm.bias = Parameter(inputs["beta"].clone())
    assert norm.eps == 1e-5
    torch.testing.assert_close(layer_norm.forward(**inputs), norm(inputs["x"]), rtol=0, atol=1e-12)


def test_the_exercises_draw_float64_inputs_of_distinct_sizes() -> None:
    for exercise in EXERCISES:
        for name, value in exercise.inputs().items():
            assert value.dtype == torch.float64, (exercise.title, name)
    assert [tuple(t.shape) for t in attention.inputs().values()] == [(2, 3, 4), (2, 5, 4), (2, 5, 6)]
