"""Progress for long runs: each history row with throughput and ETA, and a live bar on a terminal."""

from __future__ import annotations

import sys
from typing import Any

from torch import Tensor
from tqdm import tqdm

from scratch_engine.engine import Callback, Engine, Meter
from scratch_engine.tools.config import steps_in_budget
from scratch_engine.tools.distributed import is_main_process


class ProgressBar(Callback):
    """Print every history row with its throughput and the run's ETA; on a terminal, above a tqdm bar of the
    steps that shows the running loss every ``every`` steps. It takes over the engine's own row lines."""

    def __init__(self, enabled: bool = True, every: int = 10) -> None:
        self.enabled, self.every = enabled, every
        self.bar: tqdm[Any] | None = None
        self.samples, self.since = 0, 0.0

    def attach(self, engine: Engine) -> None:
        engine.progress = False
        self.enabled = self.enabled and is_main_process()

    def on_fit_begin(self, engine: Engine) -> None:
        self.samples, self.since = 0, engine.seconds
        if self.enabled and sys.stderr.isatty():
            total = planned_steps(engine)
            self.bar = tqdm(total=total, initial=engine.global_step, unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_train_batch(self, engine: Engine, x: Any, y: Any) -> None:
        self.samples += y.shape[0] if isinstance(y, Tensor) and y.dim() > 0 else 1

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        if self.bar is not None:
            self.bar.update()
            if engine.global_step % self.every == 0 and engine.meter.steps:
                self.bar.set_postfix_str(f"loss {engine.meter.compute()['loss']:.4f}", refresh=False)

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        if not self.enabled:
            return
        rate = self.samples / max(engine.seconds - self.since, 1e-9)
        self.samples, self.since = 0, engine.seconds
        parts = [f"step {engine.global_step} (epoch {logs['epoch']:.2f})"]
        parts += [f"{name} {value:.4g}" for name, value in logs.items() if name not in ("step", "epoch", "seconds")]
        parts.append(f"{rate:,.0f} samples/s")
        if (eta := self.eta(engine)) is not None:
            parts.append(f"ETA {format_duration(eta)}")
        line = "  ".join(parts)
        if self.bar is not None:
            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_fit_end(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @staticmethod
    def eta(engine: Engine) -> float | None:
        """Seconds left until the first budget is spent, from the progress made so far."""
        done = []
        if (steps := planned_steps(engine)) is not None:
            done.append(engine.global_step / steps)
        if (seconds := engine.budget.get("max_seconds")) is not None:
            done.append(engine.seconds / seconds)
        fraction = max(done, default=0.0)
        return engine.seconds * (1 - fraction) / fraction if 0 < fraction < 1 else None


class LossTrace(Callback):
    """The mean training loss of every ``every`` steps, as ``(step, loss)`` pairs in :attr:`points`: the curve
    between the history rows (a run that validates once still has one). ``every=None`` aims at about ``target``
    of them over the steps the fit plans. It reads the device once per point; data-parallel, each rank's own."""

    def __init__(self, every: int | None = None, target: int = 100) -> None:
        self.every, self.target = every, target
        self.points: list[tuple[float, float]] = []
        self._since: tuple[float, int] = (0.0, 0)  # the meter's loss sum and samples at the last point of this row

    def on_fit_begin(self, engine: Engine) -> None:
        if self.every is None:
            self.every = max(1, (planned_steps(engine) or 1000) // self.target)

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        if self.every is not None and engine.global_step % self.every == 0:
            self._point(engine, engine.meter)

    def combine(self, engine: Engine, meter: Meter) -> None:  # a row is about to take the sums: this step's first
        if meter is engine.meter and self.every is not None and engine.global_step % self.every == 0:
            self._point(engine, meter)

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        self._since = (0.0, 0)  # the row took the sums: the engine's meter starts again from zero

    def _point(self, engine: Engine, meter: Meter) -> None:
        if self.points and self.points[-1][0] == engine.global_step:
            return
        meter.flush()
        (since_sum, since_samples), loss_sum, samples = self._since, float(meter.loss_sum), meter.samples
        if samples > since_samples:
            self.points.append((float(engine.global_step), (loss_sum - since_sum) / (samples - since_samples)))
        self._since = (loss_sum, samples)

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "points": [list(point) for point in self.points], "since": list(self._since)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.every = state.get("every", self.every)
        self.points = [(float(step), float(loss)) for step, loss in state.get("points", [])]
        since_sum, since_samples = state.get("since", self._since)
        self._since = (float(since_sum), int(since_samples))


def planned_steps(engine: Engine) -> int | None:
    """The steps the engine's fit may take (``None``: a time budget alone, or a loader without a length)."""
    return steps_in_budget(engine.budget.get("epochs"), engine.budget.get("max_steps"), engine.train_loader)


def format_duration(seconds: float) -> str:
    """``"45s"``, ``"12m05s"`` or ``"2h03m"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
