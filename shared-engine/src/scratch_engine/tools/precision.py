r"""Number formats for training: full precision, and bfloat16 mixed precision with float32 master weights.

``--dtype float64`` and ``--dtype float32`` simply put the model and the data in that format.
``--dtype bfloat16`` is *mixed* precision (Micikevicius et al., 2018): bfloat16 has float32's
range but only 8 significant bits (7 stored), so an update :math:`\eta g` smaller than about
:math:`2^{-9}\theta` would vanish if the weights themselves were stored in bfloat16. Hence two copies:

* the **compute** model, a bfloat16 copy that runs every forward and backward pass (half the
  memory traffic, and the tensor cores' fast matrix products on a GPU);
* the **master** model, the caller's own, in float32. After each backward the bfloat16
  gradients are cast into the masters' float32 ``grad``; clipping and the optimizer work
  there; the updated masters are cast back into the compute copy.

Where precision matters inside a step, float32 does the sums: torch accumulates its reductions
over bfloat16 tensors (means, variances, softmax denominators, matrix products) in float32, and
the losses compute their log-sum-exp and squared errors in float32 and hand back a bfloat16
gradient; normalisation statistics, GELU and the sigmoid are computed in float32 and rounded
once (:func:`scratch_engine.module.widened`). bfloat16 needs no loss scaling (float16 would: it
underflows), so float16 is not offered.

:func:`run_dtype` is the one rule for a run's format; :class:`Precision` applies it to an engine.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from scratch_engine.data import map_tensors
from scratch_engine.engine import Callback, Engine
from scratch_engine.module import Module

DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
MIXED = (torch.bfloat16,)  # formats trained with float32 master weights
DTYPE_HELP = (
    "float32, float64, or bfloat16 (mixed precision, float32 master weights); "
    "default: float64 with --reference (a parity check of the backward), else float32"
)


def run_dtype(dtype: str | None, reference: bool = False) -> str:
    """The number format of a run: ``dtype``, or for ``None`` float64 with a torch.nn reference, else float32.

    A parity run checks the hand-written backward against autograd, so it runs both models in
    float64: in float32 the two add the same products in different orders, and through an
    unstable stretch of training (a vanilla RNN's chaotic start, a CNN's first steps) that
    rounding grows into a gap that says nothing about the gradients.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return dtype or ("float64" if reference else "float32")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float64"``, ``"float32"``, ``"bfloat16"`` (or the torch dtype, or ``None``) -> ``torch.dtype | None``."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unsupported dtype {dtype!r}: use one of {', '.join(DTYPES)}")


def weights_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The format a run keeps its weights in: ``dtype``, or ``None`` (the float32 masters, as built)
    for mixed precision, where only the compute copy takes ``dtype``."""
    resolved = resolve_dtype(dtype)
    return None if resolved in MIXED else resolved


def cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating-point tensors (also nested) cast to ``dtype``; ids and masks are left alone."""
    return map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t, value)


class Precision(Callback):
    """Train in ``dtype``: the model and the floating inputs in float32 or float64, or bfloat16 mixed precision.

    Mixed precision makes :attr:`compute` a bfloat16 copy of the model (``engine.net``); one step::

        compute.zero_grad(); out = compute(cast(x)); compute.backward(loss.backward())
        after_backward: bf16 grads -> float32 master grads   (clipping and the optimizer work there)
        after_update:   float32 masters -> bf16 weights; running statistics -> the masters
    """

    def __init__(self, dtype: str | torch.dtype) -> None:
        resolved = resolve_dtype(dtype)
        if resolved is None:
            raise ValueError("Precision needs a dtype: float32, float64 or bfloat16")
        self.dtype = resolved
        self.master: Module | None = None
        self.compute: Module | None = None
        self._pairs: list[tuple[Any, Any]] = []

    @property
    def mixed(self) -> bool:
        return self.dtype in MIXED

    def attach(self, engine: Engine) -> None:
        master = self.master = engine.model
        if not self.mixed:
            master.to(dtype=self.dtype)
            return
        wrong = sorted({str(p.data.dtype) for p in master.parameters() if p.data.dtype != torch.float32})
        if wrong:
            raise ValueError(f"mixed precision needs float32 master weights, got parameters in {', '.join(wrong)}")
        self.compute = copy.deepcopy(master).to(dtype=self.dtype)
        self._pairs = list(zip(master.parameters(), self.compute.parameters(), strict=True))
        engine.net = self.compute

    def on_batch(self, engine: Engine, x: Any, y: Any) -> tuple[Any, Any]:
        return cast_floating(x, self.dtype), cast_floating(y, self.dtype)

    @torch.no_grad()
    def after_backward(self, engine: Engine) -> None:
        if self._pairs:  # one multi-tensor copy (with the cast) for all parameters
            torch._foreach_copy_([m.grad for m, _ in self._pairs], [c.grad for _, c in self._pairs])

    @torch.no_grad()
    def after_update(self, engine: Engine) -> None:
        if self.compute is not None:
            self._weights_to_compute()
            copy_buffers(self.compute, engine.model)  # running statistics live in the compute copy

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """After the masters were loaded: refresh the compute copy from them."""
        if self.compute is not None and self.master is not None:
            self._weights_to_compute()
            copy_buffers(self.master, self.compute)

    @torch.no_grad()
    def _weights_to_compute(self) -> None:
        if self._pairs:
            torch._foreach_copy_([c.data for _, c in self._pairs], [m.data for m, _ in self._pairs])


@torch.no_grad()
def copy_buffers(source: Module, target: Module) -> None:
    """Copy every buffer (running statistics) of ``source`` into ``target``'s, casting on the way."""
    targets = dict(target.named_buffers())
    for name, buffer in source.named_buffers():
        targets[name].copy_(buffer)
