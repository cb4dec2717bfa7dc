"""A package's ``train`` command is never lost: stopped by SIGTERM and resumed, or killed with ``kill -9``.

:func:`assert_sigterm_resume_is_exact` sends a real SIGTERM to the process from inside a random
training step (the command's own signal handler takes it), resumes the run with ``--resume`` and
compares every weight with an uninterrupted run's. :func:`assert_kill_leaves_a_recent_checkpoint`
kills a ``train`` subprocess with SIGKILL at a random moment and reads the checkpoint it left.
"""

from __future__ import annotations

import errno
import io
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from scratch_engine.engine import Engine
from scratch_engine.tools.checkpoint import read_checkpoint

Main = Callable[[Sequence[str]], int]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = read_checkpoint(out / "checkpoint.pt")["model"]
    return weights


def assert_sigterm_resume_is_exact(
    main: Main, argv: Sequence[str], out: Path, steps: int, step: int | None = None
) -> int:
    """``main([*argv, "--out", ...])`` stopped by SIGTERM after a random step, then ``--resume``d, ends with the
    weights of an uninterrupted run (``torch.equal``). ``steps`` is the run's length; returns the step stopped at.
    """
    step = random.randint(1, steps - 1) if step is None else step
    whole, parts = out / "whole", out / "interrupted"
    assert main([*argv, "--out", str(whole), "--quiet"]) == 0
    original = Engine.train_step

    def train_step(engine: Engine, x: Any, y: Any) -> Any:
        result = original(engine, x, y)
        if engine.global_step == step:
            os.kill(os.getpid(), signal.SIGTERM)  # the command's handler stops the run after this step
        return result

    Engine.train_step = train_step  # type: ignore[method-assign,assignment]
    try:
        status = main([*argv, "--out", str(parts), "--quiet"])
    finally:
        Engine.train_step = original  # type: ignore[method-assign]
    assert status == 128 + signal.SIGTERM, f"stopped at step {step}: exit status {status}"
    state = read_checkpoint(parts / "checkpoint.pt")
    assert state["progress"]["step"] == step, f"the checkpoint holds step {state['progress']['step']}, not {step}"
    assert main([*argv, "--out", str(parts), "--quiet", "--resume"]) == 0
    expected, resumed = _weights(whole), _weights(parts)
    assert expected.keys() == resumed.keys()
    for name, value in expected.items():
        assert torch.equal(resumed[name], value), f"{name} differs after a stop at step {step} and a resume"
    return step


def assert_kill_leaves_a_recent_checkpoint(
    module: str, argv: Sequence[str], out: Path, interval_seconds: float, run_seconds: float = 4.0
) -> dict[str, Any]:
    """``python -m module [*argv, "--out", out]``, with checkpoints every ``interval_seconds``, killed with SIGKILL
    at a random moment after its first checkpoint: the file it left loads, and was written no longer than the
    interval (plus a step) before the kill. Returns the checkpoint."""
    path = out / "checkpoint.pt"
    minutes = interval_seconds / 60.0
    command = [sys.executable, "-m", module, *argv, "--out", str(out), "--quiet", "--checkpoint-minutes", f"{minutes}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120.0
        while not path.exists():
            if process.poll() is not None:
                raise AssertionError(f"{module} ended before its first checkpoint: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"{module} wrote no checkpoint in 120 s")
            time.sleep(0.05)
        time.sleep(random.uniform(interval_seconds, run_seconds))
        assert process.poll() is None, f"{module} finished before it could be killed: give it a longer run"
        process.kill()
        killed_at = time.time()
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    state = read_checkpoint(path)
    age = killed_at - state["saved_at"]
    assert age <= interval_seconds + 1.0, f"the checkpoint was {age:.2f} s old at the kill ({interval_seconds} s apart)"
    return state


def fill_the_disk(monkeypatch: Any) -> None:
    """From now on (within ``monkeypatch``, pytest's fixture), every file written with a flush to disk fails as
    on a full disk: ``os.fsync`` of a non-empty file raises ``ENOSPC``. Checkpoints and result files all go
    through :func:`scratch_engine.tools.files.write_atomic`, which syncs before it renames."""
    real_fsync = os.fsync

    def full(fd: int) -> None:
        if os.fstat(fd).st_size > 0 and not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)


class FullDiskStream(io.StringIO):
    """A standard output redirected to a file on a full disk: every write raises ``ENOSPC``."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")
