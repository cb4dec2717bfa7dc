"""MNIST digits and Fashion-MNIST clothes: 28x28 grey images flattened to 784 inputs.

    scratch-mlp train mnist --out runs/scratch-mlp/mnist
    scratch-mlp train fashion-mnist --out runs/scratch-mlp/fashion-mnist

The images come from :func:`scratch_engine.datasets.load_image_dataset` (``$SCRATCH_DATA_DIR``,
else the cache, else a verified download). The whole set is turned into one float tensor
up front: pixels scaled to [0, 1], then standardised with the *training* set's mean and
standard deviation, so batches are cheap row selections rather than per-image transforms.

Writes ``metrics.json``, ``loss.png`` (``val_*`` is the test set, evaluated after each
epoch for the curve only: nothing is chosen by it), ``confusion_matrix.png`` and
``mistakes.png`` (misclassified test images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from scratch_engine.datasets import CLASS_NAMES, image_tensors
from scratch_engine.experiment import TrainConfig, save, start, train_classifier
from scratch_mlp.model import MLP

IMAGE_SIZE = 28 * 28


@dataclass
class ImagesConfig(TrainConfig):
    dataset: str = "mnist"  # or "fashion-mnist"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "cosine"
    hidden: tuple[int, ...] = (512, 256)
    dropout: float = 0.2
    train_samples: int | None = None  # only the first n training images (quick runs and tests)
    data_dir: str | None = None  # None: $SCRATCH_DATA_DIR, then the cache
    download: bool | None = None  # None: allowed unless SCRATCH_DOWNLOAD=0


def load_tensors(config: ImagesConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``X_train (N, 784), y_train (N,), X_test (M, 784), y_test (M,)``, standardised by the training pixels."""
    return image_tensors(
        config.dataset, (IMAGE_SIZE,), config.data_dir, config.download, train_samples=config.train_samples
    )


def run(
    config: ImagesConfig | None = None, out_dir: str | Path | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Train a ``784-hidden-10`` ReLU MLP with dropout; returns (and, given ``out_dir``, writes) the metrics.

    A missing data set raises :class:`scratch_engine.datasets.DataNotFoundError` before any training.
    """
    config = config or ImagesConfig()
    if config.dataset not in CLASS_NAMES:
        raise ValueError(f"unknown image data set {config.dataset!r}; valid names: {', '.join(CLASS_NAMES)}")
    device = start(config)
    data = tuple(t.to(device) for t in load_tensors(config))  # X_train, y_train, X_test, y_test
    class_names = CLASS_NAMES[config.dataset]
    dropout = 0.0 if config.reference else config.dropout  # a twin would draw other dropout masks
    model = MLP.from_sizes([IMAGE_SIZE, *config.hidden, len(class_names)], dropout=dropout, input_grad=False)
    _, metrics = train_classifier(
        model,
        config,
        data,
        class_names,
        out_dir,
        task=config.dataset,
        title=config.dataset,
        progress=progress,
        test_batch_size=1000,
    )
    save(out_dir, metrics, device)
    return metrics
