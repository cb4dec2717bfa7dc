"""How fast is the hand-written Transformer? A training step against torch.nn, and the KV cache.

    python -m scratch_transformer.bench                      # CPU, 2 threads
    python -m scratch_transformer.bench --device cuda --json bench.json

**Training step.** Both sides train the default translation model (d_model 128, 2+2 layers,
4 heads, d_ff 512, pre-norm, dropout 0) on the same batch of 64 random sentence pairs
(source and target lengths drawn up to ``--src-len`` and ``--tgt-len``, padded, with the
source padding mask): scratch's copy is built from the torch model with
``Transformer.from_torch``. One step is

- scratch: ``model.zero_grad()``, forward, ``CrossEntropyLoss(ignore_index=<pad>,
  label_smoothing=0.1)``, ``loss.backward()``, ``model.backward(g)``, ``Adam.step()``;
- torch: ``optimizer.zero_grad()``, forward through ``nn.Transformer`` + ``nn.Embedding`` x 2 +
  ``nn.Linear``, ``nn.CrossEntropyLoss``, autograd's ``backward()``, ``torch.optim.Adam.step()``.

``torch.set_num_threads(--threads)``; ``--warmup`` steps of each, then ``--repeats`` rounds
timing ``--steps`` consecutive steps of one side and then of the other, alternating which goes
first; the median time per step of each side and their ratio. Peak memory: the peak of live
tensor bytes from building the model and optimizer through three steps. Both are measured
by :mod:`scratch_engine.tools.benchmark`, as in every package.

**Decoding.** Greedy decoding of ``--decode-batch`` (64) random source sentences of
``--decode-len`` (60) characters for ``--decode-len`` steps (no early stop), with the KV cache
(each step runs the decoder on the one new position over cached keys and values) and without
(each step re-runs the decoder over the whole prefix); medians of ``--decode-repeats`` alternating rounds.

This module uses ``torch.nn``, ``torch.optim`` and autograd as the reference being measured
against, never for training.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from scratch_engine import Adam, CrossEntropyLoss
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
from scratch_engine.tools.device import resolve_device
from scratch_transformer import gpt_bench
from scratch_transformer.data import Vocabulary
from scratch_transformer.decoding import greedy_decode
from scratch_transformer.masks import padding_mask
from scratch_transformer.model import Transformer
from scratch_transformer.reference import TorchTranslator
from scratch_transformer.translator import Translator

Batch = tuple[tuple[Tensor, Tensor], Tensor]


@dataclass
class BenchConfig:
    d_model: int = 128
    heads: int = 4
    layers: int = 2
    d_ff: int = 512
    norm: str = "pre"
    vocab: int = 100  # source and target characters, specials included (eng-fra: 78 and 98)
    batch_size: int = 64
    src_len: int = 20
    tgt_len: int = 28
    threads: int = 2
    warmup: int = 3
    repeats: int = 10
    steps: int = 3
    decode_batch: int = 64
    decode_len: int = 60
    decode_repeats: int = 3
    device: str = "cpu"
    seed: int = 0
    gpt_repeats: int = 11  # rounds for the GPT's step (nanoGPT's baby shape, scratch_transformer.gpt_bench); 0: skip


@dataclass
class DecodeResult:
    cached_tokens_per_s: float
    uncached_tokens_per_s: float
    speedup: float


# --------------------------------------------------------------------------- the two sides


def torch_model(config: BenchConfig) -> TorchTranslator:
    return TorchTranslator(
        config.vocab,
        config.vocab,
        config.d_model,
        config.heads,
        config.layers,
        config.d_ff,
        0.0,
        config.norm == "pre",
        max(config.src_len, config.tgt_len, config.decode_len) + 2,
    )


def scratch_copy(reference: TorchTranslator) -> Translator:
    from scratch_transformer.model import Transformer

    model = Transformer.from_torch(
        reference.transformer,
        reference.src_embedding,
        reference.tgt_embedding,
        reference.head,
        reference.pe.shape[0],
    )
    return Translator(model)


def random_batch(config: BenchConfig, device: torch.device, generator: torch.Generator) -> Batch:
    """Random pairs, lengths uniform in ``[len/2, len]``, padded at the end like ``BucketBatches``."""
    batch, first = config.batch_size, len(Vocabulary.SPECIALS)

    def rows(max_len: int) -> tuple[Tensor, Tensor]:
        lengths = torch.randint(max_len // 2, max_len + 1, (batch,), generator=generator)
        ids = torch.randint(first, config.vocab, (batch, max_len), generator=generator)
        return ids.masked_fill(torch.arange(max_len) >= lengths[:, None], Vocabulary.PAD), lengths

    src, _ = rows(config.src_len)
    tgt, lengths = rows(config.tgt_len + 1)
    tgt_in = tgt[:, :-1].masked_fill(torch.arange(config.tgt_len) >= lengths[:, None] - 1, Vocabulary.PAD)
    tgt_in[:, 0] = Vocabulary.BOS
    tgt_out = tgt[:, 1:]
    return (src.to(device), tgt_in.to(device)), tgt_out.to(device)


def scratch_step(model: Translator, batch: Batch) -> Step:
    loss = CrossEntropyLoss(ignore_index=Vocabulary.PAD, label_smoothing=0.1)
    return scratch_training_step(model, loss, Adam(model, 1e-3), *batch)


def torch_step(model: TorchTranslator, batch: Batch) -> Step:
    cross_entropy = nn.CrossEntropyLoss(ignore_index=Vocabulary.PAD, label_smoothing=0.1)
    model.train()

    def loss(logits: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    return torch_training_step(model, loss, torch.optim.Adam(model.parameters(), 1e-3), *batch)


# --------------------------------------------------------------------------- measuring


def bench_step(config: BenchConfig, device: torch.device) -> Comparison:
    torch.manual_seed(config.seed)
    reference = torch_model(config).to(device)
    mine, yard = scratch_copy(reference), scratch_copy(reference)  # yard: the autograd yardstick's copy
    batch = random_batch(config, device, torch.Generator().manual_seed(config.seed))
    return compare_steps(
        "training step",
        scratch_step(mine, batch),
        torch_step(reference, batch),
        fresh_scratch=lambda: scratch_step(scratch_copy(torch_model(config).to(device)), batch),
        fresh_reference=lambda: torch_step(torch_model(config).to(device), batch),
        device=device,
        warmup=config.warmup,
        repeats=config.repeats,
        steps=config.steps,
        yardstick=autograd_step(
            yard, CrossEntropyLoss(ignore_index=Vocabulary.PAD, label_smoothing=0.1), Adam(yard, 1e-3), *batch
        ),
    )


def decode_speed(
    model: Transformer,
    src_ids: Tensor,
    src_mask: Tensor | None = None,
    max_len: int = 32,
    bos_id: int = 1,
    repeats: int = 3,
) -> dict[str, float]:
    """Greedy decoding of ``max_len`` tokens (no early stop), cached and not, in ``repeats`` alternating rounds.

    Returns the medians as target tokens per second for each path and their ratio:
    ``{"cached_tokens_per_s", "uncached_tokens_per_s", "speedup"}``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    paths = {
        name: partial(greedy_decode, model, src_ids, src_mask, bos_id, None, max_len, use_cache=name == "cached")
        for name in ("cached", "uncached")
    }
    times = alternate(paths, repeats, 1, src_ids.device)  # ms per decoding
    rate = {name: src_ids.shape[0] * max_len / (statistics.median(times[name]) / 1e3) for name in paths}
    return {
        "cached_tokens_per_s": rate["cached"],
        "uncached_tokens_per_s": rate["uncached"],
        "speedup": rate["cached"] / rate["uncached"],
    }


def bench_decoding(config: BenchConfig, device: torch.device) -> DecodeResult:
    torch.manual_seed(config.seed)
    model = scratch_copy(torch_model(config).to(device)).model
    generator = torch.Generator().manual_seed(config.seed + 1)
    src = torch.randint(
        len(Vocabulary.SPECIALS), config.vocab, (config.decode_batch, config.decode_len), generator=generator
    )
    src = src.to(device)
    rates = decode_speed(
        model, src, padding_mask(src, Vocabulary.PAD), config.decode_len, Vocabulary.BOS, config.decode_repeats
    )
    return DecodeResult(**rates)


def run(config: BenchConfig) -> tuple[Comparison, DecodeResult, dict[str, Any]]:
    """The translator's step and decoding, and (on the CPU, unless ``gpt_repeats`` is 0) the GPT's step and its
    batch-1 greedy sampling against the torch.nn twin's own cached decoder (:mod:`scratch_transformer.gpt_bench`)."""
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    gpt: dict[str, Any] = {}
    if config.gpt_repeats and device.type == "cpu":
        gpt_config = gpt_bench.GPTBenchConfig(threads=config.threads, repeats=config.gpt_repeats)
        gpt = {
            "gpt_training_step": gpt_bench.bench_step(gpt_config),
            "gpt_sampling": gpt_bench.bench_sampling(gpt_config),
        }
    return bench_step(config, device), bench_decoding(config, device), gpt


# --------------------------------------------------------------------------- command line


def format_results(config: BenchConfig, step: Comparison, decode: DecodeResult, gpt: dict[str, Any]) -> str:
    device = resolve_device(config.device)
    mib = 2.0**20
    return "\n".join(
        [
            f"scratch-transformer bench: d_model {config.d_model}, {config.layers}+{config.layers} layers, "
            f"{config.heads} heads, d_ff {config.d_ff}, {config.norm}-norm, {device}, {torch.get_num_threads()} "
            f"threads, torch {torch.__version__}",
            f"training step, batch {config.batch_size} (source <= {config.src_len}, target <= {config.tgt_len} "
            f"tokens), Adam; median of {config.repeats} rounds x {config.steps} steps, alternating, after "
            f"{config.warmup} warm-up steps",
            step_line(step),
            f"  peak MiB: scratch {step.scratch_peak_bytes / mib:.2f}, torch {step.torch_peak_bytes / mib:.2f}; "
            f"first-step losses differ by {step.first_loss_difference:.1e}",
            f"greedy decoding, {config.decode_batch} sentences of {config.decode_len} characters, "
            f"{config.decode_len} steps, median of {config.decode_repeats} alternating rounds",
            f"  KV cache {decode.cached_tokens_per_s:,.0f} tokens/s   re-compute {decode.uncached_tokens_per_s:,.0f} "
            f"tokens/s   speed-up {decode.speedup:.2f}x",
            *([] if not gpt else _gpt_lines(gpt["gpt_training_step"], gpt["gpt_sampling"])),
        ]
    )


def _gpt_lines(step: Comparison, sampling: gpt_bench.SampleResult) -> list[str]:
    return [
        "GPT (nanoGPT's baby shape, python -m scratch_transformer.gpt_bench): training step, AdamW",
        step_line(step),
        "  batch-1 greedy sampling of 256 characters",
        gpt_bench.versus_torch_line(sampling),
    ]


def build_parser() -> argparse.ArgumentParser:
    return bench_parser(
        "python -m scratch_transformer.bench",
        "Time a training step of the scratch Transformer against torch.nn, and the KV cache.",
        BenchConfig(),
        norm={"choices": ("pre", "post")},
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.heads > 0 and args.d_model % args.heads != 0:  # as train's check, before torch's MHA fails on it
        parser.error(f"d_model ({args.d_model}) must be divisible by heads ({args.heads})")
    config = config_from_args(BenchConfig(), args)
    step, decode, gpt = run(config)
    results = {"training_step": step, "decoding": decode, **gpt}
    return report(format_results(config, step, decode, gpt), config, results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
