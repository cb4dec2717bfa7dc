r"""Exercises: write the backward of an MLP's layers yourself, and one call says whether it is right.

Each exercise is a layer's forward as plain tensor code, with exactly the shapes and the parameter layout of the
package's own layer, so the backward you write *is* that layer's backward. You write
``backward(grad_output, **inputs)``, which gets :math:`g = \partial L/\partial y` (shaped like the forward's
output) and the forward's inputs, and returns :math:`\partial L/\partial \text{input}` for each input the exercise
names in ``wrt``, in that order::

    from scratch_mlp.exercises import dense

    def dense_backward(grad_output, x, W, b):
        return grad_output @ W, ..., ...   # dL/dx, dL/dW, dL/db

    dense.check(dense_backward)   # one line: ✓, or ✗ naming the wrong gradient, how far off and where
    dense.inputs()                # the inputs it checks with (float64), to try your code by hand
    dense.show_solution()         # when stuck: the package's solution

- :data:`dense`          ``y = x Wᵀ + b``, ``W (out, in)`` as in :class:`scratch_mlp.Dense` (and ``torch.nn.Linear``)
- :data:`sigmoid`        ``y = σ(x) = 1 / (1 + e^{-x})``, elementwise, as :class:`scratch_mlp.Sigmoid`
- :data:`cross_entropy`  softmax cross-entropy of logits ``(N, C)`` and integer targets ``(N,)``, the mean over the
  batch, as :class:`scratch_mlp.CrossEntropyLoss`: the gradient with respect to the logits

The notebook ``notebooks/mlp_from_scratch.ipynb`` poses them. The checker
(:class:`scratch_engine.tools.exercises.Exercise`) compares your gradients with those torch computes for the same
forward, in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratch_engine.tools.exercises import Exercise

# Small, distinct sizes: a gradient with a transposed or swapped shape cannot pass by accident.
BATCH, IN_FEATURES, OUT_FEATURES, CLASSES = 5, 4, 3, 6


def _normal(generator: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(shape, generator=generator, dtype=torch.float64)


# --------------------------------------------------------------------------- Dense


def dense_forward(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """``x (N, in)``, ``W (out, in)``, ``b (out,)`` -> ``y (N, out)``: the layout of :class:`scratch_mlp.Dense`."""
    return x @ W.T + b  # y = x Wᵀ + b


def dense_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "x": _normal(generator, BATCH, IN_FEATURES),
        "W": _normal(generator, OUT_FEATURES, IN_FEATURES),
        "b": _normal(generator, OUT_FEATURES),
    }


def dense_backward(grad_output: Tensor, x: Tensor, W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    g = grad_output  # dL/dy, (N, out)
    grad_x = g @ W  # y = x Wᵀ + b  ->  dL/dx = g W        (N, out) @ (out, in) = (N, in)
    grad_W = g.T @ x  # y = x Wᵀ + b  ->  dL/dW = gᵀ x      (out, N) @ (N, in) = (out, in), W's shape
    grad_b = g.sum(dim=0)  # b is added to every row  ->  dL/db = Σ_n g_n   (out,)
    return grad_x, grad_W, grad_b


dense = Exercise(
    "Dense",
    dense_forward,
    dense_inputs,
    ("x", "W", "b"),
    dense_backward,
    hint="dL/dW = gᵀ x has W's shape (out, in); dL/db sums g over the batch rows",
)


# --------------------------------------------------------------------------- Sigmoid


def sigmoid_forward(x: Tensor) -> Tensor:
    """Elementwise ``σ(x) = 1 / (1 + e^{-x})``, any shape: what :class:`scratch_mlp.Sigmoid` computes."""
    return 1 / (1 + torch.exp(-x))  # y = σ(x)


def sigmoid_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {"x": _normal(generator, BATCH, IN_FEATURES, scale=2.0)}  # some inputs where σ saturates


def sigmoid_backward(grad_output: Tensor, x: Tensor) -> Tensor:
    y = 1 / (1 + torch.exp(-x))  # the forward's output (the layer caches it instead of recomputing it)
    return grad_output * y * (1 - y)  # y = σ(x)  ->  dL/dx = g ⊙ σ'(x) = g ⊙ y (1 - y)


sigmoid = Exercise(
    "Sigmoid",
    sigmoid_forward,
    sigmoid_inputs,
    ("x",),
    sigmoid_backward,
    hint="σ'(x) = y (1 - y) with y = σ(x), the output, not the input x",
)


# --------------------------------------------------------------------------- softmax cross-entropy


def cross_entropy_forward(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ``-log softmax(logits)[n, target[n]]``: :class:`scratch_mlp.CrossEntropyLoss`.

    ``logits (N, C)`` (classes last), integer ``target (N,)`` in ``[0, C)``; a 0-dim loss.
    """
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # z - max_c z: every exp below is at most 1
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()  # log p = z - logsumexp(z)
    picked = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)  # log p[n, y_n], (N,)
    return -picked.mean()  # L = -(1/N) Σ_n log p[n, y_n]


def cross_entropy_inputs(generator: torch.Generator) -> dict[str, Tensor]:
    return {
        "logits": _normal(generator, BATCH, CLASSES, scale=3.0),  # confident enough that softmax is not uniform
        "target": torch.randint(0, CLASSES, (BATCH,), generator=generator),  # integers: no gradient
    }


def cross_entropy_backward(grad_output: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # as in the forward: no exp overflows
    probs = shifted.exp() / shifted.exp().sum(dim=-1, keepdim=True)  # softmax p, (N, C): the shift cancels
    one_hot = torch.zeros_like(probs)
    one_hot[torch.arange(len(target)), target] = 1.0  # onehot(y), (N, C)
    # log p = z - logsumexp(z), L = -(1/N) Σ_n log p[n, y_n]  ->  dL/dz = (p - onehot(y)) / N;
    # grad_output scales it (1 when L is the loss being minimised, a 0-dim tensor)
    return (probs - one_hot) / len(target) * grad_output


cross_entropy = Exercise(
    "softmax cross-entropy",
    cross_entropy_forward,
    cross_entropy_inputs,
    ("logits",),
    cross_entropy_backward,
    hint="dL/dz = (softmax(z) - onehot(y)) / N, times grad_output: the loss is a mean over the N rows",
)


EXERCISES = (dense, sigmoid, cross_entropy)
