r"""What attention costs as the sequence grows: counted, then measured.

    scratch-transformer attention-cost --out runs/scratch-transformer/attention-cost

Per layer, for one sequence of :math:`T` positions of width :math:`d` (feed-forward width :math:`4d`), the forward
pass's floating-point operations (a multiply-add counts two) are

.. math::
    \underbrace{4 \cdot 2 T d^2}_{Q, K, V, \text{output projections}}
    + \underbrace{2 \cdot 2 T^2 d}_{Q K^\top \text{ and } P V}
    + \underbrace{2 \cdot 2 T d \cdot 4d}_{\text{feed-forward}}
    = 24 T d^2 + 4 T^2 d,

and the backward costs about twice that. Everything but attention grows linearly in :math:`T`; attention
quadratically, so it overtakes the rest of the layer at :math:`4T^2 d = 24 T d^2`, :math:`T = 6d`. Its memory
grows the same way: the weights :math:`P`, :math:`H T^2` numbers per layer and sequence, are kept for the backward.
:func:`layer_flops` counts; :func:`measure` times one :class:`~scratch_transformer.layers.EncoderLayer` and its
attention core, forward and hand-written backward, at each length; :func:`plot_attention_cost` draws both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from scratch_engine.tools.benchmark import Step, time_per_step
from scratch_engine.tools.plots import new_figure, save_figure
from scratch_transformer.attention import ScaledDotProductAttention
from scratch_transformer.layers import EncoderLayer
from scratch_transformer.masks import causal_mask


def layer_flops(length: int, d_model: int) -> dict[str, float]:
    """The forward's floating-point operations of one layer on one sequence, by part."""
    t, d = float(length), float(d_model)
    return {"projections": 8 * t * d * d, "attention": 4 * t * t * d, "feed-forward": 16 * t * d * d}


@dataclass(frozen=True)
class Timing:
    length: int
    layer_ms: float  # one EncoderLayer, forward + backward
    attention_ms: float  # its attention core alone (softmax(QK^T/sqrt(d_k)) V), forward + backward
    weights_mib: float  # the attention weights P kept for the backward: H T^2 floats


def _best_ms(step: Step, repeats: int) -> float:
    return 1000.0 * min(time_per_step(step, 1, torch.device("cpu")) for _ in range(repeats))


@torch.no_grad()
def measure(lengths: list[int], d_model: int = 128, heads: int = 4, batch: int = 1, repeats: int = 7) -> list[Timing]:
    """Best-of-``repeats`` milliseconds of a causal :class:`EncoderLayer` and of its attention core at each length."""
    torch.manual_seed(0)
    layer = EncoderLayer(d_model, heads, 4 * d_model, activation="gelu", norm_first=True)
    core = ScaledDotProductAttention()
    timings = []
    for length in lengths:
        x = torch.randn(batch, length, d_model)
        q, k, v = (torch.randn(batch, heads, length, d_model // heads) for _ in range(3))
        mask = causal_mask(length)

        def layer_step(x: torch.Tensor = x, mask: torch.Tensor = mask) -> None:
            layer.backward(layer(x, mask))

        def core_step(q: torch.Tensor = q, k: torch.Tensor = k, v: torch.Tensor = v, mask: torch.Tensor = mask) -> None:
            core.backward(core(q, k, v, mask))

        for _ in range(2):  # warm-up: first-call allocations
            layer_step()
            core_step()
        layer_ms, core_ms = _best_ms(layer_step, repeats), _best_ms(core_step, repeats)
        layer.zero_grad()
        timings.append(Timing(length, layer_ms, core_ms, batch * heads * length * length * 4 / 2**20))
    return timings


def plot_attention_cost(lengths: list[int], d_model: int, timings: list[Timing], path: Path) -> Path:
    """Left: the counted FLOPs by part against :math:`T`; right: the measured milliseconds."""
    figure = new_figure(11.0, 4.2)
    counted = figure.add_subplot(1, 2, 1)
    parts = [layer_flops(length, d_model) for length in lengths]
    for name, colour in (("attention", "C3"), ("projections", "C0"), ("feed-forward", "C2")):
        counted.loglog(lengths, [p[name] for p in parts], "-o", color=colour, label=name, markersize=3)
    rest = [p["projections"] + p["feed-forward"] for p in parts]
    counted.loglog(lengths, rest, "--", color="grey", label="projections + feed-forward")
    counted.axvline(6 * d_model, color="grey", linestyle=":", label=f"T = 6d = {6 * d_model}")
    counted.set_xlabel("sequence length T")
    counted.set_ylabel("forward FLOPs per layer and sequence")
    counted.set_title(f"counted (d = {d_model}): attention ∝ T², the rest ∝ T")
    counted.grid(alpha=0.3, which="both")
    counted.legend(fontsize=8)
    measured = figure.add_subplot(1, 2, 2)
    measured.loglog(lengths, [t.layer_ms for t in timings], "-o", color="C1", label="whole layer", markersize=3)
    measured.loglog(
        lengths, [t.attention_ms for t in timings], "-o", color="C3", label="its attention core", markersize=3
    )
    measured.axvline(6 * d_model, color="grey", linestyle=":")
    measured.set_xlabel("sequence length T")
    measured.set_ylabel("ms, forward + backward (best of 7)")
    measured.set_title("measured: one pre-norm causal layer, this machine")
    measured.grid(alpha=0.3, which="both")
    measured.legend(fontsize=8)
    return save_figure(figure, path)
