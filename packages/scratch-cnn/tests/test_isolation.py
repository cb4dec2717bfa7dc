"""scratch-cnn installs and imports alone: only scratch_engine, torch and its declared needs."""

from pathlib import Path

import pytest

import scratch_cnn
from scratch_engine.tools.testing import assert_console_script, assert_from_scratch, assert_isolated


def test_installed_alone() -> None:
    assert_isolated("scratch_cnn")


def test_console_script_imports_torch_inside_the_ctrl_c_guard() -> None:
    assert_console_script("scratch_cnn")


def test_training_path_is_from_scratch() -> None:
    # bench.py times the torch.nn + autograd + torch.optim twin it compares against; reference.py
    # builds the torch.nn twins of the layers for --reference torch
    assert_from_scratch(Path(scratch_cnn.__file__).parent, allowed_files={"bench.py", "reference.py"})


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    from scratch_cnn.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert scratch_cnn.__version__ in capsys.readouterr().out
