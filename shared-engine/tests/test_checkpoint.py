"""Checkpoint files: atomic writes, weights-only reads, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from scratch_engine.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_weights_only(tmp_path: Path) -> None:
    state = {"w": torch.randn(3, 2), "step": 7, "lr": 0.5, "name": "run", "nested": [{"a": None, "b": True}]}
    path = save_checkpoint(state, tmp_path / "deep" / "folder" / "ckpt.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["nested"] == [{"a": None, "b": True}]
    assert torch.load(path, weights_only=True)["step"] == 7


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"w": torch.ones(4), "epoch": 1}, path)

    def crashing_save(obj: Any, file: Any) -> None:
        file.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"w": torch.zeros(4), "epoch": 2}, path)
    monkeypatch.undo()

    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1
    assert torch.equal(loaded["w"], torch.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing-here\.pt"):
        load_checkpoint(tmp_path / "nothing-here.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pt"):
        load_checkpoint(tmp_path / "text.pt")


def test_only_plain_data_is_saved(tmp_path: Path) -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\[1\] is a Opaque"):
        save_checkpoint({"extra": [1, Opaque()]}, tmp_path / "bad.pt")
    assert not list(tmp_path.iterdir())
