"""The examples, each a function ``run(config, out_dir, progress) -> metrics`` and a ``scratch-mlp train`` task.

Every run seeds itself from its config, trains with the engine, and, given ``out_dir``,
writes ``metrics.json`` and its PNG plots there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratch_engine.experiment import TrainConfig
from scratch_mlp.examples.clusters import ClustersConfig
from scratch_mlp.examples.clusters import run as run_clusters
from scratch_mlp.examples.images import ImagesConfig
from scratch_mlp.examples.images import run as run_images
from scratch_mlp.examples.regression import RegressionConfig
from scratch_mlp.examples.regression import run as run_regression


@dataclass(frozen=True)
class Example:
    """A task of ``scratch-mlp train``: its default config, its run function and its headline metric."""

    name: str
    help: str
    config: TrainConfig
    run: Callable[[Any, str | Path | None, bool | None], dict[str, Any]]
    metric: str  # "test_accuracy" or "test_mse"


EXAMPLES: dict[str, Example] = {
    "clusters": Example(
        "clusters", "4 Gaussian clusters in 2-D: decision regions", ClustersConfig(), run_clusters, "test_accuracy"
    ),
    "regression": Example(
        "regression", "a noisy 1-D function: the fitted curve", RegressionConfig(), run_regression, "test_mse"
    ),
    "mnist": Example("mnist", "MNIST digits, 784 inputs", ImagesConfig(), run_images, "test_accuracy"),
    "fashion-mnist": Example(
        "fashion-mnist",
        "Fashion-MNIST clothes, 784 inputs",
        ImagesConfig(dataset="fashion-mnist"),
        run_images,
        "test_accuracy",
    ),
}

__all__ = [
    "EXAMPLES",
    "ClustersConfig",
    "Example",
    "ImagesConfig",
    "RegressionConfig",
    "TrainConfig",
    "run_clusters",
    "run_images",
    "run_regression",
]
