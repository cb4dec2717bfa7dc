"""Whole-run parity: the scratch engine and a torch.nn twin trained on the same batches stay together."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scratch_engine import Adam, CrossEntropyLoss, DataLoader, Dense, Engine, ReLU, Sequential, StepLR
from scratch_engine.reference import TorchTwin, plot_reference_curves


def _task(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    y = torch.arange(4).repeat_interleave(60)
    return (centers[y] + 0.9 * torch.randn(len(y), 2, generator=generator)).to(dtype), y


def _twins(dtype: torch.dtype, clip: float | None = 1.0) -> tuple[Engine, TorchTwin]:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4)).to(dtype)
    model = Sequential(Dense.from_torch(reference[0]), ReLU(), Dense.from_torch(reference[2]))
    torch_optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    twin = TorchTwin(
        reference,
        torch_optimizer,
        nn.CrossEntropyLoss(),
        scheduler=torch.optim.lr_scheduler.StepLR(torch_optimizer, step_size=100, gamma=0.5),
        clip_grad_norm=clip,
    )
    optimizer = Adam(model, learning_rate=0.01)
    engine = Engine(
        model,
        CrossEntropyLoss(),
        optimizer,
        scheduler=StepLR(optimizer, step_size=100, gamma=0.5),
        clip_grad_norm=clip,
        progress=False,
        reference=twin,
    )
    return engine, twin


def test_300_steps_agree_with_the_torch_twin(tmp_path: Path) -> None:
    X, y = _task(torch.float64)
    engine, twin = _twins(torch.float64)
    loader = DataLoader(X, y, batch_size=16, seed=0)  # 15 steps per epoch
    history = engine.fit(loader, epochs=20, val_loader=DataLoader(X, y, batch_size=64, shuffle=False))
    summary = twin.summary()
    assert summary["reference_steps"] == 300
    assert summary["reference_max_relative_deviation"] < 1e-9
    assert abs(history["val_loss"][-1] - history["reference_val_loss"][-1]) < 1e-9
    assert twin.scratch_losses[-1] < 0.5 * twin.scratch_losses[0]  # it learned
    assert plot_reference_curves(twin, tmp_path / "parity.png").stat().st_size > 0


def test_float32_stays_within_a_percent() -> None:
    X, y = _task(torch.float32)
    engine, twin = _twins(torch.float32, clip=None)
    engine.fit(DataLoader(X, y, batch_size=16, seed=1), epochs=20)
    assert twin.max_relative_deviation() < 0.01


def test_a_wrong_backward_shows_up_as_a_gap() -> None:
    X, y = _task(torch.float64)
    engine, twin = _twins(torch.float64)
    first = engine.model[0]
    original = first.backward
    first.backward = lambda g: original(0.5 * g)  # a bug: half the gradient reaches the first layer
    engine.fit(DataLoader(X, y, batch_size=16, seed=0), epochs=5)
    assert twin.max_relative_deviation() > 1e-3
