"""The one run recipe: a toy task through the runner and the command line; metrics.json; one-line errors."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from scratch_engine import Adam, AdamW, DataLoader, Dense, Engine, GradientDescent, ReLU, Sequential
from scratch_engine.tools import cli
from scratch_engine.tools.callbacks import DivergenceError
from scratch_engine.tools.checkpoint import read_checkpoint
from scratch_engine.tools.config import POSITIVE_INT, TrainConfig, option
from scratch_engine.tools.datasets import DataNotFoundError
from scratch_engine.tools.records import environment, format_table, write_metrics
from scratch_engine.tools.runner import Loaders, Run, RunError, RunInterruptedError, Task, make_optimizer, run
from scratch_engine.tools.testing import assert_sigterm_resume_is_exact, fill_the_disk


@dataclass
class ToyConfig(TrainConfig):
    epochs: int | None = 4
    learning_rate: float = 0.05
    batch_size: int = 16
    hidden: int = option(8, "hidden units", check=POSITIVE_INT, group="model")


class Toy(Task[ToyConfig]):
    """Four clusters: a task in a few lines."""

    name = "toy"
    help = "four clusters"
    config = ToyConfig()

    def load_data(self, config: ToyConfig, device: torch.device) -> Loaders:
        generator = torch.Generator().manual_seed(0)
        y = torch.arange(4).repeat_interleave(25)
        X = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])[y] + 0.5 * torch.randn(
            100, 2, generator=generator
        )
        return Loaders(
            DataLoader(X, y, batch_size=config.batch_size, seed=config.seed), DataLoader(X, y, shuffle=False)
        )

    def build_model(self, config: ToyConfig, data: Loaders) -> Sequential:
        return Sequential(Dense(2, config.hidden), ReLU(), Dense(config.hidden, 4))

    def evaluate(self, run: Run[ToyConfig]) -> dict[str, Any]:
        return {"test_accuracy": run.engine.evaluate(run.data.val)["accuracy"]}

    def checkpoint_extra(self, run: Run[ToyConfig]) -> dict[str, Any]:
        return {"classes": 4}


TOY = Toy()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scratch-toy")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.add_train_command(commands, {"toy": TOY}, Path("runs"))
    return parser


def main(argv: list[str]) -> int:
    return cli.run_command(_parser(), argv, lambda args, progress: 0 if cli.train(TOY, args, progress) else 1)


def test_a_run_trains_evaluates_and_leaves_its_record(tmp_path: Path) -> None:
    metrics = run(TOY, out=tmp_path, progress=False)
    assert metrics["test_accuracy"] > 0.9
    assert (metrics["task"], metrics["steps"], metrics["epochs"], metrics["dtype"]) == ("toy", 28, 4, "float32")
    assert metrics["parameters"] == 2 * 8 + 8 + 8 * 4 + 4
    assert metrics["config"]["hidden"] == 8
    assert metrics["history"]["step"] == [7.0, 14.0, 21.0, 28.0]
    record = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert record["test_accuracy"] == metrics["test_accuracy"]
    assert record["environment"]["torch"] == torch.__version__
    assert (tmp_path / "loss.png").stat().st_size > 1000
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["extra"]["classes"] == 4
    assert state["extra"]["run"] == {"task": "toy", "config": metrics["config"], "step": 28, "finished": True}


def test_a_seed_out_of_torch_range_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "toy", "--seed", str(2**70)])
    assert exit_.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.endswith(f"argument --seed: must be an integer >= 0 and <= {2**63 - 1}, got {2**70}")
    with pytest.raises(ValueError, match="seed"):
        ToyConfig(seed=-1)


def test_an_unknown_flag_is_named_by_its_subcommand_with_the_closest_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "toy", "--lrr", "0.1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: scratch-toy train toy" in err  # the subcommand's usage, not the top level's
    assert err.strip().endswith("scratch-toy train toy: error: unrecognized arguments: --lrr 0.1 (did you mean --lr?)")
    parser = argparse.ArgumentParser(prog="scratch-toy")
    sample = parser.add_subparsers(dest="command", required=True).add_parser("sample")
    sample.add_argument("--checkpoint", required=True)
    with pytest.raises(SystemExit):
        cli.parse_arguments(parser, ["sample", "--checkpont", "c.pt"])
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("unrecognized arguments: --checkpont c.pt (did you mean --checkpoint?)")
    )
    with pytest.raises(SystemExit):  # a required flag that is truly missing is still said to be
        cli.parse_arguments(parser, ["sample"])
    assert "the following arguments are required: --checkpoint" in capsys.readouterr().err
    assert cli.parse_arguments(parser, ["sample", "--checkpoint", "c.pt"]).checkpoint == "c.pt"


def test_an_out_folder_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for out, why in (
        ("/proc/scratch-run", "argument --out: /proc/scratch-run cannot be written: /proc"),  # os.access says yes
        (str(tmp_path / "taken"), f"argument --out: {tmp_path / 'taken' / 'metrics.json'} is a folder"),
    ):
        (tmp_path / "taken" / "metrics.json").mkdir(parents=True, exist_ok=True)
        with pytest.raises(SystemExit) as exit_:
            main(["train", "toy", "--out", out, "--quiet"])
        assert exit_.value.code == 2
        assert why in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["metrics.json"]  # no probe left behind


def test_same_seed_same_run_and_float64_by_rule(tmp_path: Path) -> None:
    first, again = run(TOY, progress=False), run(TOY, progress=False)
    assert first["history"]["loss"] == again["history"]["loss"]
    other = run(TOY, ToyConfig(seed=1), progress=False)
    assert other["history"]["loss"] != first["history"]["loss"]
    assert run(TOY, ToyConfig(dtype="float64", epochs=1), progress=False)["dtype"] == "float64"


def test_a_sigterm_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    for step in (3, 7, 12, None):  # mid-epoch, an epoch's end, mid-epoch again, somewhere
        assert_sigterm_resume_is_exact(main, ["train", "toy"], tmp_path / str(step), steps=28, step=step)


def test_resume_refuses_another_config_and_a_new_run_refuses_an_unfinished_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = Engine.train_step

    def interrupted(engine: Engine, x: Any, y: Any) -> Any:
        result = original(engine, x, y)
        if engine.global_step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    Engine.train_step = interrupted  # type: ignore[method-assign]
    try:
        assert main(["train", "toy", "--out", str(tmp_path), "--quiet"]) == 128 + signal.SIGTERM
    finally:
        Engine.train_step = original  # type: ignore[method-assign]
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after step 5; the run is saved in" in err
    assert f"resume it with: scratch-toy train toy --out {tmp_path} --quiet --resume" in err
    assert main(["train", "toy", "--out", str(tmp_path), "--quiet"]) == 1
    assert "holds an unfinished run: add --resume to continue it" in capsys.readouterr().err
    assert main(["train", "toy", "--out", str(tmp_path), "--quiet", "--hidden", "4", "--resume"]) == 1
    assert "hidden: the checkpoint has 8, this run 4" in capsys.readouterr().err
    assert main(["train", "toy", "--out", str(tmp_path), "--quiet", "--epochs", "6", "--resume"]) == 0  # a longer run
    assert read_checkpoint(tmp_path / "checkpoint.pt")["progress"]["step"] == 42
    with pytest.raises(RunError, match="resume needs the run's output folder"):
        run(TOY, progress=False, resume=True)


def test_a_reference_twin_needs_one_process_in_full_precision() -> None:
    for changes in ({"dtype": "bfloat16"}, {"distributed": True}):
        with pytest.raises(RunError, match="--reference torch compares one process in float32 or float64"):
            run(TOY, ToyConfig(reference="torch", **changes), progress=False)  # type: ignore[arg-type]


def test_an_interruption_without_out_says_it_is_not_saved() -> None:
    original = Engine.train_step

    def interrupted(engine: Engine, x: Any, y: Any) -> Any:
        result = original(engine, x, y)
        os.kill(os.getpid(), signal.SIGINT)
        return result

    Engine.train_step = interrupted  # type: ignore[method-assign]
    try:
        with pytest.raises(RunInterruptedError, match="stopped by SIGINT after step 1; the run is not saved"):
            run(TOY, progress=False)
    finally:
        Engine.train_step = original  # type: ignore[method-assign]


def test_make_optimizer_returns_the_named_optimizer() -> None:
    model = Sequential(Dense(3, 4), Dense(4, 2))
    sgd = make_optimizer("sgd", model, 0.1)
    momentum = make_optimizer("momentum", model, 0.1, weight_decay=1e-4)
    adam = make_optimizer("adam", model, 1e-3, weight_decay=0.01)
    adamw = make_optimizer("adamw", model, 1e-3, weight_decay=0.05)
    assert type(sgd) is GradientDescent
    assert (sgd.momentum, sgd.learning_rate) == (0.0, 0.1)
    assert type(momentum) is GradientDescent
    assert (momentum.momentum, momentum.weight_decay) == (0.9, 1e-4)
    assert type(adam) is Adam
    assert (adam.weight_decay, adam.learning_rate) == (0.01, 1e-3)
    assert type(adamw) is AdamW
    assert adamw.weight_decay == 0.05
    assert len(adam.params) == 4  # every parameter of the model
    with pytest.raises(ValueError, match=r"unknown optimizer 'rmsprop'; valid names: sgd, momentum, adam, adamw"):
        make_optimizer("rmsprop", Dense(2, 2), 0.1)


def test_write_metrics_round_trips(tmp_path: Path) -> None:
    metrics = {
        "test_accuracy": 0.987,
        "epochs": 3,
        "config": {"hidden": (32, 16), "optimizer": "adam"},
        "confusion": torch.tensor([[3, 1], [0, 4]]),
        "loss_tensor": torch.tensor(0.5),
        "path": Path("a/b"),
        "diverged": math.nan,
    }
    path = write_metrics(tmp_path / "run", metrics, device="cpu")
    assert path == tmp_path / "run" / "metrics.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert (record["test_accuracy"], record["epochs"]) == (0.987, 3)
    assert record["config"] == {"hidden": [32, 16], "optimizer": "adam"}
    assert record["confusion"] == [[3, 1], [0, 4]]
    assert record["loss_tensor"] == 0.5
    assert record["path"] == str(Path("a/b"))
    assert record["diverged"] is None  # strict JSON has no NaN
    env = record["environment"]
    assert (env["torch"], env["device"], env["threads"]) == (torch.__version__, "cpu", torch.get_num_threads())
    assert env["packages"]["scratch-engine"] == "0.1.0"
    assert env["python"].count(".") == 2
    assert environment()["device"] is None


def test_format_table_plain_and_markdown() -> None:
    rows = [{"task": "clusters", "value": "99.5%"}, {"task": "regression", "value": "0.04"}]
    assert format_table(rows) == "task        value\n----------  -----\nclusters    99.5%\nregression  0.04"
    assert format_table(rows, markdown=True).splitlines() == [
        "| task | value |",
        "| --- | --- |",
        "| clusters | 99.5% |",
        "| regression | 0.04 |",
    ]
    assert format_table([]) == "(nothing was trained)"


def test_run_command_turns_expected_errors_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="scratch-toy")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-data", action="store_true")
    seen: list[bool] = []

    def command(args: argparse.Namespace, progress: bool) -> int:
        seen.append(progress)
        if args.no_data:
            raise DataNotFoundError("data set 'toy' not found in /nowhere")
        return 0

    assert cli.run_command(parser, ["--quiet", "--no-data"], command) == 1
    assert capsys.readouterr().err == "scratch-toy: error: data set 'toy' not found in /nowhere\n"
    assert cli.run_command(parser, [], command) == 0
    assert seen == [False, True]
    with pytest.raises(SystemExit):  # an unknown device is a usage error, before the command runs
        cli.run_command(parser, ["--device", "tpu9"], command)
    assert len(seen) == 2
    assert "unknown device 'tpu9'" in capsys.readouterr().err

    def interrupted(args: argparse.Namespace, progress: bool) -> int:
        raise KeyboardInterrupt

    assert cli.run_command(parser, [], interrupted) == 130
    assert capsys.readouterr().err == "scratch-toy: interrupted\n"
    with pytest.raises(KeyError):  # anything unexpected keeps its traceback
        cli.run_command(parser, [], lambda args, progress: {}["missing"])


def test_a_new_run_in_a_used_folder_leaves_no_file_of_the_previous_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run(TOY, out=out, progress=False)
    assert first["files"] == ["checkpoint.pt", "loss.png"]
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    (out / "reference.png").write_bytes(b"a figure only the first run drew")  # as a --reference run would
    (out / "notes.txt").write_text("the user's own", encoding="utf-8")  # not a run's: never touched
    record["files"].append("reference.png")
    (out / "metrics.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(DivergenceError):  # a second run that fails: the first one is kept whole, aside
        run(TOY, ToyConfig(learning_rate=1e6), out=out, progress=False)
    aside = out / ".previous-run"
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint.pt", "loss.png", "metrics.json", "reference.png"]
    assert not (out / "reference.png").exists()
    assert "diverged" in json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    third = run(TOY, ToyConfig(seed=3), out=out, progress=False)  # a whole run: the folder holds it alone
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "loss.png", "metrics.json", "notes.txt"]
    assert third["files"] == ["checkpoint.pt", "loss.png"]  # what it wrote: never the user's notes
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["config"]["seed"] == third["config"]["seed"]
    run(TOY, ToyConfig(seed=4), out=out, progress=False)  # so the next run sets aside, and deletes, only those
    assert (out / "notes.txt").read_text(encoding="utf-8") == "the user's own"


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    real_fsync = os.fsync
    fill_the_disk(monkeypatch)  # every file write fails as on a full disk, checkpoints first
    assert main(["train", "toy", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"scratch-toy: error: [Errno 28] cannot write {out / 'checkpoint.pt'}")
    assert err.endswith(": No space left on device")
    assert sorted(p.name for p in out.rglob("*")) == []  # no truncated or temporary file
    monkeypatch.setattr(os, "fsync", real_fsync)

    def torch_full(obj: object, file: object) -> None:  # torch.save's own error on ENOSPC (its C++ zip writer)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")

    monkeypatch.setattr(torch, "save", torch_full)
    assert main(["train", "toy", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    why = "[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0"
    assert err == f"scratch-toy: error: cannot write {out / 'checkpoint.pt'}: {why}"


def test_every_curve_of_loss_png_has_more_than_one_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scratch_engine.tools import plots

    drawn: dict[str, Any] = {}
    real_save = plots.save_figure

    def keep(figure: Any, path: Any) -> Path:
        drawn[Path(path).name] = [(line.get_label(), len(line.get_xdata())) for ax in figure.axes for line in ax.lines]
        return real_save(figure, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    metrics = run(TOY, ToyConfig(epochs=1), out=tmp_path, progress=False)  # one history row: one point a row
    assert metrics["history"]["step"] == [7.0]
    curves = drawn["loss.png"]
    assert [label for label, _ in curves] == ["loss, every step", "val_loss", "accuracy", "val_accuracy"]
    assert curves[0][1] == 7  # the training loss of every step, not the one row's mean
    longer = run(TOY, ToyConfig(epochs=40), out=tmp_path / "longer", progress=False)  # 280 steps: ~100 points
    assert drawn["loss.png"][0] == ("loss, every 2 steps", 140)
    assert len(longer["history"]["step"]) == 40


def test_the_loss_trace_has_a_point_at_every_step_rows_included() -> None:
    from scratch_engine.tools.progress import LossTrace

    trace = LossTrace(every=1)
    torch.manual_seed(0)
    data = TOY.load_data(ToyConfig(), torch.device("cpu"))
    model = TOY.build_model(ToyConfig(), data)
    engine = Engine(model, TOY.loss(ToyConfig(), data), GradientDescent(model, 0.05), progress=False, callbacks=[trace])
    engine.fit(data.train, max_steps=20, eval_every=5, val_loader=data.val)
    assert [step for step, _ in trace.points] == [float(s) for s in range(1, 21)]  # 5, 10, ... too
    per_step = [loss for _, loss in trace.points[:5]]
    assert engine.history["loss"][0] == pytest.approx(sum(per_step) / 5, rel=1e-6)  # a row is the mean of its steps
