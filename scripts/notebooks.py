"""Build, execute and check a package's notebooks.

Each notebook's source is a percent-format script, ``packages/scratch-<pkg>/notebooks/<name>.py`` (``# %%`` starts a
code cell, ``# %% [markdown]`` a markdown cell whose lines start with ``# ``, as jupytext and VS Code read them); the
``<name>.ipynb`` beside it is that script executed, outputs and plots included, so that it renders on GitHub.

    python scripts/notebooks.py mlp            execute each notebook in a fresh kernel and compare its outputs with
                                               the committed .ipynb: fails if a cell raises, if the .ipynb is
                                               missing or stale (its cells are not the script's), or if an output
                                               drifted by more than timings and noise-level numbers
    python scripts/notebooks.py mlp --write    execute and write the .ipynb files

``nox -s "notebooks(mlp)"`` runs it in a fresh venv that holds the package's wheel, the engine's and the kernel
(``-- --write`` to regenerate). Numbers compare within 2% (or both below 1e-6: rounding errors); a line that
names a time or a speed (``ms``, ``s``, ``it/s``, ``faster``, ...) and a cell tagged ``timing``
(``# %% tags=["timing"]``) compare without their numbers; runs of spaces compare as one (a padded number that
gains a digit); stderr (progress bars) and images compare by their presence only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mlp", "cnn", "rnn", "transformer")
RELATIVE, ROUNDING = 2e-2, 1e-6
BUDGET_S = 120  # each notebook should run in about 2 minutes on 2 CPU cores; 2.5x that fails
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
TIMING = re.compile(r"\b(?:ms|µs|us|s|sec|seconds?|min|minutes?|it/s|s/it|ETA|[a-z]+/s)\b|faster|slower|\d[x×]\b|×")
CELL = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


class NotebookError(Exception):
    """A notebook failed, is stale, or drifted: the message says which and where."""


def notebook_dir(package: str) -> Path:
    return ROOT / "packages" / f"scratch-{package}" / "notebooks"


def parse_cells(source: str) -> list[dict[str, Any]]:
    """The cells of a percent-format script: ``{"cell_type", "source", "tags"}`` in order."""
    cells: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in source.splitlines():
        match = CELL.match(line)
        if match:
            tags = json.loads(match["tags"]) if match["tags"] else []
            current = {"cell_type": "markdown" if match["markdown"] else "code", "lines": [], "tags": tags}
            cells.append(current)
        elif current is not None:
            if current["cell_type"] == "markdown":
                line = line[2:] if line.startswith("# ") else line.removeprefix("#")
            current["lines"].append(line)
        elif line.strip():
            raise NotebookError(f"text before the first '# %%' cell marker: {line!r}")
    for cell in cells:
        lines = cell.pop("lines")
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        cell["source"] = "\n".join(lines)
    return [cell for cell in cells if cell["source"]]


def build(script: Path) -> Any:
    """An unexecuted notebook (nbformat v4) with the script's cells."""
    import nbformat

    cells = []
    for cell in parse_cells(script.read_text(encoding="utf-8")):
        metadata = {"tags": cell["tags"]} if cell["tags"] else {}
        if cell["cell_type"] == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(cell["source"], metadata=metadata))
        else:
            cells.append(nbformat.v4.new_code_cell(cell["source"], metadata=metadata))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    return notebook


def execute(notebook: Any, workdir: Path) -> Any:
    """Run every cell in a fresh python3 kernel (this interpreter's) with ``workdir`` as its working directory."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures into the notebook
    where = {"metadata": {"path": str(workdir)}}
    client = NotebookClient(notebook, timeout=900, kernel_name="python3", resources=where, record_timing=False)
    try:
        client.execute()
    except CellExecutionError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise NotebookError("a cell raised: " + (lines[-1] if lines else "?")) from None
    except RuntimeError as err:  # the kernel did not start or died
        raise NotebookError(f"the kernel failed: {err}") from None
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.execution_count = None  # stable diffs: the counts say nothing a reader needs
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = None
    return notebook


def skeleton(text: str, timing: bool) -> tuple[list[str], list[float]]:
    """The text's lines with numbers replaced by ``#``, and its numbers (none from a line that times something)."""
    lines: list[str] = []
    numbers: list[float] = []
    for line in text.splitlines():
        lines.append(" ".join(NUMBER.sub("#", line).split()))  # widths pad numbers: " 3.2 ms" and "13.2 ms" match
        if not (timing or TIMING.search(line)):
            numbers.extend(float(n) for n in NUMBER.findall(line))
    return lines, numbers


def same_number(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= RELATIVE * max(abs(a), abs(b)) or max(abs(a), abs(b)) < ROUNDING


def outputs_of(cell: Any) -> Iterator[tuple[str, str]]:
    """A code cell's outputs as ``(kind, text)``: stdout text, result text, and the kinds of what is not text."""
    for output in cell.get("outputs", []):
        kind = output["output_type"]
        if kind == "stream":
            yield (output["name"], output["text"] if output["name"] == "stdout" else "")
        elif kind in ("execute_result", "display_data"):
            data = output["data"]
            images = sorted(k for k in data if k.startswith("image/"))
            yield ("+".join(images) if images else kind, "" if images else data.get("text/plain", ""))
        else:
            yield (kind, "")


def merged_streams(cell: Any) -> list[tuple[str, str]]:
    """:func:`outputs_of`, consecutive outputs of the same kind joined (how the kernel splits a stream varies)."""
    merged: list[tuple[str, str]] = []
    for kind, text in outputs_of(cell):
        if merged and merged[-1][0] == kind and kind in ("stdout", "stderr"):
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


def compare(fresh: Any, committed: Any, name: str) -> None:
    """Raise :class:`NotebookError` naming the first cell whose source or outputs differ beyond noise."""
    if len(fresh.cells) != len(committed.cells):
        raise NotebookError(f"{name}: {len(committed.cells)} cells committed, the script has {len(fresh.cells)}: stale")
    for index, (new, old) in enumerate(zip(fresh.cells, committed.cells, strict=True), start=1):
        where = f"{name}, cell {index}"
        if new.cell_type != old.cell_type or new.source != old.source:
            raise NotebookError(f"{where}: the committed notebook's source is not the script's: stale")
        if new.cell_type != "code":
            continue
        timing = "timing" in new.metadata.get("tags", [])
        new_outputs, old_outputs = merged_streams(new), merged_streams(old)
        if [k for k, _ in new_outputs] != [k for k, _ in old_outputs]:
            raise NotebookError(
                f"{where}: outputs {[k for k, _ in new_outputs]} where {[k for k, _ in old_outputs]} were committed"
            )
        for (kind, new_text), (_, old_text) in zip(new_outputs, old_outputs, strict=True):
            new_lines, new_numbers = skeleton(new_text, timing)
            old_lines, old_numbers = skeleton(old_text, timing)
            if new_lines != old_lines:
                first = next(
                    (i for i, (a, b) in enumerate(zip(new_lines, old_lines, strict=False)) if a != b),
                    min(len(new_lines), len(old_lines)),
                )
                got = new_text.splitlines()[first] if first < len(new_lines) else "(no line)"
                want = old_text.splitlines()[first] if first < len(old_lines) else "(no line)"
                raise NotebookError(f"{where}: {kind} line {first + 1} is {got!r}, committed {want!r}")
            for a, b in zip(new_numbers, old_numbers, strict=True):
                if not same_number(a, b):
                    raise NotebookError(f"{where}: {kind} has {a:g} where {b:g} was committed (beyond {RELATIVE:.0%})")


def run(package: str, write: bool) -> list[tuple[str, float]]:
    import nbformat

    scripts = sorted(notebook_dir(package).glob("*.py"))
    if not scripts:
        raise NotebookError(f"no notebooks in {notebook_dir(package).relative_to(ROOT)}")
    times = []
    for script in scripts:
        target = script.with_suffix(".ipynb")
        print(f"notebooks: executing {script.relative_to(ROOT)} ...", flush=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="notebook-") as workdir:
            notebook = execute(build(script), Path(workdir))
        seconds = time.perf_counter() - start
        times.append((script.stem, seconds))
        print(f"notebooks: {script.stem} ran in {seconds:.0f} s", flush=True)
        if seconds > 2.5 * BUDGET_S:
            raise NotebookError(f"{script.stem} took {seconds:.0f} s; a notebook should run in about {BUDGET_S} s")
        if write:
            partial = target.with_suffix(".ipynb.part")
            nbformat.write(notebook, str(partial))
            partial.replace(target)
            print(f"notebooks: wrote {target.relative_to(ROOT)}")
        elif not target.exists():
            raise NotebookError(f"{target.relative_to(ROOT)} is missing: run with --write")
        else:
            compare(notebook, nbformat.read(str(target), as_version=4), target.name)
            print(f"notebooks: {target.name} matches its committed outputs")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", choices=PACKAGES)
    parser.add_argument("--write", action="store_true", help="write the executed notebooks instead of checking them")
    args = parser.parse_args(argv)
    try:
        times = run(args.package, args.write)
    except NotebookError as err:
        print(f"notebooks: error: {err}", file=sys.stderr)
        print(f'notebooks: regenerate with  nox -s "notebooks({args.package})" -- --write', file=sys.stderr)
        return 1
    print("notebooks: run times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
