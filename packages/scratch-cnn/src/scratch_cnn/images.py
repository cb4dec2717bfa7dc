"""MNIST digits and Fashion-MNIST clothes: 28x28 grey images kept as ``(N, 1, 28, 28)`` for the convolutions.

    scratch-cnn train mnist --out runs/scratch-cnn/mnist
    scratch-cnn train fashion-mnist --model best --out runs/scratch-cnn/fashion-mnist

The images come from :func:`scratch_engine.tools.datasets.load_image_dataset` (``$SCRATCH_DATA_DIR``,
else the cache, else a verified download); the task is the engine's image classification
(:mod:`scratch_engine.tools.classify`: the whole set as one float tensor, standardised with the
*training* set's mean and standard deviation) with a CNN from :mod:`scratch_cnn.models`.

Writes ``metrics.json``, ``loss.png`` (loss and accuracy curves; ``val_*`` is the test set,
evaluated after each epoch for the curve only: nothing is chosen by it), ``filters.png``
(the first convolution's learned kernels), ``confusion_matrix.png``, ``mistakes.png``
(misclassified test images) and ``checkpoint.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scratch_cnn.conv import IMPLS, Conv2D
from scratch_cnn.models import MODELS
from scratch_engine import Module, Sequential
from scratch_engine.tools.classify import ImageClassification, ImageConfig, ImageData
from scratch_engine.tools.config import option
from scratch_engine.tools.runner import Run
from scratch_engine.tools.runner import run as run_task

IMAGE_SHAPE = (1, 28, 28)


@dataclass
class ImagesConfig(ImageConfig):
    epochs: int | None = 6
    batch_size: int = 128
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    test_batch_size: int = 500
    model: str = option("lenet", "the network (see scratch_cnn.models)", choices=tuple(MODELS), group="model")
    impl: str = option("im2col", "Conv2D's implementation (loop: same numbers, slowly)", choices=IMPLS, group="model")


class Images(ImageClassification[ImagesConfig]):
    """``config.model`` (LeNet-style by default) on ``(1, 28, 28)`` images; ``filters.png`` besides the usual plots."""

    image_shape = IMAGE_SHAPE

    def __init__(self, dataset: str, help: str) -> None:
        self.name, self.help = dataset, help
        self.config = ImagesConfig(dataset=dataset)

    def build_model(self, config: ImagesConfig, data: ImageData) -> Sequential:
        extra = {"dropout": 0.0} if config.reference else {}  # a twin would draw other dropout masks
        return MODELS[config.model](num_classes=len(data.class_names), impl=config.impl, **extra)

    def torch_twin(self, config: ImagesConfig, data: ImageData, model: Module) -> torch.nn.Module:
        import scratch_cnn.reference  # noqa: F401  (registers the torch.nn twins of the layers; torch.nn on request)

        return super().torch_twin(config, data, model)

    def evaluate(self, run: Run[ImagesConfig]) -> dict[str, Any]:
        metrics = super().evaluate(run) | {"model": run.config.model}
        if run.out is not None:
            plot_filters(run.model, run.out / "filters.png", run.config.dataset)
        return metrics


def plot_filters(model: Module, path: Path, dataset: str) -> None:
    """``path``: the first convolution's kernels, one grey image per output channel (its first input channel)."""
    from scratch_engine.tools.plots import plot_image_grid

    first = next(layer for layer in model.modules() if isinstance(layer, Conv2D))
    kernels = first.weight.data.detach().cpu()  # (O, C, kh, kw)
    plot_image_grid(
        kernels[:, 0],
        [str(o) for o in range(len(kernels))],
        path,
        title=f"{dataset}: the first convolution's {len(kernels)} learned "
        f"{kernels.shape[2]}x{kernels.shape[3]} kernels",
    )


MNIST = Images("mnist", "MNIST digits, (1, 28, 28) images")
FASHION_MNIST = Images("fashion-mnist", "Fashion-MNIST clothes, (1, 28, 28) images")
TASKS: dict[str, Images] = {task.name: task for task in (MNIST, FASHION_MNIST)}


def run(config: ImagesConfig | None = None, out_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``config.model`` on ``config.dataset``; returns (and, given ``out_dir``, writes) the metrics.

    A missing data set raises :class:`scratch_engine.tools.datasets.DataNotFoundError` before any training.
    """
    config = config or ImagesConfig()
    return run_task(TASKS[config.dataset], config, out_dir, progress)
