"""The README's code runs as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratch_engine.tools.testing import run_readme_examples

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path: Path) -> None:
    assert run_readme_examples(README, tmp_path) >= 2
    assert (tmp_path / "runs" / "curves.png").stat().st_size > 0
    assert (tmp_path / "runs" / "ckpt.pt").is_file()


def test_top_level_readme_quick_example_runs(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    top = Path(__file__).resolve().parents[2] / "README.md"  # the repository's README (tests run from a checkout)
    assert run_readme_examples(top, tmp_path) >= 1
    assert (tmp_path / "runs" / "clusters-loss.png").stat().st_size > 0
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 1  # the accuracy: quiet, as the package READMEs' examples are (#19)
    assert not err
