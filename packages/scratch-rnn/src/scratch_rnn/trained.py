"""A trained model back from its checkpoint, to sample from: ``scratch-rnn sample --checkpoint PATH``.

A ``train shakespeare`` checkpoint holds the weights and, in its ``extra``, what using them
needs: the vocabulary (``Vocabulary.to_dict()``), the model's sizes (``CharLM.config()``)
and the prompt the run sampled with. All plain data: ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scratch_engine.tools.checkpoint import build_to_fit, read_checkpoint
from scratch_engine.tools.text import Vocabulary, saved_prompt
from scratch_rnn.charlm import CharLM


def load_model(path: str | Path) -> tuple[CharLM, Vocabulary, dict[str, Any]]:
    """The trained model (in its training dtype, on the CPU), its vocabulary and settings (``arch``, ``prompt``...)."""
    state = read_checkpoint(path)
    extra, weights = _dict(state.get("extra")), _dict(state.get("model"))
    if "vocabulary" in extra:
        vocabulary = Vocabulary.from_dict(extra["vocabulary"])
        settings = {**_dict(extra.get("charlm")), "prompt": extra.get("prompt")}
    elif "vocab" in extra:  # written before the engine's checkpoints (#17): the characters and the run's config
        vocabulary, settings = Vocabulary(extra["vocab"]), _dict(extra.get("config"))
    else:
        raise ValueError(f"{path} is not a scratch-rnn language-model checkpoint (no vocabulary)")
    missing = [repr(key) for key in ("arch", "hidden", "layers") if key not in settings]
    if "head.weight" not in weights:
        missing.append("'model'")
    if missing:
        raise ValueError(f"{path} is not a complete scratch-rnn checkpoint (missing {', '.join(missing)})")
    arch, hidden, layers, embedding = (
        settings["arch"],
        settings["hidden"],
        settings["layers"],
        settings.get("embedding", 0),
    )
    model = build_to_fit(lambda: CharLM(len(vocabulary), arch, hidden, layers, embedding), weights, path)
    model.to(dtype=weights["head.weight"].dtype)  # a float64 (reference) run's weights stay float64
    model.load_state_dict(weights)
    return model, vocabulary, settings


def default_prompt(settings: dict[str, Any], vocabulary: Vocabulary) -> str:
    """``sample``'s prompt when none is given: the one the training run sampled with (``ROMEO:`` for
    Shakespeare, else the text's first character) where the vocabulary has its characters (an older
    checkpoint records ``ROMEO:`` for any text), else the vocabulary's first character."""
    return saved_prompt(settings.get("prompt"), vocabulary)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
