"""The opt-in autograd mode: torch computes a model's gradients instead of its layers' ``backward``.

``Engine(Autograd(model), loss, optimizer)`` trains ``model`` with the very same forward code,
its parameter gradients taken by ``torch.autograd``: to check a hand-written backward on a whole
training run, or to train a model whose backward is not written yet. It is the only place in the
engine's training path that uses ``torch.autograd``; the loss keeps its own ``backward``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from scratch_engine.data import map_tensors
from scratch_engine.module import Module, caching, missing_forward


class Autograd(Module):
    """``model`` whose ``backward(grad_output)`` is autograd's: it adds ``dL/dθ`` into every ``Parameter.grad``.

    ``backward`` returns ``None``: the input is data. Under ``no_cache()`` the forward records no graph.
    """

    def __init__(self, model: Module) -> None:
        super().__init__()
        self.model = model
        self._graph: tuple[Any, list[Tensor]] | None = None

    def forward(self, x: Any) -> Any:
        if not caching():
            self._graph = None
            return self.model(x)
        leaves = [p.data for p in self.model.parameters()]
        try:
            for leaf in leaves:
                leaf.requires_grad_(True)
            with torch.enable_grad():
                output = self.model(x)
        except BaseException:
            _release(leaves)
            raise
        self._graph = (output, leaves)
        return map_tensors(Tensor.detach, output)

    def backward(self, grad_output: Tensor) -> None:
        if self._graph is None:
            raise missing_forward(self)
        (output, leaves), self._graph = self._graph, None
        try:
            grads = torch.autograd.grad(output, leaves, grad_output, allow_unused=True) if leaves else ()
        finally:
            _release(leaves)
        with torch.no_grad():
            for param, grad in zip(self.model.parameters(), grads, strict=True):
                if grad is not None:
                    param.grad.add_(grad)
        return None


def _release(leaves: list[Tensor]) -> None:
    for leaf in leaves:
        leaf.requires_grad_(False)
