"""Hooks into :meth:`Engine.fit <scratch_engine.Engine.fit>`: early stopping, periodic checkpoints.

``epoch`` passed to :meth:`Callback.on_epoch_end` counts completed epochs (1 after the
first); ``logs`` holds that epoch's values (``loss``, ``val_loss``, ``accuracy``, ``lr``...).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model ends training with the weights of its best epoch.
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
        self.on_train_begin(None)

    def on_train_begin(self, engine: Engine | None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.wait = 0
        self.best_state: dict[str, Tensor] | None = None

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
        if self.restore_best and self.best_state is not None:
            engine.model.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save ``engine.save_checkpoint(path)`` every ``every`` epochs (``{epoch}`` in ``path`` is filled in)."""

    def __init__(self, path: str | Path, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"ModelCheckpoint every must be >= 1, got {every}")
        self.path = str(path)
        self.every = every

    def on_epoch_end(self, engine: Engine, epoch: int, logs: dict[str, float]) -> None:
        if epoch % self.every == 0:
            engine.save_checkpoint(self.path.format(epoch=epoch) if "{epoch" in self.path else self.path)
