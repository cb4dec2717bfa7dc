"""Checkpoint files: a run's state written atomically, read back with ``weights_only=True``.

:func:`save_checkpoint` writes an :class:`~scratch_engine.Engine`'s :meth:`~scratch_engine.Engine.state_dict`
(and what a package needs to use the model later, ``extra``); :func:`load_checkpoint` puts it
back, so that the next ``fit`` continues the run exactly. :class:`Checkpoints` writes one every
few minutes, at each history row and when the fit ends; :func:`stop_on_signals` turns Ctrl-C and
SIGTERM into such an end. A checkpoint holds only tensors, dicts, lists, tuples, strings,
numbers, booleans and ``None``, so loading one never runs code from the file.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from scratch_engine.data import map_tensors
from scratch_engine.engine import Callback, Engine, History
from scratch_engine.module import Module
from scratch_engine.tools.distributed import is_main_process
from scratch_engine.tools.files import write_atomic

FORMAT = "scratch-engine-checkpoint/2"
_PLAIN = (Tensor, str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def run_state(engine: Engine) -> dict[str, Any]:
    """Everything a resumed run needs, as plain data and tensors: weights, optimizer and schedule, position
    (epoch, batch, step, seconds), history and the sums since its last row, the states carried by recurrent
    modules, the random number generators, the loader's shuffle seed, and the callbacks' own state."""
    states = {type(c).__name__: state for c in engine.all_callbacks() if (state := c.state_dict())}
    engine.meter.flush()  # the steps it has noted join its sums
    position = {"epoch": engine.epoch, "batch": engine.batch, "step": engine.global_step, "seconds": engine.seconds}
    return {
        "model": engine.model.state_dict(),
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": None if engine.scheduler is None else engine.scheduler.state_dict(),
        "progress": position,
        "learning_rate": engine.learning_rate,
        "history": engine.history.to_dict(),
        "meter": {name: getattr(engine.meter, name) for name in ("loss_sum", "totals", "samples", "steps")},
        "carried": engine.carried_states(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "loader_seed": getattr(engine.train_loader, "seed", None),
        "callbacks": states,
    }


def restore_run(engine: Engine, state: Mapping[str, Any]) -> None:
    """Put :func:`run_state`'s back: the next ``fit`` continues that run and ends with the very weights an
    uninterrupted one would. A state that does not fit (another model's, optimizer's, schedule's, callback's;
    an entry missing) is an error that leaves the engine as it was: the model is checked first, and whatever
    fails later puts back a copy of the engine's own state taken before."""
    if problem := engine.model.state_dict_mismatch(state["model"]):
        raise ValueError(problem)
    before = map_tensors(torch.clone, run_state(engine))
    try:
        _restore(engine, state)
    except (ValueError, TypeError, KeyError) as error:
        _restore(engine, before)
        if isinstance(error, KeyError):
            raise ValueError(f"the checkpoint lacks the entry {error}: it is damaged or from another program") from None
        raise


def _restore(engine: Engine, state: Mapping[str, Any]) -> None:
    engine.optimizer.load_state_dict(state["optimizer"])  # checks everything before it changes anything
    engine.model.load_state_dict(state["model"])
    if engine.scheduler is not None and state["scheduler"] is not None:
        engine.scheduler.load_state_dict(state["scheduler"])
    progress = state["progress"]
    engine.epoch, engine.batch, engine.global_step = progress["epoch"], progress["batch"], progress["step"]
    engine.seconds, engine.learning_rate = progress["seconds"], state["learning_rate"]
    engine.history = History(state["history"])
    meter, sums = engine.meter, state["meter"]
    meter.loss_sum, meter.samples, meter.steps = sums["loss_sum"].to(meter.loss_sum), sums["samples"], sums["steps"]
    meter.totals = {name: sums["totals"][name].to(meter.loss_sum) for name in meter.totals}
    engine.set_carried_states(state["carried"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    engine.resume_states = {**state["callbacks"], "loader_seed": state["loader_seed"]}  # for the next fit
    for callback in engine.callbacks:  # {} too: a callback may refresh itself (a weight copy)
        callback.load_state_dict(engine.resume_states.pop(type(callback).__name__, {}))


def save_checkpoint(engine: Engine, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`run_state` and ``extra`` to ``path`` atomically; returns ``path``.

    ``extra`` holds what a package needs to use the model later (its vocabulary, its config):
    plain dicts, lists, strings, numbers and tensors. Data-parallel, only rank 0 writes.
    """
    path = Path(path)
    if not is_main_process():
        return path
    state = {"format": FORMAT, **run_state(engine), "extra": dict(extra or {}), "saved_at": time.time()}
    _check_plain(state, "checkpoint")
    return write_atomic(path, lambda file: torch.save(state, file))


def load_checkpoint(engine: Engine, path: str | Path) -> dict[str, Any]:
    """Put the run saved at ``path`` back into ``engine`` (:func:`restore_run`); returns its ``extra``."""
    state = read_checkpoint(path)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a scratch-engine checkpoint (expected format {FORMAT!r})")
    restore_run(engine, state)
    return dict(state.get("extra", {}))


class Checkpoints(Callback):
    """Save the run to ``path`` every ``every_seconds`` of training, at history rows and when the fit ends.

    ``extra`` (a dict, or a function returning one) is saved beside the state. A run killed at any
    moment leaves a checkpoint no older than ``every_seconds`` (plus the step under way). A history
    row (a validation) saves too, unless the latest save is less than ``row_seconds`` old: a small
    model's epochs can take less time than writing the file.
    """

    def __init__(
        self,
        path: str | Path,
        every_seconds: float = 300.0,
        extra: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        row_seconds: float = 10.0,
    ) -> None:
        if not every_seconds > 0:
            raise ValueError(f"every_seconds must be positive, got {every_seconds}")
        self.path, self.every_seconds, self.extra = Path(path), float(every_seconds), extra
        self.row_seconds = min(float(row_seconds), self.every_seconds)
        self.saved_at = -float("inf")  # engine.seconds at the latest save

    def save(self, engine: Engine) -> Path:
        extra = self.extra() if callable(self.extra) else self.extra
        self.saved_at = engine.seconds
        return save_checkpoint(engine, self.path, extra)

    def on_fit_begin(self, engine: Engine) -> None:
        self.saved_at = engine.seconds

    def on_step_end(self, engine: Engine, loss: Tensor | None, output: Any) -> None:
        if engine.seconds - self.saved_at >= self.every_seconds:
            self.save(engine)

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        if engine.seconds - self.saved_at >= self.row_seconds:
            self.save(engine)

    def on_fit_end(self, engine: Engine) -> None:
        self.save(engine)


class ModelCheckpoint(Callback):
    """Save the run to ``path`` every ``every`` epochs (``{epoch}`` in ``path`` is filled in): scratch-engine
    0.1's callback, kept for code written for it. :class:`Checkpoints` also saves every few minutes."""

    def __init__(self, path: str | Path, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"ModelCheckpoint every must be >= 1, got {every}")
        self.path, self.every = str(path), every

    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        if engine.batch == 0 and engine.epoch % self.every == 0:  # a row that ends an epoch
            save_checkpoint(engine, self.path.format(epoch=engine.epoch) if "{epoch" in self.path else self.path)


@contextlib.contextmanager
def stop_on_signals(engine: Engine) -> Iterator[list[int]]:
    """Within this block, Ctrl-C (SIGINT) or SIGTERM asks ``engine`` to stop after the step under way.

    Yields a list that receives the signal numbers caught. A second signal is not caught: it ends
    the process at once (KeyboardInterrupt for Ctrl-C). The handlers before the block come back after it.
    """
    caught: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        caught.append(signum)
        engine.stop_training = True
        signal.signal(signum, previous[signal.Signals(signum)])  # a second one is not caught
        if is_main_process():
            name = signal.Signals(signum).name
            print(f"\n{name}: stopping after this step to save the run ({name} again to quit now)", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may take signals
        yield caught
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, handler)
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file's contents, on the CPU (``weights_only=True``: data only, no code), once every entry's
    bytes match the CRC-32 that ``torch.save`` wrote beside them: a changed byte is a ``ValueError``, not weights
    that load and are silently wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    _check_crcs(path)
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path} could not be read as a checkpoint: {_why_unreadable(path, err)}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


ModuleT = TypeVar("ModuleT", bound=Module)


def build_to_fit(build: Callable[[], ModuleT], weights: Mapping[str, Any], path: str | Path) -> ModuleT:
    """``build()``, once a copy built without storage (on torch's ``meta`` device) has shown that it fits
    ``weights`` and holds little more than they do. A model rebuilt from a checkpoint's own config (``sample``,
    ``translate``) trusts numbers from a file: a crafted ``hidden=10**7`` or ``max_len=10**9`` is then a one-line
    ``ValueError`` before anything is allocated, not gigabytes and a traceback."""
    try:
        with torch.device("meta"):
            shell = build()
    except (TypeError, ValueError, OverflowError, RuntimeError) as error:
        raise ValueError(f"{path}: its config cannot build the model: {error}") from None
    if problem := shell.state_dict_mismatch(dict(weights)):
        raise ValueError(f"{path}: its config does not fit its weights: {_shorter(problem)}")
    weight_bytes = sum(t.numel() * t.element_size() for t in weights.values() if isinstance(t, Tensor))
    held = sum(
        value.numel() * value.element_size()
        for module in shell.modules()
        for value in vars(module).values()
        if isinstance(value, Tensor)  # what is not a weight too: a positional-encoding table, say
    )
    if held > 2 * weight_bytes + 64 * 2**20:
        raise ValueError(
            f"{path}: its config asks for {held / 2**20:,.0f} MiB of tables beside {weight_bytes / 2**20:,.1f} MiB "
            "of weights; the file was not written by this program's train"
        )
    return build()


def _shorter(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def _check_crcs(path: Path) -> None:
    """A one-line ``ValueError`` naming the first entry of the archive whose bytes no longer match their CRC-32."""
    if not zipfile.is_zipfile(path):
        return  # torch.load fails on it, and _why_unreadable says why
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        raise ValueError(f"{path} is damaged and cannot be read as a checkpoint: {err}") from None
    if damaged is not None:
        raise ValueError(
            f"{path} is damaged: the bytes of {damaged!r} changed after it was written (CRC-32 mismatch); "
            "use another checkpoint"
        )


def _why_unreadable(path: Path, error: Exception) -> str:
    """One line, without torch's advice to retry with ``weights_only=False`` (that would run code from the file)."""
    if not zipfile.is_zipfile(path):
        return "it is not a file written by torch.save (not a zip archive)"
    if "weights only load failed" in str(error).lower():
        return "it holds Python objects besides tensors and plain data, which are never unpickled here"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_plain(obj: Any, where: str) -> None:
    """Fail at save time, naming the entry, on anything ``weights_only`` loading would refuse."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            _check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(
            f"{where} is a {type(obj).__name__}: checkpoints hold only tensors, dicts, lists, strings and numbers"
        )
