"""How fast is hand-written backprop? One training step, scratch against torch, in one process.

    python -m scratch_mlp.bench                      # CPU, 2 threads, Adam and SGD
    python -m scratch_mlp.bench --device cuda --json bench.json

Both sides train the same 784-256-128-10 ReLU MLP (scratch's copy starts from the torch
model's weights) on the same batch of 128 with softmax cross-entropy. One step is what a
training loop does per batch:

- scratch: ``model.zero_grad()``, forward, ``loss.backward()``, ``model.backward(g)``,
  ``optimizer.step()`` (scratch_engine's ``Adam`` or ``GradientDescent``);
- torch: ``optimizer.zero_grad()``, forward through ``torch.nn``, ``loss.backward()`` by
  autograd, ``optimizer.step()`` (``torch.optim.Adam`` or ``SGD``, default settings).

Neither side computes the gradient with respect to the input batch, which nothing uses:
autograd skips it because the batch does not require grad, scratch because its first
``Dense`` has ``input_grad=False``. ``--input-grad`` makes scratch compute it anyway (for
this model that is 40% more matrix-multiply work) to show what it costs.

**Time.** ``torch.set_num_threads(--threads)``; ``--warmup`` steps of each, then
``--repeats`` rounds, each timing ``--steps`` consecutive steps of one side and then of the
other, alternating which goes first (so drifts in machine load hit both alike); on CUDA the
device is synchronised around each timed block. Reported: the median time per step of each
side and their ratio, scratch / torch.

**Memory.** The peak bytes of live tensors from building the model and optimizer through
three training steps, so it counts weights, gradients, optimizer state, activations kept
for the backward pass and temporaries (the input batch, shared by both, is not counted).
CUDA: ``torch.cuda.max_memory_allocated`` over that window. CPU: torch has no peak counter
for host memory, so the window runs under ``torch.profiler`` with ``profile_memory=True``,
which records every tensor allocation and free; the peak of their running sum is the
figure (process-level measures such as ``tracemalloc`` or RSS do not see torch's allocator
or are blurred by it).

This module is the one place in the package that uses ``torch.nn``, ``torch.optim`` and
autograd: they are the reference being measured against, never part of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from scratch_engine import Adam, CrossEntropyLoss, Dense, GradientDescent, ReLU, resolve_device
from scratch_engine.experiment import environment
from scratch_mlp.model import MLP

Step = Callable[[Tensor, Tensor], Tensor]
LEARNING_RATES = {"adam": 1e-3, "sgd": 1e-2}
MEMORY_STEPS = 3


@dataclass
class BenchConfig:
    sizes: tuple[int, ...] = (784, 256, 128, 10)
    batch_size: int = 128
    optimizers: tuple[str, ...] = ("adam", "sgd")
    threads: int = 2
    warmup: int = 20
    repeats: int = 30  # timed rounds per optimizer
    steps: int = 10  # training steps per timed block
    device: str = "cpu"
    seed: int = 0
    input_grad: bool = False  # scratch's first layer also computes dL/dx (autograd's never does)


@dataclass
class BenchResult:
    optimizer: str
    scratch_ms: float  # median per step
    torch_ms: float
    ratio: float  # scratch_ms / torch_ms
    scratch_peak_bytes: int
    torch_peak_bytes: int
    first_loss_difference: float  # same weights, same batch: the two first losses must agree
    scratch_ms_all: list[float] = field(repr=False)
    torch_ms_all: list[float] = field(repr=False)


# --------------------------------------------------------------------------- the two training steps


def torch_model(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def scratch_copy(reference: nn.Sequential, input_grad: bool = False) -> MLP:
    """The same network built from scratch layers, with copies of ``reference``'s weights."""
    model = MLP([Dense.from_torch(layer) if isinstance(layer, nn.Linear) else ReLU() for layer in reference])
    model[0].input_grad = input_grad
    return model


def scratch_model(sizes: Sequence[int], input_grad: bool = False) -> MLP:
    model = MLP.from_sizes(sizes)
    model[0].input_grad = input_grad
    return model


def scratch_step(model: MLP, optimizer_name: str) -> Step:
    loss_fn = CrossEntropyLoss()
    lr = LEARNING_RATES[optimizer_name]
    optimizer = Adam(model, lr) if optimizer_name == "adam" else GradientDescent(model, lr)

    @torch.no_grad()  # as in Engine: the scratch path records nothing for autograd
    def step(x: Tensor, y: Tensor) -> Tensor:
        model.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()
        return loss

    return step


def torch_step(model: nn.Sequential, optimizer_name: str) -> Step:
    loss_fn = nn.CrossEntropyLoss()
    lr = LEARNING_RATES[optimizer_name]
    params = model.parameters()
    optimizer = torch.optim.Adam(params, lr) if optimizer_name == "adam" else torch.optim.SGD(params, lr)

    def step(x: Tensor, y: Tensor) -> Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


# --------------------------------------------------------------------------- measuring


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_step(step: Step, x: Tensor, y: Tensor, steps: int) -> float:
    """Seconds per step, averaged over ``steps`` consecutive steps."""
    _synchronize(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    _synchronize(x.device)
    return (time.perf_counter() - start) / steps


def peak_memory(build: Callable[[], Step], x: Tensor, y: Tensor) -> int:
    """Peak bytes of live tensors while ``build()`` makes a model and optimizer and trains a few steps."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        step = build()
        for _ in range(MEMORY_STEPS):
            step(x, y)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recording:
        step = build()
        for _ in range(MEMORY_STEPS):
            step(x, y)
        del step
    events = [e for e in recording.profiler.kineto_results.events() if e.name() == "[memory]"]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()  # positive for an allocation, negative for a free
        peak = max(peak, running)
    return peak


def bench_optimizer(config: BenchConfig, optimizer_name: str, device: torch.device) -> BenchResult:
    if optimizer_name not in LEARNING_RATES:
        raise ValueError(f"unknown optimizer {optimizer_name!r}; valid names: {', '.join(LEARNING_RATES)}")
    torch.manual_seed(config.seed)
    reference = torch_model(config.sizes).to(device)
    mine = scratch_copy(reference, config.input_grad)
    x = torch.randn(config.batch_size, config.sizes[0], device=device)
    y = torch.randint(0, config.sizes[-1], (config.batch_size,), device=device)
    steps = {"scratch": scratch_step(mine, optimizer_name), "torch": torch_step(reference, optimizer_name)}
    difference = abs(steps["scratch"](x, y).item() - steps["torch"](x, y).item())
    for _ in range(config.warmup):
        for step in steps.values():
            step(x, y)
    times: dict[str, list[float]] = {"scratch": [], "torch": []}
    for round_ in range(config.repeats):
        for name in ("scratch", "torch") if round_ % 2 == 0 else ("torch", "scratch"):
            times[name].append(1e3 * time_per_step(steps[name], x, y, config.steps))
    del steps, mine, reference
    peaks = {
        "scratch": peak_memory(
            lambda: scratch_step(scratch_model(config.sizes, config.input_grad).to(device), optimizer_name), x, y
        ),
        "torch": peak_memory(lambda: torch_step(torch_model(config.sizes).to(device), optimizer_name), x, y),
    }
    scratch_ms, torch_ms = statistics.median(times["scratch"]), statistics.median(times["torch"])
    return BenchResult(
        optimizer=optimizer_name,
        scratch_ms=scratch_ms,
        torch_ms=torch_ms,
        ratio=scratch_ms / torch_ms,
        scratch_peak_bytes=peaks["scratch"],
        torch_peak_bytes=peaks["torch"],
        first_loss_difference=difference,
        scratch_ms_all=times["scratch"],
        torch_ms_all=times["torch"],
    )


def run(config: BenchConfig) -> list[BenchResult]:
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    return [bench_optimizer(config, name, device) for name in config.optimizers]


# --------------------------------------------------------------------------- command line


def format_results(config: BenchConfig, results: Sequence[BenchResult]) -> str:
    device = resolve_device(config.device)
    mib = 2.0**20
    lines = [
        f"scratch-mlp bench: {'-'.join(map(str, config.sizes))} ReLU MLP, batch {config.batch_size}, {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        f"median per step of {config.repeats} rounds x {config.steps} steps each, alternating, "
        f"after {config.warmup} warm-up steps; scratch's first layer "
        + ("computes dL/dx (--input-grad)" if config.input_grad else "skips dL/dx, as autograd does"),
        "",
        f"{'optimizer':9}  {'scratch ms':>10}  {'torch ms':>8}  {'scratch/torch':>13}  "
        f"{'peak MiB scratch':>16}  {'peak MiB torch':>14}",
    ]
    for r in results:
        lines.append(
            f"{r.optimizer:9}  {r.scratch_ms:10.3f}  {r.torch_ms:8.3f}  {r.ratio:13.3f}  "
            f"{r.scratch_peak_bytes / mib:16.2f}  {r.torch_peak_bytes / mib:14.2f}"
        )
    worst = max(r.first_loss_difference for r in results)
    lines.append(f"\nfirst-step losses of the two sides differ by at most {worst:.1e} (same weights, same batch)")
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch.profiler allocation events"
    lines.append(f"peak memory: live tensor bytes, model creation through {MEMORY_STEPS} steps ({memory})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m scratch_mlp.bench",
        description="Time one training step of a scratch MLP against torch.nn + autograd + torch.optim.",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=defaults.sizes, help="layer sizes (%(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(%(default)s)")
    parser.add_argument(
        "--optimizers", nargs="+", choices=list(LEARNING_RATES), default=defaults.optimizers, help="(%(default)s)"
    )
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads (%(default)s)")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed steps first (%(default)s)")
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed rounds (%(default)s)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="steps per timed block (%(default)s)")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda, ... or auto (%(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="(%(default)s)")
    parser.add_argument(
        "--input-grad", action="store_true", help="scratch's first layer also computes dL/dx (autograd's does not)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = BenchConfig(
        sizes=tuple(args.sizes),
        batch_size=args.batch_size,
        optimizers=tuple(args.optimizers),
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        steps=args.steps,
        device=args.device,
        seed=args.seed,
        input_grad=args.input_grad,
    )
    results = run(config)
    print(format_results(config, results))
    if args.json is not None:
        record: dict[str, Any] = {
            "config": asdict(config),
            "results": [asdict(r) for r in results],
            "environment": environment(resolve_device(config.device)),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
