"""A `scratch-mlp train` run is never lost: stopped by SIGTERM and resumed it ends as if never stopped;
killed with SIGKILL it leaves a recent checkpoint."""

from __future__ import annotations

from pathlib import Path

from scratch_engine.tools.testing import assert_kill_leaves_a_recent_checkpoint, assert_sigterm_resume_is_exact
from scratch_mlp.cli import main

# 500 training points in batches of 32: 16 steps an epoch, 4 epochs; the stop falls mid-epoch or on its end
CLUSTERS = ["train", "clusters", "--epochs", "4", "--samples-per-class", "125", "--device", "cpu"]


def test_a_sigterm_at_a_random_step_then_resume_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    assert_sigterm_resume_is_exact(main, CLUSTERS, tmp_path, steps=64)


def test_a_sigkill_leaves_a_loadable_checkpoint_no_older_than_the_interval(tmp_path: Path) -> None:
    argv = ["train", "clusters", "--epochs", "100000", "--device", "cpu", "--threads", "1"]
    state = assert_kill_leaves_a_recent_checkpoint("scratch_mlp", argv, tmp_path / "killed", interval_seconds=1.0)
    assert state["progress"]["step"] > 0
