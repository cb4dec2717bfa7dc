"""noxfile.py picks torch's light CPU build without settings where it can (#19): its choice, case by case."""

from __future__ import annotations

import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import noxfile  # from the repository's root, where noxfile.py lies

CPU = ["--extra-index-url", noxfile.CPU_TORCH_INDEX]


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in ("SCRATCH_TORCH_INDEX", "SCRATCH_CONSTRAINTS", "SCRATCH_VISION_CONSTRAINTS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no nvidia-smi: no NVIDIA GPU
    noxfile.torch_index.cache_clear()
    yield
    noxfile.torch_index.cache_clear()


def answering(monkeypatch: pytest.MonkeyPatch, answers: bool) -> list[str]:
    asked: list[str] = []

    def urlopen(request: urllib.request.Request, timeout: float) -> Any:
        asked.append(request.full_url)
        if not answers:
            raise OSError("unreachable")
        return object()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def test_linux_without_a_gpu_takes_the_cpu_index_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = answering(monkeypatch, True)
    assert noxfile.torch_index() == CPU
    assert noxfile.constraints()[-2:] == CPU  # every install gets it
    assert asked == [f"{noxfile.CPU_TORCH_INDEX}/torch/"]  # probed once per nox run


def test_an_unreachable_index_falls_back_to_pypi_with_a_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answering(monkeypatch, False)
    assert noxfile.torch_index() == []
    assert "does not answer" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["gpu", "macos", "pypi", "constraints"])
def test_no_cpu_index_where_it_is_not_wanted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str) -> None:
    asked = answering(monkeypatch, True)
    if case == "gpu":
        monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    elif case == "macos":
        monkeypatch.setattr(sys, "platform", "darwin")
    elif case == "pypi":
        monkeypatch.setenv("SCRATCH_TORCH_INDEX", "pypi")
    else:  # a constraints file picks the build (CI): the index is not even asked
        pinned = tmp_path / "cpu.txt"
        pinned.write_text("torch==2.13.0\n")
        monkeypatch.setenv("SCRATCH_CONSTRAINTS", str(pinned))
        assert noxfile.constraints()[-1] == str(pinned.resolve())
        assert asked == []
        return
    assert noxfile.torch_index() == []
    assert asked == []
