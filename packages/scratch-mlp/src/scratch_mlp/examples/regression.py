r"""Fit a noisy 1-D function: :math:`y = \sin(2x) + 0.3x + \varepsilon`, Gaussian noise :math:`\varepsilon`.

    scratch-mlp train regression --out runs/scratch-mlp/regression

The best possible test MSE is the noise variance :math:`\sigma^2` (what is left when the
network has found the function exactly), so ``metrics.json`` reports both, their ratio
and the MSE against the noiseless function. Also writes ``fit.png`` (the fitted curve over
the test data and the true function), ``loss.png`` and ``checkpoint.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine import MSELoss
from scratch_engine.tools.classify import twin_outputs
from scratch_engine.tools.config import NON_NEGATIVE, POSITIVE_INT, TrainConfig, option
from scratch_engine.tools.distributed import ShardedDataLoader
from scratch_engine.tools.runner import Loaders, Run, Task, run
from scratch_mlp.model import ACTIVATIONS, MLP


@dataclass
class RegressionConfig(TrainConfig):
    epochs: int | None = 100
    batch_size: int = 32
    learning_rate: float = 0.01
    schedule: str = "cosine"
    hidden: tuple[int, ...] = option((64, 64), "hidden layer sizes", check=POSITIVE_INT, group="model")
    activation: str = option("tanh", "smooth, like the function it fits", choices=tuple(ACTIVATIONS), group="model")
    samples: int = option(1000, "training points (as many again test)", check=POSITIVE_INT, group="data")
    noise: float = option(0.2, "standard deviation of the noise", check=NON_NEGATIVE, group="data")
    x_range: tuple[float, ...] = option((-3.0, 3.0), "the inputs' interval (low high)", group="data")
    data_seed: int = option(0, "fixes the data set, whatever --seed does to training", group="data")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.x_range) != 2 or not self.x_range[0] < self.x_range[1]:
            raise ValueError(f"x_range must be two numbers, low < high, got {self.x_range}")


@dataclass
class RegressionData(Loaders):
    x_test: Tensor | None = None
    y_test: Tensor | None = None


def true_function(x: Tensor) -> Tensor:
    return torch.sin(2.0 * x) + 0.3 * x


def make_regression(samples: int, noise: float, x_range: tuple[float, ...], seed: int) -> tuple[Tensor, Tensor]:
    """``x (n, 1)`` uniform in ``x_range`` and ``y (n, 1)``: :func:`true_function` plus Gaussian noise."""
    generator = torch.Generator().manual_seed(seed)
    low, high = x_range
    x = low + (high - low) * torch.rand(samples, 1, generator=generator)
    return x, true_function(x) + noise * torch.randn(samples, 1, generator=generator)


class Regression(Task[RegressionConfig]):
    """A ``1-hidden-1`` MLP fitted with MSE: test MSE against the noise floor, and the fitted curve."""

    name = "regression"
    help = "a noisy 1-D function: the fitted curve"
    config = RegressionConfig()

    def load_data(self, config: RegressionConfig, device: torch.device) -> RegressionData:
        x, y = make_regression(2 * config.samples, config.noise, config.x_range, config.data_seed)
        x, y = x.to(device), y.to(device)
        train = ShardedDataLoader(x[0::2], y[0::2], batch_size=config.batch_size, seed=config.seed)
        return RegressionData(train, x_test=x[1::2], y_test=y[1::2])

    def build_model(self, config: RegressionConfig, data: RegressionData) -> MLP:
        return MLP.from_sizes([1, *config.hidden, 1], activation=config.activation, input_grad=False)

    def loss(self, config: RegressionConfig, data: RegressionData) -> MSELoss:
        return MSELoss()

    def evaluate(self, run: Run[RegressionConfig]) -> dict[str, Any]:
        from scratch_engine.tools.plots import plot_curve_fit

        engine, config, x_test, y_test = run.engine, run.config, run.data.x_test, run.data.y_test
        test_mse = engine.evaluate(ShardedDataLoader(x_test, y_test, batch_size=1024, shuffle=False))["loss"]
        noise_variance = config.noise**2
        results = {
            "test_mse": test_mse,
            "noise_variance": noise_variance,
            # noiseless data (noise=0) has no noise floor to compare with
            "test_mse_over_noise_variance": test_mse / noise_variance if noise_variance > 0 else None,
            "test_mse_vs_true_function": (engine.predict(x_test) - true_function(x_test)).pow(2).mean().item(),
        }
        twin = twin_outputs(run, x_test)
        if twin is not None and noise_variance > 0:  # the torch.nn twin, trained on the same batches
            results["reference_test_mse_over_noise_variance"] = (
                float((twin - y_test.cpu()).pow(2).mean()) / noise_variance
            )
        if run.out is not None:
            low, high = config.x_range
            line = torch.linspace(low, high, 400, device=run.device).unsqueeze(1)
            plot_curve_fit(
                x_test,
                y_test,
                {"true function": (line, true_function(line)), "MLP": (line, engine.predict(line))},
                run.out / "fit.png",
                title=f"test MSE {test_mse:.4f} (noise variance {noise_variance:.4f})",
            )
        return results


REGRESSION = Regression()


def run_regression(
    config: RegressionConfig | None = None, out_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train the regression task; returns (and, given ``out_dir``, writes) the metrics."""
    return run(REGRESSION, config, out_dir, progress)
