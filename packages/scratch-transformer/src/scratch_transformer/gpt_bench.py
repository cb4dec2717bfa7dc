"""How fast is the hand-written GPT? A training step against its torch.nn twin, and sampling with the KV cache.

    python -m scratch_transformer.gpt_bench                    # CPU, 2 threads, nanoGPT's baby shape
    python -m scratch_transformer.gpt_bench --threads 1 --json gpt-bench.json

**Training step.** Both sides train the same model on the same batch of ``--batch-size`` random
blocks of ``--block-size`` characters: ours (:class:`~scratch_transformer.gpt.GPT`, hand-written
backward, the engine's ``AdamW``) and its twin (:class:`~scratch_transformer.reference.TorchGPT`:
``nn.Linear``, ``nn.LayerNorm``, torch's fused ``scaled_dot_product_attention``, autograd,
``torch.optim.AdamW``), starting from the same weights. AdamW with :math:`\\beta_2 = 0.99`,
weight decay 0.1 on the matrices only. ``--warmup`` steps of each, then ``--repeats`` rounds
timing ``--steps`` consecutive steps of one side and then of the other, alternating which goes
first; medians (:mod:`scratch_engine.tools.benchmark`).

**Sampling.** ``--sample-length`` characters after a one-character prompt, greedy, with the KV
cache, recomputing the whole prefix for every character, and with the torch.nn twin's own cached
decoder, on a model whose block holds them all (``block_size`` = prompt + sample length); the
tokens must be equal; medians of ``--sample-repeats`` rounds of the three in turn, alternating
which goes first.

This module uses ``torch.nn``, ``torch.optim`` and autograd as the reference being measured
against, never for training.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from scratch_engine import AdamW, CrossEntropyLoss
from scratch_engine.tools.benchmark import (
    Comparison,
    Step,
    alternate,
    autograd_step,
    bench_parser,
    compare_steps,
    report,
    scratch_training_step,
    step_line,
    torch_training_step,
)
from scratch_engine.tools.cli import config_from_args
from scratch_engine.tools.twin import torch_loss, torch_optimizer
from scratch_transformer.gpt import GPT, GPTConfig, generate
from scratch_transformer.reference import TorchGPT, torch_generate_cached, torch_gpt_twin


@dataclass
class GPTBenchConfig:
    layers: int = 4
    heads: int = 4
    d_model: int = 128
    block_size: int = 64
    batch_size: int = 12
    vocab: int = 65
    threads: int = 2
    warmup: int = 3
    repeats: int = 11
    steps: int = 5
    sample_length: int = 256
    sample_repeats: int = 7
    seed: int = 0


@dataclass
class SampleResult:
    cached_seconds: float
    recomputed_seconds: float
    speedup: float
    same_tokens: bool
    torch_cached_seconds: float = 0.0  # the torch.nn twin, decoding with its own key/value cache
    versus_torch: float = 0.0  # cached_seconds / torch_cached_seconds


def bench_step(config: GPTBenchConfig) -> Comparison:
    def build() -> tuple[GPT, TorchGPT]:
        torch.manual_seed(config.seed)
        sizes = GPTConfig(config.vocab, config.block_size, config.layers, config.heads, config.d_model)
        model = GPT(sizes)
        return model, torch_gpt_twin(model)

    generator = torch.Generator().manual_seed(config.seed)
    x = torch.randint(0, config.vocab, (config.batch_size, config.block_size), generator=generator)
    y = torch.randint(0, config.vocab, (config.batch_size, config.block_size), generator=generator)
    loss = CrossEntropyLoss()

    def adamw(model: GPT) -> AdamW:
        return AdamW(model, 1e-3, betas=(0.9, 0.99), weight_decay=0.1, decay_vectors=False)

    def ours() -> Step:
        model = build()[0]
        return scratch_training_step(model, loss, adamw(model), x, y)

    def yardstick() -> Step:  # our forward, autograd's backward: what a user would otherwise write
        model = build()[0]
        return autograd_step(model, loss, adamw(model), x, y)

    def theirs() -> Step:  # the twin of a model of the same seed: the same weights as ours
        model, twin = build()
        return torch_training_step(twin, torch_loss(loss), torch_optimizer(adamw(model), twin.parameters()), x, y)

    return compare_steps(
        "GPT training step",
        ours(),
        theirs(),
        fresh_scratch=ours,
        fresh_reference=theirs,
        device=torch.device("cpu"),
        warmup=config.warmup,
        repeats=config.repeats,
        steps=config.steps,
        yardstick=yardstick(),
    )


def bench_sampling(config: GPTBenchConfig) -> SampleResult:
    torch.manual_seed(config.seed)
    block = config.sample_length + 1
    model = GPT(GPTConfig(config.vocab, block, config.layers, config.heads, config.d_model))
    twin = torch_gpt_twin(model)
    prompt = torch.zeros(1, 1, dtype=torch.int64)
    decoders = {
        "cached": lambda: generate(model, prompt, config.sample_length, 0.0, use_cache=True),
        "recomputed": lambda: generate(model, prompt, config.sample_length, 0.0, use_cache=False),
        "torch": lambda: torch_generate_cached(twin, prompt, config.sample_length),
    }
    tokens = {name: decode() for name, decode in decoders.items()}  # also the warm-up
    times = alternate(decoders, config.sample_repeats, 1, torch.device("cpu"))
    cached, recomputed, theirs = (statistics.median(times[name]) / 1e3 for name in decoders)
    same = torch.equal(tokens["cached"], tokens["recomputed"]) and torch.equal(tokens["cached"], tokens["torch"])
    return SampleResult(cached, recomputed, recomputed / cached, same, theirs, cached / theirs)


def versus_torch_line(sampling: SampleResult) -> str:
    """The KV-cache sampling against the torch.nn twin's own cached decoder, as an indented line."""
    return (
        f"  with the KV cache: scratch {sampling.cached_seconds * 1e3:,.0f} ms, the torch.nn twin's own cached "
        f"decoder {sampling.torch_cached_seconds * 1e3:,.0f} ms: scratch / torch {sampling.versus_torch:.2f}"
    )


def format_results(config: GPTBenchConfig, step: Comparison, sampling: SampleResult) -> str:
    mib = 2.0**20
    return "\n".join(
        [
            f"scratch-transformer GPT bench: {config.layers} layers, {config.heads} heads, d_model {config.d_model}, "
            f"block {config.block_size}, batch {config.batch_size}, vocabulary {config.vocab}, cpu, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}",
            f"training step, AdamW; median of {config.repeats} rounds x {config.steps} steps, alternating, after "
            f"{config.warmup} warm-up steps",
            step_line(step),
            f"  peak MiB: scratch {step.scratch_peak_bytes / mib:.2f}, torch {step.torch_peak_bytes / mib:.2f}; "
            f"first-step losses differ by {step.first_loss_difference:.1e}",
            f"greedy sampling of {config.sample_length} characters after a 1-character prompt, median of "
            f"{config.sample_repeats} rounds, alternating",
            f"  KV cache {sampling.cached_seconds * 1e3:,.0f} ms   recomputing the prefix "
            f"{sampling.recomputed_seconds * 1e3:,.0f} ms   speed-up {sampling.speedup:.2f}x   same tokens: "
            f"{sampling.same_tokens}",
            versus_torch_line(sampling),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser: argparse.ArgumentParser = bench_parser(
        "python -m scratch_transformer.gpt_bench",
        "Time a training step of the scratch GPT against its torch.nn twin, and sampling with the KV cache.",
        GPTBenchConfig(),
    )
    args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"d_model ({args.d_model}) must be divisible by heads ({args.heads})")
    config = config_from_args(GPTBenchConfig(), args)
    torch.set_num_threads(config.threads)
    step, sampling = bench_step(config), bench_sampling(config)
    text = format_results(config, step, sampling)
    code = report(text, config, {"training_step": step, "sampling": sampling}, args.json)
    return code if sampling.same_tokens else 1


if __name__ == "__main__":
    raise SystemExit(main())
