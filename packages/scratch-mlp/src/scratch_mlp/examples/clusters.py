"""Four Gaussian clusters in the plane: the smallest classification problem worth plotting.

    scratch-mlp train clusters --out runs/scratch-mlp/clusters

Writes ``metrics.json``, ``decision_boundary.png`` (the regions the network assigns to
each class, with the test points), ``loss.png`` (loss and accuracy per epoch) and ``checkpoint.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine.tools.classify import twin_accuracy
from scratch_engine.tools.config import POSITIVE, POSITIVE_INT, TrainConfig, option
from scratch_engine.tools.distributed import ShardedDataLoader
from scratch_engine.tools.runner import Loaders, Run, Task, run
from scratch_mlp.model import MLP

CENTERS = ((2.0, 2.0), (-2.0, 2.0), (-2.0, -2.0), (2.0, -2.0))


@dataclass
class ClustersConfig(TrainConfig):
    epochs: int | None = 20
    batch_size: int = 32
    learning_rate: float = 0.01
    schedule: str = "cosine"
    hidden: tuple[int, ...] = option((32, 32), "hidden layer sizes", check=POSITIVE_INT, group="model")
    samples_per_class: int = option(
        250, "training points per cluster (as many again test)", check=POSITIVE_INT, group="data"
    )
    spread: float = option(0.75, "standard deviation of each cluster around its centre", check=POSITIVE, group="data")
    data_seed: int = option(0, "fixes the data set, whatever --seed does to training", group="data")


@dataclass
class ClustersData(Loaders):
    X_test: Tensor | None = None
    y_test: Tensor | None = None


def make_clusters(samples_per_class: int, spread: float, seed: int) -> tuple[Tensor, Tensor]:
    """``X (4n, 2)`` drawn around :data:`CENTERS` with standard deviation ``spread``, labels ``y (4n,)``."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(len(CENTERS)).repeat_interleave(samples_per_class)
    X = torch.tensor(CENTERS)[y] + spread * torch.randn(len(y), 2, generator=generator)
    return X, y


class Clusters(Task[ClustersConfig]):
    """A ``2-hidden-4`` ReLU MLP on four clusters: test accuracy and the decision regions."""

    name = "clusters"
    help = "4 Gaussian clusters in 2-D: decision regions"
    config = ClustersConfig()

    def load_data(self, config: ClustersConfig, device: torch.device) -> ClustersData:
        X, y = make_clusters(2 * config.samples_per_class, config.spread, config.data_seed)
        X, y = X.to(device), y.to(device)
        # even rows train, odd rows test: both halves hold every cluster equally
        train = ShardedDataLoader(X[0::2], y[0::2], batch_size=config.batch_size, seed=config.seed)
        return ClustersData(train, X_test=X[1::2], y_test=y[1::2])

    def build_model(self, config: ClustersConfig, data: ClustersData) -> MLP:
        return MLP.from_sizes([2, *config.hidden, len(CENTERS)], input_grad=False)

    def evaluate(self, run: Run[ClustersConfig]) -> dict[str, Any]:
        from scratch_engine.tools.plots import plot_decision_boundary

        engine, X_test, y_test = run.engine, run.data.X_test, run.data.y_test
        test = engine.evaluate(ShardedDataLoader(X_test, y_test, batch_size=1024, shuffle=False))
        if run.out is not None:
            plot_decision_boundary(
                lambda points: engine.predict(points.to(run.device)).argmax(dim=-1),
                X_test,
                y_test,
                run.out / "decision_boundary.png",
                title=f"4 clusters: test accuracy {test['accuracy']:.1%}",
            )
        return {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "train_accuracy": engine.history["accuracy"][-1],
        } | twin_accuracy(run, X_test, y_test)


CLUSTERS = Clusters()


def run_clusters(
    config: ClustersConfig | None = None, out_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train the clusters task; returns (and, given ``out_dir``, writes) the metrics."""
    return run(CLUSTERS, config, out_dir, progress)
