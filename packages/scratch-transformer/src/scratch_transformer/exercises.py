r"""Exercises: write the backward of attention's softmax, of scaled dot-product attention and of layer normalisation.

Each :class:`~scratch_engine.tools.exercises.Exercise` holds a layer's forward as plain tensor code, the very math
of this package's layer (its shapes, its parameter layout, its ``eps``), so that the backward you write *is* that
layer's backward. Write ``backward(grad_output, **inputs)`` returning one gradient per name in ``wrt``, then::

    from scratch_transformer.exercises import attention
    attention.check(my_attention_backward)   # one line: ✓, or ✗ naming the wrong gradient, how far off and where
    attention.inputs()                       # the inputs it draws, to look at their shapes
    attention.show_solution()                # when you are done (or stuck)

- :data:`softmax`: :math:`P = \operatorname{softmax}(S)` over the last dimension
  (:func:`~scratch_transformer.attention.masked_softmax` without a mask); the gradient of ``scores``.
- :data:`attention`: :math:`O = \operatorname{softmax}(q k^\top/\sqrt{d})\, v`
  (:class:`~scratch_transformer.attention.ScaledDotProductAttention`, no mask, no dropout); the gradients of
  ``q``, ``k``, ``v``.
- :data:`layer_norm`: :math:`y = \gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta` over the last dimension
  (:class:`~scratch_transformer.layernorm.LayerNorm`, ``eps = 1e-5``); the gradients of ``x``, ``gamma``, ``beta``.

The solutions live here, not in the notebook that poses them
(``packages/scratch-transformer/notebooks/transformer_from_scratch.ipynb``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scratch_engine.tools.exercises import Exercise

LAYER_NORM_EPS = 1e-5  # LayerNorm's default eps, the one every layer of the package uses


def _normal(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


# --------------------------------------------------------------------------- softmax over the last dimension


def softmax_forward(scores: Tensor) -> Tensor:
    """``(..., T_k)`` -> ``(..., T_k)``, each row summing to 1: what ``masked_softmax(scores)`` computes, no mask."""
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp()  # e^{S - max}: the shift changes nothing but the range
    return e / e.sum(dim=-1, keepdim=True)  # P = e / sum_j e_j


def softmax_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {"scores": 2.0 * _normal(generator, 2, 3, 5)}  # 2 heads, 3 queries, 5 keys


def softmax_backward(grad_output: Tensor, scores: Tensor) -> Tensor:
    probs = softmax_forward(scores)  # recompute P (a layer would have cached it)
    # P_i = e_i / sum_j e_j  ->  dS_i = P_i (dP_i - sum_j dP_j P_j): diag(P) - P Pᵀ applied to dP, row by row
    return probs * (grad_output - (grad_output * probs).sum(dim=-1, keepdim=True))


softmax = Exercise(
    "softmax",
    softmax_forward,
    softmax_inputs,
    ("scores",),
    softmax_backward,
    hint="every P_j depends on every S_i: dS = P ⊙ (dP − Σ_j dP_j P_j), the sum over each row (the last dimension)",
)


# --------------------------------------------------------------------------- scaled dot-product attention


def attention_forward(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``q (..., T_q, d)``, ``k (..., T_k, d)``, ``v (..., T_k, d_v)`` -> ``(..., T_q, d_v)``, as the package's
    ScaledDotProductAttention computes it (no mask, no dropout)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # S = q kᵀ / √d   (..., T_q, T_k)
    probs = softmax_forward(scores)  # P = softmax(S), over the keys
    return probs @ v  # O = P v


def attention_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    # one batch of 2 sequences x heads, 3 queries over 5 keys, width d = 4, values of width 6
    return {"q": _normal(generator, 2, 3, 4), "k": _normal(generator, 2, 5, 4), "v": _normal(generator, 2, 5, 6)}


def attention_backward(grad_output: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    scale = 1.0 / math.sqrt(q.shape[-1])
    probs = softmax_forward(q @ k.transpose(-2, -1) * scale)  # recompute P (the layer caches it)
    grad_v = probs.transpose(-2, -1) @ grad_output  # O = P v  ->  dL/dv = Pᵀ g
    grad_probs = grad_output @ v.transpose(-2, -1)  # O = P v  ->  dL/dP = g vᵀ
    grad_scores = probs * (grad_probs - (grad_probs * probs).sum(dim=-1, keepdim=True))  # P = softmax(S)
    grad_q = grad_scores @ k * scale  # S = q kᵀ / √d  ->  dL/dq = dS k / √d
    grad_k = grad_scores.transpose(-2, -1) @ q * scale  # S = q kᵀ / √d  ->  dL/dk = dSᵀ q / √d
    return grad_q, grad_k, grad_v


attention = Exercise(
    "scaled dot-product attention",
    attention_forward,
    attention_inputs,
    ("q", "k", "v"),
    attention_backward,
    hint="dS = P ⊙ (dP − Σ_j dP_j P_j) with dP = g vᵀ; then dq = dS k / √d and dk = dSᵀ q / √d (keep the 1/√d)",
)


# --------------------------------------------------------------------------- layer normalisation


def layer_norm_forward(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """``x (..., D)``, ``gamma``, ``beta (D,)`` -> ``(..., D)``: LayerNorm(D), each position normalised over its D."""
    mu = x.mean(dim=-1, keepdim=True)  # μ = mean_j x_j
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)  # σ² = mean_j (x_j − μ)², the biased variance
    x_hat = (x - mu) / torch.sqrt(var + LAYER_NORM_EPS)  # x̂ = (x − μ) s, s = (σ² + ε)^(-1/2)
    return gamma * x_hat + beta  # y = γ x̂ + β


def layer_norm_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    # 2 sequences of 3 positions, D = 5 features; x off-centre and wide, so that μ and σ matter
    return {
        "x": 1.5 + 2.0 * _normal(generator, 2, 3, 5),
        "gamma": 1.0 + 0.5 * _normal(generator, 5),
        "beta": _normal(generator, 5),
    }


def layer_norm_backward(grad_output: Tensor, x: Tensor, gamma: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    D = x.shape[-1]
    centred = x - x.mean(dim=-1, keepdim=True)
    s = 1.0 / torch.sqrt((centred**2).mean(dim=-1, keepdim=True) + LAYER_NORM_EPS)  # recompute s and x̂ (cached)
    x_hat = centred * s
    grad_beta = grad_output.reshape(-1, D).sum(dim=0)  # y = γ x̂ + β  ->  dL/dβ = Σ_rows g
    grad_gamma = (grad_output * x_hat).reshape(-1, D).sum(dim=0)  # y = γ x̂ + β  ->  dL/dγ = Σ_rows g x̂
    g_hat = grad_output * gamma  # y = γ x̂ + β  ->  dL/dx̂ = g γ
    # x̂ = (x − μ) s, with μ and s functions of every x_k  ->  dL/dx = s (ĝ − mean(ĝ) − x̂ mean(ĝ x̂))
    grad_x = s * (g_hat - g_hat.mean(dim=-1, keepdim=True) - x_hat * (g_hat * x_hat).mean(dim=-1, keepdim=True))
    return grad_x, grad_gamma, grad_beta


layer_norm = Exercise(
    "LayerNorm",
    layer_norm_forward,
    layer_norm_inputs,
    ("x", "gamma", "beta"),
    layer_norm_backward,
    hint="μ and σ depend on every x_k: dx = s (ĝ − mean(ĝ) − x̂ mean(ĝ x̂)), ĝ = g γ; dγ, dβ sum over every position",
)

EXERCISES = (softmax, attention, layer_norm)
