"""Image classification as a task (MNIST, Fashion-MNIST), shared by the MLP and the CNN.

The whole data set becomes one float tensor up front (:func:`~scratch_engine.tools.datasets.image_tensors`:
pixels scaled to [0, 1], standardised by the *training* pixels), so batches are cheap row
selections. The test set also draws the validation curve (nothing is chosen by it). The
evaluation reports test accuracy, per-class accuracy and the confusion matrix, and writes
``confusion_matrix.png``, ``predictions.png`` (the first test images, true → predicted) and ``mistakes.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from scratch_engine.tools.config import NON_NEGATIVE_INT, POSITIVE_INT, TrainConfig, option
from scratch_engine.tools.datasets import CLASS_NAMES, image_tensors
from scratch_engine.tools.distributed import ShardedDataLoader
from scratch_engine.tools.runner import Loaders, Run, Task


@dataclass
class ImageConfig(TrainConfig):
    """The data settings of an image task; the package's config adds the model's."""

    dataset: str = option("mnist", "the data set (the task's name)", choices=tuple(CLASS_NAMES), flags=(), group="data")
    train_samples: int | None = option(None, "use only the first N training images", check=POSITIVE_INT, group="data")
    test_samples: int | None = option(None, "use only the first N test images", check=POSITIVE_INT, group="data")
    test_batch_size: int = option(1000, "images per evaluation batch", check=POSITIVE_INT, group="data")
    data_dir: str | None = option(None, "folder holding <data set>/*.gz (none: $SCRATCH_DATA_DIR)", group="data")
    download: bool = option(True, "download a missing data set (verified), unless SCRATCH_DOWNLOAD=0", group="data")
    mistakes: int = option(
        24, "test images to draw in predictions.png and mistakes.png (0: neither)", check=NON_NEGATIVE_INT, group="data"
    )


ImageConfigT = TypeVar("ImageConfigT", bound=ImageConfig)


@dataclass
class ImageData(Loaders):
    """The loaders, and the test tensors the evaluation reads whole."""

    X_test: Tensor | None = None
    y_test: Tensor | None = None
    class_names: Sequence[str] = ()


class ImageClassification(Task[ImageConfigT]):
    """A classifier of ``image_shape`` images (``(784,)`` for an MLP, ``(1, 28, 28)`` for a CNN); the
    package builds the model (:meth:`Task.build_model`)."""

    image_shape: tuple[int, ...] = (28 * 28,)

    def load_data(self, config: ImageConfigT, device: torch.device) -> ImageData:
        download = None if config.download else False  # None: allowed unless SCRATCH_DOWNLOAD=0
        tensors = image_tensors(
            config.dataset, self.image_shape, config.data_dir, download, config.train_samples, config.test_samples
        )
        X_train, y_train, X_test, y_test = (t.to(device) for t in tensors)
        return ImageData(
            train=ShardedDataLoader(X_train, y_train, batch_size=config.batch_size, seed=config.seed),
            val=ShardedDataLoader(X_test, y_test, batch_size=config.test_batch_size, shuffle=False),
            X_test=X_test,
            y_test=y_test,
            class_names=CLASS_NAMES[config.dataset],
        )

    def evaluate(self, run: Run[ImageConfigT]) -> dict[str, Any]:
        data, history = run.data, run.engine.history
        results = evaluate_classifier(run, data.X_test, data.y_test, data.class_names, run.config.dataset)
        return results | {
            "train_accuracy": history["accuracy"][-1],  # with dropout on, as it trained
            "train_samples": data.train.num_samples,
            "test_samples": len(data.y_test),
        }


def evaluate_classifier(
    run: Run[Any], X_test: Tensor, y_test: Tensor, class_names: Sequence[str], title: str
) -> dict[str, Any]:
    """Test loss and accuracy, per-class accuracy and the confusion matrix of the run's classifier.

    With a torch.nn twin, also the twin's ``reference_test_accuracy``. Given ``run.out`` it writes
    ``confusion_matrix.png``, and for 28x28 images ``predictions.png`` (the first test images, true → predicted,
    the wrong ones in red: how often it is right) and ``mistakes.png`` (misclassified ones only).
    """
    from scratch_engine.tools.plots import confusion_matrix, plot_confusion_matrix, plot_image_grid

    engine = run.engine
    logits = engine.predict(X_test, batch_size=500)  # one pass over the test set serves every figure below
    predictions = logits.argmax(dim=-1)
    accuracy = float((predictions == y_test).double().mean())
    matrix = confusion_matrix(predictions, y_test, len(class_names))
    per_class = (matrix.diag() / matrix.sum(dim=1).clamp(min=1)).tolist()
    if run.out is not None:
        plot_confusion_matrix(
            matrix, class_names, run.out / "confusion_matrix.png", title=f"{title}: test accuracy {accuracy:.2%}"
        )
        limit = getattr(run.config, "mistakes", 24)
        if limit > 0 and X_test[0].numel() == 28 * 28:  # 28x28 images; --mistakes 0: neither grid
            true, predicted = y_test.tolist(), predictions.tolist()  # one read of the device for both grids
            first = list(range(min(limit, len(true))))
            wrong = [i for i in range(len(true)) if true[i] != predicted[i]][:limit]
            for indices, name, what, mark in (
                (first, "predictions.png", "the first test images (true → predicted; wrong in red)", True),
                (wrong, "mistakes.png", "misclassified test images (true → predicted)", False),
            ):
                if indices:
                    plot_image_grid(
                        X_test[indices].cpu().reshape(-1, 28, 28),
                        [f"{class_names[true[i]]} → {class_names[predicted[i]]}" for i in indices],
                        run.out / name,
                        title=f"{title}: {what}",
                        title_colors=["black" if true[i] == predicted[i] else "red" for i in indices] if mark else None,
                    )
    results = {
        "test_accuracy": accuracy,
        "test_loss": float(engine.loss_fn(logits, y_test)),
        "per_class_accuracy": dict(zip(class_names, per_class, strict=True)),
        "confusion_matrix": matrix,
    }
    return results | twin_accuracy(run, X_test, y_test)


def twin_outputs(run: Run[Any], X: Tensor) -> Tensor | None:
    """The run's torch.nn twin's outputs for ``X``, on the CPU (``None`` for a run without a twin)."""
    if run.twin is None:
        return None
    x, _ = run.engine.prepare_batch((X, None))
    return run.twin.predict(x).cpu()


def twin_accuracy(run: Run[Any], X_test: Tensor, y_test: Tensor) -> dict[str, float]:
    """``{"reference_test_accuracy": ...}`` of the run's torch.nn twin (``{}`` for a run without one)."""
    outputs = twin_outputs(run, X_test)
    if outputs is None:
        return {}
    return {"reference_test_accuracy": float((outputs.argmax(dim=-1) == y_test.cpu()).double().mean())}
