r"""Losses: a scalar ``forward(prediction, target)`` and its gradient ``backward()``.

A loss ends the chain rule: ``backward(grad_output)`` returns
:math:`\partial L / \partial \text{prediction}` (scaled by ``grad_output``, 1 by
default), which is what the model's own ``backward`` takes next. Each loss caches only
what that gradient needs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratch_engine.checks import check_indices
from scratch_engine.module import caching, missing_forward, widened


class Loss:
    """Base class: ``forward`` returns a 0-dim tensor, ``backward`` its gradient w.r.t. the prediction."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output: Tensor | float = 1.0) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, prediction: Tensor, target: Tensor) -> Tensor:
        return self.forward(prediction, target)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _check_prediction(loss: Loss, prediction: Tensor) -> None:
    if not isinstance(prediction, Tensor):
        raise TypeError(f"{type(loss).__name__} expects a torch.Tensor prediction, got {type(prediction).__name__}")
    if not prediction.is_floating_point():
        raise ValueError(f"{type(loss).__name__} expects a floating-point prediction, got dtype {prediction.dtype}")


class MSELoss(Loss):
    r"""Mean squared error over all :math:`n` elements.

    Shapes: ``prediction`` and ``target`` identical (any shape).

    .. math::
        L = \frac{1}{n}\sum_i (\hat y_i - y_i)^2, \qquad
        \frac{\partial L}{\partial \hat y_i} = \frac{2}{n}(\hat y_i - y_i)
    """

    def __init__(self) -> None:
        self._diff: Tensor | None = None
        self._dtype: torch.dtype | None = None

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_prediction(self, prediction)
        if not isinstance(target, Tensor) or target.shape != prediction.shape:
            got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(
                f"MSELoss needs prediction and target of the same shape, got prediction {tuple(prediction.shape)} "
                f"and target {got}"
            )
        # bfloat16/float16 predictions are reduced in float32; the gradient comes back in their dtype
        wide = torch.promote_types(prediction.dtype, torch.float32)
        diff = prediction.to(wide) - target.to(wide)
        self._diff = diff if caching() else None
        self._dtype = prediction.dtype
        return diff.pow(2).mean().to(prediction.dtype)

    def backward(self, grad_output: Tensor | float = 1.0) -> Tensor:
        if self._diff is None:
            raise missing_forward(self)
        return (self._diff * (2.0 / max(self._diff.numel(), 1)) * grad_output).to(self._dtype)


class CrossEntropyLoss(Loss):
    r"""Softmax cross-entropy on logits with the class dimension **last**.

    Shapes: ``logits (..., C)`` (e.g. ``(N, C)`` or ``(B, T, C)``), integer ``target (...)``
    with values in :math:`[0, C)` or equal to ``ignore_index``. (``torch`` puts the class
    dimension second; ours is last because that is what our models emit.)

    For one row of logits :math:`z` the softmax is computed through a stable
    log-sum-exp, subtracting :math:`m = \max_c z_c` first so no ``exp`` overflows:

    .. math::
        \log p_c = z_c - \operatorname{LSE}(z), \qquad
        \operatorname{LSE}(z) = m + \log \textstyle\sum_c e^{z_c - m}

    With label smoothing :math:`\varepsilon` (exactly as ``torch``) row :math:`i` with
    target :math:`y_i` costs

    .. math::
        \ell_i = (1-\varepsilon)\,(-\log p_{y_i}) + \varepsilon \cdot \frac{1}{C}\sum_c (-\log p_c),

    and :math:`L` is the mean of :math:`\ell_i` over the :math:`n` rows whose target is
    not ``ignore_index``. The gradient is softmax minus the (smoothed) one-hot target:

    .. math::
        \frac{\partial L}{\partial z_i} = \frac{1}{n}\Big(p_i - (1-\varepsilon)\,\mathbf{1}_{y_i}
        - \frac{\varepsilon}{C}\Big) \text{ for kept rows}, \qquad 0 \text{ for ignored rows.}

    If *every* target is ignored the loss is ``0`` with a zero gradient, on purpose:
    ``torch`` returns ``nan`` (0/0), which would poison training on a batch that is all
    padding. float16/bfloat16 logits are reduced in float32; the gradient comes back in
    the logits' dtype.

    Targets outside :math:`[0, C)` are a ``ValueError``; on an accelerator, inside the engine's loops,
    it comes at the next logging step (:mod:`scratch_engine.checks`: no read-back per step).
    """

    def __init__(self, ignore_index: int | None = None, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"CrossEntropyLoss label_smoothing must be in [0, 1), got {label_smoothing}")
        if ignore_index is not None and not isinstance(ignore_index, int):
            raise TypeError(f"CrossEntropyLoss ignore_index must be an int or None, got {type(ignore_index).__name__}")
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self._probs: Tensor | None = None
        self._target: Tensor | None = None
        self._row_weight: Tensor | float | None = None
        self._shape: torch.Size | None = None
        self._dtype: torch.dtype | None = None

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        logits = prediction
        _check_prediction(self, logits)
        if logits.dim() == 0:
            raise ValueError("CrossEntropyLoss expects logits of shape (..., C), got a 0-dim tensor")
        if (
            not isinstance(target, Tensor)
            or target.is_floating_point()
            or target.is_complex()
            or target.dtype == torch.bool
        ):
            dtype = target.dtype if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(f"CrossEntropyLoss expects integer class targets, got dtype {dtype}")
        if target.shape != logits.shape[:-1]:
            raise ValueError(
                f"CrossEntropyLoss expects target of shape logits.shape[:-1] = {tuple(logits.shape[:-1])} "
                f"(class dimension last), got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
            )
        num_classes = logits.shape[-1]
        z = logits.reshape(-1, num_classes)
        z = widened(z)
        y = target.reshape(-1).long()
        keep = None if self.ignore_index is None else y != self.ignore_index  # None: every row counts
        y = _check_targets(y, keep, num_classes, self.ignore_index)
        if keep is not None:
            y = torch.where(keep, y, 0)  # any valid class: ignored rows get zero weight below

        shifted = z - z.amax(dim=-1, keepdim=True)
        exp = shifted.exp()
        total = exp.sum(dim=-1, keepdim=True)
        log_probs = shifted - total.log()
        row_loss = -log_probs.gather(1, y.unsqueeze(1)).squeeze(1)
        eps = self.label_smoothing
        if eps > 0.0:
            row_loss = (1.0 - eps) * row_loss - eps * log_probs.mean(dim=-1)
        if keep is None:  # the common case: a plain mean, the weight a Python number (fewer tiny kernels)
            row_weight: Tensor | float = 1.0 / max(len(y), 1)
            loss = row_loss.sum() * row_weight
        else:
            # mean over kept rows; clamp(min=1) makes an all-ignored batch 0 instead of 0/0
            row_weight = keep.to(z.dtype) / keep.sum().clamp(min=1).to(z.dtype)
            loss = (row_loss.masked_fill(~keep, 0.0) * row_weight).sum()

        keep_for_backward = caching()
        self._probs = exp / total if keep_for_backward else None
        self._target = y if keep_for_backward else None
        self._row_weight = row_weight if keep_for_backward else None
        self._shape = logits.shape
        self._dtype = logits.dtype
        return loss.to(logits.dtype)

    def backward(self, grad_output: Tensor | float = 1.0) -> Tensor:
        if self._probs is None or self._target is None or self._row_weight is None or self._shape is None:
            raise missing_forward(self)
        eps = self.label_smoothing
        grad = self._probs - eps / self._probs.shape[-1] if eps > 0.0 else self._probs.clone()
        target = self._target.unsqueeze(1)
        grad.scatter_add_(1, target, grad.new_full(target.shape, -(1.0 - eps)))  # p - (1-eps) onehot - eps/C
        if isinstance(self._row_weight, Tensor):
            grad.mul_(self._row_weight.unsqueeze(1))
            grad.mul_(grad_output)
        else:
            grad.mul_(self._row_weight * grad_output)
        return grad.reshape(self._shape).to(self._dtype)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"


def _check_targets(y: Tensor, keep: Tensor | None, num_classes: int, ignore_index: int | None) -> Tensor:
    """``y`` if every target (but ``ignore_index``) lies in ``[0, C)``; else a ``ValueError`` naming one.

    On an accelerator inside a training loop the check is deferred (:mod:`scratch_engine.checks`).
    """
    also = "" if ignore_index is None else f" or ignore_index={ignore_index}"
    expected = f"(expected 0..{num_classes - 1}{also})"

    def describe() -> str:
        bad = (y < 0) | (y >= num_classes)
        first = int(y[bad if keep is None else bad & keep][0])
        return f"CrossEntropyLoss target {first} is out of range for C={num_classes} classes {expected}"

    message = f"CrossEntropyLoss targets out of range for C={num_classes} classes {expected}"
    return check_indices(y, num_classes, describe, message, valid=keep)
