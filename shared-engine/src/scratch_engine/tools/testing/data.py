"""Tests that need a real data set: they fail loudly when it is missing, never skip."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def require_data_dir(*datasets: str) -> Path:
    """The folder holding ``datasets``: ``$SCRATCH_DATA_DIR``, else the cache; without them a test *fails*.

    Never skips and never downloads: CI points ``SCRATCH_DATA_DIR`` at its copy (``.ci/run``:
    ``../shared/data``), and a developer may instead fill the cache once with
    ``python -m scratch_engine.tools.datasets fetch --all``.
    """
    import os

    from scratch_engine.tools.datasets import DataNotFoundError, cache_dir, locate

    root = os.environ.get("SCRATCH_DATA_DIR")
    if root and not Path(root).is_dir():
        raise AssertionError(f"SCRATCH_DATA_DIR={root!r} is not a folder; this test needs real data")
    folder = Path(root) if root else cache_dir()
    for name in datasets:
        try:
            locate(name, data_dir=folder, download=False)  # the loaders look there, then in the cache
        except DataNotFoundError as err:
            raise AssertionError(f"this test needs real data: {err}") from None
    return folder


def assert_missing_data_is_one_line_error(
    main: Callable[[list[str]], int], task_argv: Sequence[str], tmp_path: Path, monkeypatch: Any, capsys: Any
) -> str:
    """A CLI's ``train`` pointed at a folder without its data exits 1 with one line naming that folder.

    Runs ``main([*task_argv, "--data-dir", <nowhere>, "--no-download", "--out", <out>])`` with
    an empty cache (pytest's ``monkeypatch`` and ``capsys``); no traceback, nothing written.
    Returns the line, for what else a package wants it to say.
    """
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    nowhere, out = tmp_path / "nowhere", tmp_path / "out"
    assert main([*task_argv, "--data-dir", str(nowhere), "--no-download", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert "Traceback" not in error
    assert str(nowhere) in error, error
    assert not out.exists()
    return error
