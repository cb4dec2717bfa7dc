"""What happened during training: one float per epoch for every logged quantity."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

from scratch_engine import distributed


class History:
    """Metric name -> list of per-epoch values (``history["loss"][-1]``).

    Every list has one entry per epoch; a quantity missing from an epoch's logs (say
    ``val_loss`` when validation did not run) is ``nan`` there.
    """

    def __init__(self, history: Mapping[str, list[float]] | None = None) -> None:
        self.history: dict[str, list[float]] = {
            name: [float(v) for v in values] for name, values in (history or {}).items()
        }

    @property
    def epochs(self) -> int:
        return max((len(values) for values in self.history.values()), default=0)

    def append(self, logs: Mapping[str, float]) -> None:
        """Record one epoch's logs."""
        epochs = self.epochs
        for name in {**self.history, **logs}:
            values = self.history.setdefault(name, [math.nan] * epochs)
            values.append(float(logs.get(name, math.nan)))

    def __getitem__(self, name: str) -> list[float]:
        return self.history[name]

    def __contains__(self, name: object) -> bool:
        return name in self.history

    def __iter__(self) -> Iterator[str]:
        return iter(self.history)

    def __len__(self) -> int:
        return len(self.history)

    def keys(self) -> list[str]:
        return list(self.history)

    def items(self) -> list[tuple[str, list[float]]]:
        return list(self.history.items())

    def to_dict(self) -> dict[str, list[float]]:
        return {name: list(values) for name, values in self.history.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, list[float]]) -> History:
        return cls(data)

    def __repr__(self) -> str:
        return f"History(epochs={self.epochs}, metrics={self.keys()})"

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Write a PNG: training and validation losses, and accuracies if logged. Returns the path written.

        A ``path`` without a suffix gets ``.png`` (:func:`scratch_engine.plots.save_figure`). In a
        data-parallel run only rank 0 draws and writes it (every rank has the same logs); the
        other ranks return the same path.
        """
        from scratch_engine.plots import png_path, save_figure  # lazy: plotting needs matplotlib

        if not distributed.is_main_process():
            return png_path(path)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

        losses = [name for name in self.history if name.endswith("loss")]
        accuracies = [name for name in self.history if name.endswith("accuracy")]
        if not losses and not accuracies:
            raise ValueError("History.plot: nothing to plot (no loss or accuracy recorded)")
        panels = [group for group in (losses, accuracies) if group]
        figure = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
        FigureCanvasAgg(figure)
        epochs = range(1, self.epochs + 1)
        for i, names in enumerate(panels):
            axes = figure.add_subplot(1, len(panels), i + 1)
            for name in names:
                axes.plot(epochs, self.history[name], marker="o" if self.epochs < 30 else None, label=name)
            axes.set_xlabel("epoch")
            axes.set_ylabel("loss" if names is losses else "accuracy")
            axes.grid(alpha=0.3)
            axes.legend()
        if title:
            figure.suptitle(title)
        return save_figure(figure, path)
