"""The console scripts' entry points, which import nothing heavy themselves.

``scratch-mlp = "scratch_entry:scratch_mlp"`` runs ``scratch_mlp.cli.main()``. Importing a package
imports torch, which takes a second or more; were that import the entry point's, Ctrl-C pressed
meanwhile would end in Python's traceback. Here it ends in one line, as it does once ``main`` runs.
This module must stay free of imports beyond the standard library.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__: list[str] = []


def run(package: str) -> int:
    """``<package>.cli.main()``'s exit status; Ctrl-C while the package is imported is one line and status 130."""
    try:
        main: Callable[[], int] = importlib.import_module(f"{package}.cli").main
    except KeyboardInterrupt:
        print(f"{package.replace('_', '-')}: interrupted", file=sys.stderr)
        return 130
    return main()


def __getattr__(name: str) -> Callable[[], int]:
    """``from scratch_entry import scratch_mlp``: the function a console script calls, for any package name."""
    if name.startswith("__"):  # dunder lookups (copy, pickle, doctest) are not packages
        raise AttributeError(name)
    return lambda: run(name)
