"""Four Gaussian clusters in the plane: the smallest classification problem worth plotting.

    scratch-mlp train clusters --out runs/scratch-mlp/clusters

Writes ``metrics.json``, ``decision_boundary.png`` (the regions the network assigns to
each class, with the test points) and ``loss.png`` (loss and accuracy per epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine import CrossEntropyLoss, DataLoader
from scratch_engine.experiment import (
    TrainConfig,
    record,
    reference_accuracy,
    save,
    save_reference_plot,
    start,
    train,
)
from scratch_engine.plots import plot_decision_boundary
from scratch_mlp.model import MLP

CENTERS = ((2.0, 2.0), (-2.0, 2.0), (-2.0, -2.0), (2.0, -2.0))


@dataclass
class ClustersConfig(TrainConfig):
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.01
    schedule: str = "cosine"
    hidden: tuple[int, ...] = (32, 32)
    samples_per_class: int = 250  # in the training set; the test set has as many again
    spread: float = 0.75  # standard deviation of each cluster around its centre
    data_seed: int = 0  # the data set is fixed by this, whatever ``seed`` does to training


def make_clusters(samples_per_class: int, spread: float, seed: int) -> tuple[Tensor, Tensor]:
    """``X (4n, 2)`` drawn around :data:`CENTERS` with standard deviation ``spread``, labels ``y (4n,)``."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(len(CENTERS)).repeat_interleave(samples_per_class)
    X = torch.tensor(CENTERS)[y] + spread * torch.randn(len(y), 2, generator=generator)
    return X, y


def run(
    config: ClustersConfig | None = None, out_dir: str | Path | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Train a ``2-hidden-4`` ReLU MLP on the clusters; returns (and, given ``out_dir``, writes) the metrics."""
    config = config or ClustersConfig()
    device = start(config)
    X, y = make_clusters(2 * config.samples_per_class, config.spread, config.data_seed)
    X, y = X.to(device), y.to(device)
    # even rows train, odd rows test: both halves hold every cluster equally
    X_train, y_train, X_test, y_test = X[0::2], y[0::2], X[1::2], y[1::2]
    model = MLP.from_sizes([2, *config.hidden, len(CENTERS)], input_grad=False)
    train_loader = DataLoader(X_train, y_train, batch_size=config.batch_size, seed=config.seed)
    engine, seconds = train(model, CrossEntropyLoss(), config, train_loader, progress=progress)
    test = engine.evaluate(DataLoader(X_test, y_test, batch_size=1024, shuffle=False))
    metrics = record(
        "clusters",
        config,
        engine,
        seconds,
        {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "train_accuracy": engine.history["accuracy"][-1],
        }
        | reference_accuracy(engine, X_test, y_test),
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        plot_decision_boundary(
            lambda points: engine.predict(points.to(device)).argmax(dim=-1),
            X_test,
            y_test,
            out_dir / "decision_boundary.png",
            title=f"4 clusters: test accuracy {test['accuracy']:.1%}",
        )
        engine.history.plot(out_dir / "loss.png", title="clusters: training loss and accuracy")
    save_reference_plot(engine, out_dir, "clusters: scratch vs torch.nn, same batches")
    save(out_dir, metrics, device)
    return metrics
