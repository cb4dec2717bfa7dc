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
autograd skips it because the batch does not require grad, scratch because the engine's step
tells the first ``Dense`` so (:func:`~scratch_engine.skip_data_gradient`), as ``Engine`` does: the
model is the one a user builds, with no switch set by hand. ``--input-grad`` makes scratch compute
it anyway (for this model that is 40% more matrix-multiply work) to show what it costs.

How time and memory are measured: :mod:`scratch_engine.tools.benchmark` (alternating timed blocks,
medians; peak bytes of live tensors from model creation through three steps).

This module is the one place in the package that uses ``torch.nn``, ``torch.optim`` and
autograd: they are the reference being measured against, never part of training.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, cast

import torch
from torch import Tensor, nn

from scratch_engine import Adam, CrossEntropyLoss, DataLoader, GradientDescent, ReLU
from scratch_engine.tools.benchmark import (
    Comparison,
    Step,
    autograd_step,
    bench_parser,
    compare_steps,
    fit_overhead,
    format_comparisons,
    matmul_peak_gflops,
    memory_method,
    report,
    scratch_training_step,
    torch_training_step,
)
from scratch_engine.tools.cli import config_from_args
from scratch_engine.tools.device import resolve_device
from scratch_engine.tools.twin import from_torch
from scratch_mlp.model import MLP

LEARNING_RATES = {"adam": 1e-3, "sgd": 1e-2}


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
    small_sizes: tuple[int, ...] = (2, 32, 32, 4)  # a learner's first model: per-step overhead, not arithmetic
    small_batch_size: int = 32


# --------------------------------------------------------------------------- the two training steps


def torch_model(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def scratch_copy(reference: nn.Sequential) -> MLP:
    """The same network built from scratch layers, with copies of ``reference``'s weights."""
    return MLP([from_torch(layer) if isinstance(layer, nn.Linear) else ReLU() for layer in reference])


def make_optimizer(optimizer_name: str, model: MLP) -> Adam | GradientDescent:
    lr = LEARNING_RATES[optimizer_name]
    return Adam(model, lr) if optimizer_name == "adam" else GradientDescent(model, lr)


def scratch_step(model: MLP, optimizer_name: str, x: Tensor, y: Tensor, input_grad: bool = False) -> Step:
    optimizer = make_optimizer(optimizer_name, model)
    return scratch_training_step(model, CrossEntropyLoss(), optimizer, x, y, data_gradient=input_grad)


def torch_step(model: nn.Sequential, optimizer_name: str, x: Tensor, y: Tensor) -> Step:
    lr = LEARNING_RATES[optimizer_name]
    params = model.parameters()
    optimizer = torch.optim.Adam(params, lr) if optimizer_name == "adam" else torch.optim.SGD(params, lr)
    return torch_training_step(model, nn.CrossEntropyLoss(), optimizer, x, y)


# --------------------------------------------------------------------------- measuring


def bench_optimizer(
    config: BenchConfig, name: str, optimizer_name: str, device: torch.device, sizes: Sequence[int], batch_size: int
) -> Comparison:
    if optimizer_name not in LEARNING_RATES:
        raise ValueError(f"unknown optimizer {optimizer_name!r}; valid names: {', '.join(LEARNING_RATES)}")
    torch.manual_seed(config.seed)
    reference = torch_model(sizes).to(device)
    mine, yard = scratch_copy(reference), scratch_copy(reference)  # yard: the autograd yardstick's copy
    x = torch.randn(batch_size, sizes[0], device=device)
    y = torch.randint(0, sizes[-1], (batch_size,), device=device)
    return compare_steps(
        name,
        scratch_step(mine, optimizer_name, x, y, config.input_grad),
        torch_step(reference, optimizer_name, x, y),
        fresh_scratch=lambda: scratch_step(MLP.from_sizes(sizes).to(device), optimizer_name, x, y, config.input_grad),
        fresh_reference=lambda: torch_step(torch_model(sizes).to(device), optimizer_name, x, y),
        device=device,
        warmup=config.warmup,
        repeats=config.repeats,
        steps=config.steps,
        yardstick=autograd_step(yard, CrossEntropyLoss(), make_optimizer(optimizer_name, yard), x, y),
    )


def run(config: BenchConfig) -> dict[str, Any]:
    """The steps of the default MLP for each optimizer and of the small one (SGD) against torch.nn, an epoch of
    the small one through ``Engine.fit`` against the bare loop, and what fraction of the measured matmul peak
    each step reaches."""
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    small = f"small {'-'.join(map(str, config.small_sizes))}, sgd"
    cases = [(name, name, config.sizes, config.batch_size) for name in config.optimizers]  # (row, optimizer, ...)
    cases.append((small, "sgd", config.small_sizes, config.small_batch_size))
    steps = [bench_optimizer(config, name, optimizer, device, sizes, batch) for name, optimizer, sizes, batch in cases]
    peak = matmul_peak_gflops(device)
    torch.manual_seed(config.seed)
    data = torch.randn(32 * config.small_batch_size, config.small_sizes[0], device=device)
    labels = torch.randint(0, config.small_sizes[-1], (len(data),), device=device)
    loader = DataLoader(data, labels, batch_size=config.small_batch_size, shuffle=True)

    def build() -> tuple[MLP, CrossEntropyLoss, GradientDescent]:
        model = MLP.from_sizes(config.small_sizes).to(device)
        return model, CrossEntropyLoss(), GradientDescent(model, LEARNING_RATES["sgd"])

    overhead = fit_overhead(build, loader, repeats=max(3, config.repeats // 3))
    return {"steps": steps, "matmul_peak_gflops": peak, "fit_overhead": overhead}


# --------------------------------------------------------------------------- command line


def format_results(config: BenchConfig, results: dict[str, Any]) -> str:
    device = resolve_device(config.device)
    header = [
        f"scratch-mlp bench: {'-'.join(map(str, config.sizes))} ReLU MLP, batch {config.batch_size}, {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        f"median per step of {config.repeats} rounds x {config.steps} steps each, alternating, "
        f"after {config.warmup} warm-up steps; scratch's first layer "
        + ("computes dL/dx (--input-grad)" if config.input_grad else "skips dL/dx, as autograd does"),
        "",
    ]
    peak, overhead = results["matmul_peak_gflops"], results["fit_overhead"]
    rates = []
    for row in results["steps"]:  # GFLOP/s: each step's matrix products (Comparison.gflop) over its time
        gflop = cast(float, row.gflop)
        ours, theirs = gflop / row.scratch_ms * 1e3, gflop / row.torch_ms * 1e3
        rates.append(
            f"  {row.name}: {gflop * 1e3:.3g} MFLOP a step; scratch {ours:.1f} GFLOP/s ({ours / peak:.1%} of the "
            f"peak), torch {theirs:.1f} ({theirs / peak:.1%})"
        )
    return "\n".join(
        [
            *header,
            format_comparisons(results["steps"], label="optimizer"),
            memory_method(device),
            f"\nmatrix products: this machine's measured peak {peak:.1f} GFLOP/s (float32 1024x1024, best of 5)",
            *rates,
            f"\nthe small MLP, an epoch of {overhead.steps} steps (batch {config.small_batch_size}): Engine.fit "
            f"{overhead.fit_ms:.2f} ms, the bare step loop {overhead.bare_ms:.2f} ms: fit / bare "
            f"{overhead.fit_over_bare:.2f}",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    return bench_parser(
        "python -m scratch_mlp.bench",
        "Time one training step of a scratch MLP against torch.nn + autograd + torch.optim.",
        BenchConfig(),
        sizes={"help": "layer sizes (%(default)s)"},
        optimizers={"choices": list(LEARNING_RATES)},
        input_grad={"help": "scratch's first layer also computes dL/dx (autograd's does not)"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(BenchConfig(), args)
    results = run(config)
    return report(format_results(config, results), config, results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
