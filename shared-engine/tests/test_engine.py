"""Engine: trains, matches autograd, stops on a non-finite loss, keeps its budgets, resumes exactly, reports quietly."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
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
    GradientDescent,
    MSELoss,
    ReLU,
    Sequential,
    StepLR,
    WarmupCosine,
)
from scratch_engine.tools.autograd import Autograd
from scratch_engine.tools.checkpoint import restore_run, run_state


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
    torch.manual_seed(0)
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, learning_rate=0.05), progress=False)
    history = engine.fit(DataLoader(X, y, batch_size=32), epochs=50)
    assert history is engine.history
    assert history.rows == 50
    assert history["accuracy"][-1] > 0.95
    assert history["loss"][-1] < history["loss"][0]
    assert engine.evaluate(DataLoader(X, y, batch_size=128, shuffle=False))["accuracy"] > 0.95
    assert (engine.epoch, engine.batch, engine.global_step) == (50, 0, 50 * 13)
    assert set(history) == {"step", "epoch", "loss", "accuracy", "learning_rate", "seconds"}
    assert history["step"][:2] == [13.0, 26.0]
    assert history["epoch"][:2] == [1.0, 2.0]


def test_the_train_step_is_the_lesson_in_a_few_lines() -> None:
    import inspect

    source = inspect.getsource(Engine.train_step)
    assert len(source.strip().splitlines()) <= 25
    for line in (
        "self.net(x)",
        "self.loss_fn(output, y)",
        "self.net.backward(self.loss_fn.backward())",
        "self.update()",
    ):
        assert line in source


def test_history_learning_rate_is_the_rate_each_rows_last_step_trained_with() -> None:
    # it logged the rate after the epoch's last schedule step: a cosine run's last epoch showed 0,
    # a rate no step had used
    X, y = clusters(25)
    torch.manual_seed(0)
    model = classifier()
    optimizer = GradientDescent(model, learning_rate=0.1)
    schedule = WarmupCosine(optimizer, warmup_steps=2, total_steps=12)
    engine = Engine(model, CrossEntropyLoss(), optimizer, scheduler=schedule, progress=False)
    history = engine.fit(DataLoader(X, y, batch_size=25), epochs=3)  # 4 steps an epoch
    expected = [schedule.learning_rate_at(3), schedule.learning_rate_at(7), schedule.learning_rate_at(11)]
    assert history["learning_rate"] == pytest.approx(expected, rel=1e-12)
    assert history["learning_rate"][-1] > 0.0
    assert optimizer.learning_rate == 0.0  # the schedule itself did reach its end


def _one_epoch(autograd: bool, state: dict[str, Tensor], X: Tensor, y: Tensor) -> dict[str, Tensor]:
    model = classifier(hidden=8, dropout=0.3).to(dtype=torch.float64)
    model.load_state_dict(state)
    torch.manual_seed(7)
    net = Autograd(model) if autograd else model
    engine = Engine(net, CrossEntropyLoss(), Adam(model, 0.01), progress=False)
    engine.fit(DataLoader(X, y, batch_size=16, seed=5), epochs=1)
    return params_of(model)


def test_manual_backward_matches_the_autograd_mode() -> None:
    X, y = clusters(25, dtype=torch.float64)
    state = params_of(classifier(hidden=8, dropout=0.3).to(dtype=torch.float64))
    manual = _one_epoch(False, state, X, y)
    auto = _one_epoch(True, state, X, y)
    for name in manual:
        assert not torch.equal(manual[name], state[name])  # it trained
        torch.testing.assert_close(manual[name], auto[name], atol=1e-9, rtol=1e-9)


def test_nan_input_names_the_step() -> None:
    X, y = clusters(25)
    X[37] = float("nan")  # batch 4 of 10 without shuffling
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    with pytest.raises(ValueError, match=r"non-finite \(nan\) at step 4;"):
        engine.fit(DataLoader(X, y, batch_size=10, shuffle=False), epochs=3)


class ScriptedLoader:
    """Two epochs of 5 batches; the third batch of the second epoch is NaN."""

    def __init__(self, X: Tensor, y: Tensor) -> None:
        self.X, self.y, self.epoch, self.start = X, y, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return 5

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for b in range(self.start, 5):
            xb = self.X[b * 8 : (b + 1) * 8]
            yield (xb * float("nan") if (self.epoch, b) == (1, 2) else xb), self.y[b * 8 : (b + 1) * 8]


def test_non_finite_loss_in_a_later_epoch_names_its_step() -> None:
    X, y = clusters(10)
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False, log_every=2)
    # the step only: the epoch under way when the device is read may be the next one (it said "epoch 2" for step 1)
    with pytest.raises(ValueError, match=r"at step 8; try a lower learning rate"):
        engine.fit(ScriptedLoader(X, y), epochs=2)
    assert engine.global_step == 8  # read every log_every=2 steps: it stopped at the step itself


def test_exploding_learning_rate_is_caught() -> None:
    X, _ = clusters(25)
    torch.manual_seed(0)
    model = Sequential(Dense(2, 16), ReLU(), Dense(16, 2))
    engine = Engine(model, MSELoss(), GradientDescent(model, 1e3), progress=False)
    with pytest.raises(ValueError, match=r"loss became non-finite \((nan|inf)\) at step \d+;"):
        engine.fit(DataLoader(X, X * 3, batch_size=10), epochs=20)


def test_fit_needs_a_budget_and_checks_it() -> None:
    X, y = clusters(5)
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    loader = DataLoader(X, y)
    with pytest.raises(ValueError, match="fit needs a budget"):
        engine.fit(loader)
    for bad in ({"epochs": 0}, {"max_steps": -1}, {"epochs": 2.5}, {"epochs": True}, {"eval_every": 0}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            engine.fit(loader, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_seconds must be a positive number"):
        engine.fit(loader, max_seconds=float("nan"))


def _resumable(seed: int) -> tuple[Sequential, Engine, DataLoader, DataLoader]:
    X, y = clusters(40)
    torch.manual_seed(seed)
    model = classifier(hidden=32, dropout=0.25)
    optimizer = Adam(model, learning_rate=0.02)
    engine = Engine(model, CrossEntropyLoss(), optimizer, scheduler=StepLR(optimizer, 7, 0.5), progress=False)
    train = DataLoader(X, y, batch_size=24, shuffle=True)  # base seed drawn from the global RNG
    val = DataLoader(X[::3], y[::3], batch_size=64, shuffle=True)
    return model, engine, train, val


class StopAt(Callback):
    """Ask the engine to stop after ``step``, as Ctrl-C would: no history row for the unfinished interval."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        if engine.global_step == self.step:
            engine.stop_training = True


@pytest.mark.parametrize("stop", [StopAt(17), StopAt(21), StopAt(25), {"epochs": 3}, {"max_steps": 17}])
def test_stop_and_resume_equals_an_uninterrupted_run(stop: StopAt | dict[str, int]) -> None:
    # 7 batches an epoch, a row every 5 steps: 17 stops mid-epoch between rows, 21 at an epoch's end, 25 just
    # after a row. A budget (epochs, max_steps) also stops there, and logs a row for the steps since the last one.
    model, engine, train, val = _resumable(seed=0)
    engine.fit(train, epochs=6, val_loader=val, eval_every=5)
    expected, expected_history = params_of(model), engine.history.to_dict()

    model, engine, train, val = _resumable(seed=0)
    if isinstance(stop, StopAt):
        engine.fit(train, epochs=6, val_loader=val, eval_every=5, callbacks=[stop])
    else:
        engine.fit(train, **stop, val_loader=val, eval_every=5)
    state = run_state(engine)
    halfway = params_of(model)

    # a fresh process: other seed, other initial weights, other loader seed
    model, engine, train, val = _resumable(seed=123)
    restore_run(engine, state)
    assert all(torch.equal(v, halfway[k]) for k, v in model.state_dict().items())
    history = engine.fit(train, epochs=6, val_loader=val, eval_every=5)

    assert engine.global_step == 6 * len(train)
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert not torch.equal(expected["layers.0.weight"], halfway["layers.0.weight"])
    if isinstance(stop, StopAt):  # an interruption leaves no trace in the history
        assert history.to_dict().keys() == expected_history.keys()
        for name in ("step", "epoch", "loss", "accuracy", "learning_rate"):
            assert history[name] == expected_history[name], name
        # the validation loader shuffles with a seed of its own (drawn anew): other float32 batches, other rounding
        assert history["val_loss"] == pytest.approx(expected_history["val_loss"], rel=1e-6)


def test_a_loader_without_seed_built_after_loading_keeps_the_resume_exact() -> None:
    # a validation loader without a seed used to draw one from the global RNG even with
    # shuffle=False, shifting every dropout mask after the restored RNG state
    X, y = clusters(16)

    def run(epochs: int, state: dict[str, Any] | None = None) -> tuple[Engine, Sequential]:
        torch.manual_seed(0)
        model = Sequential(Dense(2, 8), Dropout(0.5), Dense(8, 4))
        engine = Engine(model, CrossEntropyLoss(), Adam(model, learning_rate=1e-2), progress=False)
        if state is not None:
            restore_run(engine, state)
        val = DataLoader(X, y, shuffle=False)  # built after the restore, no seed
        engine.fit(DataLoader(X, y, batch_size=16, seed=0), epochs, val_loader=val)
        return engine, model

    _, expected = run(4)
    engine, _ = run(2)
    _, resumed = run(4, run_state(engine))
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, expected.state_dict()[name]), name


def test_loading_another_models_state_leaves_the_engine_as_it_was() -> None:
    _, engine, train, _ = _resumable(seed=0)
    engine.fit(train, epochs=1)
    state = run_state(engine)
    small = classifier(hidden=8)
    optimizer = Adam(small, learning_rate=0.5)
    other = Engine(small, CrossEntropyLoss(), optimizer, progress=False)
    before = params_of(small)
    with pytest.raises(ValueError, match="shape"):
        restore_run(other, state)
    assert optimizer.learning_rate == 0.5  # the optimizer's state was not taken before the model failed
    assert all(torch.equal(v, before[k]) for k, v in small.state_dict().items())
    assert other.global_step == 0


class SlowLayer(Dense):
    """A Dense layer whose forward takes ``delay`` seconds: a deliberately slow step (and evaluation)."""

    def __init__(self, delay: float) -> None:
        super().__init__(2, 4)
        self.delay = delay

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(self.delay)
        return super().forward(x)


def test_a_time_budget_holds_within_one_step_and_one_evaluation() -> None:
    X, y = clusters(25)  # 100 samples: 10 steps an epoch, so an epoch lasts 0.5 s
    model = Sequential(SlowLayer(delay=0.05))
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    val = DataLoader(X[:20], y[:20], batch_size=10, shuffle=False)  # an evaluation: 2 slow batches, 0.1 s
    start = time.perf_counter()
    engine.fit(DataLoader(X, y, batch_size=10, seed=0), epochs=100, max_seconds=0.3, val_loader=val)
    elapsed = time.perf_counter() - start
    step, evaluation = 0.05, 0.1
    assert engine.seconds >= 0.3
    assert elapsed <= 0.3 + step + evaluation + 0.15  # 0.15 s for everything that is not sleeping
    assert engine.epoch == 0  # it stopped mid-epoch, not at the epoch's end
    assert engine.history.rows == 1  # the budget ended between rows: one row, with its validation
    assert engine.history["step"][0] == engine.global_step


class _Stateful(Sequential):
    """Carries a count of the batches seen since its state was last reset, like a recurrent model."""

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

    def carried_state(self) -> int:
        return self.seen

    def set_carried_state(self, state: int) -> None:
        self.seen = state


def test_carried_state_resets_each_epoch_and_survives_an_evaluation() -> None:
    X, y = clusters(10)  # 40 samples, 4 batches of 10
    model = _Stateful()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    loader = DataLoader(X, y, batch_size=10, shuffle=False)
    engine.fit(loader, epochs=2, val_loader=loader, eval_every=3)
    # epoch 1 starts (0 seen); the evaluation after step 3 resets its own count (3) and gives the training
    # one back, so epoch 2's reset sees all 4 training batches; the evaluation after step 6 sees 2 (steps 5
    # and 6), the one after the last step, for the budget's end, 4
    assert model.at_reset == [0, 3, 4, 2, 4]
    assert model.seen == 4  # the training state of epoch 2, given back after the last evaluation
    assert run_state(engine)["carried"] == {"": 4}


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


def test_predict_on_empty_input_and_bad_batch_sizes() -> None:
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False)
    assert engine.predict(torch.zeros(0, 2)).shape == (0, 4)  # used to be a torch.cat error
    with pytest.raises(ValueError, match="predict got a loader without batches"):
        engine.predict([])
    for batch_size in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"predict batch_size must be a positive integer, got {batch_size}"):
            engine.predict(torch.zeros(3, 2), batch_size=batch_size)  # type: ignore[arg-type]


def test_regression_has_no_accuracy_and_validation_is_logged() -> None:
    X, _ = clusters(10)
    torch.manual_seed(0)
    model = Sequential(Dense(2, 8), ReLU(), Dense(8, 1))
    engine = Engine(model, MSELoss(), Adam(model, 0.01), clip_grad_norm=1.0, device="cpu", progress=False)
    target = X.sum(dim=1, keepdim=True)
    history = engine.fit(DataLoader(X, target, batch_size=8), epochs=2, val_loader=DataLoader(X, target))
    assert set(history) == {"step", "epoch", "loss", "val_loss", "learning_rate", "seconds"}


def test_progress_false_prints_nothing_and_true_prints_a_line_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    X, y = clusters(10)
    model = classifier()
    Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False).fit(DataLoader(X, y), epochs=2)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")
    Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05)).fit(DataLoader(X, y), epochs=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("step 2 (epoch 1.00)  loss ")
    for name in ("accuracy", "learning_rate 0.05", "seconds"):
        assert name in lines[0]


def test_the_progress_bar_adds_throughput_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    from scratch_engine.tools.progress import ProgressBar, format_duration

    X, y = clusters(10)
    model = classifier()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), callbacks=[ProgressBar()])
    engine.fit(DataLoader(X, y), epochs=2)
    lines = capsys.readouterr().err.strip().splitlines()  # not a terminal: the rows alone, no bar
    assert len(lines) == 2
    assert lines[0].startswith("step 2 (epoch 1.00)  loss ")
    assert "samples/s" in lines[0]
    assert "ETA" in lines[0]
    assert "ETA" not in lines[1]  # the run is over
    assert [format_duration(s) for s in (45, 725, 7380)] == ["45s", "12m05s", "2h03m"]


class Recorder(Callback):
    """Which hooks ran, in order (the first fit's first two steps and its end)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def attach(self, engine: Engine) -> None:
        self.calls.append("attach")

    def on_fit_begin(self, engine: Engine) -> None:
        self.calls.append("fit_begin")

    def on_epoch_begin(self, engine: Engine) -> None:
        self.calls.append("epoch_begin")

    def on_train_batch(self, engine: Engine, x: Any, y: Any) -> None:
        self.calls.append("train_batch")

    def after_backward(self, engine: Engine) -> None:
        self.calls.append("after_backward")

    def after_update(self, engine: Engine) -> None:
        self.calls.append("after_update")

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        self.calls.append("step_end")

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        self.calls.append("log")

    def on_fit_end(self, engine: Engine) -> None:
        self.calls.append("fit_end")


def test_callbacks_run_around_the_step_in_order() -> None:
    X, y = clusters(5)  # 20 samples: 2 batches
    model = classifier()
    recorder = Recorder()
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.05), progress=False, callbacks=[recorder])
    engine.fit(DataLoader(X, y, batch_size=10), epochs=1)
    step = ["train_batch", "after_backward", "after_update", "step_end"]
    assert recorder.calls == ["attach", "fit_begin", "epoch_begin", *step, *step, "log", "fit_end"]


def test_optimizer_and_scheduler_must_belong_to_the_model() -> None:
    model, other = classifier(), classifier()
    with pytest.raises(ValueError, match="not the model's"):
        Engine(model, CrossEntropyLoss(), Adam(other))  # it would train nothing
    optimizer = GradientDescent(model, 0.1)
    with pytest.raises(ValueError, match="drives another optimizer"):
        Engine(model, CrossEntropyLoss(), optimizer, scheduler=StepLR(GradientDescent(model, 0.1), 1))


def test_the_meter_sums_what_its_steps_noted_and_finds_the_first_non_finite_step() -> None:
    from functools import partial

    from scratch_engine.engine import Meter, accuracy

    torch.manual_seed(0)
    meter = Meter({"accuracy": partial(accuracy, ignore_index=None)}, torch.device("cpu"))
    losses = [float(v) for v in torch.rand(150)]
    losses[70], losses[90] = math.inf, math.nan  # in the second flush of 64 (steps 65 to 128): the first is step 71
    correct = samples = 0
    for step, loss in enumerate(losses, start=1):
        logits, target = torch.randn(5, 3), torch.randint(0, 3, (5,))
        correct += int((logits.argmax(-1) == target).sum())
        samples += 5
        meter.update(torch.tensor(loss), logits, target, step)
    assert len(meter.noted) == 150 - 128  # flushed at 64 and 128, the rest waits for a read
    assert meter.first_non_finite() == (71, math.inf)  # found by the flush at 128
    assert (len(meter.noted), meter.looked) == (22, 22)  # a look that finds its steps finite leaves them noted
    later = Meter({}, torch.device("cpu"))  # a look sums only the steps since the last one, and flushes on a bad one
    for step, loss in enumerate([0.5, 0.25, 1.0, math.nan, math.inf, 2.0], start=1):
        later.update(torch.tensor(loss), None, torch.zeros(4), step)
        if step == 2:
            assert later.first_non_finite() is None
            assert len(later.noted) == 2
    assert later.first_non_finite() == (4, pytest.approx(math.nan, nan_ok=True))
    assert later.noted == []
    finite = Meter({}, torch.device("cpu"))
    for step, loss in enumerate(losses[:60], start=1):
        finite.update(torch.tensor(loss, dtype=torch.float32), None, torch.zeros(5), step)
    assert finite.first_non_finite() is None
    expected = sum(float(torch.tensor(v, dtype=torch.float32)) * 5 for v in losses[:60]) / 300
    assert finite.compute()["loss"] == pytest.approx(expected, rel=1e-12)
    assert meter.compute()["accuracy"] == pytest.approx(correct / samples, rel=1e-12)


def test_history_rows_keep_their_columns_aligned_when_names_come_and_go() -> None:
    from scratch_engine.engine import History

    history = History()
    history.append({"loss": 2.0})
    history.append({"loss": 1.5, "val_loss": 1.8})  # a column that starts late: nan before it
    history.append({"val_loss": 1.6})  # a row without a column's name: nan in it
    assert history.rows == 3
    assert history["loss"][:2] == [2.0, 1.5]
    assert math.isnan(history["loss"][2])
    assert math.isnan(history["val_loss"][0])
    assert history["val_loss"][1:] == [1.8, 1.6]
    column = history["loss"]
    history.append({"loss": 1.0})
    assert history["loss"] is column  # an existing column grows in place
