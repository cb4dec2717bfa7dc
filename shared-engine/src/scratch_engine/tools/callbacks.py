"""Early stopping: a :class:`~scratch_engine.Callback` that ends a fit when validation stops improving.

It watches each history row (``logs`` of :meth:`Callback.on_log`: ``loss``, ``val_loss``,
``accuracy``...), one per epoch or per ``eval_every`` steps. Its state (best value, where it
was, rows waited, best weights) is saved in checkpoints, so an interrupted run, continued or
resumed, stops where an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor

from scratch_engine.engine import Callback, Engine, NonFiniteLossError
from scratch_engine.losses import CrossEntropyLoss
from scratch_engine.tools.distributed import broadcast_object


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` rows.

    With ``restore_best``, when it stops the run the model gets the weights of its best row
    (:attr:`best_state`). A run that spends its budget keeps its last weights, so that a later
    ``fit`` continues exactly where it was. A ``fit`` that starts a run (step 0) starts afresh.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: Literal["min", "max"] = "min",
        restore_best: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"EarlyStopping patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.mode, self.restore_best = mode, restore_best
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_step = 0  # the global step of the best row
        self.stopped_step = 0  # where it stopped the run (0: it did not)
        self.wait = 0  # rows without improvement
        self.best_state: dict[str, Tensor] | None = None

    def on_fit_begin(self, engine: Engine) -> None:
        if engine.global_step == 0:  # a new run; later fits continue the one this state belongs to
            self._reset()

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r} but the logs only have {sorted(logs)}")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_step, self.wait = value, engine.global_step, 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_step = engine.global_step
            engine.stop_training = True

    def on_fit_end(self, engine: Engine) -> None:
        stopped_here = self.stopped_step > 0 and self.stopped_step == engine.global_step
        if self.restore_best and stopped_here and self.best_state is not None:
            engine.model.load_state_dict(self.best_state)
            if engine.net is not engine.model:  # a mixed-precision compute copy: the same weights, cast
                engine.net.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "best_step": self.best_step,
            "stopped_step": self.stopped_step,
            "wait": self.wait,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            raise ValueError(
                f"the checkpoint's EarlyStopping watched {state['monitor']!r} ({state['mode']}), "
                f"this one watches {self.monitor!r} ({self.mode})"
            )
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.stopped_step, self.wait = int(state["stopped_step"]), int(state["wait"])
        self.best_state = state["best_state"]


class DivergenceError(NonFiniteLossError):
    """The training loss stayed finite but diverged (:class:`StopOnDivergence`'s rule)."""


class StopOnDivergence(Callback):
    r"""Stop a run whose loss is finite but clearly diverged, naming the step: at a history row,

    - the row's mean training loss is above ``factor`` times the loss of the run's first step (the model as
      initialised; training lowers it, a diverged run multiplies it), or
    - for a classifier over :math:`C` classes (a cross-entropy loss), after the first row, the training or
      validation loss is above ``uniform_factor`` times :math:`\ln C`, the loss of a uniform guess: the model
      has become much worse than knowing nothing.

    NaN and inf are the engine's own (:class:`~scratch_engine.NonFiniteLossError`). It reads the device once,
    at the first step; its state (that first loss) is saved with the run.
    """

    def __init__(self, factor: float = 10.0, uniform_factor: float = 1.5) -> None:
        if not (factor > 1.0 and uniform_factor > 1.0):
            raise ValueError(f"StopOnDivergence factors must be above 1, got {factor} and {uniform_factor}")
        self.factor, self.uniform_factor = factor, uniform_factor
        self.first_loss: float | None = None
        self.classes: int | None = None

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        if self.first_loss is not None:
            return
        classifier = isinstance(engine.loss_fn, CrossEntropyLoss) and isinstance(output, Tensor) and output.dim() > 0
        mine = (math.nan if loss is None else float(loss), int(output.shape[-1]) if classifier else None)
        self.first_loss, self.classes = broadcast_object(mine)  # rank 0's: every rank must decide alike

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        loss = logs.get("loss", math.nan)
        if self.first_loss is not None and loss > self.factor * max(self.first_loss, 0.0) > 0.0:
            self._stop(
                engine, f"training loss {loss:.4g} is over {self.factor:g}x the first step's {self.first_loss:.4g}"
            )
        if self.classes is not None and self.classes > 1 and engine.history.rows > 1:
            uniform = math.log(self.classes)
            for name in ("loss", "val_loss"):
                if logs.get(name, math.nan) > self.uniform_factor * uniform:
                    what = "training" if name == "loss" else "validation"
                    self._stop(
                        engine,
                        f"{what} loss {logs[name]:.4g} is over {self.uniform_factor:g}x a uniform guess's "
                        f"ln {self.classes} = {uniform:.4g}",
                    )

    @staticmethod
    def _stop(engine: Engine, why: str) -> None:
        raise DivergenceError(
            f"the run diverged at step {engine.global_step}: {why}; try a lower "
            "learning rate or gradient clipping (--no-stop-on-divergence lets it run on)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss, "classes": self.classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first_loss, self.classes = state.get("first_loss", self.first_loss), state.get("classes", self.classes)
