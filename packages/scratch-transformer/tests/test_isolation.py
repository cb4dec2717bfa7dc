"""scratch-transformer installs and imports alone: only scratch_engine, torch and its declared needs."""

from pathlib import Path

import pytest

import scratch_transformer
from scratch_engine.tools.testing import assert_console_script, assert_from_scratch, assert_isolated


def test_installed_alone() -> None:
    assert_isolated("scratch_transformer")


def test_console_script_imports_torch_inside_the_ctrl_c_guard() -> None:
    assert_console_script("scratch_transformer")


def test_training_path_is_from_scratch() -> None:
    # bench.py and gpt_bench.py time, and reference.py builds, the torch.nn + autograd + torch.optim twins
    allowed = {"bench.py", "gpt_bench.py", "reference.py"}
    assert_from_scratch(Path(scratch_transformer.__file__).parent, allowed_files=allowed)


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    from scratch_transformer.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert scratch_transformer.__version__ in capsys.readouterr().out
