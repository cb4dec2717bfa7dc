"""The README's quick-start examples run as written (the eng-fra one needs the data and minutes: not here)."""

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


def test_gpt_quick_start_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    gpt = [block for block in python_blocks(README) if "GPTConfig" in block]
    assert len(gpt) == 1
    exec(compile(gpt[0], str(README), "exec"), {"__name__": "__readme__"})
    (line,) = capsys.readouterr().out.splitlines()  # about 3 s, seed 0
    # "to be" occurs twice in each period of the text ("to be, or not" and "to be, that is"), so either
    # continuation is the text learned; a model that had not learned it would write no 45-character piece of it
    assert len(line) == 45, line
    assert line in "to be, or not to be, that is the question. " * 3, line
    assert not os.listdir(tmp_path)
