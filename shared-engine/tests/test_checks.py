"""Value checks: immediate on the CPU, deferred to the next log step on an accelerator."""

from __future__ import annotations

import pytest
import torch

from scratch_engine import CrossEntropyLoss, DataLoader, Dense, Embedding, Engine, GradientDescent, checks


@pytest.fixture
def as_if_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat CPU tensors like device tensors, whose reading would stall a GPU."""
    monkeypatch.setattr(checks, "_reading_is_free", lambda tensor: False)


def test_outside_deferred_blocks_a_bad_target_is_an_immediate_error(as_if_on_a_gpu: None) -> None:
    with pytest.raises(ValueError, match="target 7 is out of range for C=3"):
        CrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0, 7]))


def test_deferred_checks_clamp_and_raise_when_read(as_if_on_a_gpu: None) -> None:
    loss_fn, embedding = CrossEntropyLoss(ignore_index=-100), Embedding(5, 2)
    with checks.deferred():
        loss = loss_fn(torch.zeros(3, 3), torch.tensor([0, -100, 2]))  # fine: -100 is ignored
        checks.raise_pending()
        loss = loss_fn(torch.zeros(3, 3), torch.tensor([0, 9, 2]))
        out = embedding(torch.tensor([1, 5]))
        assert torch.isfinite(loss)  # computed with the index clamped, no crash
        assert out.shape == (2, 2)
        with pytest.raises(ValueError, match="CrossEntropyLoss targets out of range for C=3"):
            checks.raise_pending()
        checks.raise_pending()  # the flags were read and cleared


def test_engine_reports_a_bad_target_at_the_next_log_step(as_if_on_a_gpu: None) -> None:
    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    y[40] = 3  # in the third batch of 16
    model = Dense(4, 3)
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.1), progress=False, log_every=2)
    with pytest.raises(ValueError, match="out of range for C=3"):
        engine.fit(DataLoader(X, y, batch_size=16, shuffle=False), 1)
    assert engine.global_step == 4  # found when the engine read the device after batch 4, not at batch 3
