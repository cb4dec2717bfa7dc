"""Timing a scratch training step against its torch.nn twin, the same way in every package.

A *step* is a closure that runs one training step (zero the gradients, forward, backward,
update) on a fixed batch and returns the loss. :func:`compare_steps` then measures:

**Time.** ``warmup`` steps of each side, then ``repeats`` rounds, each timing ``steps``
consecutive steps of one side and then of the other, alternating which goes first (so a
drift in machine load hits both alike); on CUDA the device is synchronised around each
timed block. Reported: the median time per step of each side and their ratio,
scratch / torch. The caller fixes the thread count (``torch.set_num_threads``). A third side,
the *yardstick* (:func:`autograd_step`: the same scratch forward, its gradients by autograd,
what a user would otherwise write), may be timed in the same rounds: scratch / autograd.

**Memory.** The peak bytes of live tensors while a *fresh* model and optimizer are built
and trained for a few steps, so it counts weights, gradients, optimizer state, activations
kept for backward and temporaries. CUDA: ``torch.cuda.max_memory_allocated`` over that
window. CPU: torch keeps no peak counter for host memory, so the window runs under
``torch.profiler`` with ``profile_memory=True``, which records every tensor allocation and
free; the peak of their running sum is the figure (``tracemalloc`` or the RSS do not see
torch's allocator, or are blurred by it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from scratch_engine.engine import Engine
from scratch_engine.module import Module, skip_data_gradient
from scratch_engine.tools.autograd import Autograd
from scratch_engine.tools.config import NON_NEGATIVE_INT, POSITIVE_INT
from scratch_engine.tools.device import resolve_device
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.records import environment, plain

Step = Callable[[], Any]
MEMORY_STEPS = 3
MIB = 2.0**20


@dataclass
class Comparison:
    """One row of a benchmark: scratch against torch on the same model, batch and optimizer."""

    name: str
    scratch_ms: float  # median per step
    torch_ms: float
    ratio: float  # scratch_ms / torch_ms
    scratch_peak_bytes: int
    torch_peak_bytes: int
    first_loss_difference: float  # same weights, same batch: the first losses must agree
    scratch_ms_all: list[float] = field(repr=False, default_factory=list)
    torch_ms_all: list[float] = field(repr=False, default_factory=list)
    autograd_ms: float | None = None  # the yardstick: the same forward code, its gradients by torch.autograd
    autograd_ratio: float | None = None  # scratch_ms / autograd_ms
    gflop: float | None = None  # the step's matrix products (step_gflop of the scratch side): the same math on both


def scratch_training_step(
    model: Any,
    loss: Any,
    optimizer: Any,
    x: Any,
    y: Tensor,
    before: Callable[[], None] | None = None,
    data_gradient: bool = False,
) -> Step:
    """One training step of a scratch model on the fixed batch ``(x, y)``, as ``Engine`` takes it.

    Zero the gradients, forward, loss, the hand-written backward, update; under ``no_grad``,
    since the scratch path records nothing for autograd. ``before`` runs first (an RNN's
    ``reset_state``). Returns the loss. Like ``Engine``, it lets the first layer skip the gradient
    with respect to the data (:func:`~scratch_engine.skip_data_gradient`) unless ``data_gradient``.
    """
    if not data_gradient:
        skip_data_gradient(model)

    @torch.no_grad()
    def step() -> Tensor:
        if before is not None:
            before()
        model.zero_grad()
        value = loss(model(x), y)
        model.backward(loss.backward())
        optimizer.step()
        return value

    return step


def torch_training_step(
    model: Any,
    loss: Callable[[Tensor, Tensor], Tensor],
    optimizer: Any,
    x: Any,
    y: Tensor,
    before: Callable[[], None] | None = None,
) -> Step:
    """The same step of a ``torch.nn`` model with autograd and a ``torch.optim`` optimizer (the reference)."""

    def step() -> Tensor:
        if before is not None:
            before()
        optimizer.zero_grad()
        value = loss(model(x), y)
        value.backward()
        optimizer.step()
        return value.detach()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_step(step: Step, steps: int, device: torch.device) -> float:
    """Seconds per step, averaged over ``steps`` consecutive calls of ``step``."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def alternate(sides: Mapping[str, Step], repeats: int, steps: int, device: torch.device) -> dict[str, list[float]]:
    """``repeats`` rounds timing ``steps`` consecutive calls of each side in turn, the order reversed every other
    round (a drift in machine load hits every side alike): milliseconds per call, by side."""
    times: dict[str, list[float]] = {side: [] for side in sides}
    for round_ in range(repeats):
        for side in list(sides) if round_ % 2 == 0 else list(sides)[::-1]:
            times[side].append(1e3 * time_per_step(sides[side], steps, device))
    return times


def peak_memory(build: Callable[[], Step], device: torch.device, steps: int = MEMORY_STEPS) -> int:
    """Peak bytes of live tensors while ``build()`` makes a model and optimizer and ``steps`` steps run."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step = build()
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recording:
        step = build()
        for _ in range(steps):
            step()
        del step
    events = [e for e in recording.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=_start_time):
        running += event.nbytes()  # positive for an allocation, negative for a free
        peak = max(peak, running)
    return peak


def _start_time(event: Any) -> int:
    """A profiler event's start in ns (older torch, 2.1 among them, has only ``start_us``)."""
    return int(event.start_ns()) if hasattr(event, "start_ns") else int(event.start_us()) * 1000


def compare_steps(
    name: str,
    scratch: Step,
    reference: Step,
    *,
    fresh_scratch: Callable[[], Step],
    fresh_reference: Callable[[], Step],
    device: torch.device,
    warmup: int,
    repeats: int,
    steps: int,
    first_loss_difference: float | None = None,
    yardstick: Step | None = None,
) -> Comparison:
    """Time ``scratch`` against ``reference`` (alternating) and measure each side's peak memory.

    ``scratch`` and ``reference`` are steps of two models that start from the same weights;
    their first losses are compared, unless the caller measured that itself and passes
    ``first_loss_difference`` (a model with dropout draws different masks on the two sides,
    so it compares in eval mode). ``fresh_*`` build a new model and optimizer and return
    its step, for the memory window. ``yardstick`` (:func:`autograd_step`), when given, is timed in the same
    rounds: the same model's forward with autograd's backward, what a user would otherwise write.
    """
    difference = abs(float(scratch()) - float(reference()))
    if first_loss_difference is not None:
        difference = first_loss_difference
    sides = {"scratch": scratch, "torch": reference} | ({"autograd": yardstick} if yardstick is not None else {})
    for _ in range(warmup):
        for step in sides.values():
            step()
    times = alternate(sides, repeats, steps, device)
    del sides
    scratch_peak = peak_memory(fresh_scratch, device)
    torch_peak = peak_memory(fresh_reference, device)
    scratch_ms, torch_ms = statistics.median(times["scratch"]), statistics.median(times["torch"])
    autograd_ms = statistics.median(times["autograd"]) if "autograd" in times else None
    return Comparison(
        name=name,
        scratch_ms=scratch_ms,
        torch_ms=torch_ms,
        ratio=scratch_ms / torch_ms,
        scratch_peak_bytes=scratch_peak,
        torch_peak_bytes=torch_peak,
        first_loss_difference=difference,
        scratch_ms_all=times["scratch"],
        torch_ms_all=times["torch"],
        autograd_ms=autograd_ms,
        autograd_ratio=None if autograd_ms is None else scratch_ms / autograd_ms,
        gflop=step_gflop(scratch),
    )


def _addmm_flop(self_shape: Any, a: Sequence[int], b: Sequence[int], *args: Any, **kwargs: Any) -> int:
    return 2 * a[0] * a[1] * b[1]


def _baddbmm_flop(self_shape: Any, a: Sequence[int], b: Sequence[int], *args: Any, **kwargs: Any) -> int:
    return 2 * a[0] * a[1] * a[2] * b[2]


def step_gflop(step: Step) -> float:
    """The matrix products of one call of ``step``, GFLOP (2 per multiply-add), as torch's ``FlopCounterMode``
    counts them (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``matmul``, convolutions), with the in-place ``addmm_`` and
    ``baddbmm_`` that accumulate weight gradients counted like their plain forms. Runs the step once. Count the
    scratch step for both sides: the same math, and the counter does not see into every fused torch kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    in_place = {torch.ops.aten.addmm_: _addmm_flop, torch.ops.aten.baddbmm_: _baddbmm_flop}
    with FlopCounterMode(display=False, custom_mapping=in_place) as counter:
        step()
    return counter.get_total_flops() / 1e9


def autograd_step(
    model: Any, loss: Any, optimizer: Any, x: Any, y: Tensor, before: Callable[[], None] | None = None
) -> Step:
    """:func:`scratch_training_step` of ``Autograd(model)``: the model's own forward, its parameter gradients taken
    by ``torch.autograd`` (:mod:`scratch_engine.tools.autograd`), the engine's optimizer. ``optimizer`` is built on
    ``model``."""
    return scratch_training_step(Autograd(model), loss, optimizer, x, y, before)


@dataclass
class FitOverhead:
    """An epoch through ``Engine.fit`` against the bare step loop over the same loader (alternating, medians)."""

    steps: int  # batches per epoch
    fit_ms: float  # one epoch: one fit call, history row and metrics included
    bare_ms: float  # one epoch of zero_grad, forward, loss, backward, step
    fit_over_bare: float


def fit_overhead(
    build: Callable[[], tuple[Module, Any, Any]], loader: Any, repeats: int, epochs: int = 2
) -> FitOverhead:
    """What the engine's loop costs beyond the steps themselves: ``build()`` gives ``(model, loss, optimizer)``;
    one copy trains through ``Engine.fit`` (a call per epoch, as a run with a validation each epoch does), the
    other through the loop a user writes by hand. ``repeats`` rounds of ``epochs`` epochs each side, alternating."""
    model, loss, optimizer = build()
    engine = Engine(model, loss, optimizer, progress=False)
    bare_model, bare_loss, bare_optimizer = build()
    skip_data_gradient(bare_model)  # as the engine does

    def fit_epoch() -> None:
        engine.fit(loader, engine.epoch + 1)

    @torch.no_grad()
    def bare_epoch() -> None:
        for x, y in loader:
            bare_model.zero_grad()
            bare_loss(bare_model(x), y)
            bare_model.backward(bare_loss.backward())
            bare_optimizer.step()

    sides = {"fit": fit_epoch, "bare": bare_epoch}
    alternate(sides, 1, epochs, engine.device)  # warm-up
    times = alternate(sides, repeats, epochs, engine.device)
    fit_ms, bare_ms = statistics.median(times["fit"]), statistics.median(times["bare"])
    return FitOverhead(len(loader), fit_ms, bare_ms, fit_ms / bare_ms)


def matmul_peak_gflops(device: torch.device, size: int = 1024, repeats: int = 5) -> float:
    """This machine's measured matrix-product rate: the best of ``repeats`` float32 ``size x size`` products,
    GFLOP/s (2 size^3 operations each), at the thread count set. A step's GFLOP/s over it is the fraction of
    the machine that step uses."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = min(time_per_step(lambda: a @ b, 3, device) for _ in range(repeats + 1))
    return 2 * size**3 / best / 1e9


def step_line(step: Comparison) -> str:
    """One comparison as an indented line: both sides' medians, their ratio and, when timed, the autograd yardstick."""
    line = f"  scratch {step.scratch_ms:8.2f} ms   torch {step.torch_ms:8.2f} ms   scratch/torch {step.ratio:.3f}"
    if step.autograd_ms is None or step.autograd_ratio is None:
        return line
    return f"{line}   autograd yardstick {step.autograd_ms:8.2f} ms   scratch/autograd {step.autograd_ratio:.3f}"


def format_comparisons(rows: Sequence[Comparison], label: str = "case") -> str:
    """The results as an aligned text table, with the first-loss check and the memory method."""
    width = max([len(label), *(len(r.name) for r in rows)])
    lines = [
        f"{label:{width}}  {'scratch ms':>10}  {'torch ms':>8}  {'scratch/torch':>13}  "
        f"{'peak MiB scratch':>16}  {'peak MiB torch':>14}"
    ]
    yardstick = any(r.autograd_ms is not None for r in rows)
    if yardstick:
        lines[0] += f"  {'autograd ms':>11}  {'scratch/autograd':>16}"
    for r in rows:
        lines.append(
            f"{r.name:{width}}  {r.scratch_ms:10.3f}  {r.torch_ms:8.3f}  {r.ratio:13.3f}  "
            f"{r.scratch_peak_bytes / MIB:16.2f}  {r.torch_peak_bytes / MIB:14.2f}"
        )
        if yardstick and r.autograd_ms is not None and r.autograd_ratio is not None:
            lines[-1] += f"  {r.autograd_ms:11.3f}  {r.autograd_ratio:16.3f}"
    worst = max((r.first_loss_difference for r in rows), default=0.0)
    lines.append(f"\nfirst-step losses of the two sides differ by at most {worst:.1e} (same weights, same batch)")
    return "\n".join(lines)


def memory_method(device: torch.device) -> str:
    how = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch.profiler allocation events"
    return f"peak memory: live tensor bytes, model creation through {MEMORY_STEPS} steps ({how})"


def write_json(path: str | Path, config: Any, results: Mapping[str, Any] | Sequence[Any], device: torch.device) -> Path:
    """``{"config", "results", "environment"}`` as JSON; dataclasses become dicts."""
    record = {"config": plain(config), "results": plain(results), "environment": environment(device)}
    return write_text_atomic(path, json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------- command line

_TIMING_HELP = {
    "threads": "torch threads",
    "warmup": "untimed steps first",
    "repeats": "timed rounds",
    "steps": "steps per timed block",
    "device": "cpu, cuda, ... or auto",
}


def bench_parser(prog: str, description: str, defaults: Any, **special: dict[str, Any]) -> argparse.ArgumentParser:
    """A flag for every field of the ``defaults`` dataclass (``batch_size`` -> ``--batch-size``), and ``--json``.

    A tuple field takes one or more values of its first item's type, a bool field is a
    switch, any other field one value of its type. ``special[name]`` overrides that field's
    ``add_argument`` keywords (``flag="--layers"`` renames it), so a benchmark's flags are its
    config, declared once; :func:`scratch_engine.tools.cli.config_from_args` reads them back.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name in (item.name for item in fields(defaults)):
        value = getattr(defaults, name)
        options: dict[str, Any]
        if isinstance(value, bool):
            options = {"action": "store_true", "default": value}
        elif isinstance(value, tuple):
            options = {"type": _flag_type(name, value[0]), "nargs": "+", "default": list(value)}
        else:
            options = {"type": _flag_type(name, value), "default": value}
        options["help"] = f"{_TIMING_HELP[name]} (%(default)s)" if name in _TIMING_HELP else "(%(default)s)"
        options |= special.get(name, {})
        flag = options.pop("flag", "--" + name.replace("_", "-"))
        parser.add_argument(flag, dest=name, **options)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser


def _flag_type(name: str, value: Any) -> Any:
    """Counts and sizes are positive (``--warmup`` may be 0): a zero fails in argparse, not deep in a timing loop."""
    if isinstance(value, int):
        return NON_NEGATIVE_INT if name == "warmup" else POSITIVE_INT
    return type(value)


def report(text: str, config: Any, results: Mapping[str, Any] | Sequence[Any], json_path: Path | None) -> int:
    """Print a benchmark's table and, if asked, write its JSON (:func:`write_json`); the exit status."""
    print(text)
    if json_path is not None:
        write_json(json_path, config, results, resolve_device(getattr(config, "device", "cpu")))
    return 0
