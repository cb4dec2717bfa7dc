"""How fast is hand-written backprop through time? One training step, scratch against torch, in one process.

    python -m scratch_rnn.bench                      # CPU, 2 threads, LSTM and GRU
    python -m scratch_rnn.bench --threads 1 --json bench.json

Both sides train the same character-level language model: one-hot input (a 65-character
vocabulary), a 2-layer, 256-unit LSTM or GRU and a dense head, on the same batch of 32
sequences of 100 characters with softmax cross-entropy over every position (scratch's
copy starts from the torch model's weights). One step is what a training loop does per batch:

- scratch: ``model.zero_grad()``, forward, ``loss.backward()``, ``model.backward(g)``
  (backprop through time by the layers' own loops), ``Adam.step()``;
- torch: ``optimizer.zero_grad()``, forward through ``torch.nn.LSTM``/``GRU`` and
  ``nn.Linear``, ``loss.backward()`` by autograd, ``torch.optim.Adam.step()``.

Neither side computes the gradient with respect to the one-hot input (autograd because
it does not require grad, scratch because its first layer has ``input_grad = False``).

**Time** and **memory** are measured as in ``scratch_mlp.bench`` (alternating timed
blocks after a warm-up, medians; peak live-tensor bytes from the model's construction
through three steps, by ``torch.cuda.max_memory_allocated`` or ``torch.profiler``
allocation events on the CPU). Those two helpers are generic and are copied here because
an architecture may not import another; they belong in ``scratch_engine``.

This module is, with ``reference.py``, the one place in the package that uses
``torch.nn``, ``torch.optim`` and autograd: they are the reference being measured against.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from scratch_engine import Adam, CrossEntropyLoss, resolve_device
from scratch_engine.experiment import environment
from scratch_rnn.charlm import CharLM
from scratch_rnn.reference import TorchCharLM, cross_entropy

Step = Callable[[Tensor, Tensor], Tensor]
MEMORY_STEPS = 3
LEARNING_RATE = 2e-3


@dataclass
class BenchConfig:
    archs: tuple[str, ...] = ("lstm", "gru")
    hidden: int = 256
    layers: int = 2
    vocab: int = 65
    batch_size: int = 32
    seq_len: int = 100
    threads: int = 2
    warmup: int = 3
    repeats: int = 10  # timed rounds per architecture
    steps: int = 2  # training steps per timed block
    device: str = "cpu"
    seed: int = 0


@dataclass
class BenchResult:
    arch: str
    scratch_ms: float  # median per step
    torch_ms: float
    ratio: float  # scratch_ms / torch_ms
    scratch_peak_bytes: int
    torch_peak_bytes: int
    first_loss_difference: float  # same weights, same batch: the two first losses must agree
    scratch_ms_all: list[float] = field(repr=False)
    torch_ms_all: list[float] = field(repr=False)


def scratch_step(model: CharLM) -> Step:
    loss_fn = CrossEntropyLoss()
    optimizer = Adam(model, LEARNING_RATE)

    @torch.no_grad()  # as in Engine: the scratch path records nothing for autograd
    def step(x: Tensor, y: Tensor) -> Tensor:
        model.zero_grad()
        model.reset_state()  # every timed step starts from the zero state, like the torch side
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()
        return loss

    return step


def torch_step(model: TorchCharLM) -> Step:
    optimizer = torch.optim.Adam(model.parameters(), LEARNING_RATE)

    def step(x: Tensor, y: Tensor) -> Tensor:
        optimizer.zero_grad()
        model.reset_state()
        loss = cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


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


def bench_arch(config: BenchConfig, arch: str, device: torch.device) -> BenchResult:
    torch.manual_seed(config.seed)
    sizes = (config.vocab, arch, config.hidden, config.layers)
    reference = TorchCharLM(*sizes).to(device)
    mine = CharLM.from_torch(reference)
    ids = torch.randint(0, config.vocab, (config.batch_size, config.seq_len + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:]
    steps = {"scratch": scratch_step(mine), "torch": torch_step(reference)}
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
        "scratch": peak_memory(lambda: scratch_step(CharLM(*sizes).to(device)), x, y),
        "torch": peak_memory(lambda: torch_step(TorchCharLM(*sizes).to(device)), x, y),
    }
    scratch_ms, torch_ms = statistics.median(times["scratch"]), statistics.median(times["torch"])
    return BenchResult(
        arch=arch,
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
    return [bench_arch(config, arch, device) for arch in config.archs]


def format_results(config: BenchConfig, results: Sequence[BenchResult]) -> str:
    device = resolve_device(config.device)
    mib = 2.0**20
    lines = [
        f"scratch-rnn bench: one-hot ({config.vocab}) -> {config.layers} x {config.hidden} recurrent -> dense, "
        f"batch {config.batch_size} x {config.seq_len} characters, Adam, {device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        f"median per step of {config.repeats} rounds x {config.steps} steps each, alternating, "
        f"after {config.warmup} warm-up steps",
        "",
        f"{'arch':5}  {'scratch ms':>10}  {'torch ms':>8}  {'scratch/torch':>13}  "
        f"{'peak MiB scratch':>16}  {'peak MiB torch':>14}",
    ]
    for r in results:
        lines.append(
            f"{r.arch:5}  {r.scratch_ms:10.1f}  {r.torch_ms:8.1f}  {r.ratio:13.3f}  "
            f"{r.scratch_peak_bytes / mib:16.2f}  {r.torch_peak_bytes / mib:14.2f}"
        )
    worst = max(r.first_loss_difference for r in results)
    lines.append(f"\nfirst-step losses of the two sides differ by at most {worst:.1e} (same weights, same batch)")
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch.profiler allocation events"
    lines.append(f"peak memory: live tensor bytes, model creation through {MEMORY_STEPS} steps ({memory})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m scratch_rnn.bench",
        description="Time a training step of a scratch char-level LSTM/GRU against torch.nn + autograd + torch.optim.",
    )
    parser.add_argument("--archs", nargs="+", choices=["rnn", "lstm", "gru"], default=d.archs, help="(%(default)s)")
    parser.add_argument("--hidden", type=int, default=d.hidden, help="(%(default)s)")
    parser.add_argument("--layers", type=int, default=d.layers, help="(%(default)s)")
    parser.add_argument("--vocab", type=int, default=d.vocab, help="(%(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="(%(default)s)")
    parser.add_argument("--seq-len", type=int, default=d.seq_len, help="(%(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads (%(default)s)")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps first (%(default)s)")
    parser.add_argument("--repeats", type=int, default=d.repeats, help="timed rounds (%(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps, help="steps per timed block (%(default)s)")
    parser.add_argument("--device", default=d.device, help="cpu, cuda, ... or auto (%(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="(%(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = BenchConfig(
        archs=tuple(args.archs),
        hidden=args.hidden,
        layers=args.layers,
        vocab=args.vocab,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        steps=args.steps,
        device=args.device,
        seed=args.seed,
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
