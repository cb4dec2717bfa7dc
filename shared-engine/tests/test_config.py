"""A task's config: one dataclass, its flags derived from it, its values checked in code and on the command line."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import pytest

from scratch_engine.tools.cli import add_config_arguments, config_from_args
from scratch_engine.tools.config import OPTIMIZERS, POSITIVE_INT, TrainConfig, config_differences, option


@dataclass
class ToyConfig(TrainConfig):
    epochs: int | None = 7  # a new default; the flag keeps TrainConfig's help
    batch_size: int = 64
    learning_rate: float = 0.01
    hidden: tuple[int, ...] = option((32, 16), "hidden sizes", check=POSITIVE_INT, group="model")
    name: str | None = option(None, "a name", group="model")
    fixed: str = option("toy", "set by the command, not a flag", flags=(), group="data")


def _parser() -> argparse.ArgumentParser:
    return add_config_arguments(argparse.ArgumentParser(prog="toy", allow_abbrev=False), ToyConfig())


def test_every_field_is_a_flag_with_its_default() -> None:
    config = config_from_args(ToyConfig(), _parser().parse_args([]))
    assert config == ToyConfig()
    assert (config.epochs, config.batch_size, config.learning_rate, config.optimizer) == (7, 64, 0.01, "adam")


def test_flags_parse_into_the_config() -> None:
    argv = "--epochs 3 --batch-size 16 --lr 0.5 --optimizer momentum --weight-decay 0.1 --seed 9 --device cpu"
    extra = ["--hidden", "8", "4", "2", "--clip-grad-norm", "none", "--max-steps", "50", "--distributed", "--name", "x"]
    config = config_from_args(ToyConfig(), _parser().parse_args([*argv.split(), *extra]))
    assert (config.epochs, config.batch_size, config.learning_rate, config.optimizer) == (3, 16, 0.5, "momentum")
    assert (config.weight_decay, config.seed, config.device, config.hidden) == (0.1, 9, "cpu", (8, 4, 2))
    assert (config.clip_grad_norm, config.max_steps, config.distributed, config.name) == (None, 50, True, "x")
    args = _parser().parse_args(["--learning-rate", "2", "--epochs", "none", "--max-steps", "5"])
    assert config_from_args(ToyConfig(), args) == ToyConfig(learning_rate=2.0, epochs=None, max_steps=5)


@pytest.mark.parametrize(
    "argv",
    [
        ["--epochs", "0"],
        ["--batch-size", "-1"],
        ["--lr", "-0.1"],
        ["--lr", "nan"],
        ["--optimizer", "lbfgs"],
        ["--hidden", "3", "0"],
        ["--clip-grad-norm", "0"],
        ["--dtype", "float16"],
        ["--epoch", "3"],  # no abbreviations: a typo is an error naming it, not another flag
        ["--fixed", "other"],  # a field without a flag
    ],
)
def test_bad_values_are_usage_errors_naming_the_flag(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(argv)
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_help_shows_the_defaults_and_the_help_of_overridden_fields(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for flag in ("--epochs", "--batch-size", "--lr", "--optimizer", "--weight-decay", "--seed", "--device", "--hidden"):
        assert flag in out
    assert "passes over the training data (7)" in out
    assert "(adam)" in out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number >= 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of " + ", ".join(OPTIMIZERS)),
        ({"hidden": (4, -1)}, r"hidden must be an integer >= 1, got \(4, -1\)"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm must be a finite number > 0, got 0.0"),
    ],
)
def test_a_config_built_in_code_is_checked_too(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ToyConfig(**changes)  # type: ignore[arg-type]


def test_config_differences_name_what_a_resume_may_not_change() -> None:
    saved = {**asdict(ToyConfig()), "hidden": [32, 16]}  # as a checkpoint holds it: lists, not tuples
    assert config_differences(saved, ToyConfig(epochs=20, max_minutes=3.0, device="cpu")) == []
    assert config_differences(saved, ToyConfig(hidden=(8,), learning_rate=0.5)) == [
        "learning_rate: the checkpoint has 0.01, this run 0.5",
        "hidden: the checkpoint has [32, 16], this run (8,)",
    ]


def test_option_defaults_must_be_immutable() -> None:
    with pytest.raises(TypeError, match="immutable"):
        option([1, 2], "a list")
