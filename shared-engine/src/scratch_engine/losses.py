r"""Losses: a scalar ``forward(prediction, target)`` and its gradient ``backward()``.

A loss ends the chain rule: ``backward(grad_output=1)`` returns ``grad_output`` times
:math:`\partial L / \partial \text{prediction}`, which the model's own ``backward`` takes next.
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
        self._cache: tuple[Tensor, torch.dtype] | None = None  # prediction - target (in float32 or wider), dtype

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
        self._cache = (diff, prediction.dtype) if caching() else None
        return diff.pow(2).mean().to(prediction.dtype)

    def backward(self, grad_output: Tensor | float = 1.0) -> Tensor:
        if self._cache is None:
            raise missing_forward(self)
        diff, dtype = self._cache
        return (diff * (2.0 / max(diff.numel(), 1)) * grad_output).to(dtype)


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

    If *every* target is ignored, the loss is ``0`` with a zero gradient, on purpose: torch's ``nan`` (0/0)
    would poison training on a batch that is all padding. float16/bfloat16 logits are reduced in float32;
    the gradient comes back in their dtype. Targets outside :math:`[0, C)` are a ``ValueError``; on an
    accelerator, inside the engine's loops, it comes at the next logging step (:mod:`scratch_engine.checks`).
    """

    def __init__(self, ignore_index: int | None = None, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"CrossEntropyLoss label_smoothing must be in [0, 1), got {label_smoothing}")
        if ignore_index is not None and not isinstance(ignore_index, int):
            raise TypeError(f"CrossEntropyLoss ignore_index must be an int or None, got {type(ignore_index).__name__}")
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        # softmax, targets, row weights (a number when every row counts), logits' shape and dtype
        self._cache: tuple[Tensor, Tensor, Tensor | float, torch.Size, torch.dtype] | None = None

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        logits = prediction
        y, keep = self._targets(logits, target)
        z = widened(logits.reshape(-1, logits.shape[-1]))
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
        else:  # mean over kept rows; clamp(min=1) makes an all-ignored batch 0 instead of 0/0
            row_weight = keep.to(z.dtype) / keep.sum().clamp(min=1).to(z.dtype)
            loss = (row_loss.masked_fill(~keep, 0.0) * row_weight).sum()
        self._cache = (exp / total, y, row_weight, logits.shape, logits.dtype) if caching() else None
        return loss.to(logits.dtype)

    def _targets(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
        """Every check of the input; the targets flattened (ignored ones set to class 0), the kept rows (None: all)."""
        _check_prediction(self, logits)
        if logits.dim() == 0:
            raise ValueError("CrossEntropyLoss expects logits of shape (..., C), got a 0-dim tensor")
        dtype = target.dtype if isinstance(target, Tensor) else type(target).__name__
        if not isinstance(dtype, torch.dtype) or dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(f"CrossEntropyLoss expects integer class targets, got dtype {dtype}")
        if target.shape != logits.shape[:-1]:
            raise ValueError(
                f"CrossEntropyLoss expects target of shape logits.shape[:-1] = {tuple(logits.shape[:-1])} "
                f"(class dimension last), got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
            )
        num_classes = logits.shape[-1]
        y = target.reshape(-1).long()
        keep = None if self.ignore_index is None else y != self.ignore_index
        also = "" if self.ignore_index is None else f" or ignore_index={self.ignore_index}"
        expected = f"for C={num_classes} classes (expected 0..{num_classes - 1}{also})"

        def describe() -> str:
            bad = (y < 0) | (y >= num_classes)
            first = int(y[bad if keep is None else bad & keep][0])
            return f"CrossEntropyLoss target {first} is out of range {expected}"

        message = f"CrossEntropyLoss targets out of range {expected}"
        checked = check_indices(y, num_classes, describe, message, valid=keep)
        return (checked, None) if keep is None else (torch.where(keep, checked, 0), keep)

    def backward(self, grad_output: Tensor | float = 1.0) -> Tensor:
        if self._cache is None:
            raise missing_forward(self)
        probs, target, row_weight, shape, dtype = self._cache
        eps = self.label_smoothing
        grad = probs - eps / probs.shape[-1] if eps > 0.0 else probs.clone()
        target = target.unsqueeze(1)
        grad.scatter_add_(1, target, grad.new_full(target.shape, -(1.0 - eps)))  # p - (1-eps) onehot - eps/C
        if isinstance(row_weight, Tensor):
            grad.mul_(row_weight.unsqueeze(1))
            grad.mul_(grad_output)
        else:
            grad.mul_(row_weight * grad_output)
        return grad.reshape(shape).to(dtype)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"
