"""What the parity tests share: torch's parameter names in ours, perturbed torch modules, the formula for PE."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scratch_engine import Module
from scratch_engine.tools.testing import assert_close, seeded_generator
from scratch_transformer.reference import torch_to_ours as our_names  # torch's names to ours, as the twin maps them


def perturbed(module: nn.Module, seed: int = 0, scale: float = 0.2) -> nn.Module:
    """``module`` in float64, training mode, with every parameter nudged (torch starts biases at 0, norms at 1)."""
    generator = seeded_generator(seed)
    module = module.double().train()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def assert_grads_match_torch(ours: Module, reference: nn.Module, renames: dict[str, str] | None = None) -> int:
    """Every parameter gradient of ``reference`` (after its ``backward``) equals ours; returns how many matched."""
    params = dict(ours.named_parameters())
    count = 0
    for torch_name, p in reference.named_parameters():
        name = torch_name
        for old, new in (renames or {}).items():
            name = name.replace(old, new)
        got = torch.cat([params[n].grad for n in our_names(name)])
        want = torch.zeros_like(p) if p.grad is None else p.grad
        assert_close(got, want, name=f"grad of {torch_name}")
        count += 1
    return count


def sinusoid(steps: int, d_model: int) -> Tensor:
    """The paper's positional encoding, element by element in Python floats."""
    table = torch.empty(steps, d_model, dtype=torch.float64)
    for pos in range(steps):
        for j in range(d_model):
            angle = pos / 10000 ** ((j - j % 2) / d_model)
            table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table
