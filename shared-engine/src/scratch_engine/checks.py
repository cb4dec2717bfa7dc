"""Checks of what a layer is given: shapes and dtypes (free: :func:`check_grad_output`,
:func:`check_dtype`), and tensor *values* (an index out of range) that never stall a GPU's
training step (:func:`check_indices`).

Checking that class targets or token ids lie in range means reading them. On the CPU that
is free, and a bad value is a ``ValueError`` at once that names it. On an accelerator a
read-back would make the host wait for the device every step, and a bad index left to the
indexing kernels would end in a device-side assert that leaves the GPU unusable. So while
:func:`deferred` is active (the :class:`~scratch_engine.Engine` turns it on for its loops),
a check on a device tensor only records, on the device, whether anything was out of range,
clamps the indices so that the kernels stay inside their tables, and returns;
:func:`raise_pending` then reads every flag at once (the engine calls it whenever it logs,
a sync it makes anyway) and raises the ``ValueError``. Outside :func:`deferred` every check
is immediate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

_pending: dict[str, Tensor] | None = None  # message -> "seen out of range" flag, while deferring


def check_grad_output(layer: object, grad_output: Tensor, shape: Sequence[int]) -> None:
    """A ``ValueError`` unless ``grad_output`` has ``shape``: a backward gets the gradient of its forward's output.

    Without it a wrong layout can still reshape or broadcast into numbers, silently wrong.
    """
    name = type(layer).__name__
    if not isinstance(grad_output, Tensor):
        raise TypeError(f"{name}.backward expects a torch.Tensor, got {type(grad_output).__name__}")
    if tuple(grad_output.shape) != tuple(shape):
        raise ValueError(
            f"{name}.backward expects grad_output of the forward output's shape {tuple(shape)}, "
            f"got {tuple(grad_output.shape)}"
        )


def check_dtype(layer: object, x: Tensor, weight: Tensor) -> None:
    """A ``ValueError`` naming both dtypes unless the input ``x`` has the dtype of the layer's ``weight``."""
    if x.dtype != weight.dtype:
        raise ValueError(
            f"{type(layer).__name__} has {weight.dtype} weights but got a {x.dtype} input; "
            f"cast the input (x.to({weight.dtype})) or the model (.to(dtype={x.dtype}))"
        )


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block, checks of accelerator tensors are recorded for :func:`raise_pending`."""
    global _pending
    outer = _pending
    if outer is None:
        _pending = {}
    try:
        yield
    finally:
        if outer is None:
            _pending = None


def check_indices(
    indices: Tensor, size: int, describe: Callable[[], str], message: str, valid: Tensor | None = None
) -> Tensor:
    """``indices`` if every one (where ``valid``) lies in ``[0, size)``; else a ``ValueError``.

    Immediate checks raise ``describe()`` (it may read the tensors: a detailed message).
    Deferred ones record ``message`` (a fixed text) and return the indices clamped into
    range, so that a bad batch computes garbage instead of crashing the device.
    """
    if indices.numel() == 0:
        return indices
    if _pending is None or _reading_is_free(indices):
        checked = indices if valid is None else indices[valid]
        if checked.numel() == 0:
            return indices
        low, high = torch.stack(torch.aminmax(checked)).tolist()
        if low < 0 or high >= size:
            raise ValueError(describe())
        return indices
    outside = (indices < 0) | (indices >= size)
    seen = (outside if valid is None else outside & valid).any()
    _pending[message] = seen if message not in _pending else _pending[message] | seen
    return indices.clamp(0, size - 1)


def _reading_is_free(tensor: Tensor) -> bool:
    """CPU tensors are read without waiting for a device."""
    return tensor.device.type == "cpu"


def raise_pending() -> None:
    """Raise the first recorded problem as a ``ValueError`` and forget them all (one read-back)."""
    if not _pending:
        return
    messages = list(_pending)
    flags = torch.stack([_pending[m].to(torch.bool) for m in messages]).tolist()
    _pending.clear()
    for message, seen in zip(messages, flags, strict=True):
        if seen:
            raise ValueError(message)
