"""The examples: each a :class:`~scratch_engine.tools.runner.Task` of ``scratch-mlp train``, and a ``run_*`` function.

Every run seeds itself from its config, trains with the engine through the shared runner, and,
given an output folder, writes ``metrics.json``, its PNG plots and ``checkpoint.pt`` there.
"""

from __future__ import annotations

from scratch_engine.tools.runner import Task
from scratch_mlp.examples.clusters import CLUSTERS, ClustersConfig, make_clusters, run_clusters
from scratch_mlp.examples.images import FASHION_MNIST, MNIST, ImagesConfig, run_images
from scratch_mlp.examples.regression import REGRESSION, RegressionConfig, run_regression

TASKS: dict[str, Task] = {task.name: task for task in (CLUSTERS, REGRESSION, MNIST, FASHION_MNIST)}  # type: ignore[type-arg]
HEADLINE = {
    "clusters": "test_accuracy",
    "regression": "test_mse",
    "mnist": "test_accuracy",
    "fashion-mnist": "test_accuracy",
}

__all__ = [
    "HEADLINE",
    "TASKS",
    "ClustersConfig",
    "ImagesConfig",
    "RegressionConfig",
    "make_clusters",
    "run_clusters",
    "run_images",
    "run_regression",
]
