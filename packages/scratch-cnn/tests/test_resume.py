"""A ``train`` run is never lost: stopped by SIGTERM and resumed it ends as an uninterrupted run, killed it leaves a
recent checkpoint.

Both read MNIST ($SCRATCH_DATA_DIR, else the cache; never downloaded): the image task has no data-free variant, so
without the data they fail, on purpose, rather than skip.
"""

from __future__ import annotations

from pathlib import Path

from scratch_cnn.cli import main
from scratch_engine.tools.testing import (
    assert_kill_leaves_a_recent_checkpoint,
    assert_sigterm_resume_is_exact,
    require_data_dir,
)

TRAIN_SAMPLES, BATCH_SIZE, EPOCHS = 256, 32, 3
SMALL = (
    f"train mnist --train-samples {TRAIN_SAMPLES} --test-samples 64 --batch-size {BATCH_SIZE} --epochs {EPOCHS} "
    "--device cpu --no-download --mistakes 0"  # no mistakes.png: three runs, and a plot costs seconds
)


def test_sigterm_at_a_random_step_then_resume_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    """8 steps per epoch and a history row (a validation) after each: the stop falls mid-epoch or on an epoch's
    last step, between rows or right after one; dropout's random numbers must resume too."""
    require_data_dir("mnist")
    steps = EPOCHS * TRAIN_SAMPLES // BATCH_SIZE
    assert_sigterm_resume_is_exact(main, SMALL.split(), tmp_path, steps)


def test_kill_9_leaves_a_checkpoint_no_older_than_its_interval(tmp_path: Path) -> None:
    """A run of the whole training set (938 steps an epoch: rows, and their checkpoints, are rare, so the one the
    kill leaves is a timed one), capped at half a minute so that it outlives the kill and never runs long."""
    require_data_dir("mnist")
    argv = "train mnist --epochs 3 --max-minutes 0.5 --batch-size 64 --test-samples 64 --device cpu --no-download"
    state = assert_kill_leaves_a_recent_checkpoint("scratch_cnn", argv.split(), tmp_path / "killed", 1.0)
    assert state["progress"]["step"] > 0
    assert state["extra"]["run"]["finished"] is False
