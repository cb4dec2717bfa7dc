"""Checkpoint files: written atomically, read back with ``weights_only=True``.

A checkpoint holds only tensors, dicts, lists, tuples, strings, numbers, booleans and
``None``, so loading one never runs code from the file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

_PLAIN = (Tensor, str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Save ``obj`` to ``path`` so that a crash mid-write never damages the previous file.

    It is written to a temporary file in the same folder, flushed to disk, then renamed
    over ``path`` in one step (``os.replace``).
    """
    _check_plain(obj, "checkpoint")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU (``weights_only=True``: data only, no code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path} could not be read as a checkpoint: {_why_unreadable(path, err)}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _why_unreadable(path: Path, error: Exception) -> str:
    """One line, without torch's advice to retry with ``weights_only=False`` (that would run code from the file)."""
    if not zipfile.is_zipfile(path):
        return "it is not a file written by torch.save (not a zip archive)"
    if "weights only load failed" in str(error).lower():
        return "it holds Python objects besides tensors and plain data, which are never unpickled here"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_plain(obj: Any, where: str) -> None:
    """Fail at save time, naming the entry, on anything ``weights_only`` loading would refuse."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            _check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(
            f"{where} is a {type(obj).__name__}: checkpoints hold only tensors, dicts, lists, strings and numbers"
        )
