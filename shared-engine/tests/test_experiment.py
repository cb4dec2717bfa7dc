"""The shared experiment plumbing: CLI flags, optimizers by name, metrics.json."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from scratch_engine import Adam, AdamW, Dense, GradientDescent, Sequential
from scratch_engine.datasets import DataNotFoundError
from scratch_engine.experiment import (
    OPTIMIZERS,
    add_training_arguments,
    config_with_args,
    environment,
    make_optimizer,
    run_command,
    write_metrics,
)


def _parser(**defaults: object) -> argparse.ArgumentParser:
    settings = {"epochs": 7, "batch_size": 64, "lr": 0.01, **defaults}
    return add_training_arguments(argparse.ArgumentParser(prog="test"), **settings)  # type: ignore[arg-type]


def test_training_arguments_defaults() -> None:
    args = _parser(out="runs/x").parse_args([])
    assert (args.epochs, args.batch_size, args.lr, args.optimizer, args.weight_decay) == (7, 64, 0.01, "adam", 0.0)
    assert (args.seed, args.device, args.out, args.quiet) == (0, "auto", Path("runs/x"), False)


def test_training_arguments_parse_every_flag() -> None:
    argv = "--epochs 3 --batch-size 16 --lr 0.5 --optimizer momentum --weight-decay 0.1 --seed 9 --device cpu"
    args = _parser().parse_args([*argv.split(), "--out", "somewhere", "--quiet"])
    assert (args.epochs, args.batch_size, args.lr, args.optimizer, args.weight_decay) == (3, 16, 0.5, "momentum", 0.1)
    assert (args.seed, args.device, args.out, args.quiet) == (9, "cpu", Path("somewhere"), True)


@pytest.mark.parametrize(
    "argv", [["--epochs", "0"], ["--batch-size", "-1"], ["--lr", "-0.1"], ["--lr", "nan"], ["--optimizer", "lbfgs"]]
)
def test_training_arguments_reject_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_training_arguments_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser(optimizer="sgd").parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in ("--epochs", "--batch-size", "--lr", "--optimizer", "--weight-decay", "--seed", "--device", "--out"):
        assert flag in out
    assert "(7)" in out
    assert "(sgd)" in out


def test_training_arguments_reject_an_unknown_default_optimizer() -> None:
    with pytest.raises(ValueError, match="valid names: sgd, momentum, adam, adamw"):
        _parser(optimizer="rmsprop")


def test_make_optimizer_returns_the_named_optimizer() -> None:
    model = Sequential(Dense(3, 4), Dense(4, 2))
    sgd = make_optimizer("sgd", model, 0.1)
    momentum = make_optimizer("momentum", model, 0.1, weight_decay=1e-4)
    adam = make_optimizer("adam", model, 1e-3, weight_decay=0.01)
    adamw = make_optimizer("adamw", model, 1e-3, weight_decay=0.05)
    assert type(sgd) is GradientDescent
    assert sgd.momentum == 0.0
    assert sgd.learning_rate == 0.1
    assert type(momentum) is GradientDescent
    assert momentum.momentum == 0.9
    assert momentum.weight_decay == 1e-4
    assert type(adam) is Adam
    assert adam.weight_decay == 0.01
    assert adam.learning_rate == 1e-3
    assert type(adamw) is AdamW
    assert adamw.weight_decay == 0.05
    assert len(adam.params) == 4  # every parameter of the model
    assert set(OPTIMIZERS) == {"sgd", "momentum", "adam", "adamw"}


def test_make_optimizer_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'rmsprop'; valid names: sgd, momentum, adam, adamw"):
        make_optimizer("rmsprop", Dense(2, 2), 0.1)


def test_write_metrics_round_trips(tmp_path: Path) -> None:
    metrics = {
        "test_accuracy": 0.987,
        "epochs": 3,
        "train_seconds": 1.25,
        "parameters": 1234,
        "config": {"hidden": (32, 16), "optimizer": "adam"},
        "confusion": torch.tensor([[3, 1], [0, 4]]),
        "loss_tensor": torch.tensor(0.5),
        "path": Path("a/b"),
        "diverged": math.nan,
    }
    path = write_metrics(tmp_path / "run", metrics, device="cpu")
    assert path == tmp_path / "run" / "metrics.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["test_accuracy"] == 0.987
    assert record["epochs"] == 3
    assert record["parameters"] == 1234
    assert record["config"] == {"hidden": [32, 16], "optimizer": "adam"}
    assert record["confusion"] == [[3, 1], [0, 4]]
    assert record["loss_tensor"] == 0.5
    assert record["path"] == str(Path("a/b"))
    assert record["diverged"] is None  # strict JSON has no NaN
    env = record["environment"]
    assert env["torch"] == torch.__version__
    assert env["device"] == "cpu"
    assert env["threads"] == torch.get_num_threads()
    assert env["packages"]["scratch-engine"] == "0.1.0"
    assert env["python"].count(".") == 2


def test_environment_without_a_device() -> None:
    env = environment()
    assert env["device"] is None
    assert env["cuda_device"] is None


@dataclass(frozen=True)
class _RunConfig:
    epochs: int = 10
    lr: float = 1e-3
    pairs: str | None = None
    download: bool | None = None
    device: str = "cpu"


def test_a_config_takes_the_flags_of_its_fields() -> None:
    parser = argparse.ArgumentParser()
    add_training_arguments(parser, epochs=3, batch_size=8, lr=0.5, out=Path("out"))
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--no-download", action="store_true")
    args = parser.parse_args(["--epochs", "4", "--pairs", "p.txt", "--no-download"])
    config = config_with_args(_RunConfig(), args, pairs=str(args.pairs))
    assert config == _RunConfig(epochs=4, lr=0.5, pairs="p.txt", download=False, device="auto")  # batch_size: no field
    assert config_with_args(_RunConfig(), parser.parse_args([])).download is None  # the environment decides
    assert config_with_args(_RunConfig(), argparse.Namespace(lr=2.0)) == _RunConfig(lr=2.0)


def test_run_command_turns_expected_errors_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="scratch-toy")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-data", action="store_true")
    seen: list[bool | None] = []

    def command(args: argparse.Namespace, progress: bool | None) -> int:
        seen.append(progress)
        if args.no_data:
            raise DataNotFoundError("data set 'toy' not found in /nowhere")
        return 0

    assert run_command(parser, ["--quiet", "--no-data"], command) == 1
    assert capsys.readouterr().err == "scratch-toy: error: data set 'toy' not found in /nowhere\n"
    assert run_command(parser, [], command) == 0
    assert seen == [False, None]
    with pytest.raises(SystemExit):  # an unknown device is a usage error, before the command runs
        run_command(parser, ["--device", "tpu9"], command)
    assert len(seen) == 2
    with pytest.raises(KeyError):  # anything unexpected keeps its traceback
        run_command(parser, [], lambda args, progress: {}["missing"])
