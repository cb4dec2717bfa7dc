"""Hooks into :meth:`Engine.fit <scratch_engine.Engine.fit>`: early stopping, periodic checkpoints.

``epoch`` passed to :meth:`Callback.on_epoch_end` counts completed epochs (1 after the
first); ``logs`` holds that epoch's values (``loss``, ``val_loss``, ``accuracy``, ``lr``...).

A callback with state that a resumed run needs (:class:`EarlyStopping`'s best value and
patience count) returns it from :meth:`Callback.state_dict`, as plain data and tensors. The
engine's checkpoints hold the state of the callbacks of its latest ``fit`` (the one under way,
when :class:`ModelCheckpoint` writes); after :meth:`Engine.load_checkpoint
<scratch_engine.Engine.load_checkpoint>` the next ``fit`` hands each callback the state saved
for the callback of the same type and position (the second ``EarlyStopping``...).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor

if TYPE_CHECKING:
    from scratch_engine.engine import Engine


class Callback:
    """Base class: override the hooks you need."""

    def on_train_begin(self, engine: Engine) -> None:
        pass

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, engine: Engine) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to carry on as this one would have; ``{}``: nothing (not saved)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best``, when it stops the run the model gets the weights of its best epoch
    (:attr:`best_state`). A run that reaches its ``epochs`` keeps its last weights, so that a
    later ``fit`` continues exactly where it was.

    Its state (best value and epoch, epochs waited, best weights) carries over from one
    ``fit`` to the next of the same run (``engine.epoch > 0``), and is saved in the engine's
    checkpoints and restored with them: an interrupted run, continued or resumed, stops at the
    epoch an uninterrupted one would. A ``fit`` that starts a run (epoch 0) starts afresh.
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
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.mode = mode
        self.restore_best = restore_best
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.wait = 0
        self.best_state: dict[str, Tensor] | None = None

    def on_train_begin(self, engine: Engine) -> None:
        if engine.epoch == 0:  # a new run; later epochs continue the one this state belongs to
            self._reset()

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r} but the logs only have {sorted(logs)}")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            engine.stop_training = True

    def on_train_end(self, engine: Engine) -> None:
        stopped_here = self.stopped_epoch > 0 and self.stopped_epoch == engine.epoch
        if self.restore_best and stopped_here and self.best_state is not None:
            engine.load_model_state(self.best_state)  # the mixed-precision compute copy too

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "wait": self.wait,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            raise ValueError(
                f"the checkpoint's EarlyStopping watched {state['monitor']!r} ({state['mode']}), "
                f"this one watches {self.monitor!r} ({self.mode})"
            )
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.stopped_epoch, self.wait = int(state["stopped_epoch"]), int(state["wait"])
        self.best_state = state["best_state"]


class ModelCheckpoint(Callback):
    """Save ``engine.save_checkpoint(path)`` every ``every`` epochs (``{epoch}`` in ``path`` is filled in).

    ``fit`` runs it after the other callbacks, wherever it is in the list, so that the
    checkpoint holds their state after this epoch too.
    """

    def __init__(self, path: str | Path, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"ModelCheckpoint every must be >= 1, got {every}")
        self.path = str(path)
        self.every = every

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, float]) -> None:
        if epoch % self.every == 0:
            engine.save_checkpoint(self.path.format(epoch=epoch) if "{epoch" in self.path else self.path)
