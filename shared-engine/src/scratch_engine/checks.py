"""What a layer checks of what it is given, before its math: types, shapes, dtypes, index ranges.

Shapes and dtypes cost nothing to check; index *values* (class targets, token ids) must be read. On the CPU
that is free, and a bad one is a ``ValueError`` at once, naming it. On a GPU a read makes the host wait for the
device every step, and a bad index left to the kernels ends in a device-side assert; so inside :func:`deferred`
(the engine's loops) a check notes on the device whether any index was out of range, clamps them, and goes on;
:func:`raise_pending` reads every note at once (the engine calls it when it reads the device anyway) and raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

_pending: dict[str, Tensor] | None = None  # message -> "seen out of range" flag on the device, when deferring


def check_floating(layer: object, x: Tensor) -> None:
    """A ``TypeError`` unless ``x`` is a tensor, a ``ValueError`` unless it is floating point."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(layer).__name__} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{type(layer).__name__} expects a floating-point input, got dtype {x.dtype}")


def check_grad_output(layer: object, grad_output: Tensor, shape: Sequence[int]) -> None:
    """A ``ValueError`` unless ``grad_output`` has the forward output's ``shape`` (another could broadcast: wrong)."""
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


def check_indices(
    indices: Tensor, size: int, describe: Callable[[], str], message: str, valid: Tensor | None = None
) -> Tensor:
    """``indices`` if every one (where ``valid``) lies in ``[0, size)``; else a ``ValueError``: ``describe()``
    (which may read the tensors) at once, or, deferred, ``message`` later and the indices clamped now."""
    if _pending is None or _reading_is_free(indices):  # one read: the smallest and the largest index
        checked = indices if valid is None else indices[valid]
        low, high = torch.stack(torch.aminmax(checked)).tolist() if checked.numel() else (0, 0)
        if low < 0 or high >= size:
            raise ValueError(describe())
        return indices
    outside = (indices < 0) | (indices >= size)
    seen = (outside if valid is None else outside & valid).any()  # stays on the device until read
    _pending[message] = _pending[message] | seen if message in _pending else seen
    return indices.clamp(0, size - 1)


def _reading_is_free(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu"  # reading a CPU tensor waits for no device


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block, checks of accelerator tensors are noted for :func:`raise_pending`."""
    global _pending
    outer = _pending
    _pending = {} if outer is None else outer
    try:
        yield
    finally:
        _pending = outer


def raise_pending() -> None:
    """Raise the first noted problem as a ``ValueError`` and forget them all (one read of the device)."""
    if not _pending:
        return
    messages, flags = list(_pending), torch.stack(list(_pending.values())).tolist()
    _pending.clear()
    if True in flags:
        raise ValueError(messages[flags.index(True)])
