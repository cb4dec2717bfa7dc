"""Engine: trains, matches autograd, stops on a non-finite loss, resumes exactly, reports quietly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

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
    EarlyStopping,
    Engine,
    GradientDescent,
    History,
    ModelCheckpoint,
    MSELoss,
    ReLU,
    Sequential,
    StepLR,
    WarmupCosine,
    distributed,
    resolve_device,
    seed_everything,
)


def clusters(n_per_class: int = 100, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Four Gaussian blobs in 2-D, one per quadrant."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    y = torch.arange(4).repeat_interleave(n_per_class)
    X = centers[y] + 0.6 * torch.randn(len(y), 2, generator=generator)
    return X.to(dtype), y


def classifier(hidden: int = 16, dropout: float = 0.0) -> Sequential:
    layers = [Dense(2, hidden), ReLU()]
    if dropout:
        layers.append(Dropout(dropout))
    return Sequential(*layers, Dense(hidden, 4))


def params_of(model: Sequential) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_documented_usage_learns_four_clusters() -> None:
    X, y = clusters()
    seed_everything(0)
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, learning_rate=0.05), progress=False)
    history = engine.fit(DataLoader(X, y, batch_size=32), epochs=50)
    assert history is engine.history
    assert history.epochs == 50
    assert history["accuracy"][-1] > 0.95
    assert history["loss"][-1] < history["loss"][0]
    assert engine.evaluate(DataLoader(X, y, batch_size=128, shuffle=False))["accuracy"] > 0.95
    assert engine.epoch == 50
    assert engine.global_step == 50 * 13
    assert set(history) == {"loss", "accuracy", "lr", "seconds"}


def test_history_lr_is_the_rate_each_epochs_last_step_trained_with() -> None:
    # it logged the rate after the epoch's last schedule step: a cosine run's last epoch showed 0,
    # a rate no step had used
    X, y = clusters(25)
    seed_everything(0)
    model = classifier()
    optimizer = GradientDescent(model, learning_rate=0.1)
    schedule = WarmupCosine(optimizer, warmup_steps=2, total_steps=12)
    engine = Engine(model, CrossEntropyLoss(), optimizer, scheduler=schedule, progress=False)
    history = engine.fit(DataLoader(X, y, batch_size=25), epochs=3)  # 4 steps an epoch
    assert history["lr"] == pytest.approx([schedule.lr_at(3), schedule.lr_at(7), schedule.lr_at(11)], rel=1e-12)
    assert history["lr"][-1] > 0.0
    assert optimizer.learning_rate == 0.0  # the schedule itself did reach its end


def _one_epoch(backward: str, state: dict[str, Tensor], X: Tensor, y: Tensor) -> dict[str, Tensor]:
    model = classifier(hidden=8, dropout=0.3).to(dtype=torch.float64)
    model.load_state_dict(state)
    engine = Engine(model, CrossEntropyLoss(), Adam(model, 0.01), backward=backward, seed=7, progress=False)
    engine.fit(DataLoader(X, y, batch_size=16, seed=5), epochs=1)
    return params_of(model)


def test_manual_backward_matches_autograd_mode() -> None:
    X, y = clusters(25, dtype=torch.float64)
    state = params_of(classifier(hidden=8, dropout=0.3).to(dtype=torch.float64))
    manual = _one_epoch("manual", state, X, y)
    auto = _one_epoch("autograd", state, X, y)
    for name in manual:
        assert not torch.equal(manual[name], state[name])  # it trained
        torch.testing.assert_close(manual[name], auto[name], atol=1e-9, rtol=1e-9)


def test_unknown_backward_mode_is_rejected() -> None:
    model = classifier()
    with pytest.raises(ValueError, match="backward"):
        Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.1), backward="numerical")


def test_nan_input_names_the_step() -> None:
    X, y = clusters(25)
    X[37] = float("nan")  # batch 4 of 10 without shuffling
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    with pytest.raises(ValueError, match=r"non-finite \(nan\) at step 4 \(epoch 1, batch 4\)"):
        engine.fit(DataLoader(X, y, batch_size=10, shuffle=False), epochs=3)


class ScriptedLoader:
    """Two epochs of batches; the third batch of the second epoch is NaN."""

    def __init__(self, X: Tensor, y: Tensor) -> None:
        self.X, self.y, self.epoch = X, y, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 5

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for b in range(5):
            xb = self.X[b * 8 : (b + 1) * 8]
            yield (xb * float("nan") if (self.epoch, b) == (1, 2) else xb), self.y[b * 8 : (b + 1) * 8]


def test_non_finite_loss_in_a_later_epoch_names_epoch_and_batch() -> None:
    X, y = clusters(10)
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False, log_every=2)
    with pytest.raises(ValueError, match=r"at step 8 \(epoch 2, batch 3\); try a lower learning rate"):
        engine.fit(ScriptedLoader(X, y), epochs=2)


def test_exploding_learning_rate_is_caught() -> None:
    X, _ = clusters(25)
    seed_everything(0)
    model = Sequential(Dense(2, 16), ReLU(), Dense(16, 2))
    engine = Engine(model, MSELoss(), GradientDescent(model, 1e3), progress=False)
    with pytest.raises(ValueError, match=r"loss became non-finite \((nan|inf)\) at step \d+ \(epoch \d+, batch \d+\)"):
        engine.fit(DataLoader(X, X * 3, batch_size=10), epochs=20)


def _resumable_run(seed: int) -> tuple[Sequential, Engine, DataLoader, DataLoader]:
    X, y = clusters(40)
    seed_everything(seed)
    model = classifier(hidden=32, dropout=0.25)
    optimizer = Adam(model, learning_rate=0.02)
    engine = Engine(model, CrossEntropyLoss(), optimizer, scheduler=StepLR(optimizer, 7, 0.5), progress=False)
    train = DataLoader(X, y, batch_size=24, shuffle=True)  # base seed drawn from the global RNG
    val = DataLoader(X[::3], y[::3], batch_size=64, shuffle=True)
    return model, engine, train, val


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    model, engine, train, val = _resumable_run(seed=0)
    engine.fit(train, epochs=6, val_loader=val)
    expected = params_of(model)

    path = tmp_path / "run" / "last.pt"
    model, engine, train, val = _resumable_run(seed=0)
    engine.fit(train, epochs=3, val_loader=val, callbacks=[ModelCheckpoint(path)])
    halfway = params_of(model)

    # a fresh process: other seed, other initial weights, other loader seed
    model, engine, train, val = _resumable_run(seed=123)
    engine.load_checkpoint(path)
    assert engine.epoch == 3
    assert all(torch.equal(v, halfway[k]) for k, v in model.state_dict().items())
    history = engine.fit(train, epochs=6, val_loader=val)

    assert history.epochs == 6
    assert engine.global_step == 6 * len(train)
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert not torch.equal(expected["layers.0.weight"], halfway["layers.0.weight"])


def test_a_loader_without_seed_built_after_load_checkpoint_keeps_the_resume_exact(tmp_path: Path) -> None:
    # a validation loader without a seed used to draw one from the global RNG even with
    # shuffle=False, shifting every dropout mask after the restored RNG state
    X, y = clusters(16)

    def run(epochs: int, resume_from: Path | None = None) -> tuple[Engine, Sequential]:
        seed_everything(0)
        model = Sequential(Dense(2, 8), Dropout(0.5), Dense(8, 4))
        engine = Engine(model, CrossEntropyLoss(), Adam(model, learning_rate=1e-2), progress=False)
        if resume_from is not None:
            engine.load_checkpoint(resume_from)
        val = DataLoader(X, y, shuffle=False)  # built after the restore, no seed
        engine.fit(DataLoader(X, y, batch_size=16, seed=0), epochs, val_loader=val)
        return engine, model

    _, expected = run(4)
    engine, _ = run(2)
    path = engine.save_checkpoint(tmp_path / "half.pt")
    _, resumed = run(4, resume_from=path)
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, expected.state_dict()[name]), name


def _early_stopped_run() -> tuple[Engine, DataLoader, DataLoader]:
    """Adam at a high rate: the validation loss is best at epoch 5 and the run stops at epoch 8 (patience 3)."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    y = torch.arange(4).repeat_interleave(25)
    X = centers[y] + 1.5 * torch.randn(len(y), 2, generator=generator)
    seed_everything(0)
    model = Sequential(Dense(2, 16), ReLU(), Dropout(0.2), Dense(16, 4))
    engine = Engine(model, CrossEntropyLoss(), Adam(model, learning_rate=0.2), progress=False)
    return engine, DataLoader(X[::2], y[::2], batch_size=10, seed=0), DataLoader(X[1::2], y[1::2], shuffle=False)


def _stop_of(engine: Engine, stopper: EarlyStopping) -> tuple[object, ...]:
    return engine.epoch, stopper.stopped_epoch, stopper.best_epoch, stopper.best, engine.history["val_loss"]


def test_early_stopping_continued_or_resumed_stops_where_an_uninterrupted_run_does(tmp_path: Path) -> None:
    engine, train, val = _early_stopped_run()
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=40, val_loader=val, callbacks=[stopper])
    expected, weights = _stop_of(engine, stopper), params_of(engine.model)
    assert expected[:3] == (8, 8, 5)  # the run this test is about: it waits 1 epoch at the interruption (6)
    for name, value in engine.model.state_dict().items():  # restored to epoch 5's weights
        assert torch.equal(value, weights[name])

    # continued: the same callback, a second fit (its state used to be reset by on_train_begin)
    engine, train, val = _early_stopped_run()
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=6, val_loader=val, callbacks=[stopper])
    assert (stopper.wait, stopper.stopped_epoch) == (1, 0)
    engine.fit(train, epochs=40, val_loader=val, callbacks=[stopper])
    assert _stop_of(engine, stopper) == expected

    # resumed: a new engine and callback from a checkpoint written during the fit (listed before
    # the EarlyStopping, it still runs after it, so the checkpoint holds epoch 6's state)
    engine, train, val = _early_stopped_run()
    path = tmp_path / "epoch6.pt"
    engine.fit(train, epochs=6, val_loader=val, callbacks=[ModelCheckpoint(path), EarlyStopping(patience=3)])
    assert torch.load(path, weights_only=True)["callbacks"]["EarlyStopping"]["wait"] == 1
    engine, train, val = _early_stopped_run()
    engine.load_checkpoint(path)
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=40, val_loader=val, callbacks=[stopper])
    assert _stop_of(engine, stopper) == expected
    for name, value in engine.model.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_early_stopping_starts_afresh_with_a_new_run_and_refuses_another_monitors_state(tmp_path: Path) -> None:
    engine, train, val = _early_stopped_run()
    stopper = EarlyStopping(patience=3)
    engine.fit(train, epochs=2, val_loader=val, callbacks=[stopper])
    path = engine.save_checkpoint(tmp_path / "epoch2.pt")  # after fit: the latest fit's callbacks are saved
    engine, train, val = _early_stopped_run()
    engine.fit(train, epochs=1, val_loader=val, callbacks=[stopper])  # epoch 0: a new run, a fresh state
    assert (stopper.best_epoch, stopper.best) == (1, engine.history["val_loss"][0])
    engine, train, val = _early_stopped_run()
    engine.load_checkpoint(path)
    with pytest.raises(ValueError, match=r"watched 'val_loss' \(min\), this one watches 'loss' \(min\)"):
        engine.fit(train, epochs=3, val_loader=val, callbacks=[EarlyStopping(monitor="loss")])


def test_checkpoint_is_weights_only_loadable(tmp_path: Path) -> None:
    model, engine, train, _ = _resumable_run(seed=0)
    engine.fit(train, epochs=1)
    vocabulary = {"tokens": ["<pad>", "a", "b"], "config": {"hidden": 32, "note": None}}
    path = engine.save_checkpoint(tmp_path / "ckpt.pt", extra={"vocab": vocabulary})
    state = torch.load(path, weights_only=True)
    assert state["format"] == "scratch-engine-checkpoint/1"
    assert state["epoch"] == 1
    assert set(state["model"]) == set(model.state_dict())
    assert state["history"]["loss"] == engine.history["loss"]
    assert state["extra"] == {"vocab": vocabulary}
    assert engine.load_checkpoint(path) == {"vocab": vocabulary}


def test_checkpoint_of_another_model_is_rejected(tmp_path: Path) -> None:
    _, engine, _, _ = _resumable_run(seed=0)
    path = engine.save_checkpoint(tmp_path / "big.pt")
    small = classifier(hidden=8)
    other = Engine(small, CrossEntropyLoss(), Adam(small), progress=False)
    with pytest.raises(ValueError, match="shape"):
        other.load_checkpoint(path)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a scratch-engine checkpoint"):
        other.load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        other.load_checkpoint(tmp_path / "missing.pt")


class Snapshots(Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, Tensor]] = []

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, float]) -> None:
        self.states.append(params_of(engine.model))


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    X, y = clusters(25)
    seed_everything(0)
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    snapshots = Snapshots()
    # the loss falls every epoch, so "max" mode sees epoch 1 as the best and never improves on it
    stopper = EarlyStopping(monitor="loss", patience=2, mode="max")
    history = engine.fit(DataLoader(X, y, batch_size=10), epochs=20, callbacks=[snapshots, stopper])
    assert history.epochs == 3
    assert stopper.best_epoch == 1
    assert stopper.stopped_epoch == 3
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots.states[0][name])
        assert not torch.equal(value, snapshots.states[-1][name])


def test_early_stopping_with_min_delta_and_missing_monitor() -> None:
    class FakeEngine:
        def __init__(self) -> None:
            self.model = classifier()
            self.stop_training = False

    engine = FakeEngine()
    stopper = EarlyStopping(patience=2, min_delta=0.1, restore_best=False)
    for epoch, val_loss in enumerate([1.0, 0.95, 0.5, 0.45, 0.44], 1):
        stopper.on_epoch_end(engine, epoch, {"val_loss": val_loss})  # type: ignore[arg-type]
    assert stopper.best == 0.5
    assert engine.stop_training
    with pytest.raises(KeyError, match="val_loss"):
        EarlyStopping().on_epoch_end(engine, 1, {"loss": 1.0})  # type: ignore[arg-type]


def test_history_plot_writes_a_png(tmp_path: Path) -> None:
    history = History()
    for epoch in range(4):
        history.append({"loss": 1.0 / (epoch + 1), "accuracy": 0.5 + 0.1 * epoch})
    history.append({"loss": 0.1, "val_loss": 0.2})
    assert history.epochs == 5
    assert all(math.isnan(v) for v in history["val_loss"][:4])  # nan where validation did not run
    assert math.isnan(history["accuracy"][4])
    assert History.from_dict(history.to_dict()).to_dict().keys() == history.to_dict().keys()
    path = history.plot(tmp_path / "figures" / "history.png", title="toy")
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without a suffix matplotlib writes .png: the path returned is that file's, not the name asked for
    assert history.plot(tmp_path / "curves") == tmp_path / "curves.png"
    assert (tmp_path / "curves.png").is_file()
    assert not (tmp_path / "curves").exists()


def test_history_plot_draws_nothing_off_rank_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = History({"loss": [1.0, 0.5]})
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr("matplotlib.figure.Figure", None)  # drawing would fail: rank 1 must not draw
    assert history.plot(tmp_path / "curves") == tmp_path / "curves.png"
    assert list(tmp_path.iterdir()) == []


def test_predict_on_empty_input_and_bad_batch_sizes() -> None:
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    assert engine.predict(torch.zeros(0, 2)).shape == (0, 4)  # used to be a torch.cat error
    with pytest.raises(ValueError, match="predict got a loader without batches"):
        engine.predict([])
    for batch_size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"predict batch_size must be a positive integer, got {batch_size}"):
            engine.predict(torch.zeros(3, 2), batch_size=batch_size)  # type: ignore[arg-type]


def test_evaluate_and_predict_shapes_and_modes() -> None:
    X, y = clusters(20)
    model = classifier(dropout=0.5)
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    engine.fit(DataLoader(X, y, batch_size=16), epochs=2)
    assert model.training
    logs = engine.evaluate(DataLoader(X, y, batch_size=32, shuffle=False))
    assert set(logs) == {"loss", "accuracy"}
    assert model.training  # mode restored
    out = engine.predict(X, batch_size=7)
    assert out.shape == (80, 4)
    torch.testing.assert_close(out, engine.predict(DataLoader(X, y, batch_size=9, shuffle=False)))  # no dropout
    model.eval()
    engine.evaluate(DataLoader(X, y, batch_size=32))
    assert not model.training


def test_regression_has_no_accuracy_and_validation_is_logged() -> None:
    X, _ = clusters(10)
    model = Sequential(Dense(2, 8), ReLU(), Dense(8, 1))
    engine = Engine(model, MSELoss(), Adam(model, 0.01), clip_grad_norm=1.0, device="cpu", seed=0, progress=False)
    target = X.sum(dim=1, keepdim=True)
    history = engine.fit(DataLoader(X, target, batch_size=8), epochs=2, val_loader=DataLoader(X, target))
    assert set(history) == {"loss", "val_loss", "lr", "seconds"}


def test_progress_false_prints_nothing_and_none_prints_a_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    X, y = clusters(10)
    model = classifier()
    Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False).fit(DataLoader(X, y), epochs=2)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
    Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05)).fit(DataLoader(X, y), epochs=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  loss ")
    assert "accuracy" in lines[0]
    assert "samples/s" in lines[0]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert isinstance(resolve_device("auto"), torch.device)
    with pytest.raises(ValueError, match="banana"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda:3"):
            resolve_device("cuda:3")


class _Stateful(Sequential):
    """Counts the batches seen since its state was last reset, like a recurrent model carrying state."""

    def __init__(self) -> None:
        super().__init__(Dense(2, 4))
        self.seen = 0
        self.at_reset: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen += 1
        return super().forward(x)

    def reset_state(self) -> None:
        self.at_reset.append(self.seen)
        self.seen = 0


def test_reset_state_is_called_at_each_epoch_and_evaluation() -> None:
    X, y = clusters(10)  # 40 samples, 4 batches of 10
    model = _Stateful()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    loader = DataLoader(X, y, batch_size=10, shuffle=False)
    engine.fit(loader, epochs=2, val_loader=loader)
    # epoch 1 start, its validation, epoch 2 start, its validation: each time 4 batches were seen before
    assert model.at_reset == [0, 4, 4, 4]
