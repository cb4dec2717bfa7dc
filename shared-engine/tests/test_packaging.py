"""scratch-engine is installed from its wheel, imports only what it declares, and computes from scratch."""

from __future__ import annotations

from pathlib import Path

import pytest

import scratch_engine
from scratch_engine.testing import assert_from_scratch, imported_modules


def test_engine_imports_only_declared_dependencies() -> None:
    from scratch_engine.testing import allowed_imports

    allowed = allowed_imports("scratch-engine")
    imports = imported_modules(Path(scratch_engine.__file__).parent)
    used = set().union(*imports.values())
    assert {"torch", "tqdm", "matplotlib"} <= allowed
    assert used <= allowed, sorted(used - allowed)
    assert not used & {"scratch_mlp", "scratch_cnn", "scratch_rnn", "scratch_transformer"}


def test_training_path_is_from_scratch() -> None:
    # autograd.py is the opt-in autograd mode; testing.py holds the autograd oracle; reference.py
    # trains the torch.nn twin of whole-run parity checks; benchmark.py times that twin's step.
    allowed = {"autograd.py", "testing.py", "reference.py", "benchmark.py"}
    assert_from_scratch(Path(scratch_engine.__file__).parent, allowed_files=allowed)


def test_version_is_single_sourced() -> None:
    from importlib.metadata import version

    assert version("scratch-engine") == scratch_engine.__version__


def test_imported_modules_counts_run_time_imports_only(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        "import os.path\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from _typeshed import DataclassInstance\n"
        "else:\n"
        "    import json\n"
        "def f():\n"
        "    import tqdm\n"
        "    if typing.TYPE_CHECKING:\n"
        "        import numpy\n",
        encoding="utf-8",
    )
    assert imported_modules(tmp_path) == {"mod.py": {"os", "typing", "json", "tqdm"}}


def test_from_scratch_guard_skips_only_type_checking_bodies(tmp_path: Path) -> None:
    (tmp_path / "hints.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from torch import nn\n", encoding="utf-8"
    )
    assert_from_scratch(tmp_path)
    (tmp_path / "nested.py").write_text(
        "def f(x):\n"
        "    if TYPE_CHECKING:\n"
        "        from torch import nn\n"
        "    x.requires_grad_(True)\n",  # after the block, in the same function: code that runs
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match=r"nested.py:4: x.requires_grad_\(True\)"):
        assert_from_scratch(tmp_path)
