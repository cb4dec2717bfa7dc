"""Shared plots: the confusion matrix counts, and every figure is written as a real PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratch_engine.tools.plots import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_curve_fit,
    plot_decision_boundary,
    plot_image_grid,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def test_confusion_matrix_matches_a_hand_count() -> None:
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predictions = torch.tensor([0, 1, 0, 1, 1, 2, 0, 2, 1])
    expected = torch.tensor(
        [
            [2, 1, 0],  # class 0: two right, one called 1
            [0, 2, 0],  # class 1: both right
            [1, 1, 2],  # class 2: two right, one called 0, one called 1
        ]
    )
    matrix = confusion_matrix(predictions, targets, 3)
    assert matrix.dtype == torch.int64
    assert torch.equal(matrix, expected)
    assert int(matrix.sum()) == len(targets)
    assert int(matrix.trace()) == 6


def test_confusion_matrix_any_shape_and_unused_classes() -> None:
    targets = torch.tensor([[1, 1], [3, 3]])
    predictions = torch.tensor([[1, 3], [3, 3]])
    matrix = confusion_matrix(predictions, targets, 5)
    assert matrix.shape == (5, 5)
    assert matrix[1].tolist() == [0, 1, 0, 1, 0]
    assert matrix[3].tolist() == [0, 0, 0, 2, 0]
    assert int(matrix.sum()) == 4
    assert torch.equal(confusion_matrix(torch.empty(0, dtype=torch.long), torch.empty(0), 2), torch.zeros(2, 2).long())


def test_confusion_matrix_errors() -> None:
    with pytest.raises(ValueError, match="one shape"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\).*from 0 to 2"):
        confusion_matrix(torch.tensor([0, 2]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"from -1 to 1"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([-1, 1]), 2)


def test_plot_confusion_matrix_writes_a_png(tmp_path: Path) -> None:
    matrix = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    path = plot_confusion_matrix(matrix, ["cat", "dog", "bird"], tmp_path / "sub" / "cm.png", title="pets")
    assert path == tmp_path / "sub" / "cm.png"
    assert _is_png(path)
    with pytest.raises(ValueError, match="one row per class name"):
        plot_confusion_matrix(matrix, ["cat", "dog"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_plot_image_grid_writes_a_png(tmp_path: Path) -> None:
    grey = torch.rand(5, 28, 28)
    assert _is_png(plot_image_grid(grey, [f"#{i}" for i in range(5)], tmp_path / "grey.png", columns=3, title="t"))
    colour = torch.rand(4, 3, 8, 8)
    assert _is_png(plot_image_grid(colour, None, tmp_path / "colour.png"))
    single_channel = [torch.rand(1, 6, 6) for _ in range(2)]
    assert _is_png(plot_image_grid(single_channel, ["a", "b"], tmp_path / "list.png"))
    with pytest.raises(ValueError, match="5 images but 2 titles"):
        plot_image_grid(grey, ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at least one image"):
        plot_image_grid([], None, tmp_path / "empty.png")


def test_plot_decision_boundary_calls_predict_on_a_grid(tmp_path: Path) -> None:
    X = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    y = torch.tensor([0, 1, 0, 1])
    shapes = []

    def predict(points: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(points.shape))
        return (points[:, 0] > 0).long()

    path = plot_decision_boundary(predict, X, y, tmp_path / "regions.png", class_names=["left", "right"], resolution=50)
    assert shapes == [(2500, 2)]
    assert _is_png(path)
    with pytest.raises(ValueError, match=r"X \(N, 2\)"):
        plot_decision_boundary(predict, torch.zeros(4, 3), y, tmp_path / "bad.png")


def test_plot_curve_fit_writes_a_png(tmp_path: Path) -> None:
    x = torch.rand(50, 1) * 6 - 3
    y = torch.sin(x) + 0.1 * torch.randn(50, 1)
    line = torch.linspace(3, -3, 20)  # unsorted on purpose: the plot sorts it
    path = plot_curve_fit(x, y, {"truth": (line, torch.sin(line))}, tmp_path / "fit.png", title="fit", xlabel="t")
    assert _is_png(path)
