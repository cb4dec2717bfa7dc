"""Checkpoint files: atomic, weights-only, clear errors; periodic saving; Ctrl-C and SIGTERM; early stopping."""

from __future__ import annotations

import os
import signal
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from scratch_engine import (
    Adam,
    Callback,
    CrossEntropyLoss,
    DataLoader,
    Dense,
    Dropout,
    Engine,
    ReLU,
    Sequential,
    StepLR,
    WarmupCosine,
)
from scratch_engine.tools.callbacks import EarlyStopping
from scratch_engine.tools.checkpoint import (
    FORMAT,
    Checkpoints,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    stop_on_signals,
)
from scratch_engine.tools.files import write_atomic


def clusters(n_per_class: int = 40, spread: float = 0.6) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    y = torch.arange(4).repeat_interleave(n_per_class)
    return centers[y] + spread * torch.randn(len(y), 2, generator=generator), y


def _run(seed: int = 0) -> tuple[Sequential, Engine, DataLoader]:
    X, y = clusters()
    torch.manual_seed(seed)
    model = Sequential(Dense(2, 32), ReLU(), Dropout(0.25), Dense(32, 4))
    optimizer = Adam(model, learning_rate=0.02)
    engine = Engine(model, CrossEntropyLoss(), optimizer, scheduler=StepLR(optimizer, 7, 0.5), progress=False)
    return model, engine, DataLoader(X, y, batch_size=24)  # the loader's seed is drawn from the global RNG


def test_a_checkpoint_file_resumes_the_run_exactly(tmp_path: Path) -> None:
    model, engine, train = _run()
    engine.fit(train, epochs=5)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    model, engine, train = _run()
    path = tmp_path / "run" / "ckpt.pt"
    engine.fit(train, max_steps=16, callbacks=[Checkpoints(path)])  # mid-epoch: saved when the fit ends
    model, engine, train = _run(seed=123)  # a fresh process: other weights, other loader seed
    assert load_checkpoint(engine, path) == {}
    assert (engine.epoch, engine.batch, engine.global_step) == (2, 2, 16)
    engine.fit(train, epochs=5)
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_checkpoint_is_weights_only_loadable_and_holds_extra(tmp_path: Path) -> None:
    model, engine, train = _run()
    engine.fit(train, epochs=1)
    vocabulary = {"tokens": ["<pad>", "a", "b"], "config": {"hidden": 32, "note": None}}
    path = save_checkpoint(engine, tmp_path / "ckpt.pt", extra={"vocab": vocabulary})
    state = torch.load(path, weights_only=True)
    assert state["format"] == FORMAT
    assert state["progress"] == {"epoch": 1, "batch": 0, "step": 7, "seconds": engine.seconds}
    assert set(state["model"]) == set(model.state_dict())
    assert state["history"]["loss"] == engine.history["loss"]
    assert state["extra"] == {"vocab": vocabulary}
    assert isinstance(state["saved_at"], float)
    assert load_checkpoint(engine, path) == {"vocab": vocabulary}


def test_checkpoint_of_another_model_is_rejected(tmp_path: Path) -> None:
    _, engine, _ = _run()
    path = save_checkpoint(engine, tmp_path / "big.pt")
    small = Sequential(Dense(2, 8), ReLU(), Dense(8, 4))
    other = Engine(small, CrossEntropyLoss(), Adam(small), progress=False)
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(other, path)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a scratch-engine checkpoint"):
        load_checkpoint(other, tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(other, tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pt could not be read as a checkpoint: it is not a file written"):
        read_checkpoint(tmp_path / "text.pt")


def test_a_checkpoint_whose_bytes_changed_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    _model, engine, train = _run()
    engine.fit(train, epochs=1)
    path = save_checkpoint(engine, tmp_path / "ckpt.pt")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # the largest tensor's bytes: the first Dense's weights or their moments
        entry = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda info: info.file_size)
        data = archive.read(entry)
    start = raw.find(data) + len(data) // 2
    raw[start : start + 8] = bytes(b ^ 0xFF for b in raw[start : start + 8])  # 8 flipped bytes, as a bad disk would
    path.write_bytes(bytes(raw))
    _, fresh, _ = _run(seed=5)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(
        ValueError, match=rf"ckpt\.pt is damaged: the bytes of '.*{entry.filename.split('/')[-1]}' changed"
    ):
        load_checkpoint(fresh, path)
    assert all(torch.equal(v, before[k]) for k, v in fresh.model.state_dict().items())
    assert fresh.global_step == 0
    assert fresh.optimizer.state[0] == {}


def test_a_failed_load_leaves_the_engine_as_it_was(tmp_path: Path) -> None:
    _, engine, train = _run()
    engine.fit(train, epochs=2)
    path = save_checkpoint(engine, tmp_path / "steplr.pt")  # its schedule is a StepLR
    X, y = clusters()
    model = Sequential(Dense(2, 32), ReLU(), Dropout(0.25), Dense(32, 4))
    optimizer = Adam(model, learning_rate=0.02)
    other = Engine(model, CrossEntropyLoss(), optimizer, scheduler=WarmupCosine(optimizer, 2, 40), progress=False)
    other.fit(DataLoader(X, y, batch_size=24, seed=1), epochs=1)
    before = {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rates": (optimizer.learning_rate, other.learning_rate),
        "position": (other.epoch, other.batch, other.global_step, other.scheduler.last_step),
        "history": other.history.to_dict(),
    }
    with pytest.raises(ValueError, match="the state of a StepLR schedule cannot be loaded into WarmupCosine"):
        load_checkpoint(other, path)  # the optimizer and the model load before the schedule refuses
    assert all(torch.equal(v, before["weights"][k]) for k, v in model.state_dict().items())
    after = optimizer.state_dict()
    assert all(
        torch.equal(a, b) if isinstance(a, Tensor) else a == b
        for s, t in zip(after["state"], before["optimizer"]["state"], strict=True)
        for a, b in zip(s.values(), t.values(), strict=True)
    )
    assert (optimizer.learning_rate, other.learning_rate) == before["rates"]
    assert (other.epoch, other.batch, other.global_step, other.scheduler.last_step) == before["position"]
    assert other.history.to_dict() == before["history"]
    state = read_checkpoint(path)
    del state["meter"]  # a damaged record: an entry missing
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks the entry 'meter'"):
        load_checkpoint(_run()[1], tmp_path / "partial.pt")


def test_a_crash_mid_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    write_atomic(path, lambda file: file.write(b"first"))

    def crashing(file: Any) -> None:
        file.write(b"PK\x03\x04 half a zip archive")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, crashing)
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind
    (tmp_path / ".ckpt.pt.abc123.tmp").write_bytes(b"left by a killed process")
    write_atomic(path, lambda file: file.write(b"second"))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # the stale one is gone
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's private 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_only_plain_data_is_saved(tmp_path: Path) -> None:
    class Opaque:
        pass

    _, engine, _ = _run()
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\['note'\]\[1\] is a Opaque"):
        save_checkpoint(engine, tmp_path / "bad.pt", extra={"note": [1, Opaque()]})
    assert not list(tmp_path.iterdir())


class Clock(Callback):
    """Advance the engine's training clock by ``seconds`` per step: a slow run without waiting."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        engine.seconds = engine.global_step * self.seconds


def test_checkpoints_are_saved_every_interval_at_rows_and_at_the_end(tmp_path: Path) -> None:
    saves: list[int] = []

    class Counting(Checkpoints):
        def save(self, engine: Engine) -> Path:
            saves.append(engine.global_step)
            return super().save(engine)

    _, engine, train = _run()  # 7 steps an epoch
    checkpoints = Counting(tmp_path / "ckpt.pt", every_seconds=10.0, row_seconds=10.0)
    engine.fit(train, max_steps=30, eval_every=25, callbacks=[Clock(3.0), checkpoints])
    # every 10 s of 3 s steps: after steps 4, 8, ..., 28; the row at step 25 came 3 s after a save, and
    # the row for the budget's end at step 30 6 s after one, too soon for another; the fit's end saves
    assert saves == [4, 8, 12, 16, 20, 24, 28, 30]
    assert read_checkpoint(tmp_path / "ckpt.pt")["progress"]["step"] == 30


def test_a_signal_stops_the_fit_after_the_step_and_a_second_one_is_not_caught() -> None:
    _, engine, train = _run()

    class Signal(Callback):
        def on_train_batch(self, engine: Engine, x: Any, y: Any) -> None:
            if engine.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(engine) as caught:
        engine.fit(train, epochs=5, callbacks=[Signal()])
        assert signal.getsignal(signal.SIGTERM) == before  # the first one restored the handler before it
    assert caught == [signal.SIGTERM]
    assert engine.global_step == 4  # the step under way finished
    assert engine.history.rows == 0  # an interruption logs no row
    assert signal.getsignal(signal.SIGTERM) == before


# --------------------------------------------------------------------------- early stopping


def _early_stopped_run() -> tuple[Engine, DataLoader, DataLoader]:
    """Adam at a high rate: the validation loss is best at epoch 5 and the run stops at epoch 8 (patience 3)."""
    X, y = clusters(25, spread=1.5)
    torch.manual_seed(0)
    model = Sequential(Dense(2, 16), ReLU(), Dropout(0.2), Dense(16, 4))
    engine = Engine(model, CrossEntropyLoss(), Adam(model, learning_rate=0.2), progress=False)
    return engine, DataLoader(X[::2], y[::2], batch_size=10, seed=0), DataLoader(X[1::2], y[1::2], shuffle=False)


def _stop_of(engine: Engine, stopper: EarlyStopping) -> tuple[object, ...]:
    return engine.epoch, stopper.stopped_step, stopper.best_step, stopper.best, engine.history["val_loss"]


def test_early_stopping_continued_or_resumed_stops_where_an_uninterrupted_run_does(tmp_path: Path) -> None:
    engine, train, val = _early_stopped_run()  # 5 steps an epoch
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=40, val_loader=val, callbacks=[stopper])
    expected, weights = _stop_of(engine, stopper), {k: v.clone() for k, v in engine.model.state_dict().items()}
    assert expected[:3] == (8, 40, 25)  # the run this test is about: it waits 1 epoch at the interruption (6)
    for name, value in engine.model.state_dict().items():  # restored to epoch 5's weights
        assert torch.equal(value, weights[name])

    # continued: the same callback, a second fit
    engine, train, val = _early_stopped_run()
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=6, val_loader=val, callbacks=[stopper])
    assert (stopper.wait, stopper.stopped_step) == (1, 0)
    engine.fit(train, epochs=40, val_loader=val, callbacks=[stopper])
    assert _stop_of(engine, stopper) == expected

    # resumed: a new engine and callback from a checkpoint written at the end of the first fit
    engine, train, val = _early_stopped_run()
    path = tmp_path / "epoch6.pt"
    engine.fit(train, epochs=6, val_loader=val, callbacks=[EarlyStopping(patience=3), Checkpoints(path)])
    assert torch.load(path, weights_only=True)["callbacks"]["EarlyStopping"]["wait"] == 1
    engine, train, val = _early_stopped_run()
    load_checkpoint(engine, path)
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=40, val_loader=val, callbacks=[stopper])
    assert _stop_of(engine, stopper) == expected
    for name, value in engine.model.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_early_stopping_starts_afresh_with_a_new_run_and_refuses_another_monitors_state(tmp_path: Path) -> None:
    engine, train, val = _early_stopped_run()
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=2, val_loader=val, callbacks=[stopper, Checkpoints(tmp_path / "epoch2.pt")])
    engine, train, val = _early_stopped_run()
    engine.fit(train, epochs=1, val_loader=val, callbacks=[stopper])  # step 0: a new run, a fresh state
    assert (stopper.best_step, stopper.best) == (5, engine.history["val_loss"][0])
    engine, train, val = _early_stopped_run()
    load_checkpoint(engine, tmp_path / "epoch2.pt")
    with pytest.raises(ValueError, match=r"watched 'val_loss' \(min\), this one watches 'loss' \(min\)"):
        engine.fit(train, epochs=3, val_loader=val, callbacks=[EarlyStopping(monitor="loss")])


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    X, y = clusters(25)
    torch.manual_seed(0)
    model = Sequential(Dense(2, 16), ReLU(), Dense(16, 4))
    engine = Engine(model, CrossEntropyLoss(), Adam(model, 0.01), progress=False)
    states: list[dict[str, Tensor]] = []

    class Snapshots(Callback):
        def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
            states.append({k: v.clone() for k, v in engine.model.state_dict().items()})

    # the loss falls every epoch, so "max" mode sees epoch 1 as the best and never improves on it
    stopper = EarlyStopping(monitor="loss", patience=2, mode="max")
    history = engine.fit(DataLoader(X, y, batch_size=10), epochs=20, callbacks=[Snapshots(), stopper])
    assert history.rows == 3
    assert (stopper.best_step, stopper.stopped_step) == (10, 30)
    for name, value in model.state_dict().items():
        assert torch.equal(value, states[0][name])
        assert not torch.equal(value, states[-1][name])


def test_early_stopping_with_min_delta_and_missing_monitor() -> None:
    class FakeEngine:
        def __init__(self) -> None:
            self.model = Sequential(Dense(2, 4))
            self.stop_training = False
            self.global_step = 0

    engine = FakeEngine()
    stopper = EarlyStopping(patience=2, min_delta=0.1, restore_best=False)
    for val_loss in [1.0, 0.95, 0.5, 0.45, 0.44]:
        engine.global_step += 1
        stopper.on_log(engine, {"val_loss": val_loss})  # type: ignore[arg-type]
    assert stopper.best == 0.5
    assert engine.stop_training
    with pytest.raises(KeyError, match="val_loss"):
        EarlyStopping().on_log(engine, {"loss": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        EarlyStopping(mode="up")  # type: ignore[arg-type]
