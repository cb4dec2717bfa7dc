"""The console scripts' entry point: Ctrl-C while a package (and torch) is still importing is one line, status 130."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import scratch_entry

# Ctrl-C mid-import. The handler is set first: a process started in the background inherits SIGINT ignored.
SLOW_IMPORT = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "os.kill(os.getpid(), signal.SIGINT)\n"
    "time.sleep(30)\n"
)


def run_entry(tmp_path: Path, package: str, cli: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "cli.py").write_text(cli)
    code = f"import sys\nfrom scratch_entry import {package}\nsys.exit({package}())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_ctrl_c_while_importing_is_one_line(tmp_path: Path) -> None:
    result = run_entry(tmp_path, "slow_pkg", SLOW_IMPORT + "def main():\n    return 0\n")
    assert (result.returncode, result.stderr) == (130, "slow-pkg: interrupted\n")


def test_the_entry_point_returns_main_s_status(tmp_path: Path) -> None:
    result = run_entry(tmp_path, "fine_pkg", "import sys\ndef main():\n    print(sys.argv[1:])\n    return 3\n")
    assert (result.returncode, result.stdout, result.stderr) == (3, "[]\n", "")


def test_the_entry_module_imports_only_the_standard_library() -> None:
    from scratch_engine.tools.testing import imported_modules

    used = set().union(*imported_modules(Path(scratch_entry.__file__).parent).values())
    assert used <= set(sys.stdlib_module_names), sorted(used - set(sys.stdlib_module_names))


def test_dunder_lookups_are_not_packages() -> None:
    with pytest.raises(AttributeError):
        scratch_entry.__wrapped__  # noqa: B018
