"""The opt-in autograd mode: torch computes the gradients instead of the layers' ``backward``.

``Engine(..., backward="autograd")`` uses it to check or to shortcut a model whose
hand-written backward is not ready. It is the only engine module that uses
``torch.autograd``; the forward pass is the very same code as in manual mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scratch_engine.module import Module


def autograd_step(model: Module, loss_fn: Any, x: Any, y: Any) -> tuple[Tensor, Any]:
    """Forward ``model`` and ``loss_fn``, then *add* autograd's gradients into every ``Parameter.grad``.

    Returns the detached loss and output. Parameters stop requiring gradients afterwards,
    even when the forward pass raises.
    """
    params = model.parameters()
    try:
        for p in params:
            p.data.requires_grad_(True)
        with torch.enable_grad():
            output = model(x)
            loss = loss_fn(output, y)
            grads = torch.autograd.grad(loss, [p.data for p in params], allow_unused=True) if params else ()
    finally:
        for p in params:
            p.data.requires_grad_(False)
    with torch.no_grad():
        for p, grad in zip(params, grads, strict=True):
            if grad is not None:
                p.grad.add_(grad)
    return loss.detach(), _detach(output)


def _detach(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    return value
