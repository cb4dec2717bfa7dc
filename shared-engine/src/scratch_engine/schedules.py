r"""Learning-rate schedules: pure functions of the step count.

A schedule records ``base_learning_rate`` (the optimizer's learning rate when it is built), sets the rate for step 0
at construction (as PyTorch's ``lr_scheduler`` does) and, on each :meth:`LRScheduler.step`, advances its counter
:math:`s` and sets ``optimizer.learning_rate = learning_rate_at(s)``. Call ``step()`` after each ``optimizer.step()``.
"""

from __future__ import annotations

import math
from typing import Any

from scratch_engine.optim import Optimizer


class LRScheduler:
    """Base class: subclasses implement ``learning_rate_at(step)``; the state: the step and ``base_learning_rate``."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} expects a scratch_engine Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_learning_rate = float(optimizer.learning_rate)
        self.last_step = 0
        # the rate for step 0; subclasses set their own attributes before calling this __init__
        self.optimizer.learning_rate = self.learning_rate_at(self.last_step)

    def learning_rate_at(self, step: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement learning_rate_at")

    def step(self) -> None:
        self.last_step += 1
        self.optimizer.learning_rate = self.learning_rate_at(self.last_step)

    def state_dict(self) -> dict[str, Any]:
        """The step counter, ``base_learning_rate`` and the schedule's type (checked on load)."""
        return {"type": type(self).__name__, "last_step": self.last_step, "base_learning_rate": self.base_learning_rate}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counter and ``base_learning_rate`` and set the optimizer's rate for that step; another kind of
        schedule's state is a ``ValueError`` (one saved before the type was recorded loads as it is)."""
        if (saved := state_dict.get("type")) not in (None, type(self).__name__):
            raise ValueError(f"the state of a {saved} schedule cannot be loaded into {type(self).__name__}")
        self.last_step = int(state_dict["last_step"])
        self.base_learning_rate = float(state_dict["base_learning_rate"])
        self.optimizer.learning_rate = self.learning_rate_at(self.last_step)


class StepLR(LRScheduler):
    r"""Decay by ``gamma`` every ``step_size`` steps, like PyTorch's ``StepLR``.

    .. math::
        \eta(s) = \eta_\text{base}\,\gamma^{\lfloor s / \text{step\_size} \rfloor}
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if step_size < 1:
            raise ValueError(f"StepLR step_size must be >= 1, got {step_size}")
        if not (math.isfinite(gamma) and gamma > 0.0):
            raise ValueError(f"StepLR gamma must be a finite number > 0, got {gamma}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def learning_rate_at(self, step: int) -> float:
        return self.base_learning_rate * self.gamma ** (step // self.step_size)


class WarmupCosine(LRScheduler):
    r"""Linear warm-up to ``base_learning_rate``, cosine decay to ``min_learning_rate`` at ``total_steps``, then flat.

    With :math:`W` = ``warmup_steps`` and :math:`T` = ``total_steps``:

    .. math::
        \eta(s) = \begin{cases}
            \eta_\text{base}\,\dfrac{s+1}{W} & s < W \\[4pt]
            \eta_\text{min} + \tfrac12(\eta_\text{base} - \eta_\text{min})
                \big(1 + \cos(\pi\,\tfrac{s - W}{T - W})\big) & W \le s < T \\[4pt]
            \eta_\text{min} & s \ge T
        \end{cases}

    The warm-up climbs from :math:`\eta_\text{base}/W` (not 0, so step 0 is not wasted) to :math:`\eta_\text{base}` at
    :math:`s = W-1`; the cosine starts from it at :math:`s = W`. ``warmup_steps=0`` is a pure cosine.
    """

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_learning_rate: float = 0.0
    ) -> None:
        if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
            raise ValueError(
                f"WarmupCosine needs 0 <= warmup_steps <= total_steps and total_steps >= 1, "
                f"got warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        if not (math.isfinite(min_learning_rate) and min_learning_rate >= 0.0):
            raise ValueError(f"WarmupCosine min_learning_rate must be a finite number >= 0, got {min_learning_rate}")
        if isinstance(optimizer, Optimizer) and min_learning_rate > optimizer.learning_rate:  # else LRScheduler refuses
            raise ValueError(
                f"WarmupCosine min_learning_rate ({min_learning_rate}) is above the optimizer's learning rate "
                f"({optimizer.learning_rate}), which the cosine decays from"
            )
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_learning_rate = float(min_learning_rate)
        super().__init__(optimizer)

    def learning_rate_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_learning_rate * (step + 1) / self.warmup_steps
        if step >= self.total_steps:
            return self.min_learning_rate
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        cosine = 1.0 + math.cos(math.pi * progress)
        return self.min_learning_rate + 0.5 * (self.base_learning_rate - self.min_learning_rate) * cosine


class InverseSqrtWarmup(LRScheduler):
    r"""The "Attention Is All You Need" schedule (Vaswani et al., 2017, eq. 3).

    With :math:`s' = s + 1` (so step 0 is not a division by zero) and :math:`W` = ``warmup_steps``:

    .. math::
        \eta(s) = \text{factor}\cdot d_\text{model}^{-1/2}\cdot
            \min\!\big(s'^{-1/2},\; s'\, W^{-3/2}\big)

    It rises linearly, peaks at :math:`s' = W` (step index ``warmup_steps - 1``) with
    :math:`\text{factor}\cdot(d_\text{model} W)^{-1/2}`, then decays as :math:`s'^{-1/2}`. The optimizer's own rate
    (``base_learning_rate``) is **ignored**: ``factor`` sets the scale.
    """

    def __init__(self, optimizer: Optimizer, d_model: int, warmup_steps: int = 4000, factor: float = 1.0) -> None:
        if d_model < 1 or warmup_steps < 1 or not (math.isfinite(factor) and factor > 0.0):
            raise ValueError(
                f"InverseSqrtWarmup needs d_model >= 1, warmup_steps >= 1 and a finite factor > 0, "
                f"got d_model={d_model}, warmup_steps={warmup_steps}, factor={factor}"
            )
        self.d_model = int(d_model)
        self.warmup_steps = int(warmup_steps)
        self.factor = float(factor)
        super().__init__(optimizer)

    def learning_rate_at(self, step: int) -> float:
        s = step + 1
        return self.factor * self.d_model**-0.5 * min(s**-0.5, s * self.warmup_steps**-1.5)
