"""How fast is the hand-written convolution? One training step against torch, and loop against im2col.

    python -m scratch_cnn.bench                      # CPU, 2 threads
    python -m scratch_cnn.bench --device cuda --json bench.json

**Training step.** Both sides train the default network (:func:`scratch_cnn.models.lenet`:
two ``3x3 conv - ReLU - 2x2 max-pool`` blocks of 32 and 64 channels, ``Dense(3136, 128) -
ReLU - Dropout - Dense(128, 10)``; scratch's copy starts from the torch model's weights) on
the same batch of 64 MNIST-sized ``(1, 28, 28)`` images with softmax cross-entropy and Adam:

- scratch: ``model.zero_grad()``, forward (``Conv2D(impl="im2col")``), ``loss.backward()``,
  ``model.backward(g)``, ``Adam.step()``;
- torch: ``optimizer.zero_grad()``, forward through ``torch.nn`` (``nn.Conv2d``, which uses
  torch's own optimised kernels), ``loss.backward()`` by autograd, ``torch.optim.Adam.step()``.

Neither side computes the gradient with respect to the input batch: autograd skips it
because the batch does not require grad, scratch because its first ``Conv2D`` has
``input_grad=False``.

**Time and memory** are measured by :mod:`scratch_engine.tools.benchmark`, as in every package
(``--warmup`` steps, then ``--repeats`` alternating rounds of ``--steps`` steps, medians;
peak bytes of live tensors from model creation through three steps).

**Loop against im2col.** For a few small layer sizes, the median time of one forward plus
backward of ``Conv2D(impl="loop")`` and of ``Conv2D(impl="im2col")`` (same weights, same
input), and the speed-up factor loop / im2col.

This module is the one place in the package that uses ``torch.optim`` and autograd, and one of
the two that use ``torch.nn`` (the other is :mod:`scratch_cnn.reference`, which builds the
layers' torch.nn twins for ``--reference torch``): they are the reference being measured
against, never part of training.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratch_cnn.conv import Conv2D
from scratch_cnn.flatten import Flatten
from scratch_cnn.models import lenet
from scratch_cnn.pooling import MaxPool2D
from scratch_engine import Adam, CrossEntropyLoss, Dropout, Module, ReLU, Sequential
from scratch_engine.tools.benchmark import (
    Comparison,
    Step,
    autograd_step,
    bench_parser,
    compare_steps,
    format_comparisons,
    memory_method,
    report,
    scratch_training_step,
    time_per_step,
    torch_training_step,
)
from scratch_engine.tools.cli import config_from_args
from scratch_engine.tools.device import resolve_device
from scratch_engine.tools.twin import from_torch

LEARNING_RATE = 1e-3
# (batch, in channels, out channels, image size, kernel): small enough for the loop version
LAYER_SIZES: tuple[tuple[int, int, int, int, int], ...] = (
    (8, 1, 8, 28, 3),
    (8, 8, 16, 14, 3),
    (8, 16, 32, 14, 5),
    (8, 32, 64, 7, 3),
)


@dataclass
class BenchConfig:
    batch_size: int = 64
    threads: int = 2
    warmup: int = 5
    repeats: int = 20  # timed rounds
    steps: int = 3  # training steps per timed block
    device: str = "cpu"
    seed: int = 0
    layer_sizes: tuple[tuple[int, int, int, int, int], ...] = LAYER_SIZES
    layer_repeats: int = 5  # timed forward+backward passes per implementation and layer size


@dataclass
class LayerResult:
    batch: int
    in_channels: int
    out_channels: int
    size: int
    kernel: int
    loop_ms: float  # median forward + backward
    im2col_ms: float
    speedup: float  # loop_ms / im2col_ms


# --------------------------------------------------------------------------- the two training steps


def torch_model(seed: int = 0) -> nn.Sequential:
    """The torch twin of :func:`scratch_cnn.models.lenet` with its default settings."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


def scratch_copy(reference: nn.Sequential) -> Sequential:
    """The same network built from scratch layers, with copies of ``reference``'s weights."""
    layers: list[Module] = []
    for layer in reference:
        if isinstance(layer, nn.Conv2d):
            layers.append(Conv2D.from_torch(layer))
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(MaxPool2D.from_torch(layer))
        elif isinstance(layer, nn.Flatten):
            layers.append(Flatten.from_torch(layer))
        elif isinstance(layer, nn.Linear):
            layers.append(from_torch(layer))
        elif isinstance(layer, nn.Dropout):
            layers.append(Dropout(layer.p))
        else:
            layers.append(ReLU())
    layers[0].input_grad = False  # type: ignore[attr-defined]  # the input is data, as in lenet()
    return Sequential(layers)


def scratch_step(model: Sequential, x: Tensor, y: Tensor) -> Step:
    return scratch_training_step(model, CrossEntropyLoss(), Adam(model, LEARNING_RATE), x, y)


def torch_step(model: nn.Sequential, x: Tensor, y: Tensor) -> Step:
    optimizer = torch.optim.Adam(model.parameters(), LEARNING_RATE)
    return torch_training_step(model, nn.CrossEntropyLoss(), optimizer, x, y)


# --------------------------------------------------------------------------- measuring (as scratch_mlp.bench)


def bench_step(config: BenchConfig, device: torch.device) -> Comparison:
    reference = torch_model(config.seed).to(device)
    mine = scratch_copy(reference).to(device=device)
    yard = scratch_copy(reference).to(device=device)  # the autograd yardstick's copy
    x = torch.randn(config.batch_size, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (config.batch_size,), device=device)
    reference.eval()  # dropout draws different masks on the two sides: compare the first losses without it
    mine.eval()
    loss_fn = CrossEntropyLoss()
    with torch.no_grad():
        difference = abs(loss_fn(mine(x), y).item() - nn.functional.cross_entropy(reference(x), y).item())
    reference.train()
    mine.train()
    return compare_steps(
        "lenet",
        scratch_step(mine, x, y),
        torch_step(reference, x, y),
        fresh_scratch=lambda: scratch_step(lenet().to(device=device), x, y),
        fresh_reference=lambda: torch_step(torch_model(config.seed).to(device), x, y),
        device=device,
        warmup=config.warmup,
        repeats=config.repeats,
        steps=config.steps,
        first_loss_difference=difference,
        yardstick=autograd_step(yard, loss_fn, Adam(yard, LEARNING_RATE), x, y),
    )


def bench_layer(size: tuple[int, int, int, int, int], config: BenchConfig, device: torch.device) -> LayerResult:
    """Median forward+backward time of one Conv2D (same padding) as loops and as im2col."""
    batch, c_in, c_out, hw, kernel = size
    torch.manual_seed(config.seed)
    layer = Conv2D(c_in, c_out, kernel, padding=kernel // 2).to(device=device)
    x = torch.randn(batch, c_in, hw, hw, device=device)
    g = torch.randn(batch, c_out, hw, hw, device=device)

    def pass_with_g() -> None:
        layer(x)
        layer.backward(g)

    times: dict[str, list[float]] = {"loop": [], "im2col": []}
    with torch.no_grad():
        for impl in ("loop", "im2col"):
            layer.impl = impl
            pass_with_g()  # warm-up
        for round_ in range(config.layer_repeats):
            for impl in ("loop", "im2col") if round_ % 2 == 0 else ("im2col", "loop"):
                layer.impl = impl
                times[impl].append(1e3 * time_per_step(pass_with_g, 1, device))
    loop_ms, im2col_ms = statistics.median(times["loop"]), statistics.median(times["im2col"])
    return LayerResult(batch, c_in, c_out, hw, kernel, loop_ms, im2col_ms, loop_ms / im2col_ms)


def run(config: BenchConfig) -> tuple[Comparison, list[LayerResult]]:
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    step = bench_step(config, device)
    layers = [bench_layer(size, config, device) for size in config.layer_sizes]
    return step, layers


# --------------------------------------------------------------------------- command line


def format_results(config: BenchConfig, step: Comparison, layers: Sequence[LayerResult]) -> str:
    device = resolve_device(config.device)
    lines = [
        f"scratch-cnn bench: lenet (conv 32, 64; 3x3), batch {config.batch_size} of 1x28x28, Adam, {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        f"median per step of {config.repeats} rounds x {config.steps} steps each, alternating, "
        f"after {config.warmup} warm-up steps; scratch: Conv2D(impl='im2col'), first layer skips dL/dx",
        "",
        format_comparisons([step], label="model") + " (eval mode: dropout off)",
        memory_method(device),
        "",
        f"Conv2D forward + backward (same padding), median of {config.layer_repeats}:",
        f"{'batch':>5}  {'C_in':>4}  {'C_out':>5}  {'size':>5}  {'kernel':>6}  {'loop ms':>8}  {'im2col ms':>9}  "
        f"{'speed-up':>8}",
    ]
    for r in layers:
        lines.append(
            f"{r.batch:5d}  {r.in_channels:4d}  {r.out_channels:5d}  {r.size:2d}x{r.size:<2d}  "
            f"{r.kernel:3d}x{r.kernel:<2d}  {r.loop_ms:8.2f}  {r.im2col_ms:9.3f}  {r.speedup:7.0f}x"
        )
    return "\n".join(lines)


def _layer_size(text: str) -> tuple[int, int, int, int, int]:
    values = [int(v) for v in text.split(",")]
    if len(values) != 5 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected batch,c_in,c_out,size,kernel (5 positive ints), got {text}")
    batch, c_in, c_out, size, kernel = values
    return batch, c_in, c_out, size, kernel


def build_parser() -> argparse.ArgumentParser:
    return bench_parser(
        "python -m scratch_cnn.bench",
        "Time one training step of the scratch CNN against torch.nn + autograd + torch.optim, "
        "and Conv2D's loop against its im2col implementation.",
        BenchConfig(),
        layer_sizes={
            "flag": "--layers",
            "type": _layer_size,
            "nargs": "*",
            "metavar": "B,CIN,COUT,SIZE,K",
            "help": "layer sizes for the loop/im2col table (default: %(default)s)",
        },
        layer_repeats={"help": "timed passes per layer (%(default)s)"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(BenchConfig(), args)
    step, layers = run(config)
    return report(format_results(config, step, layers), config, {"step": step, "layers": layers}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
