"""scripts/seed_bands.py: the headline figure of a run, and a band's table in the demo table's units."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import seed_bands


def test_the_headline_figure_is_the_demo_tables() -> None:
    assert seed_bands.figure({"test_cer": 0.61, "val_loss": 1.2}) == ("test_cer", 0.61)
    assert seed_bands.figure({"val_loss": 2.07}) == ("val_loss", 2.07)
    with pytest.raises(KeyError, match="no headline metric"):
        seed_bands.figure({"steps": 3})


def test_the_table_shows_each_seed_and_the_band() -> None:
    row = {
        "package": "mlp",
        "task": "mnist",
        "command": "scratch-mlp train mnist --epochs 5 --seed S",
        "metric": "test_accuracy",
        "values": {"0": 0.9823, "1": 0.9811, "2": 0.9830},
        "shown": {"0": "test accuracy 98.23%", "1": "test accuracy 98.11%", "2": "test accuracy 98.30%"},
        "low": 0.9811,
        "high": 0.9830,
    }
    table = seed_bands.markdown([row])
    assert "| mlp | mnist | `scratch-mlp train mnist --epochs 5 --seed S` | 0, 1, 2 | 98.11% to 98.30% |" in table
    assert seed_bands.band_text({**row, "metric": "val_loss", "low": 2.0712, "high": 2.0803}) == "2.071 to 2.080"


def test_every_demo_task_has_its_budget_in_steps_or_epochs_never_minutes() -> None:
    for _, _, flags in seed_bands.TASKS:
        if "--max-steps" in flags:
            assert flags[flags.index("--max-minutes") + 1] == "none"
