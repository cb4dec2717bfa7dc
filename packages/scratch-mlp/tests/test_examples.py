"""The examples reach their targets with the default configs and fixed seeds, and write their record.

The image tests read the real data ($SCRATCH_DATA_DIR, else the cache) and never download:
without the data they fail, on purpose, rather than skip.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from scratch_mlp.examples import (
    ClustersConfig,
    ImagesConfig,
    RegressionConfig,
    run_clusters,
    run_images,
    run_regression,
)

COMMON_KEYS = {"epochs", "train_seconds", "parameters", "config", "environment"}


def _record(out: Path, pngs: list[str]) -> dict:
    for name in pngs:
        assert (out / name).stat().st_size > 1000, f"{name} missing or empty"
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(record) >= COMMON_KEYS
    return record


def test_clusters_default_config_reaches_98_percent(tmp_path: Path) -> None:
    metrics = run_clusters(out_dir=tmp_path, progress=False)
    assert metrics["test_accuracy"] >= 0.98
    record = _record(tmp_path, ["decision_boundary.png", "loss.png"])
    assert record["test_accuracy"] == metrics["test_accuracy"]
    assert record["epochs"] == ClustersConfig().epochs
    assert record["parameters"] == 2 * 32 + 32 + 32 * 32 + 32 + 32 * 4 + 4


def test_regression_default_config_is_within_1_5_noise_variances(tmp_path: Path) -> None:
    metrics = run_regression(out_dir=tmp_path, progress=False)
    noise_variance = RegressionConfig().noise ** 2
    assert metrics["noise_variance"] == noise_variance
    assert metrics["test_mse"] <= 1.5 * noise_variance
    assert metrics["test_mse_vs_true_function"] < 0.25 * noise_variance  # it found the function, not the noise
    record = _record(tmp_path, ["fit.png", "loss.png"])
    assert record["test_mse"] == metrics["test_mse"]


def test_noiseless_regression_has_no_noise_ratio_instead_of_dividing_by_zero() -> None:
    metrics = run_regression(RegressionConfig(noise=0.0, epochs=2), progress=False)
    assert metrics["noise_variance"] == 0.0
    assert metrics["test_mse_over_noise_variance"] is None
    assert metrics["test_mse"] > 0


def test_same_seed_same_run_other_seed_other_run() -> None:
    config = ClustersConfig(epochs=2, device="cpu")
    first, again = run_clusters(config, progress=False), run_clusters(config, progress=False)
    other = run_clusters(replace(config, seed=1), progress=False)
    assert first["test_loss"] == again["test_loss"]
    assert first["test_loss"] != other["test_loss"]


def test_examples_accept_every_optimizer() -> None:
    for name in ("sgd", "momentum", "adamw"):
        config = RegressionConfig(epochs=2, optimizer=name, learning_rate=0.01, samples=200, device="cpu")
        assert torch.isfinite(torch.tensor(run_regression(config, progress=False)["test_mse"]))


def test_first_layer_skips_the_input_gradient() -> None:
    from scratch_mlp import MLP

    model = MLP.from_sizes([4, 8, 2], input_grad=False)
    assert model[0].input_grad is False
    assert model[2].input_grad is True
    assert MLP.from_sizes([4, 8, 2])[0].input_grad is True


def test_mnist_short_run(tmp_path: Path) -> None:
    config = ImagesConfig(epochs=2, train_samples=10_000, download=False, device="cpu")
    metrics = run_images(config, out_dir=tmp_path, progress=False)
    assert metrics["test_accuracy"] >= 0.90
    assert (metrics["train_samples"], metrics["test_samples"]) == (10_000, 10_000)
    record = _record(tmp_path, ["loss.png", "confusion_matrix.png", "mistakes.png", "predictions.png"])
    matrix = torch.tensor(record["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert int(matrix.sum()) == 10_000
    assert abs(int(matrix.trace()) / 10_000 - metrics["test_accuracy"]) < 1e-9
    assert set(record["per_class_accuracy"]) == {str(d) for d in range(10)}


def test_fashion_mnist_short_run(tmp_path: Path) -> None:
    config = ImagesConfig(dataset="fashion-mnist", epochs=1, train_samples=10_000, download=False, device="cpu")
    metrics = run_images(config, out_dir=tmp_path, progress=False)
    assert metrics["test_accuracy"] >= 0.75
    record = _record(tmp_path, ["loss.png", "confusion_matrix.png", "mistakes.png", "predictions.png"])
    assert "Ankle boot" in record["per_class_accuracy"]
