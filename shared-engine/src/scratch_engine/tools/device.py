"""Where tensors live and how runs are made reproducible."""

from __future__ import annotations

import importlib
import random

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (or ``None``), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a ``torch.device``.

    ``"auto"`` picks CUDA if available, else Apple's MPS, else the CPU. A device that is
    unknown or not available on this machine is a ``ValueError`` that names it.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return resolved
    if resolved.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {device!r} requested but MPS is not available on this machine")
        return resolved
    raise ValueError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, torch (CPU and every CUDA device) and, if installed, NumPy."""
    seed = int(seed)
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:  # NumPy is not a dependency; seed it only when present
        numpy = importlib.import_module("numpy")
    except ImportError:
        return
    numpy.random.seed(seed % 2**32)
