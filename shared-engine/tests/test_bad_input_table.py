"""The README's table of bad inputs and what a user gets is these cases' real errors (#18): it cannot drift.

Each case runs; the table is rendered from the exceptions they raise and must equal the block between the
README's markers. After a deliberate change of a message: ``SCRATCH_WRITE_TABLE=1 pytest tests/test_bad_input_table.py``
rewrites the block, for review in the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from scratch_engine import (
    Adam,
    BatchNorm1d,
    CrossEntropyLoss,
    DataLoader,
    Dense,
    Dropout,
    Embedding,
    Engine,
    ReLU,
    Sequential,
    WarmupCosine,
)
from scratch_engine.tools.config import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- bad-input table: tests/test_bad_input_table.py -->", "<!-- end of the bad-input table -->"


def _engine() -> Engine:
    model = Sequential(Dense(4, 8), ReLU(), Dense(8, 3))
    return Engine(model, CrossEntropyLoss(), Adam(model), progress=False)


def _inputs() -> torch.Tensor:
    return torch.zeros(8, 4)


def _y() -> torch.Tensor:
    return torch.zeros(8, dtype=torch.long)


def _negative_rate() -> None:
    engine = _engine()
    engine.optimizer.learning_rate = -0.1  # after construction, by hand
    engine.fit(DataLoader(_inputs(), _y()), 1)


def _nan_data() -> None:
    _engine().fit(DataLoader(torch.full((8, 4), float("nan")), _y()), 1)


def _diverging() -> None:
    from scratch_engine.tools.callbacks import StopOnDivergence

    guard, engine = StopOnDivergence(), _engine()  # the rule on round numbers (a real run's vary with torch)
    guard.first_loss, engine.global_step = 2.0, 120
    guard.on_log(engine, {"loss": 50.0})


def _other_model_state() -> None:
    Sequential(Dense(4, 8)).load_state_dict(Sequential(Dense(4, 9)).state_dict())


CASES: list[tuple[str, Callable[[], object]]] = [
    ("`Dense(4, 8)` given a `(8, 5)` batch", lambda: Dense(4, 8)(torch.zeros(8, 5))),
    ("`Dense(4, 8)` given float64 data (float32 weights)", lambda: Dense(4, 8)(torch.zeros(8, 4, dtype=torch.float64))),
    ("`Dense(4, 8)` given integer data", lambda: Dense(4, 8)(torch.zeros(8, 4, dtype=torch.long))),
    ("`backward` before any `forward`", lambda: Dense(4, 8).backward(torch.zeros(8, 8))),
    ("a gradient of another shape than the output", lambda: _gradient_of_another_shape()),
    ("class 3 of 3 classes", lambda: CrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0, 3]))),
    ("float class targets", lambda: CrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))),
    ("targets of another shape", lambda: CrossEntropyLoss()(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))),
    ("token id 10 in `Embedding(10, 4)`", lambda: Embedding(10, 4)(torch.tensor([1, 10]))),
    ("`Dropout(1.5)`", lambda: Dropout(1.5)),
    ("`BatchNorm1d` training on one sample", lambda: BatchNorm1d(4)(torch.zeros(1, 4))),
    ("NumPy arrays to `DataLoader`", lambda: DataLoader(_inputs().numpy(), _y().numpy())),
    ("`X` and `y` of other lengths", lambda: DataLoader(_inputs(), torch.zeros(7, dtype=torch.long))),
    ("`fit` without a budget", lambda: _engine().fit(DataLoader(_inputs(), _y()))),
    ("`fit(loader, epochs=0)`", lambda: _engine().fit(DataLoader(_inputs(), _y()), 0)),
    ("`Adam(model, learning_rate=-1)`", lambda: Adam(Sequential(Dense(4, 8)), learning_rate=-1)),
    ("a learning rate set negative after construction", _negative_rate),
    ("`WarmupCosine` ending above the optimizer's rate", lambda: _cosine_above()),
    ("NaN in the data", _nan_data),
    ("a loss that diverges but stays finite (a `train` command)", _diverging),
    ("another model's `state_dict`", _other_model_state),
    ("`TrainConfig(seed=2**70)` (`--seed`)", lambda: TrainConfig(seed=2**70)),
]


def _gradient_of_another_shape() -> None:
    layer = Dense(4, 8)
    layer(torch.zeros(2, 4))
    layer.backward(torch.zeros(8, 2))


def _cosine_above() -> None:
    model = Sequential(Dense(4, 8))
    WarmupCosine(Adam(model, learning_rate=1e-3), 10, 100, min_learning_rate=0.1)


def render() -> str:
    rows = ["| input | what you get |", "| --- | --- |"]
    for what, case in CASES:
        with pytest.raises(Exception) as caught:  # noqa: PT011 (every case must raise: the table says what)
            case()
        message = str(caught.value).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {what} | `{type(caught.value).__name__}`: {message} |")
    return "\n".join([BEGIN, *rows, END])


def test_the_readme_table_is_what_each_bad_input_raises() -> None:
    table = render()
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    if os.environ.get("SCRATCH_WRITE_TABLE") == "1":
        README.write_text(text[:start] + table + text[end:], encoding="utf-8")
    assert text[start:end] == table, "the README's bad-input table drifted: SCRATCH_WRITE_TABLE=1 rewrites it"
