"""Figures the examples share: confusion matrices, image grids, decision regions, fitted curves.

Every ``plot_*`` function writes one PNG and returns its path. matplotlib is imported
inside the functions and draws on a bare ``Figure`` with the Agg canvas (never pyplot), so
importing this module is cheap and a user's matplotlib backend is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from scratch_engine.engine import History
from scratch_engine.tools import distributed
from scratch_engine.tools.files import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, num_classes)`` int64 counts: entry ``[i, j]`` is how many of class ``i`` were predicted ``j``.

    ``predictions`` and ``targets`` hold class indices of the same shape (any). Each
    (target, prediction) pair is one index ``i * C + j`` into a single ``bincount``.
    """
    if predictions.shape != targets.shape:
        raise ValueError(
            f"confusion_matrix needs predictions and targets of one shape, got {tuple(predictions.shape)} "
            f"and {tuple(targets.shape)}"
        )
    predictions, targets = predictions.reshape(-1).long(), targets.reshape(-1).long()
    if predictions.numel() > 0:
        low = min(int(predictions.min()), int(targets.min()))
        high = max(int(predictions.max()), int(targets.max()))
        if low < 0 or high >= num_classes:
            raise ValueError(f"class indices must be in [0, {num_classes}), got values from {low} to {high}")
    pairs = targets * num_classes + predictions
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def plot_confusion_matrix(
    matrix: Tensor, class_names: Sequence[str], path: str | Path, title: str | None = None
) -> Path:
    """Rows are true classes, columns predictions; colour is the row's share, the text the count."""
    counts = matrix.detach().cpu()
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(
            f"plot_confusion_matrix needs a square matrix with one row per class name ({len(class_names)}), "
            f"got shape {tuple(counts.shape)}"
        )
    shares = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = 1.6 + 0.55 * len(class_names)
    figure = new_figure(size + 1.2, size)
    axes = figure.add_subplot()
    image = axes.imshow(shares.tolist(), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i in ticks:
        for j in ticks:
            dark = shares[i, j] > 0.5
            axes.text(
                j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7, color="white" if dark else "black"
            )
    axes.set_title(title or f"confusion matrix ({int(counts.trace())}/{int(counts.sum())} correct)")
    return save_figure(figure, path)


def plot_image_grid(
    images: Tensor | Sequence[Tensor],
    titles: Sequence[str] | None,
    path: str | Path,
    *,
    columns: int = 8,
    cmap: str = "gray",
    title: str | None = None,
    title_colors: Sequence[str] | None = None,
) -> Path:
    """Images side by side: each ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)``; any value range (min-max scaled).
    ``title_colors`` colours each image's title (a wrong prediction in red, say)."""
    images = list(images)
    if not images:
        raise ValueError("plot_image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"plot_image_grid got {len(images)} images but {len(titles)} titles")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    figure = new_figure(1.4 * columns, 1.55 * rows + (0.4 if title else 0.0))
    for k, image in enumerate(images):
        axes = figure.add_subplot(rows, columns, k + 1)
        axes.imshow(_displayable(image), cmap=cmap)
        axes.set_axis_off()
        if titles is not None:
            label = axes.set_title(titles[k], fontsize=8)
            if title_colors:
                label.set_color(title_colors[k])
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_decision_boundary(
    predict: Callable[[Tensor], Tensor],
    X: Tensor,
    y: Tensor,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    resolution: int = 300,
    title: str | None = None,
) -> Path:
    """The regions a 2-D classifier assigns to each class, with the samples ``X (N, 2)``, ``y (N,)`` on top.

    ``predict`` maps a ``(M, 2)`` float tensor of points to ``(M,)`` class indices; it is
    called once on a ``resolution x resolution`` grid spanning the data plus a margin.
    """
    from matplotlib.colors import ListedColormap

    if X.dim() != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2-D points X (N, 2), got {tuple(X.shape)}")
    X, y = X.detach().cpu().float(), y.detach().cpu()
    low, high = X.min(dim=0).values, X.max(dim=0).values
    margin = 0.1 * (high - low)
    xs = torch.linspace(float(low[0] - margin[0]), float(high[0] + margin[0]), resolution)
    ys = torch.linspace(float(low[1] - margin[1]), float(high[1] + margin[1]), resolution)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    regions = predict(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)).detach().cpu().reshape(gx.shape)
    num_classes = max(int(y.max()), int(regions.max())) + 1
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(num_classes)]
    colours = [f"C{c % 10}" for c in range(num_classes)]
    figure = new_figure(6, 5)
    axes = figure.add_subplot()
    levels = [c - 0.5 for c in range(num_classes + 1)]
    axes.contourf(gx.tolist(), gy.tolist(), regions.tolist(), levels=levels, cmap=ListedColormap(colours), alpha=0.25)
    for c in range(num_classes):
        chosen = y == c
        axes.scatter(
            X[chosen, 0].tolist(), X[chosen, 1].tolist(), s=8, color=colours[c], edgecolors="none", label=names[c]
        )
    axes.set_xlabel("$x_1$")
    axes.set_ylabel("$x_2$")
    axes.legend(loc="best", fontsize=8, markerscale=2)
    axes.set_title(title or "decision regions")
    return save_figure(figure, path)


def plot_curve_fit(
    x: Tensor,
    y: Tensor,
    curves: Mapping[str, tuple[Tensor, Tensor]],
    path: str | Path,
    *,
    title: str | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
) -> Path:
    """Samples ``(x, y)`` as points and each ``label -> (x_line, y_line)`` of ``curves`` as a line."""
    figure = new_figure(6.5, 4.2)
    axes = figure.add_subplot()
    axes.scatter(_flat(x), _flat(y), s=6, alpha=0.35, color="0.4", edgecolors="none", label="data")
    for k, (label, (x_line, y_line)) in enumerate(curves.items()):
        x_line, y_line = torch.as_tensor(x_line).reshape(-1), torch.as_tensor(y_line).reshape(-1)
        order = torch.argsort(x_line)  # a line through unsorted x would zig-zag
        axes.plot(_flat(x_line[order]), _flat(y_line[order]), color=f"C{k}", label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    return save_figure(figure, path)


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_path(path: str | Path) -> Path:
    """The file a figure saved to ``path`` lands in: ``path`` itself, or with ``.png`` added when it has no suffix."""
    path = Path(path)
    return path if path.suffix else path.with_suffix(".png")


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG and return the path written; in a data-parallel run only rank 0 writes.

    A ``path`` without a suffix gets ``.png``, the file matplotlib writes then (so the path
    returned is the file's).
    """
    path = png_path(path)
    if not distributed.is_main_process():
        return path
    return write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=120))


def plot_history(
    history: History, path: str | Path, title: str | None = None, trace: Sequence[tuple[float, float]] = ()
) -> Path:
    """Training and validation losses, and accuracies if logged, one point per history row; returns the path.

    The x-axis is the epoch when every row ends an epoch, else the step. ``trace`` (``(step, loss)`` pairs, a
    :class:`~scratch_engine.tools.progress.LossTrace`'s) draws the training loss between the rows too, against
    the step: a run of one or two rows is then still a curve, not a point.
    """
    losses = [name for name in history if name.endswith("loss")]
    accuracies = [name for name in history if name.endswith("accuracy")]
    if not losses and not accuracies:
        raise ValueError("plot_history: nothing to plot (no loss or accuracy recorded)")
    epochs = history["epoch"] if "epoch" in history else [float(i + 1) for i in range(history.rows)]
    by_epoch = not trace and (all(float(e).is_integer() for e in epochs) or "step" not in history)
    x, label = (epochs, "epoch") if by_epoch else (history["step"], "step")
    panels = [group for group in (losses, accuracies) if group]
    figure = new_figure(5.5 * len(panels), 4)
    for i, names in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        axes.set_ylabel("loss" if names is losses else "accuracy")
        if trace and names is losses:
            steps, values = zip(*trace, strict=True)
            spacing = _spacing(steps)
            axes.plot(steps, values, label="loss, every step" if spacing == 1 else f"loss, every {spacing} steps")
            names = [name for name in names if name != "loss"]  # the rows' means would repeat the trace
        for name in names:
            axes.plot(x, history[name], marker="o" if history.rows < 30 else None, label=name)
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def _spacing(steps: Sequence[float]) -> int:
    return int(steps[1] - steps[0]) if len(steps) > 1 else 1


def _flat(values: Any) -> list[float]:
    return torch.as_tensor(values).detach().cpu().reshape(-1).tolist()


def _displayable(image: Tensor) -> Any:
    """``(H, W)`` or ``(H, W, 3)`` floats in [0, 1], as imshow wants them."""
    image = torch.as_tensor(image).detach().cpu().float()
    if image.dim() == 3 and image.shape[0] in (1, 3):
        image = image.permute(1, 2, 0)
    if image.dim() == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.dim() not in (2, 3):
        raise ValueError(f"an image must be (H, W), (1, H, W) or (3, H, W), got {tuple(image.shape)}")
    low, high = image.min(), image.max()
    return ((image - low) / (high - low).clamp(min=1e-12)).tolist()
