"""MNIST digits and Fashion-MNIST clothes: 28x28 grey images kept as ``(N, 1, 28, 28)`` for the convolutions.

    scratch-cnn train mnist --out runs/scratch-cnn/mnist
    scratch-cnn train fashion-mnist --model best --out runs/scratch-cnn/fashion-mnist

The images come from :func:`scratch_engine.datasets.load_image_dataset` (``$SCRATCH_DATA_DIR``,
else the cache, else a verified download). The whole set is turned into one float tensor
up front: pixels scaled to [0, 1], then standardised with the *training* set's mean and
standard deviation, so batches are cheap row selections rather than per-image transforms.

Writes ``metrics.json``, ``loss.png`` (loss and accuracy curves; ``val_*`` is the test set,
evaluated after each epoch for the curve only: nothing is chosen by it), ``filters.png``
(the first convolution's learned kernels), ``confusion_matrix.png`` and ``mistakes.png``
(misclassified test images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from scratch_cnn.conv import Conv2D
from scratch_cnn.models import MODELS
from scratch_engine.datasets import CLASS_NAMES, image_tensors
from scratch_engine.experiment import TrainConfig, save, start, train_classifier
from scratch_engine.plots import plot_image_grid

IMAGE_SHAPE = (1, 28, 28)


@dataclass
class ImagesConfig(TrainConfig):
    dataset: str = "mnist"  # or "fashion-mnist"
    model: str = "lenet"  # or "best": see scratch_cnn.models
    impl: str = "im2col"  # or "loop" (the same numbers, very slowly)
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    schedule: str = "cosine"
    train_samples: int | None = None  # only the first n training images (quick runs and tests)
    test_samples: int | None = None  # only the first n test images (quick runs and tests)
    data_dir: str | None = None  # None: $SCRATCH_DATA_DIR, then the cache
    download: bool | None = None  # None: allowed unless SCRATCH_DOWNLOAD=0


def load_tensors(config: ImagesConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``X_train (N, 1, 28, 28), y_train (N,), X_test (M, 1, 28, 28), y_test (M,)``.

    Pixels are scaled to [0, 1], then standardised by the training pixels' mean and standard deviation.
    """
    return image_tensors(
        config.dataset, IMAGE_SHAPE, config.data_dir, config.download, config.train_samples, config.test_samples
    )


def run(
    config: ImagesConfig | None = None, out_dir: str | Path | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Train ``config.model`` on ``config.dataset``; returns (and, given ``out_dir``, writes) the metrics.

    A missing data set raises :class:`scratch_engine.datasets.DataNotFoundError` before any training.
    """
    config = config or ImagesConfig()
    if config.dataset not in CLASS_NAMES:
        raise ValueError(f"unknown image data set {config.dataset!r}; valid names: {', '.join(CLASS_NAMES)}")
    if config.model not in MODELS:
        raise ValueError(f"unknown model {config.model!r}; valid names: {', '.join(MODELS)}")
    device = start(config)
    data = tuple(t.to(device) for t in load_tensors(config))  # X_train, y_train, X_test, y_test
    class_names = CLASS_NAMES[config.dataset]
    extra = {"dropout": 0.0} if config.reference else {}  # a twin would draw other dropout masks
    if config.reference:
        import scratch_cnn.reference  # noqa: F401  (registers the torch.nn twins of the layers)
    model = MODELS[config.model](num_classes=len(class_names), impl=config.impl, **extra)
    title = f"{config.dataset}, {config.model}"
    _, metrics = train_classifier(
        model, config, data, class_names, out_dir, task=config.dataset, title=title, progress=progress
    )
    metrics["model"] = config.model
    if out_dir is not None:
        out_dir = Path(out_dir)
        first = next(layer for layer in model.layers if isinstance(layer, Conv2D))
        kernels = first.weight.data.detach().cpu()  # (O, C, kh, kw)
        plot_image_grid(
            kernels[:, 0],
            [str(o) for o in range(len(kernels))],
            out_dir / "filters.png",
            title=f"{config.dataset}: the first convolution's {len(kernels)} learned "
            f"{kernels.shape[2]}x{kernels.shape[3]} kernels",
        )
    save(out_dir, metrics, device)
    return metrics
