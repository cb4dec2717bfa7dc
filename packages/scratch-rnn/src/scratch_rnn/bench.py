"""How fast is hand-written backprop through time? One training step, scratch against torch, in one process.

    python -m scratch_rnn.bench                      # CPU, 2 threads, LSTM, GRU and vanilla RNN
    python -m scratch_rnn.bench --threads 1 --json bench.json

Both sides train the same character-level language model: one-hot input (a 65-character
vocabulary), a 2-layer, 256-unit LSTM, GRU or tanh RNN and a dense head, on the same batch of 32
sequences of 100 characters with softmax cross-entropy over every position (scratch's
copy starts from the torch model's weights). One step is what a training loop does per batch:

- scratch: ``model.zero_grad()``, forward, ``loss.backward()``, ``model.backward(g)``
  (backprop through time by the layers' own loops), ``Adam.step()``;
- torch: ``optimizer.zero_grad()``, forward through ``torch.nn.LSTM``/``GRU`` and
  ``nn.Linear``, ``loss.backward()`` by autograd, ``torch.optim.Adam.step()``.

Neither side computes the gradient with respect to the one-hot input (autograd because
it does not require grad, scratch because its first layer has ``input_grad = False``).

**Time** and **memory** are measured by :mod:`scratch_engine.tools.benchmark`, as in every
package (alternating timed blocks after a warm-up, medians; peak live-tensor bytes from the
model's construction through three steps).

This module is, with ``reference.py``, the one place in the package that uses
``torch.nn``, ``torch.optim`` and autograd: they are the reference being measured against.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scratch_engine import Adam, CrossEntropyLoss
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
    torch_training_step,
)
from scratch_engine.tools.cli import config_from_args
from scratch_engine.tools.device import resolve_device
from scratch_rnn.charlm import CharLM
from scratch_rnn.reference import TorchCharLM, cross_entropy

LEARNING_RATE = 2e-3


@dataclass
class BenchConfig:
    archs: tuple[str, ...] = ("lstm", "gru", "rnn")
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


def scratch_step(model: CharLM, x: Tensor, y: Tensor) -> Step:
    # every timed step starts from the zero state, like the torch side
    return scratch_training_step(model, CrossEntropyLoss(), Adam(model, LEARNING_RATE), x, y, model.reset_state)


def torch_step(model: TorchCharLM, x: Tensor, y: Tensor) -> Step:
    optimizer = torch.optim.Adam(model.parameters(), LEARNING_RATE)
    return torch_training_step(model, cross_entropy, optimizer, x, y, model.reset_state)


def bench_arch(config: BenchConfig, arch: str, device: torch.device) -> Comparison:
    torch.manual_seed(config.seed)
    sizes = (config.vocab, arch, config.hidden, config.layers)
    reference = TorchCharLM(*sizes).to(device)
    mine, yard = CharLM.from_torch(reference), CharLM.from_torch(reference)  # yard: the autograd yardstick's copy
    ids = torch.randint(0, config.vocab, (config.batch_size, config.seq_len + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:]
    return compare_steps(
        arch,
        scratch_step(mine, x, y),
        torch_step(reference, x, y),
        fresh_scratch=lambda: scratch_step(CharLM(*sizes).to(device), x, y),
        fresh_reference=lambda: torch_step(TorchCharLM(*sizes).to(device), x, y),
        device=device,
        warmup=config.warmup,
        repeats=config.repeats,
        steps=config.steps,
        yardstick=autograd_step(yard, CrossEntropyLoss(), Adam(yard, LEARNING_RATE), x, y, yard.reset_state),
    )


def run(config: BenchConfig) -> list[Comparison]:
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    return [bench_arch(config, arch, device) for arch in config.archs]


def format_results(config: BenchConfig, results: Sequence[Comparison]) -> str:
    device = resolve_device(config.device)
    header = [
        f"scratch-rnn bench: one-hot ({config.vocab}) -> {config.layers} x {config.hidden} recurrent -> dense, "
        f"batch {config.batch_size} x {config.seq_len} characters, Adam, {device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        f"median per step of {config.repeats} rounds x {config.steps} steps each, alternating, "
        f"after {config.warmup} warm-up steps",
        "",
    ]
    return "\n".join([*header, format_comparisons(results, label="arch"), memory_method(device)])


def build_parser() -> argparse.ArgumentParser:
    return bench_parser(
        "python -m scratch_rnn.bench",
        "Time a training step of a scratch char-level LSTM/GRU against torch.nn + autograd + torch.optim.",
        BenchConfig(),
        archs={"choices": ["rnn", "lstm", "gru"]},
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(BenchConfig(), args)
    results = run(config)
    return report(format_results(config, results), config, results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
