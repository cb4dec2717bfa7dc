"""Which English characters each French character looked at: cross-attention weights and their heat map."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from scratch_transformer.data import Vocabulary, normalize
from scratch_transformer.translator import Translator


def attention_map(model: Translator, english: str, french: str, src_vocab: Vocabulary, tgt_vocab: Vocabulary) -> Tensor:
    """The last decoder layer's cross-attention ``(H, len(french) + 1, len(english))`` for one translated pair.

    Row ``i`` is what the decoder looked at to produce output character ``i`` (the last row produced ``<eos>``).
    """
    transformer = model.model
    device = next(iter(transformer.parameters())).data.device
    src = torch.tensor([src_vocab.ids(normalize(english)) or [Vocabulary.UNK]], device=device)
    tgt = torch.tensor([tgt_vocab.ids(french, bos=True)], device=device)
    return transformer.cross_attention_weights(src, tgt)[-1][0].cpu()


def plot_attention(weights: Tensor, english: str, french: str, path: str | Path, per_head: bool = True) -> Path:
    """A heat map of ``weights (H, T_out, T_in)``: one panel per head and their mean (``per_head``) or the mean only."""
    from scratch_engine.tools.plots import new_figure, save_figure

    panels = [(f"head {h + 1}", weights[h]) for h in range(weights.shape[0])] if per_head else []
    panels.append(("mean over heads", weights.mean(dim=0)))
    columns = [*english]
    rows = [*french, "<eos>"]
    size = 0.22
    width = max(3.0, size * len(columns) + 1.5)
    height = max(3.0, size * len(rows) + 1.2)
    figure = new_figure(width * len(panels), height)
    for k, (title, w) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        axes.imshow(w.float().numpy(), cmap="viridis", vmin=0.0, aspect="auto")
        axes.set_xticks(range(len(columns)), [c if c != " " else "␣" for c in columns], fontsize=7)
        axes.set_yticks(range(len(rows)), [c if c != " " else "␣" for c in rows], fontsize=7)
        axes.set_xlabel("English (source)")
        if k == 0:
            axes.set_ylabel("French (output)")
        axes.set_title(title, fontsize=9)
    # a literal "$" would start matplotlib's mathtext ("$5 or $6" renders as math or fails to draw)
    title = f"cross-attention, last decoder layer: {english} → {french}".replace("$", r"\$")
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)
