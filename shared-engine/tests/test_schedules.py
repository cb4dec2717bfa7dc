"""Learning-rate schedules against their formulas and torch.optim.lr_scheduler.StepLR."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable

import pytest
import torch

from scratch_engine.module import Parameter
from scratch_engine.optim import GradientDescent
from scratch_engine.schedules import InverseSqrtWarmup, LRScheduler, StepLR, WarmupCosine


def _optimizer(learning_rate: float = 0.1) -> GradientDescent:
    return GradientDescent([Parameter(torch.zeros(2))], learning_rate=learning_rate)


def _sequence(scheduler: LRScheduler, steps: int) -> list[float]:
    """The rate the optimizer uses at steps 0..steps-1 (construction sets step 0)."""
    rates = [scheduler.optimizer.learning_rate]
    for _ in range(steps - 1):
        scheduler.step()
        rates.append(scheduler.optimizer.learning_rate)
    return rates


@pytest.mark.parametrize(("step_size", "gamma"), [(3, 0.5), (1, 0.9), (4, 0.1)])
def test_step_lr_matches_torch(step_size: int, gamma: float) -> None:
    ours = _sequence(StepLR(_optimizer(0.2), step_size=step_size, gamma=gamma), 15)
    ref_opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.2)
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=step_size, gamma=gamma)
    theirs = []
    for _ in range(15):
        theirs.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert ours == pytest.approx([0.2 * gamma ** (s // step_size) for s in range(15)], rel=1e-12)


def test_warmup_cosine_formula_and_endpoints() -> None:
    base, warmup, total, min_learning_rate = 0.5, 4, 14, 0.01
    scheduler = WarmupCosine(
        _optimizer(base), warmup_steps=warmup, total_steps=total, min_learning_rate=min_learning_rate
    )
    rates = _sequence(scheduler, 20)
    assert rates[0] == pytest.approx(base / warmup)
    assert rates[:warmup] == pytest.approx([base * (s + 1) / warmup for s in range(warmup)])
    assert rates[warmup - 1] == pytest.approx(base)
    assert rates[warmup] == pytest.approx(base)
    for s in range(warmup, total):
        expected = min_learning_rate + 0.5 * (base - min_learning_rate) * (
            1 + math.cos(math.pi * (s - warmup) / (total - warmup))
        )
        assert rates[s] == pytest.approx(expected)
    assert rates[(warmup + total) // 2] == pytest.approx((base + min_learning_rate) / 2)
    assert rates[total:] == pytest.approx([min_learning_rate] * (20 - total))
    assert all(a >= b for a, b in itertools.pairwise(rates[warmup:]))
    assert scheduler.learning_rate_at(total - 1) > min_learning_rate


@pytest.mark.parametrize(("warmup", "total", "min_learning_rate"), [(4, 14, 0.01), (3, 20, 0.0), (0, 9, 0.05)])
def test_warmup_cosine_matches_torch_linear_then_cosine(warmup: int, total: int, min_learning_rate: float) -> None:
    """torch's LinearLR warm-up (from base/W, reaching base at step W-1) chained to CosineAnnealingLR, up to T."""
    base = 0.5
    ours = _sequence(
        WarmupCosine(_optimizer(base), warmup_steps=warmup, total_steps=total, min_learning_rate=min_learning_rate),
        total,
    )
    ref_opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=total - warmup, eta_min=min_learning_rate)
    ref: torch.optim.lr_scheduler.LRScheduler = cosine
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(ref_opt, start_factor=1 / warmup, total_iters=warmup - 1)
        ref = torch.optim.lr_scheduler.SequentialLR(ref_opt, [linear, cosine], milestones=[warmup])
    theirs = []
    for _ in range(total):
        theirs.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)


def test_warmup_cosine_without_warmup_starts_at_base() -> None:
    scheduler = WarmupCosine(_optimizer(0.3), warmup_steps=0, total_steps=10)
    assert scheduler.optimizer.learning_rate == pytest.approx(0.3)
    assert scheduler.learning_rate_at(10) == 0.0


def test_inverse_sqrt_warmup_formula_and_peak() -> None:
    d_model, warmup, factor = 512, 50, 2.0
    scheduler = InverseSqrtWarmup(_optimizer(123.0), d_model=d_model, warmup_steps=warmup, factor=factor)
    rates = _sequence(scheduler, 300)
    for step, rate in enumerate(rates):
        s = step + 1
        assert rate == pytest.approx(factor * d_model**-0.5 * min(s**-0.5, s * warmup**-1.5))
    # the peak is at s = step + 1 = warmup, i.e. step index warmup - 1
    assert max(range(len(rates)), key=rates.__getitem__) == warmup - 1
    assert rates[warmup - 1] == pytest.approx(factor / math.sqrt(d_model * warmup))
    assert rates[0] > 0.0
    assert all(a < b for a, b in itertools.pairwise(rates[:warmup]))
    assert all(a > b for a, b in itertools.pairwise(rates[warmup - 1 :]))


@pytest.mark.parametrize(
    "make",
    [
        lambda opt: StepLR(opt, step_size=2, gamma=0.5),
        lambda opt: WarmupCosine(opt, warmup_steps=3, total_steps=12, min_learning_rate=0.001),
        lambda opt: InverseSqrtWarmup(opt, d_model=64, warmup_steps=5),
    ],
    ids=["step", "warmup_cosine", "inverse_sqrt"],
)
def test_state_dict_round_trip(make: Callable[[GradientDescent], LRScheduler]) -> None:
    scheduler = make(_optimizer(0.1))
    for _ in range(7):
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh_optimizer = _optimizer(0.1)
    fresh = make(fresh_optimizer)
    fresh.load_state_dict(state)
    assert fresh.last_step == 7
    assert fresh.base_learning_rate == scheduler.base_learning_rate
    assert fresh_optimizer.learning_rate == scheduler.optimizer.learning_rate
    assert _sequence(fresh, 6) == _sequence(scheduler, 6)


def test_the_state_of_another_schedule_type_is_refused_and_old_untyped_states_load() -> None:
    state = StepLR(_optimizer(), step_size=2).state_dict()
    assert state["type"] == "StepLR"
    with pytest.raises(ValueError, match="the state of a StepLR schedule cannot be loaded into WarmupCosine"):
        WarmupCosine(_optimizer(), 0, 10).load_state_dict(state)
    fresh = StepLR(_optimizer(), step_size=2)
    fresh.load_state_dict({"last_step": 3, "base_learning_rate": 0.1})  # a checkpoint from before the type
    assert fresh.last_step == 3


def test_base_lr_is_recorded_from_the_optimizer() -> None:
    optimizer = _optimizer(0.4)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    scheduler.step()
    assert scheduler.base_learning_rate == 0.4
    assert optimizer.learning_rate == pytest.approx(0.2)


def test_validation() -> None:
    cases = [
        (lambda: StepLR(_optimizer(), step_size=0), "step_size"),
        (lambda: StepLR(_optimizer(), step_size=2, gamma=0.0), "gamma"),
        (lambda: WarmupCosine(_optimizer(), warmup_steps=10, total_steps=5), "warmup_steps=10, total_steps=5"),
        (lambda: WarmupCosine(_optimizer(), warmup_steps=-1, total_steps=5), "warmup_steps=-1"),
        (
            lambda: WarmupCosine(_optimizer(), warmup_steps=1, total_steps=5, min_learning_rate=-1.0),
            "min_learning_rate",
        ),
        (lambda: InverseSqrtWarmup(_optimizer(), d_model=0), "d_model=0"),
        (lambda: InverseSqrtWarmup(_optimizer(), d_model=8, warmup_steps=0), "warmup_steps=0"),
        (lambda: StepLR(_optimizer(), step_size=2, gamma=math.nan), "gamma must be a finite number > 0, got nan"),
        (lambda: StepLR(_optimizer(), step_size=2, gamma=math.inf), "gamma must be a finite number > 0, got inf"),
        (
            lambda: WarmupCosine(_optimizer(), 1, 5, min_learning_rate=math.nan),
            "min_learning_rate must be a finite number >= 0, got nan",
        ),
        (
            lambda: WarmupCosine(_optimizer(0.1), 1, 5, min_learning_rate=1.0),
            r"min_learning_rate \(1.0\) is above the optimizer's learning rate \(0.1\)",
        ),
        (lambda: InverseSqrtWarmup(_optimizer(), d_model=8, factor=math.nan), "finite factor > 0.*factor=nan"),
        (lambda: InverseSqrtWarmup(_optimizer(), d_model=8, factor=0.0), "factor=0.0"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()
    WarmupCosine(
        _optimizer(0.1), 1, 5, min_learning_rate=0.1
    )  # min_learning_rate == base_learning_rate: a constant rate, allowed
    with pytest.raises(TypeError, match="Optimizer"):
        StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), step_size=1)  # type: ignore[arg-type]
