"""scripts/notebooks.py: percent scripts become notebooks, and a re-run's outputs compare beyond noise only."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import notebooks

SOURCE = """\
# %% [markdown]
# # Title
# Some $x^2$ text.

# %%
print("loss 0.4321 after 10 steps")

# %% tags=["timing"]
print("loop 12.0 ms, im2col 3.0 ms")
"""


def executed(tmp_path: Path, outputs: list[list[dict[str, Any]]]) -> Any:
    script = tmp_path / "demo.py"
    script.write_text(SOURCE, encoding="utf-8")
    notebook = notebooks.build(script)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell, cell_outputs in zip(code, outputs, strict=True):
        cell.outputs = [nbformat.v4.new_output(**o) for o in cell_outputs]
    return notebook


def stdout(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_cells_are_parsed_with_their_kind_text_and_tags() -> None:
    cells = notebooks.parse_cells(SOURCE)
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "code"]
    assert cells[0]["source"] == "# Title\nSome $x^2$ text."
    assert cells[1]["source"] == 'print("loss 0.4321 after 10 steps")'
    assert cells[2]["tags"] == ["timing"]
    with pytest.raises(notebooks.NotebookError, match="before the first"):
        notebooks.parse_cells("import torch\n# %%\nx = 1\n")


def test_noise_and_timings_pass(tmp_path: Path) -> None:
    loss, times = "loss 0.4321 after 10 steps\n", "loop 12.0 ms, im2col 3.0 ms\n"
    committed = executed(tmp_path, [[stdout(loss)], [stdout(times)]])
    fresh = executed(tmp_path, [[stdout("loss 0.4322 after 10 steps\n")], [stdout("loop 130.5 ms, im2col  2.0 ms\n")]])
    notebooks.compare(fresh, committed, "demo.ipynb")
    assert notebooks.same_number(2.2e-16, 4.4e-16)
    assert not notebooks.same_number(0.43, 0.45)


def test_a_drifted_number_a_changed_line_and_a_stale_source_fail(tmp_path: Path) -> None:
    committed = executed(tmp_path, [[stdout("loss 0.4321 after 10 steps\n")], [stdout("loop 12.0 ms\n")]])
    drifted = executed(tmp_path, [[stdout("loss 0.52 after 10 steps\n")], [stdout("loop 12.0 ms\n")]])
    with pytest.raises(notebooks.NotebookError, match=r"cell 2: stdout has 0.52 where 0.4321 was committed"):
        notebooks.compare(drifted, committed, "demo.ipynb")
    changed = executed(tmp_path, [[stdout("loss nan after 10 steps\n")], [stdout("loop 12.0 ms\n")]])
    with pytest.raises(notebooks.NotebookError, match="line 1 is 'loss nan after 10 steps'"):
        notebooks.compare(changed, committed, "demo.ipynb")
    stale = copy.deepcopy(committed)
    stale.cells[1].source = 'print("something else")'
    with pytest.raises(notebooks.NotebookError, match="cell 2: the committed notebook's source is not the script's"):
        notebooks.compare(committed, stale, "demo.ipynb")


def test_a_missing_plot_fails_and_a_redrawn_one_passes(tmp_path: Path) -> None:
    png = {"output_type": "display_data", "data": {"image/png": "iVBOR...", "text/plain": "<Figure>"}}
    other_png = {"output_type": "display_data", "data": {"image/png": "iVBOR-other", "text/plain": "<Figure>"}}
    committed = executed(tmp_path, [[stdout("loss 0.4321 after 10 steps\n"), png], []])
    notebooks.compare(executed(tmp_path, [[stdout("loss 0.4321 after 10 steps\n"), other_png], []]), committed, "d")
    with pytest.raises(notebooks.NotebookError, match=r"outputs \['stdout'\] where \['stdout', 'image/png'\]"):
        notebooks.compare(executed(tmp_path, [[stdout("loss 0.4321 after 10 steps\n")], []]), committed, "d")
