r"""Vanishing gradients, measured: how much of :math:`\partial L/\partial h_t` reaches earlier time steps.

    scratch-rnn gradients --out runs/scratch-rnn/gradients

:func:`gradient_norms` runs the hand-written backprop through time of one untrained layer and
records the gradient's norm at every step; :func:`gradient_curves` measures the three
architectures at torch's initialisation and the gated two with the gate that keeps the old
state starting open; :func:`plot_gradient_norms` draws them on a log scale.
"""

from __future__ import annotations

from pathlib import Path

import torch

from scratch_engine.tools.plots import new_figure, save_figure
from scratch_rnn.charlm import ARCHITECTURES

KEEP_GATE = {"lstm": "forget", "gru": "update"}  # the gate that keeps the old state


@torch.no_grad()
def gradient_norms(
    arch: str,
    steps: int = 200,
    hidden: int = 128,
    vocab_size: int = 65,
    batch: int = 16,
    seed: int = 0,
    gate_bias: float = 0.0,
) -> list[float]:
    r"""``||dL/dh_t||`` for ``t = 0..steps-1`` of a 1-layer network at initialisation, mean over the batch.

    The input is random one-hot characters; the loss depends on the last hidden state only,
    :math:`L = \langle u, h_{T-1}\rangle` with a fixed random unit vector :math:`u` per
    sequence, so :math:`\delta h_{T-1} = u` and backprop through time gives
    :math:`\delta h_t` for every earlier :math:`t` (for the LSTM, through both :math:`h` and
    the cell state :math:`c`). Returns the norms normalised so that the last one is 1.

    ``gate_bias`` is added to the bias of the gate that keeps the old state: the LSTM's
    forget gate :math:`f` and the GRU's update gate :math:`z` (the vanilla RNN has none), so
    ``gate_bias=3`` starts them at :math:`\sigma(3) \approx 0.95`, "remember".
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = ARCHITECTURES[arch](vocab_size, hidden).to(dtype=torch.float64)  # float64: no underflow for ~300 steps
    weights = dict(layer.named_parameters())
    if arch in ("lstm", "gru"):  # rows H..2H: f in (i, f, g, o), z in (r, z, n)
        weights["bias_ih_l0"].data[hidden : 2 * hidden] += gate_bias
    ids = torch.randint(0, vocab_size, (steps, batch), generator=generator)
    x = torch.zeros(steps, batch, vocab_size, dtype=torch.float64).scatter_(2, ids.unsqueeze(2), 1.0)
    layer(x)
    cache = layer._caches[0]
    w_hh = weights["weight_hh_l0"].data
    u = torch.randn(batch, hidden, generator=generator, dtype=torch.float64)
    zeros = torch.zeros(batch, hidden, dtype=torch.float64)
    d_s = (u / u.norm(dim=1, keepdim=True), *(zeros,) * (layer.cell.state_size - 1))
    norms = [0.0] * steps
    for t in reversed(range(steps)):
        norms[t] = float(d_s[0].norm(dim=1).mean())
        _, _, d_s = layer.cell.step_backward(d_s, cache.steps[t], w_hh)
    return [n / norms[-1] for n in norms]


def gradient_curves(steps: int = 200, hidden: int = 128) -> dict[str, list[float]]:
    """:func:`gradient_norms` of each architecture, then of the LSTM and GRU with the keep gate at sigmoid(3) = 0.95."""
    norms = {arch: gradient_norms(arch, steps, hidden) for arch in ARCHITECTURES}
    for arch, gate in KEEP_GATE.items():
        norms[f"{arch}, {gate} bias +3"] = gradient_norms(arch, steps, hidden, gate_bias=3.0)
    return norms


def plot_gradient_norms(norms: dict[str, list[float]], path: Path) -> Path:
    """One line per entry of ``norms`` (label -> relative norms by ``t``), against the distance from the loss."""
    figure = new_figure(7.0, 4.2)
    axes = figure.add_subplot()
    for label, values in norms.items():
        distance = [len(values) - 1 - t for t in range(len(values))]
        floor = [max(v, 1e-300) for v in values]  # log scale: an underflow to 0 stays drawable
        colour = f"C{list(ARCHITECTURES).index(label.split(',')[0])}" if label.split(",")[0] in ARCHITECTURES else None
        axes.semilogy(distance, floor, label=label, color=colour, linestyle="-" if "," not in label else "--")
    axes.set_xlabel("time steps back from the loss, T-1-t")
    axes.set_ylabel(r"$\|\partial L/\partial h_t\|$ (relative)")
    axes.set_title("gradient reaching earlier hidden states, at initialisation")
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    return save_figure(figure, path)
