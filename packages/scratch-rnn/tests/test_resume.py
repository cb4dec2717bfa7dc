"""A ``train shakespeare`` run is never lost: stopped by SIGTERM and resumed it ends as an uninterrupted run, and
``kill -9`` leaves a recent checkpoint.

The resumed run must also carry on with the recurrent state it had: the stop can fall in the middle
of a pass over the text (the state is saved in the checkpoint), at a pass's end (where it is reset)
and between validations.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scratch_engine.tools.checkpoint import read_checkpoint
from scratch_engine.tools.testing import assert_kill_leaves_a_recent_checkpoint, assert_sigterm_resume_is_exact
from scratch_rnn.cli import main

STEPS = 40  # 14 batches a pass: the run ends in its third pass, with validations every 7 steps


def small_text(path: Path, words: int) -> Path:
    generator = torch.Generator().manual_seed(0)
    vocabulary = ["to", "be", "or", "not", "that", "is", "the", "question", "\n"]
    path.write_text(" ".join(vocabulary[i] for i in torch.randint(0, 9, (words,), generator=generator).tolist()))
    return path


def argv(text: Path, *budget: str) -> list[str]:
    return [
        *("train", "shakespeare", "--text", str(text), "--hidden", "16", "--layers", "1", "--batch-size", "4"),
        *("--seq-len", "8", "--eval-every", "7", "--sample-length", "20", "--threads", "1", "--device", "cpu"),
        *budget,
    ]


def test_a_run_stopped_by_sigterm_and_resumed_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    text = small_text(tmp_path / "text.txt", 130)
    step = assert_sigterm_resume_is_exact(main, argv(text, "--max-steps", str(STEPS)), tmp_path, STEPS)
    whole = read_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    progress = whole["progress"]
    assert (progress["epoch"], progress["batch"], progress["step"]) == (2, 12, STEPS)  # two passes and 12 batches
    resumed = read_checkpoint(tmp_path / "interrupted" / "checkpoint.pt")
    assert resumed["history"]["step"] == whole["history"]["step"]
    assert resumed["history"]["val_loss"] == whole["history"]["val_loss"], f"after a stop at step {step}"


def test_kill_9_leaves_a_recent_checkpoint(tmp_path: Path) -> None:
    text = small_text(tmp_path / "text.txt", 4000)
    state = assert_kill_leaves_a_recent_checkpoint(
        "scratch_rnn", argv(text, "--max-minutes", "2"), tmp_path / "killed", 1.0
    )
    assert state["extra"]["run"]["finished"] is False
    assert state["extra"]["vocabulary"]["chars"]  # what `sample` needs is in every checkpoint
