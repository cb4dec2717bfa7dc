"""How well a translator does on held-out sentences: the test CER and exact match, during a run or later.

:func:`evaluate_translations` decodes every distinct English sentence of a split and scores
the corpus character error rate against the closest of its reference translations
(:func:`~scratch_transformer.metrics.corpus_character_error_rate`) and the exact-match rate.
:func:`evaluate_checkpoint` does the same for a saved run (``scratch-transformer evaluate``),
on the test split rebuilt from the checkpoint's config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scratch_transformer.checkpoint import load_translator
from scratch_transformer.data import EngFra, load_eng_fra
from scratch_transformer.metrics import corpus_character_error_rate, exact_match_rate
from scratch_transformer.translating import translate
from scratch_transformer.translator import Translator


def evaluate_translations(
    model: Translator,
    data: EngFra,
    split: str = "test",
    limit: int | None = None,
    beam: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Decode each distinct English sentence of ``split`` (the first ``limit``); corpus CER and exact match.

    Returns ``cer``, ``exact_match``, ``sentences`` and the ``english``, ``hypotheses`` and
    ``references`` themselves. ``progress``: report the decoding on stderr as it goes.
    """
    references = data.references(split)
    english = list(references)[:limit]
    # a character only the split has is part of the task: <unk>, scored by the CER, no warning
    hypotheses = translate(
        model, english, data.src_vocab, data.tgt_vocab, beam=beam, warn_unknown=False, progress=progress
    )
    refs = [references[e] for e in english]
    return {
        "cer": corpus_character_error_rate(hypotheses, refs),
        "exact_match": exact_match_rate(hypotheses, refs),
        "sentences": len(english),
        "english": english,
        "hypotheses": hypotheses,
        "references": refs,
    }


def evaluate_checkpoint(
    path: str | Path,
    *,
    beam: int = 1,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    data_dir: str | None = None,
    pairs: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The test CER and exact match of a ``train`` checkpoint, decoded again (greedy or ``beam``).

    The test split is rebuilt from the pairs and the length filter saved with the checkpoint
    (``data_dir`` or ``pairs`` say where the file is now); its vocabularies must be the
    checkpoint's. ``progress``: report the decoding on stderr.
    """
    model, src_vocab, tgt_vocab, saved = load_translator(path, device)
    data = load_eng_fra(
        pairs or saved.get("pairs"),
        data_dir or saved.get("data_dir"),
        saved.get("download"),
        saved.get("max_src_len"),
    )
    if data.src_vocab != src_vocab or data.tgt_vocab != tgt_vocab:
        raise ValueError(f"the pairs found give other character vocabularies than {path} was trained on")
    test = evaluate_translations(model, data, "test", limit, beam, progress)
    return {key: test[key] for key in ("cer", "exact_match", "sentences")} | {
        "decoding": "greedy" if beam == 1 else f"beam {beam}"
    }


def spread(n: int, k: int, first: int = 0) -> list[int]:
    """``k`` indices spread evenly over ``first .. n - 1`` (the test sentences come shortest first)."""
    if n <= first or k < 1:
        return []
    step = max((n - first) / k, 1.0)
    return sorted({first + int(j * step) for j in range(k) if first + int(j * step) < n})


def translation_samples(test: dict[str, Any], count: int) -> str:
    """``count`` translations of :func:`evaluate_translations`, spread over the lengths, with their references."""
    return "\n".join(
        f"{test['english'][i]}\n  -> {test['hypotheses'][i]}\n  reference: {' | '.join(test['references'][i])}\n"
        for i in spread(test["sentences"], count)
    )
