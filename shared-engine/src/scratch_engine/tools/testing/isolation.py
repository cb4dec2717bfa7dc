"""Each distribution stands alone, and its training path computes with nothing but plain tensor ops."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ARCHITECTURES = ("scratch_mlp", "scratch_cnn", "scratch_rnn", "scratch_transformer")


_STDLIB = set(sys.stdlib_module_names)


def _requirement_names(distribution: str) -> set[str]:
    """Names of the distributions ``distribution`` requires, its optional extras included."""
    names = set()
    for req in importlib.metadata.requires(distribution) or []:
        match = re.match(r"[A-Za-z0-9_.\-]+", req)
        if match:
            names.add(match.group(0).lower().replace("_", "-"))
    return names


def allowed_imports(distribution: str) -> set[str]:
    """Top-level module names a distribution may import: stdlib, itself and its declared requirements."""
    requirements = _requirement_names(distribution)
    # a requirement that is not installed (an unused extra) is known by its own name
    allowed = set(_STDLIB) | {name.replace("-", "_") for name in requirements}
    for module_name, dists in importlib.metadata.packages_distributions().items():
        if any(d.lower().replace("_", "-") in requirements | {distribution} for d in dists):
            allowed.add(module_name)
    return allowed


def imported_modules(package_dir: Path) -> dict[str, set[str]]:
    """Top-level names imported at run time (anywhere, including function bodies) by each ``.py`` file.

    The body of an ``if TYPE_CHECKING:`` block never runs, so what it imports (``_typeshed``, a
    class named only in a hint) is no dependency and is left out; its ``else`` branch counts.
    """
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        type_only = _type_checking_lines(tree)
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno in type_only:
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(package_dir))] = names
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """The line numbers of code in the body of an ``if TYPE_CHECKING:`` block: seen by type checkers, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def assert_isolated(import_name: str, distribution: str | None = None) -> None:
    """Assert that package ``import_name`` stands alone in this environment.

    It is imported from an installed distribution (not a source tree), no other scratch
    architecture is importable beside it, and its modules import nothing but the standard
    library, itself and the requirements its distribution declares.
    """
    distribution = distribution or import_name.replace("_", "-")
    module = importlib.import_module(import_name)
    location = Path(module.__file__ or "").resolve()
    if "site-packages" not in location.parts and "dist-packages" not in location.parts:
        raise AssertionError(f"{import_name} was imported from {location}, not from an installed wheel")
    others = [name for name in ARCHITECTURES if name != import_name and importlib.util.find_spec(name) is not None]
    if others:
        raise AssertionError(f"{import_name}'s environment can also import {others}: it is not isolated")
    allowed = allowed_imports(distribution)
    bad = {
        file: sorted(names - allowed) for file, names in imported_modules(location.parent).items() if names - allowed
    }
    if bad:
        raise AssertionError(f"{import_name} imports undeclared modules: {bad}")


def assert_console_script(import_name: str, distribution: str | None = None) -> None:
    """Assert that the distribution's console script is ``scratch_entry:<import_name>``: the package (and torch) are
    imported inside its Ctrl-C guard, so an interrupt while torch loads is one line, not a traceback."""
    distribution = distribution or import_name.replace("_", "-")
    points = importlib.metadata.entry_points(group="console_scripts")
    values = [point.value for point in points if point.name == distribution]
    if values != [f"scratch_entry:{import_name}"]:
        raise AssertionError(f"{distribution}'s console script is {values}, not ['scratch_entry:{import_name}']")


# --------------------------------------------------------------------------- from scratch

FORBIDDEN_IN_TRAINING_PATH = (
    "torch.nn.functional",
    "torch.optim",
    "torch.autograd",
    "requires_grad_(True)",
    "requires_grad=True",
    "import torch.nn",
    "from torch import nn",
    "from torch.nn",
)


def assert_from_scratch(package_dir: Path, allowed_files: Iterable[str] = ()) -> None:
    """Assert no module of ``package_dir`` computes with torch.nn / torch.optim / autograd.

    ``from torch import nn`` under ``if TYPE_CHECKING:`` (for ``from_torch`` type hints)
    is fine; ``allowed_files`` are the opt-in autograd mode and the test helpers.
    """
    allowed = set(allowed_files)
    offences: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = str(path.relative_to(package_dir))
        if rel in allowed:
            continue
        text = path.read_text(encoding="utf-8")
        type_only = _type_checking_lines(ast.parse(text, filename=str(path)))
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if number in type_only or stripped.startswith("#"):
                continue
            code = stripped.split("  #")[0]
            if any(pattern in code for pattern in FORBIDDEN_IN_TRAINING_PATH):
                offences.append(f"{rel}:{number}: {stripped}")
    if offences:
        raise AssertionError("torch.nn / torch.optim / autograd in the training path:\n" + "\n".join(offences))
