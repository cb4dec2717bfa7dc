"""The README's quick-start example runs as written (the eng-fra one needs the data and minutes: not here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scratch_engine.tools.testing import python_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(README)
    assert len(blocks) >= 2
    exec(compile(blocks[0], str(README), "exec"), {"__name__": "__readme__"})
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["['un', 'trois', 'quatre']", "['deux']"]
    assert not os.listdir(tmp_path)
