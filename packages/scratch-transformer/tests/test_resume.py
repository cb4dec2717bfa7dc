"""A ``train eng-fra`` run is never lost: stopped by SIGTERM and resumed it ends as an uninterrupted run; ``kill -9``
leaves a recent checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratch_engine.tools.testing import assert_kill_leaves_a_recent_checkpoint, assert_sigterm_resume_is_exact
from scratch_transformer.cli import main
from scratch_transformer.data import read_pairs, split_of

WORDS = {"cat": "chat", "dog": "chien", "sun": "soleil", "sea": "mer", "tree": "arbre", "bird": "oiseau"}
WORDS |= {"car": "voiture", "road": "route"}
TINY = [
    "--d-model",
    "16",
    "--heads",
    "2",
    "--layers",
    "1",
    "--d-ff",
    "32",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--threads",
    "1",
]
STEPS = 30


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 pairs, "cat dog." -> "chat chien.": 56 train (7 batches of 8 per epoch), 1 val, 7 test."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    lines = [f"{a} {b}.\t{WORDS[a]} {WORDS[b]}.\n" for a in WORDS for b in WORDS]
    path.write_text("".join(lines), encoding="utf-8")
    assert {split_of(english) for english, _ in read_pairs(path)} == {"train", "val", "test"}
    return path


def test_sigterm_then_resume_ends_with_the_weights_of_an_uninterrupted_run(pairs: Path, tmp_path: Path) -> None:
    # 30 steps over epochs of 7 batches and rows every 5 steps: a random stop falls mid-epoch and between
    # rows; dropout (0.1, the default) draws random numbers at every step, which the resume must restore
    argv = ["train", "eng-fra", "--pairs", str(pairs), *TINY, "--eval-every", "5", "--max-steps", str(STEPS)]
    assert_sigterm_resume_is_exact(main, [*argv, "--test-limit", "3"], tmp_path, STEPS)


def test_kill_9_leaves_a_loadable_recent_checkpoint(pairs: Path, tmp_path: Path) -> None:
    argv = ["train", "eng-fra", "--pairs", str(pairs), *TINY, "--eval-every", "50", "--max-steps", "1000000"]
    state = assert_kill_leaves_a_recent_checkpoint("scratch_transformer", argv, tmp_path / "killed", 1.0)
    assert state["extra"]["translator"]["src_vocab"]["specials"] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert state["progress"]["step"] > 0
