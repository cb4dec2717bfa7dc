"""Files a run leaves behind, written atomically: a crash or a full disk never leaves one half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A crash or a full disk mid-write leaves the previous file whole (``os.replace`` is atomic), and a failed
    write is an ``OSError`` naming ``path`` (torch's own error for a failed ``torch.save``, a ``RuntimeError``
    from its C++ writer, becomes one too); temporary files that a killed process left behind are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.*.tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make the result private
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise OSError(error.errno, f"cannot write {path}: {error.strerror or error}") from None
        if isinstance(error, RuntimeError) and "inline_container" in str(error):  # torch.save: ENOSPC, say
            raise OSError(f"cannot write {path}: {str(error).splitlines()[0]}") from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def remove_stale(folder: Path, pattern: str) -> None:
    """Delete the files in ``folder`` matching ``pattern``: the temporary files of a write a killed process left."""
    for stale in folder.glob(pattern):
        with contextlib.suppress(OSError):
            stale.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`write_atomic`."""
    return write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
