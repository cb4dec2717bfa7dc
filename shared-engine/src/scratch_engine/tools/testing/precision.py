"""Tests on another device (``SCRATCH_TEST_DEVICE``) and in bfloat16: tolerances measured against float64."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from scratch_engine.module import Module
from scratch_engine.tools.testing.gradcheck import default_device, flatten_tensors, like_structure

TEST_DEVICE_VARIABLE = "SCRATCH_TEST_DEVICE"

# bfloat16 keeps 8 significant bits (relative rounding error 2**-9, about 0.2%); through a
# network's layers the errors add up, and more so in gradients: a ReLU or a max-pool that
# decides the other way reroutes them, and weight gradients are sums with much cancellation.
# The bounds are relative errors (Frobenius norm) against float32 that every architecture's
# test asserts. For scale: torch.nn's own LeNet in bfloat16 is 0.13 off in its first
# convolution's weight gradient on the same kind of input.
BFLOAT16_OUTPUT_TOLERANCE = 0.02
BFLOAT16_GRADIENT_TOLERANCE = 0.25


def assert_bfloat16_close(errors: dict[str, float]) -> None:
    """Assert :func:`precision_errors` within :data:`BFLOAT16_OUTPUT_TOLERANCE` / ``..._GRADIENT_TOLERANCE``."""
    worst = max((name for name in errors if name.startswith("grad")), key=errors.__getitem__, default=None)
    output_ok = errors["output"] <= BFLOAT16_OUTPUT_TOLERANCE
    grads_ok = worst is None or errors[worst] <= BFLOAT16_GRADIENT_TOLERANCE
    if not (output_ok and grads_ok):
        raise AssertionError(
            f"bfloat16 vs float32: output off by {errors['output']:.3g} (bound {BFLOAT16_OUTPUT_TOLERANCE}), "
            f"worst gradient {worst} off by {0.0 if worst is None else errors[worst]:.3g} "
            f"(bound {BFLOAT16_GRADIENT_TOLERANCE})"
        )


def _seeded_like(t: Tensor, generator: torch.Generator) -> Tensor:
    """Standard-normal numbers shaped like ``t``, drawn in float32 on the CPU, then in ``t``'s device and dtype."""
    return torch.randn(t.shape, generator=generator, device="cpu").to(device=t.device, dtype=t.dtype)


def seeded_generator(seed: int) -> torch.Generator:
    """A ``torch.Generator`` on the default device (the GPU under ``$SCRATCH_TEST_DEVICE``), seeded."""
    return torch.Generator(default_device()).manual_seed(seed)


def use_test_device() -> torch.device:
    """Make ``$SCRATCH_TEST_DEVICE`` (e.g. ``cuda``) torch's default device; returns the device in use.

    A package's ``tests/conftest.py`` calls it, so ``SCRATCH_TEST_DEVICE=cuda pytest`` runs the
    same parity tests with every tensor the tests create (and the layers' parameters) on the GPU.
    """
    import os

    name = os.environ.get(TEST_DEVICE_VARIABLE)
    if name:
        from scratch_engine.tools.device import resolve_device

        torch.set_default_device(resolve_device(name))
    return default_device()


def precision_errors(
    module: Module, *inputs: Any, dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> dict[str, float]:
    """Relative errors of ``module``'s forward and backward in ``dtype`` against float32.

    Two copies of ``module`` (in eval mode, so dropout draws nothing) run the same inputs
    (floating ones cast to each dtype) and the same output gradient. Returns
    ``{"output": e, "grad <parameter>": e, ...}`` with ``e = |low - float32| / |float32|`` in
    the Frobenius norm (the floating inputs' gradients too, as ``"grad input i"``).
    """
    import copy

    from scratch_engine.tools.precision import cast_floating

    results = []
    for low_dtype in (torch.float32, dtype):
        copied = copy.deepcopy(module).to(dtype=low_dtype).eval()
        copied.zero_grad()
        output = copied(*cast_floating(inputs, low_dtype))
        grad_output = like_structure(output, partial(_seeded_like, generator=torch.Generator().manual_seed(seed)))
        input_grads = copied.backward(grad_output)
        input_grads = input_grads if isinstance(input_grads, (tuple, list)) else (input_grads,)
        results.append((output, input_grads, dict(copied.named_parameters())))

    def norm(value: Any) -> float:
        return sum(float(t.float().pow(2).sum()) for t in flatten_tensors(value) if t is not None) ** 0.5

    def relative(low: Any, full: Any, floor: float = 0.0) -> float:
        lows = [t for t in flatten_tensors(low) if t is not None]
        fulls = [t for t in flatten_tensors(full) if t is not None]
        diff = sum(float((a.float() - b.float()).pow(2).sum()) for a, b in zip(lows, fulls, strict=True)) ** 0.5
        return diff / max(norm(fulls), floor, 1e-30)

    (out32, in32, params32), (out_low, in_low, params_low) = results
    # A gradient that vanishes in exact arithmetic (attention's key bias: softmax ignores a shift
    # shared by all keys) is rounding noise in both formats: measure it against a hundredth of the
    # largest parameter gradient instead of against itself.
    floor = 0.01 * max((norm(p.grad) for p in params32.values()), default=0.0)
    errors = {"output": relative(out_low, out32)}
    for i, (g_low, g32) in enumerate(zip(in_low, in32, strict=False)):
        if isinstance(g32, Tensor) and isinstance(g_low, Tensor):
            errors[f"grad input {i}"] = relative(g_low, g32)
    for name, p32 in params32.items():
        errors[f"grad {name}"] = relative(params_low[name].grad, p32.grad, floor)
    return errors
