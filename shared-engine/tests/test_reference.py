"""Whole-run parity: the scratch engine and a torch.nn twin trained on the same batches stay together."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scratch_engine import Adam, CrossEntropyLoss, DataLoader, Dense, Engine, ReLU, Sequential, StepLR
from scratch_engine.tools.twin import TorchTwin, from_torch, plot_reference_curves


def _task(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    y = torch.arange(4).repeat_interleave(60)
    return (centers[y] + 0.9 * torch.randn(len(y), 2, generator=generator)).to(dtype), y


def _twins(dtype: torch.dtype, clip: float | None = 1.0) -> tuple[Engine, TorchTwin]:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4)).to(dtype)
    model = Sequential(from_torch(reference[0]), ReLU(), from_torch(reference[2]))
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
        callbacks=[twin],
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
    assert abs(history["val_loss"][-1] - history["val_reference_loss"][-1]) < 1e-9
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


def test_to_torch_builds_the_same_network_with_the_same_weights() -> None:
    from scratch_engine import GELU, BatchNorm1d, Dropout, LeakyReLU, Sigmoid, Tanh
    from scratch_engine.tools.twin import to_torch

    torch.manual_seed(0)
    layers = [Dense(6, 8), BatchNorm1d(8), ReLU(), Dense(8, 8), GELU("tanh"), LeakyReLU(0.1), Tanh(), Sigmoid()]
    ours = Sequential([*layers, Dropout(0.5), Dense(8, 3)]).to(dtype=torch.float64)
    theirs = to_torch(ours)
    assert [type(m).__name__ for m in theirs] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "GELU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout", "Linear"
    ]  # fmt: skip
    x = torch.randn(16, 6, dtype=torch.float64)
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-12, rtol=1e-12)
    ours.train()
    theirs.train()
    torch.testing.assert_close(ours.layers[1](ours.layers[0](x)), theirs[1](theirs[0](x)), atol=1e-12, rtol=1e-12)


def test_twin_of_matches_optimizer_schedule_and_loss() -> None:
    from scratch_engine import GradientDescent, MSELoss, WarmupCosine
    from scratch_engine.tools.twin import twin_of

    for make_optimizer, loss, targets in (
        (lambda m: Adam(m, 0.01, weight_decay=0.01), CrossEntropyLoss(label_smoothing=0.1), "classes"),
        (lambda m: GradientDescent(m, 0.05, momentum=0.9, nesterov=True), MSELoss(), "values"),
    ):
        torch.manual_seed(0)
        X = torch.randn(96, 4, dtype=torch.float64)
        y = (X[:, 0] > 0).long() if targets == "classes" else X[:, :2].sum(dim=1, keepdim=True).expand(-1, 2)
        model = Sequential([Dense(4, 16), ReLU(), Dense(16, 2)]).to(dtype=torch.float64)
        optimizer = make_optimizer(model)
        scheduler = WarmupCosine(optimizer, warmup_steps=3, total_steps=24)
        twin = twin_of(model, optimizer, loss, scheduler, clip_grad_norm=1.0)
        engine = Engine(
            model, loss, optimizer, scheduler=scheduler, clip_grad_norm=1.0, callbacks=[twin], progress=False
        )
        engine.fit(DataLoader(X, y.contiguous(), batch_size=16, seed=0), 4)
        summary = twin.summary()
        assert summary["reference_steps"] == 24
        assert summary["reference_max_relative_deviation"] < 1e-10, (type(optimizer).__name__, summary)
