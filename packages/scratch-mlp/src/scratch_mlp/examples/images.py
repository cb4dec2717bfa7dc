"""MNIST digits and Fashion-MNIST clothes: 28x28 grey images flattened to 784 inputs.

    scratch-mlp train mnist --out runs/scratch-mlp/mnist
    scratch-mlp train fashion-mnist --out runs/scratch-mlp/fashion-mnist

The images come from :func:`scratch_engine.tools.datasets.load_image_dataset` (``$SCRATCH_DATA_DIR``,
else the cache, else a verified download); the task is the engine's image classification
(:mod:`scratch_engine.tools.classify`) with an MLP. Writes ``metrics.json``, ``loss.png`` (``val_*``
is the test set, evaluated after each epoch for the curve only: nothing is chosen by it),
``confusion_matrix.png``, ``mistakes.png`` (misclassified test images) and ``checkpoint.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratch_engine.tools.classify import ImageClassification, ImageConfig, ImageData
from scratch_engine.tools.config import POSITIVE_INT, PROBABILITY, option
from scratch_engine.tools.runner import run
from scratch_mlp.model import MLP

IMAGE_SIZE = 28 * 28


@dataclass
class ImagesConfig(ImageConfig):
    epochs: int | None = 15
    batch_size: int = 128
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    hidden: tuple[int, ...] = option((512, 256), "hidden layer sizes", check=POSITIVE_INT, group="model")
    dropout: float = option(
        0.2, "dropout after each hidden layer (off with --reference)", check=PROBABILITY, group="model"
    )


class Images(ImageClassification[ImagesConfig]):
    """A ``784-hidden-10`` ReLU MLP with dropout on flattened images."""

    image_shape = (IMAGE_SIZE,)

    def __init__(self, dataset: str, help: str) -> None:
        self.name, self.help = dataset, help
        self.config = ImagesConfig(dataset=dataset)

    def build_model(self, config: ImagesConfig, data: ImageData) -> MLP:
        sizes = [IMAGE_SIZE, *config.hidden, len(data.class_names)]
        return MLP.from_sizes(sizes, dropout=config.dropout, input_grad=False)  # dropout is 0 with --reference


MNIST = Images("mnist", "MNIST digits, 784 inputs")
FASHION_MNIST = Images("fashion-mnist", "Fashion-MNIST clothes, 784 inputs")


def run_images(
    config: ImagesConfig | None = None, out_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train ``config.dataset`` (MNIST by default); returns (and, given ``out_dir``, writes) the metrics.

    A missing data set raises :class:`scratch_engine.tools.datasets.DataNotFoundError` before any training.
    """
    config = config or ImagesConfig()
    task = FASHION_MNIST if config.dataset == "fashion-mnist" else MNIST
    return run(task, config, out_dir, progress)
