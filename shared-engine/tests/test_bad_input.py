"""Bad input gets a clear error that names the problem, early: never a deep torch error or a silent NaN."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from scratch_engine import (
    Adam,
    CrossEntropyLoss,
    DataLoader,
    Dense,
    Dropout,
    Engine,
    GradientDescent,
    NonFiniteLossError,
    ReLU,
    Sequential,
)
from scratch_engine.benchmark import bench_parser
from scratch_engine.checkpoint import load_checkpoint
from scratch_engine.datasets import ChecksumError, image_tensors
from scratch_engine.distributed import LaunchError
from scratch_engine.experiment import add_training_arguments, non_negative_float, positive_float, run_command


def _engine(model: Sequential | None = None) -> Engine:
    model = model or Sequential(Dense(4, 8), ReLU(), Dense(8, 3))
    return Engine(model, CrossEntropyLoss(), Adam(model), progress=False)


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


# ---------------------------------------------------------------------------- layers


def test_dense_names_both_dtypes_when_the_input_does_not_match_its_weights() -> None:
    with pytest.raises(ValueError, match=r"Dense has torch.float32 weights but got a torch.float64 input"):
        Dense(4, 3)(torch.randn(5, 4, dtype=torch.float64))


def test_dense_backward_checks_the_gradient_has_the_output_shape() -> None:
    layer = Dense(4, 3)
    layer(torch.randn(2, 5, 4))
    # (5, 2, 3) has as many elements and would reshape into silently wrong gradients
    with pytest.raises(
        ValueError, match=r"expects grad_output of the forward output's shape \(2, 5, 3\), got \(5, 2, 3\)"
    ):
        layer.backward(torch.ones(5, 2, 3))


def test_sequential_refuses_a_skipped_input_gradient_that_earlier_layers_need() -> None:
    model = Sequential(Dense(2, 4), ReLU(), Dense(4, 3, input_grad=False))
    model(torch.randn(8, 2))
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\) returned no input gradient"):
        model.backward(torch.ones(8, 3))


def test_sequential_stops_at_a_skipped_input_gradient_when_nothing_before_it_trains() -> None:
    model = Sequential(Dropout(0.5), Dense(4, 3, input_grad=False))
    model(torch.randn(8, 4))
    assert model.backward(torch.ones(8, 3)) is None
    assert model[1].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- optimizers and training


@pytest.mark.parametrize(
    "make",
    [
        lambda m: GradientDescent(m, float("nan")),
        lambda m: GradientDescent(m, float("inf")),
        lambda m: GradientDescent(m, 0.1, momentum=float("nan")),
        lambda m: Adam(m, 0.1, betas=(float("nan"), 0.9)),
        lambda m: Adam(m, 0.1, eps=float("nan")),
    ],
)
def test_optimizers_refuse_non_finite_settings(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="must be a finite number"):
        make(Dense(4, 3))


@pytest.mark.parametrize("epochs", [0, -1, 2.5, True])
def test_fit_wants_a_positive_whole_number_of_epochs(epochs: object) -> None:
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        _engine().fit(DataLoader(*_data()), epochs)  # type: ignore[arg-type]


def test_the_data_loader_refuses_empty_data_and_numpy_arrays() -> None:
    with pytest.raises(ValueError, match="no samples"):
        DataLoader(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    X, y = _data()
    with pytest.raises(TypeError, match=r"NumPy X: pass torch.from_numpy\(X\)"):
        DataLoader(X.numpy(), y.numpy())


def test_a_training_loader_that_yields_nothing_is_an_error_not_a_zero_loss() -> None:
    with pytest.raises(ValueError, match="no samples in epoch 1"):
        _engine().fit([], 1)


def test_evaluate_reports_nan_inputs_instead_of_returning_a_nan_loss() -> None:
    X, y = _data()
    X[5, 0] = math.nan
    with pytest.raises(ValueError, match=r"evaluation loss is non-finite \(nan\): check the data for NaN/inf"):
        _engine().evaluate(DataLoader(X, y, shuffle=False))


def test_a_diverged_run_says_so_with_its_own_error_type() -> None:
    X, y = _data()
    model = Sequential(Dense(4, 8), ReLU(), Dense(8, 3))
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 1e30), progress=False)
    with pytest.raises(NonFiniteLossError, match="lower learning rate or gradient clipping, and check the data"):
        engine.fit(DataLoader(X, y, batch_size=8), 2)


def test_epoch_lines_show_the_time_left_for_the_whole_run(capsys: pytest.CaptureFixture[str]) -> None:
    model = Sequential(Dense(4, 3))
    Engine(model, CrossEntropyLoss(), Adam(model), progress=None).fit(DataLoader(*_data()), 3)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert ["ETA" in line for line in lines] == [True, True, False]  # nothing left after the last


# ---------------------------------------------------------------------------- command line


def test_number_flags_refuse_infinity_and_nan() -> None:
    for text in ("inf", "nan", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="finite number >= 0"):
            non_negative_float(text)
        with pytest.raises(argparse.ArgumentTypeError, match="finite number > 0"):
            positive_float(text)
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float("0")
    assert (non_negative_float("0"), positive_float("1e-3")) == (0.0, 1e-3)


def _toy_parser() -> argparse.ArgumentParser:
    parser = add_training_arguments(argparse.ArgumentParser(prog="scratch-toy"), epochs=1, batch_size=4, lr=0.1)
    parser.add_argument("--fail", choices=("diverge", "checksum", "launch", "write"))
    return parser


def _toy_command(args: argparse.Namespace, progress: bool | None) -> int:
    errors = {
        "diverge": NonFiniteLossError("loss became non-finite (nan) at step 3"),
        "checksum": ChecksumError("mnist/t10k-labels-idx1-ubyte.gz cannot be read: Not a gzipped file"),
        "launch": LaunchError("distributed training needs the environment torchrun sets"),
        "write": PermissionError(13, "Permission denied", "runs/x/loss.png"),
    }
    if args.fail:
        raise errors[args.fail]
    return 0


@pytest.mark.parametrize("failure", ["diverge", "checksum", "launch", "write"])
def test_commands_report_a_users_problem_in_one_line(
    failure: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_command(_toy_parser(), ["--out", str(tmp_path), "--fail", failure], _toy_command) == 1
    err = capsys.readouterr().err
    assert err.startswith("scratch-toy: error: ")
    assert err.count("\n") == 1


def test_an_out_path_that_cannot_be_a_folder_fails_before_the_command_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    ran: list[bool] = []
    with pytest.raises(SystemExit) as exit_info:
        run_command(_toy_parser(), ["--out", str(a_file / "run")], lambda args, progress: ran.append(True) or 0)
    assert exit_info.value.code == 2
    assert ran == []
    assert f"argument --out: {a_file / 'run'} cannot be a folder: {a_file} is a file" in capsys.readouterr().err
    assert run_command(_toy_parser(), ["--out", str(tmp_path / "new" / "run")], _toy_command) == 0
    assert not (tmp_path / "new").exists()  # checked, not created: the command makes it when it writes


@dataclass
class _BenchConfig:
    threads: int = 1
    warmup: int = 2
    repeats: int = 3
    sizes: tuple[int, ...] = (4, 8)


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--threads", "0"], ["--sizes", "4", "0"], ["--warmup", "-1"]])
def test_benchmark_flags_refuse_zero_counts_in_argparse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_parser("bench", "a toy", _BenchConfig()).parse_args(argv)
    assert "must be" in capsys.readouterr().err
    assert bench_parser("bench", "a toy", _BenchConfig()).parse_args(["--warmup", "0"]).warmup == 0


# ---------------------------------------------------------------------------- files


def test_a_file_that_is_not_a_checkpoint_gets_one_line_and_no_unsafe_advice(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_text("garbage")
    with pytest.raises(ValueError, match=r"not a file written by torch.save \(not a zip archive\)$") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)


def test_a_checkpoint_holding_python_objects_is_refused_without_advice_to_unpickle_it(tmp_path: Path) -> None:
    path = tmp_path / "objects.pt"
    torch.save({"model": {}, "extra": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(ValueError, match="holds Python objects besides tensors and plain data") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)


@pytest.mark.parametrize("limits", [{"train_samples": 0}, {"test_samples": -5}])
def test_sample_limits_must_be_positive_before_any_data_is_read(limits: dict[str, int], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be a positive integer or None"):
        image_tensors("mnist", (784,), data_dir=tmp_path / "nowhere", download=False, **limits)
