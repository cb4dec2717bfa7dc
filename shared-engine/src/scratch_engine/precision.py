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
once (:func:`widened`). bfloat16 needs no loss scaling (float16 would: it underflows), so float16 is not offered.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from scratch_engine.module import Module

HALF = (torch.bfloat16, torch.float16)  # the 16-bit formats, whose 8 or 11 significant bits some sums need more than


def widened(x: Tensor) -> Tensor:
    r"""``x`` in float32 when it is 16-bit, else itself.

    For the arithmetic that cancels digits (:math:`x - \bar x`, :math:`1 + \operatorname{erf}(x)`,
    :math:`1 + e^{-x}`) or sums many terms: a layer computes it in float32 and rounds its result
    once, as torch does for its own bfloat16 kernels.
    """
    return x.float() if x.dtype in HALF else x


DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
MIXED = (torch.bfloat16,)  # formats trained with float32 master weights


def weights_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The format a run keeps its weights in: ``dtype``, or ``None`` (left as built: the float32
    masters) for mixed precision, where only the compute copy takes ``dtype``."""
    resolved = resolve_dtype(dtype)
    return None if resolved in MIXED else resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float64"``, ``"float32"``, ``"bfloat16"`` (or the torch dtype, or ``None``) -> ``torch.dtype | None``."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unsupported dtype {dtype!r}: use one of {', '.join(DTYPES)}")


def cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with its floating-point tensors (also inside tuples, lists, dicts) cast to ``dtype``.

    Integer tensors (class labels, token ids) and masks are left alone.
    """
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(cast_floating(item, dtype) for item in value)
    if isinstance(value, dict):
        return {key: cast_floating(item, dtype) for key, item in value.items()}
    return value


class MixedPrecision:
    """A low-precision compute copy of ``master`` and the casts between the two.

    ``master`` keeps its float32 parameters (the optimizer's) and buffers; :attr:`compute` is a
    deep copy in ``dtype``. One training step is::

        compute.zero_grad(); out = compute(cast(x)); compute.backward(loss.backward())
        mp.gradients_to_master()      # bf16 grads -> float32 master grads
        optimizer.step()              # on the masters
        mp.master_to_compute()        # float32 masters -> bf16 weights

    Buffers (batch-norm running statistics) are updated by the compute copy;
    :meth:`buffers_to_master` copies them back (the engine does so after each epoch).
    """

    def __init__(self, master: Module, dtype: torch.dtype = torch.bfloat16) -> None:
        if dtype not in MIXED:
            raise ValueError(f"mixed precision computes in one of {MIXED}, got {dtype}")
        wrong = sorted({str(p.data.dtype) for p in master.parameters() if p.data.dtype != torch.float32})
        if wrong:
            raise ValueError(f"mixed precision needs float32 master weights, got parameters in {', '.join(wrong)}")
        self.master = master
        self.dtype = dtype
        self.compute = copy.deepcopy(master).to(dtype=dtype)
        self._pairs = list(zip(master.parameters(), self.compute.parameters(), strict=True))

    def cast(self, value: Any) -> Any:
        """Inputs for the compute copy: floating tensors in ``dtype``."""
        return cast_floating(value, self.dtype)

    @torch.no_grad()
    def gradients_to_master(self) -> None:
        if self._pairs:  # one multi-tensor copy (with the cast) for all parameters
            torch._foreach_copy_([m.grad for m, _ in self._pairs], [c.grad for _, c in self._pairs])

    @torch.no_grad()
    def master_to_compute(self) -> None:
        if self._pairs:
            torch._foreach_copy_([c.data for _, c in self._pairs], [m.data for m, _ in self._pairs])

    def buffers_to_master(self) -> None:
        _copy_buffers(self.compute, self.master)

    def buffers_to_compute(self) -> None:
        _copy_buffers(self.master, self.compute)


@torch.no_grad()
def _copy_buffers(source: Module, target: Module) -> None:
    """Copy every buffer (running statistics) of ``source`` into ``target``'s, casting on the way."""
    targets = dict(target.named_buffers())
    for name, buffer in source.named_buffers():
        targets[name].copy_(buffer)
