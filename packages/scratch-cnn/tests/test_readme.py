"""The README's Python examples run as written, against the installed package."""

from __future__ import annotations

from pathlib import Path

from scratch_engine.tools.testing import run_readme_examples

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path: Path) -> None:
    assert run_readme_examples(README, tmp_path) >= 3
