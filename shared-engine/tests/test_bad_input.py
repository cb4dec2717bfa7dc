"""Bad input gets a clear error that names the problem, early: never a deep torch error or a silent NaN."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from scratch_engine import (
    GELU,
    Adam,
    BatchNorm1d,
    CrossEntropyLoss,
    DataLoader,
    Dense,
    Dropout,
    Embedding,
    Engine,
    GradientDescent,
    LeakyReLU,
    Module,
    NonFiniteLossError,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    StepLR,
    Tanh,
)
from scratch_engine.tools.benchmark import bench_parser
from scratch_engine.tools.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from scratch_engine.tools.cli import add_config_arguments, run_command
from scratch_engine.tools.config import NON_NEGATIVE, POSITIVE, TrainConfig
from scratch_engine.tools.datasets import ChecksumError, DatasetLoader, image_tensors
from scratch_engine.tools.distributed import LaunchError
from scratch_engine.tools.precision import Precision
from scratch_engine.tools.testing import check_backward


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


def test_embedding_backward_refuses_a_gradient_in_another_layout() -> None:
    layer = Embedding(10, 4)
    layer(torch.randint(0, 10, (2, 3)))  # (B, T) ids: a (B, T, d) output
    with pytest.raises(ValueError, match=r"Embedding.backward expects .* shape \(2, 3, 4\), got \(3, 2, 4\)"):
        layer.backward(torch.ones(3, 2, 4))  # (T, B, d): as many elements, so it used to be summed wrongly


@pytest.mark.parametrize(
    "layer", [ReLU(), LeakyReLU(), Tanh(), Sigmoid(), GELU(), Dropout(0.5), Dropout(0.0), BatchNorm1d(1)]
)
@pytest.mark.parametrize("training", [True, False])
def test_elementwise_and_normalising_backward_refuse_a_gradient_that_would_broadcast(
    layer: Module, training: bool
) -> None:
    layer.train(training)
    layer(torch.randn(3, 1))
    with pytest.raises(ValueError, match=r"backward expects grad_output of the forward output's shape \(3, 1\)"):
        layer.backward(torch.ones(3, 4))  # broadcast against the cache, it gave a (3, 4) input gradient


class _AssignsGrad(Module):
    """y = a * x, with a backward that assigns ``a.grad`` instead of adding to it: the contract's classic slip."""

    def __init__(self, in_place: bool) -> None:
        super().__init__()
        self.a = Parameter(torch.randn(3, dtype=torch.float64))
        self.in_place = in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._x = x
        return x * self.a.data

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        if self.in_place:
            self.a.grad.copy_((grad_output * self._x).sum(0))
        else:
            self.a.grad = (grad_output * self._x).sum(0)
        return grad_output * self.a.data


@pytest.mark.parametrize(
    ("in_place", "message"),
    [(False, r"replaced the grad tensor of parameter 'a' \(p.grad = ...\)"), (True, "max abs difference")],
)
def test_check_backward_catches_a_backward_that_assigns_gradients_instead_of_adding(
    in_place: bool, message: str
) -> None:
    # with the gradients zeroed first, as they used to be, both passed
    with pytest.raises(AssertionError, match=message):
        check_backward(_AssignsGrad(in_place), torch.randn(4, 3, dtype=torch.float64))


def test_check_backward_leaves_the_gradient_of_its_one_backward() -> None:
    layer = Dense(3, 2).to(torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    check_backward(layer, x)
    grad_output = torch.randn(4, 2, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)  # its default
    torch.testing.assert_close(layer.bias.grad, grad_output.sum(0))  # the prefilled 0.5 is gone again


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
    with pytest.raises(TypeError, match=r"got a ndarray X: pass torch.from_numpy\(X\)\.float\(\)$"):
        DataLoader(X.double().numpy(), y.numpy())
    with pytest.raises(TypeError, match=r"got a ndarray y: pass torch.from_numpy\(y\) \(\.long\(\) for class"):
        DataLoader(X, y.numpy())
    engine = _engine()  # the advice is complete: float64 data made float32 trains float32 weights
    engine.fit(DataLoader(torch.from_numpy(X.double().numpy()).float(), torch.from_numpy(y.numpy()).long()), 1)


def test_a_learning_rate_set_negative_after_construction_is_refused_at_the_step() -> None:
    engine = _engine()
    engine.optimizer.learning_rate = -0.1
    with pytest.raises(ValueError, match=r"learning_rate must be in \[0.0, inf\), got -0.1"):
        engine.fit(DataLoader(*_data()), 1)
    engine.optimizer.learning_rate = float("nan")
    with pytest.raises(ValueError, match="learning_rate must be a finite number, got nan"):
        engine.fit(DataLoader(*_data()), 1)


class _Unlabeled:
    """A map-style data set whose items forgot their label: ``x`` alone."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((4,), float(i))


def test_dataset_items_and_batches_must_be_x_y_pairs() -> None:
    # a stacked batch of x alone used to be unpacked as x = its first row, y = its second
    with pytest.raises(TypeError, match=r"dataset items must be \(x, y\) pairs, got a Tensor"):
        _engine().fit(DatasetLoader(_Unlabeled(), batch_size=2), 1)
    with pytest.raises(TypeError, match=r"dataset items must be \(x, y\) pairs, got a tuple of 3"):
        next(iter(DatasetLoader([(torch.zeros(4), 0, "extra")] * 4, batch_size=2)))
    X, y = _data()
    with pytest.raises(TypeError, match=r"training batches must be \(x, y\) pairs, got a Tensor"):
        _engine().fit([X[:2]], 1)  # a hand-made loader of x alone
    with pytest.raises(TypeError, match=r"evaluation batches must be \(x, y\) pairs, got a tuple of 3"):
        _engine().evaluate([(X, y, y)])


def test_the_optimizer_must_update_the_models_parameters_and_the_schedule_drive_it() -> None:
    model, other = Sequential(Dense(4, 3)), Sequential(Dense(4, 3))
    with pytest.raises(ValueError, match="the optimizer updates 2 parameters that are not the model's"):
        Engine(model, CrossEntropyLoss(), Adam(other))  # it would train nothing
    optimizer = GradientDescent(model, 0.1)
    with pytest.raises(ValueError, match="the scheduler drives another optimizer than the engine's GradientDescent"):
        Engine(model, CrossEntropyLoss(), optimizer, scheduler=StepLR(GradientDescent(model, 0.1), 1))
    frozen_weight = GradientDescent([model[0].bias], 0.1)  # a subset: the rest stays frozen, which is fine
    Engine(model, CrossEntropyLoss(), frozen_weight, scheduler=StepLR(frozen_weight, 1), progress=False)
    mixed = Engine(model, CrossEntropyLoss(), Adam(model), callbacks=[Precision("bfloat16")])
    assert mixed.net is not model  # mixed precision computes in a bfloat16 copy; the optimizer keeps the masters


def test_a_checkpoint_of_another_optimizer_type_is_refused_naming_both(tmp_path: Path) -> None:
    engine = Engine(model := Sequential(Dense(4, 3)), CrossEntropyLoss(), GradientDescent(model, 0.1, momentum=0.9))
    engine.fit(DataLoader(*_data(), batch_size=8), 1)
    path = save_checkpoint(engine, tmp_path / "sgd.pt")
    with pytest.raises(ValueError, match="the state of a GradientDescent optimizer cannot be loaded into Adam"):
        load_checkpoint(_engine(Sequential(Dense(4, 3))), path)  # it used to load, then fail on a KeyError 'step'


def test_a_training_loader_that_yields_nothing_is_an_error_not_a_zero_loss() -> None:
    with pytest.raises(ValueError, match="the training data gave no batches in epoch 1"):
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


# ---------------------------------------------------------------------------- command line


def test_number_flags_refuse_infinity_and_nan() -> None:
    for text in ("inf", "nan", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="finite number >= 0"):
            NON_NEGATIVE(text)
        with pytest.raises(argparse.ArgumentTypeError, match="finite number > 0"):
            POSITIVE(text)
    with pytest.raises(argparse.ArgumentTypeError):
        POSITIVE("0")
    assert (NON_NEGATIVE("0"), POSITIVE("1e-3")) == (0.0, 1e-3)


def _toy_parser() -> argparse.ArgumentParser:
    parser = add_config_arguments(argparse.ArgumentParser(prog="scratch-toy"), TrainConfig())
    parser.add_argument("--out", type=Path)
    parser.add_argument("--fail", choices=("diverge", "checksum", "launch", "write"))
    return parser


def _toy_command(args: argparse.Namespace, progress: bool) -> int:
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
        read_checkpoint(path)
    assert "weights_only" not in str(error.value)


def test_a_checkpoint_holding_python_objects_is_refused_without_advice_to_unpickle_it(tmp_path: Path) -> None:
    path = tmp_path / "objects.pt"
    torch.save({"model": {}, "extra": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(ValueError, match="holds Python objects besides tensors and plain data") as error:
        read_checkpoint(path)
    assert "weights_only" not in str(error.value)


@pytest.mark.parametrize("limits", [{"train_samples": 0}, {"test_samples": -5}])
def test_sample_limits_must_be_positive_before_any_data_is_read(limits: dict[str, int], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be a positive integer or None"):
        image_tensors("mnist", (784,), data_dir=tmp_path / "nowhere", download=False, **limits)
