"""Losses against torch.nn.functional: value and gradient (torch autograd is the oracle)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scratch_engine.losses import CrossEntropyLoss, Loss, MSELoss
from scratch_engine.tools.testing import assert_close, random_inputs, seeded_generator


def _torch_cross_entropy(logits: torch.Tensor, target: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, ...]:
    """torch's loss and its autograd gradient, for class-last logits (torch wants the class dim second)."""
    leaf = logits.detach().clone().requires_grad_(True)
    moved = leaf if leaf.dim() <= 2 else leaf.movedim(-1, 1)
    loss = F.cross_entropy(moved, target, **kwargs)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def _targets(shape: tuple[int, ...], num_classes: int, seed: int = 1, ignore: int | None = None) -> torch.Tensor:
    generator = seeded_generator(seed)
    target = torch.randint(0, num_classes, shape, generator=generator)
    if ignore is not None:
        target[torch.rand(shape, generator=generator) < 0.3] = ignore
        target.view(-1)[0] = ignore  # at least one ignored
        target.view(-1)[-1] = 0  # at least one kept
    return target


CASES = [
    pytest.param({}, id="plain"),
    pytest.param({"ignore_index": -100}, id="ignore_index"),
    pytest.param({"label_smoothing": 0.1}, id="label_smoothing"),
    pytest.param({"ignore_index": 2, "label_smoothing": 0.25}, id="both"),
]


@pytest.mark.parametrize("kwargs", CASES)
@pytest.mark.parametrize("shape", [(7,), (1,), (3, 5)], ids=["N", "batch1", "BT"])
def test_cross_entropy_matches_torch(kwargs: dict, shape: tuple[int, ...]) -> None:
    num_classes = 6
    (logits,) = random_inputs((*shape, num_classes), seed=3)
    logits = logits * 3
    ignore = kwargs.get("ignore_index")
    target = _targets(shape, num_classes, ignore=ignore if shape != (1,) else None)
    loss_fn = CrossEntropyLoss(**kwargs)
    loss = loss_fn(logits, target)
    want_loss, want_grad = _torch_cross_entropy(logits, target, **kwargs)
    assert loss.dim() == 0
    assert_close(loss, want_loss, name="cross-entropy value")
    assert_close(loss_fn.backward(), want_grad, name="cross-entropy gradient")


def test_cross_entropy_grad_output_scales_gradient() -> None:
    (logits,) = random_inputs((4, 3))
    target = torch.tensor([0, 2, 1, 2])
    loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    loss_fn(logits, target)
    _, want = _torch_cross_entropy(logits, target, label_smoothing=0.1)
    assert_close(loss_fn.backward(torch.tensor(2.5, dtype=torch.float64)), 2.5 * want, name="scaled gradient")
    assert_close(loss_fn.backward(0.5), 0.5 * want, name="scaled gradient (float)")


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_grad_output_scales_gradient_with_ignore_index(smoothing: float) -> None:
    """With ignore_index the row weights are a tensor (mean over kept rows): scaled like the plain case."""
    (logits,) = random_inputs((2, 3, 5), seed=3)
    target = torch.tensor([[0, -1, 4], [2, 2, -1]])
    loss_fn = CrossEntropyLoss(ignore_index=-1, label_smoothing=smoothing)
    loss = loss_fn(logits, target)
    want_loss, want = _torch_cross_entropy(logits, target, ignore_index=-1, label_smoothing=smoothing)
    assert_close(loss, want_loss, name="value")
    assert not want[0, 1].any()  # an ignored row: no gradient
    assert_close(loss_fn.backward(torch.tensor(2.5, dtype=torch.float64)), 2.5 * want, name="scaled gradient")
    assert_close(loss_fn.backward(-0.5), -0.5 * want, name="scaled gradient (float)")


def test_cross_entropy_extreme_logits_are_finite() -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype=torch.float64)
    target = torch.tensor([1, 2, 0])
    for kwargs in ({}, {"label_smoothing": 0.2}):
        loss_fn = CrossEntropyLoss(**kwargs)
        loss = loss_fn(logits, target)
        grad = loss_fn.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(grad).all()
        want_loss, want_grad = _torch_cross_entropy(logits, target, **kwargs)
        assert_close(loss, want_loss, name="extreme value")
        assert_close(grad, want_grad, name="extreme gradient")
    loss = CrossEntropyLoss()(logits.float(), target)
    assert torch.isfinite(loss)


def test_cross_entropy_all_ignored_is_zero_not_nan() -> None:
    (logits,) = random_inputs((2, 3, 4))
    target = torch.full((2, 3), -1)
    for smoothing in (0.0, 0.1):
        loss_fn = CrossEntropyLoss(ignore_index=-1, label_smoothing=smoothing)
        loss = loss_fn(logits, target)
        assert loss.item() == 0.0
        assert torch.equal(loss_fn.backward(), torch.zeros_like(logits))


def test_cross_entropy_half_precision_gradient_dtype() -> None:
    (logits,) = random_inputs((5, 7))
    target = _targets((5,), 7)
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(logits.to(torch.bfloat16), target)
    grad = loss_fn.backward()
    assert loss.dtype == torch.bfloat16
    assert grad.dtype == torch.bfloat16
    want_loss, want_grad = _torch_cross_entropy(logits.to(torch.bfloat16).double(), target)
    assert_close(loss.double(), want_loss, atol=2e-2, rtol=2e-2, name="bf16 value")
    assert_close(grad.double(), want_grad, atol=1e-2, rtol=2e-2, name="bf16 gradient")


def test_cross_entropy_accepts_int32_targets() -> None:
    (logits,) = random_inputs((4, 3))
    target = torch.tensor([0, 2, 1, 2])
    assert_close(CrossEntropyLoss()(logits, target.int()), _torch_cross_entropy(logits, target)[0], name="int32")


def test_cross_entropy_errors() -> None:
    (logits,) = random_inputs((4, 3))
    loss_fn = CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"integer class targets.*float"):
        loss_fn(logits, torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(4,\).*\(4, 3\).*\(2, 2\)"):
        loss_fn(logits, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target 3 is out of range for C=3"):
        loss_fn(logits, torch.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="target -100 is out of range for C=3"):
        loss_fn(logits, torch.tensor([0, 1, -100, 2]))
    with pytest.raises(ValueError, match=r"target -5 is out of range.*ignore_index=-100"):
        CrossEntropyLoss(ignore_index=-100)(logits, torch.tensor([0, -100, -5, 2]))
    with pytest.raises(ValueError, match="floating-point prediction"):
        loss_fn(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
            CrossEntropyLoss(label_smoothing=bad)
    with pytest.raises(RuntimeError, match="before forward"):
        CrossEntropyLoss().backward()


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_mse_matches_torch(shape: tuple[int, ...]) -> None:
    prediction, target = random_inputs(shape, shape, seed=7)
    loss_fn = MSELoss()
    loss = loss_fn(prediction, target)
    leaf = prediction.clone().requires_grad_(True)
    want = F.mse_loss(leaf, target)
    (want_grad,) = torch.autograd.grad(want, leaf)
    assert loss.dim() == 0
    assert_close(loss, want.detach(), name="mse value")
    assert_close(loss_fn.backward(), want_grad, name="mse gradient")
    assert_close(loss_fn.backward(3.0), 3.0 * want_grad, name="mse scaled gradient")


def test_mse_errors() -> None:
    with pytest.raises(ValueError, match=r"prediction \(3, 2\) and target \(2, 3\)"):
        MSELoss()(torch.zeros(3, 2), torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="before forward"):
        MSELoss().backward()


def test_base_loss_is_abstract() -> None:
    with pytest.raises(NotImplementedError):
        Loss()(torch.zeros(1), torch.zeros(1))
    assert "label_smoothing=0.1" in repr(CrossEntropyLoss(label_smoothing=0.1))
