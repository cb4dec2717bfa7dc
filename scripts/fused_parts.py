"""Where the GPT step's gap to torch.nn lies: our forward, with one part at a time done by torch's fused kernel.

    python scripts/fused_parts.py                 # nanoGPT's baby shape, gpt_bench's batch, 2 threads
    python scripts/fused_parts.py --threads 1 --rounds 31

The hand-written GPT computes every layer with plain tensor operations: exact GELU in three passes over its
``(B, T, 4d)`` input (the scale, ``erfc``, the product), a layer norm in about eight over ``(B, T, d)``, the
attention core with its ``(B, H, T, T)`` scores made in full and about eight passes over them (the mask, the
maximum, the shift, ``exp2``, the sum, the division). Its torch.nn twin calls one fused kernel for each:
``F.gelu``, ``F.layer_norm``, ``F.scaled_dot_product_attention``. This script times our forward as it is (no
cache, no gradient), then with each of those three replaced by torch's kernel, then all three, and the twin's
forward, in alternating rounds in one process, medians. It first checks that every variant gives our logits.

Measurement only: a swapped model is not ours any more (its backward would not run), and the swap lasts only
while a variant is timed. Why it matters: #21 and #22 ask for a training step at most 1.0x the twin's.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F  # the reference kernels being measured, never used to train
from torch import Tensor

from scratch_engine.activations import GELU
from scratch_engine.module import Module, no_cache
from scratch_engine.tools.benchmark import alternate
from scratch_transformer.attention import ScaledDotProductAttention
from scratch_transformer.gpt import GPT, GPTConfig
from scratch_transformer.gpt_bench import GPTBenchConfig
from scratch_transformer.layernorm import LayerNorm
from scratch_transformer.reference import torch_gpt_twin


def _gelu(self: GELU, x: Tensor) -> Tensor:
    return F.gelu(x)


def _layer_norm(self: LayerNorm, x: Tensor) -> Tensor:
    weight = None if self.weight is None else self.weight.data
    bias = None if self.bias is None else self.bias.data
    return F.layer_norm(x, (self.normalized_shape,), weight, bias, self.eps)


def _attention(self: ScaledDotProductAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # a boolean mask: True may attend, as ours


FUSED: dict[str, tuple[type[Module], Callable[..., Tensor]]] = {
    "GELU": (GELU, _gelu),
    "LayerNorm": (LayerNorm, _layer_norm),
    "attention core": (ScaledDotProductAttention, _attention),
}


@contextmanager
def fused(names: Sequence[str]) -> Iterator[None]:
    """Within the block, the named parts' ``forward`` is torch's fused kernel; the layers' own after it."""
    saved = {name: FUSED[name][0].forward for name in names}
    try:
        for name in names:
            cls, kernel = FUSED[name]
            cls.forward = kernel  # type: ignore[method-assign]
        yield
    finally:
        for name, forward in saved.items():
            FUSED[name][0].forward = forward  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds (default 21)")
    parser.add_argument("--steps", type=int, default=5, help="forwards timed in a row per side and round (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = GPTBenchConfig()
    torch.manual_seed(config.seed)
    model = GPT(GPTConfig(config.vocab, config.block_size, config.layers, config.heads, config.d_model))
    twin = torch_gpt_twin(model)
    generator = torch.Generator().manual_seed(config.seed)
    ids = torch.randint(0, config.vocab, (config.batch_size, config.block_size), generator=generator)

    def ours(names: Sequence[str]) -> Callable[[], Any]:
        def forward() -> Tensor:
            with torch.no_grad(), no_cache(), fused(names):
                return model(ids)

        return forward

    def theirs() -> Tensor:
        with torch.no_grad():
            return twin(ids)

    sides: dict[str, Callable[[], Any]] = {"ours": ours(())}
    sides |= {f"ours, {name} fused": ours((name,)) for name in FUSED}
    sides |= {"ours, all three fused": ours(tuple(FUSED)), "torch.nn twin": theirs}
    logits = sides["ours"]()
    for name, side in sides.items():  # the same model in every variant, or the timings compare nothing
        if not torch.allclose(side(), logits, rtol=1e-4, atol=1e-4):
            raise SystemExit(f"fused_parts: {name} gives other logits than ours; nothing to compare")
    times = alternate(sides, args.rounds, args.steps, torch.device("cpu"))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base, twin_ms = medians["ours"], medians["torch.nn twin"]
    print(
        f"GPT forward (no cache, no gradient), {config.layers} layers, d {config.d_model}, batch {config.batch_size} x "
        f"{config.block_size}, {args.threads} threads, medians of {args.rounds} alternating rounds x {args.steps}:"
    )
    for name, ms in medians.items():
        print(f"  {name:28s} {ms:7.2f} ms   {ms - base:+6.2f} ms against ours   {ms / twin_ms:5.2f}x the twin's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
