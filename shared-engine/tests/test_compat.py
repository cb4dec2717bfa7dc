"""Code written for scratch-engine 0.1 still runs: the usage blocks of its READMEs (commit 27d8511), verbatim.

What #17 moved into :mod:`scratch_engine.tools` (``EarlyStopping``, ``ModelCheckpoint``, ``History.plot``,
``Engine(seed=...)``) is still found, with a ``DeprecationWarning`` naming its new home.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

import scratch_engine
from scratch_engine.tools.checkpoint import read_checkpoint

ROOT_README_BLOCK = """\
import torch
from scratch_engine import CrossEntropyLoss, DataLoader, Dense, Engine, GradientDescent, ReLU, Sequential

torch.manual_seed(0)
centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
y = torch.arange(4).repeat_interleave(100)
X = centers[y] + 0.7 * torch.randn(400, 2)

model = Sequential(Dense(2, 16), ReLU(), Dense(16, 4))
loss = CrossEntropyLoss()
engine = Engine(model, loss, GradientDescent(model, learning_rate=0.05))
history = engine.fit(DataLoader(X, y, batch_size=32), epochs=50)
print(history["accuracy"][-1])
history.plot("runs/clusters-loss.png")
"""

ENGINE_README_BLOCK = """\
import torch
from scratch_engine import (
    Adam,
    CrossEntropyLoss,
    DataLoader,
    Dense,
    Dropout,
    EarlyStopping,
    Engine,
    ModelCheckpoint,
    ReLU,
    Sequential,
)

torch.manual_seed(0)
centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
y = torch.arange(4).repeat_interleave(200)
X = centers[y] + 0.8 * torch.randn(800, 2)
train, val = DataLoader(X[::2], y[::2], batch_size=32, seed=0), DataLoader(X[1::2], y[1::2], shuffle=False)

model = Sequential(Dense(2, 32), ReLU(), Dropout(0.1), Dense(32, 4))
engine = Engine(model, CrossEntropyLoss(), Adam(model, learning_rate=1e-2), clip_grad_norm=5.0, seed=0)
history = engine.fit(
    train,
    epochs=20,
    val_loader=val,
    callbacks=[EarlyStopping(monitor="val_loss", patience=3), ModelCheckpoint("runs/ckpt.pt")],
)
print(engine.evaluate(val))  # {'loss': ..., 'accuracy': ...}
history.plot("runs/curves.png")  # loss and accuracy curves
"""


def run_block(block: str, workdir: Path) -> dict[str, object]:
    namespace: dict[str, object] = {}
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(block, "README (0.1)", "exec"), namespace)
    finally:
        os.chdir(previous)
    return namespace


def test_the_root_readme_of_0_1_runs_unchanged(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match=r"History.plot moved: use scratch_engine.tools.plots.plot_history"):
        namespace = run_block(ROOT_README_BLOCK, tmp_path)
    history = namespace["history"]
    assert isinstance(history, scratch_engine.History)
    assert history.rows == 50
    assert history["accuracy"][-1] > 0.95
    assert (tmp_path / "runs" / "clusters-loss.png").stat().st_size > 10_000


def test_the_engine_readme_of_0_1_runs_unchanged(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match="moved: use scratch_engine") as caught:
        namespace = run_block(ENGINE_README_BLOCK, tmp_path)
    said = "\n".join(str(w.message) for w in caught)
    for old in ("scratch_engine.EarlyStopping", "scratch_engine.ModelCheckpoint", "Engine(seed=...)", "History.plot"):
        assert f"{old} moved" in said
    engine = namespace["engine"]
    assert isinstance(engine, scratch_engine.Engine)
    assert engine.evaluate(namespace["val"])["accuracy"] > 0.9  # type: ignore[arg-type]
    saved = read_checkpoint(tmp_path / "runs" / "ckpt.pt")
    assert saved["progress"]["epoch"] == engine.epoch  # saved at the latest epoch's end
    assert (tmp_path / "runs" / "curves.png").stat().st_size > 10_000


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Trainer'"):
        scratch_engine.Trainer  # noqa: B018
    assert not hasattr(scratch_engine, "Trainer")
