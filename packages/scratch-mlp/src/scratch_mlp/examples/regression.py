r"""Fit a noisy 1-D function: :math:`y = \sin(2x) + 0.3x + \varepsilon`, Gaussian noise :math:`\varepsilon`.

    scratch-mlp train regression --out runs/scratch-mlp/regression

The best possible test MSE is the noise variance :math:`\sigma^2` (what is left when the
network has found the function exactly), so ``metrics.json`` reports both, their ratio
and the MSE against the noiseless function. Also writes ``fit.png`` (the fitted curve over
the test data and the true function) and ``loss.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine import DataLoader, MSELoss
from scratch_engine.experiment import TrainConfig, record, reference_outputs, save, save_reference_plot, start, train
from scratch_engine.plots import plot_curve_fit
from scratch_mlp.model import MLP


@dataclass
class RegressionConfig(TrainConfig):
    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.01
    schedule: str = "cosine"
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"  # smooth, like the function it fits
    samples: int = 1000  # in the training set; the test set has as many again
    noise: float = 0.2  # standard deviation of the noise
    x_range: tuple[float, float] = (-3.0, 3.0)
    data_seed: int = 0


def true_function(x: Tensor) -> Tensor:
    return torch.sin(2.0 * x) + 0.3 * x


def make_regression(samples: int, noise: float, x_range: tuple[float, float], seed: int) -> tuple[Tensor, Tensor]:
    """``x (n, 1)`` uniform in ``x_range`` and ``y (n, 1)``: :func:`true_function` plus Gaussian noise."""
    generator = torch.Generator().manual_seed(seed)
    low, high = x_range
    x = low + (high - low) * torch.rand(samples, 1, generator=generator)
    return x, true_function(x) + noise * torch.randn(samples, 1, generator=generator)


def run(
    config: RegressionConfig | None = None, out_dir: str | Path | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Train a ``1-hidden-1`` MLP with MSE; returns (and, given ``out_dir``, writes) the metrics."""
    config = config or RegressionConfig()
    device = start(config)
    x, y = make_regression(2 * config.samples, config.noise, config.x_range, config.data_seed)
    x, y = x.to(device), y.to(device)
    x_train, y_train, x_test, y_test = x[0::2], y[0::2], x[1::2], y[1::2]
    model = MLP.from_sizes([1, *config.hidden, 1], activation=config.activation, input_grad=False)
    train_loader = DataLoader(x_train, y_train, batch_size=config.batch_size, seed=config.seed)
    engine, seconds = train(model, MSELoss(), config, train_loader, progress=progress)
    test_mse = engine.evaluate(DataLoader(x_test, y_test, batch_size=1024, shuffle=False))["loss"]
    predicted = engine.predict(x_test)
    noise_variance = config.noise**2
    metrics = record(
        "regression",
        config,
        engine,
        seconds,
        {
            "test_mse": test_mse,
            "noise_variance": noise_variance,
            # noiseless data (noise=0) has no noise floor to compare with
            "test_mse_over_noise_variance": test_mse / noise_variance if noise_variance > 0 else None,
            "test_mse_vs_true_function": (predicted - true_function(x_test)).pow(2).mean().item(),
        },
    )
    twin = reference_outputs(engine, x_test)
    if twin is not None and noise_variance > 0:  # the torch.nn twin, trained on the same batches
        metrics["reference_test_mse_over_noise_variance"] = float((twin - y_test.cpu()).pow(2).mean()) / noise_variance
    if out_dir is not None:
        out_dir = Path(out_dir)
        line = torch.linspace(*config.x_range, 400, device=device).unsqueeze(1)
        plot_curve_fit(
            x_test,
            y_test,
            {"true function": (line, true_function(line)), "MLP": (line, engine.predict(line))},
            out_dir / "fit.png",
            title=f"test MSE {test_mse:.4f} (noise variance {noise_variance:.4f})",
        )
        engine.history.plot(out_dir / "loss.png", title="regression: training loss (MSE)")
    save_reference_plot(engine, out_dir, "regression: scratch vs torch.nn, same batches")
    save(out_dir, metrics, device)
    return metrics
