"""Trained models from their checkpoints: a translator (``train eng-fra``) or a GPT (``train shakespeare``).

The run's ``checkpoint.pt`` is the engine's (:mod:`scratch_engine.tools.checkpoint`: weights,
optimizer, schedule, position, history, random state, for ``--resume``). What translating needs
besides the weights, :func:`translator_extra`, is saved beside them under ``extra["translator"]``;
:func:`load_translator` reads both back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scratch_engine import Module
from scratch_engine.tools.checkpoint import build_to_fit, read_checkpoint
from scratch_engine.tools.device import resolve_device
from scratch_engine.tools.text import Vocabulary as CharacterVocabulary
from scratch_engine.tools.text import saved_prompt
from scratch_transformer.data import EngFra, Vocabulary
from scratch_transformer.gpt import GPT, GPTConfig
from scratch_transformer.translator import MODEL_KEYS, Translator, build_translator

CHECKPOINT_KEY = "translator"  # this package's entry in the checkpoint's extra


def translator_extra(model: Module, data: EngFra, config: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`load_translator` needs besides ``model``'s weights: the vocabularies, the config, the positions."""
    if not isinstance(model, Translator):
        raise TypeError(f"a translation checkpoint holds a Translator, got a {type(model).__name__}")
    return {
        CHECKPOINT_KEY: {
            "src_vocab": data.src_vocab.to_dict(),
            "tgt_vocab": data.tgt_vocab.to_dict(),
            "config": dict(config),
            "max_len": model.model.src_pos.max_len,
        }
    }


def load_translator(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Translator, Vocabulary, Vocabulary, dict[str, Any]]:
    """The model (eval mode), the source and target vocabularies and the config of a ``train`` checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = read_checkpoint(path)
    extra = state.get("extra", {}).get(CHECKPOINT_KEY)
    if not isinstance(extra, dict):
        raise ValueError(f"{path} is not a scratch-transformer translation checkpoint (no {CHECKPOINT_KEY!r} entry)")
    missing = [key for key in ("src_vocab", "tgt_vocab", "config") if key not in extra]
    missing += [] if "model" in state else ["model"]
    if not missing and isinstance(extra["config"], dict):
        missing = [f"config.{key}" for key in MODEL_KEYS if key not in extra["config"]]
    if missing:
        raise ValueError(
            f"{path} is not a complete scratch-transformer checkpoint: missing {', '.join(map(repr, missing))}"
        )
    src_vocab, tgt_vocab = Vocabulary.from_dict(extra["src_vocab"]), Vocabulary.from_dict(extra["tgt_vocab"])
    config = extra["config"]
    max_len = extra.get("max_len", 512)
    model = build_to_fit(
        lambda: build_translator(config, len(src_vocab), len(tgt_vocab), max_len), state["model"], path
    )
    model.load_state_dict(state["model"])
    model.to(device=resolve_device(device))
    model.eval()
    return model, src_vocab, tgt_vocab, config


GPT_KEY = "gpt"  # a ``train shakespeare`` checkpoint's entry in the extra


def load_gpt(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, CharacterVocabulary, str]:
    """The GPT of a ``train shakespeare`` checkpoint (eval mode, its training dtype), its vocabulary and prompt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = read_checkpoint(path)
    extra = state.get("extra", {}).get(GPT_KEY)
    if not isinstance(extra, dict):
        raise ValueError(f"{path} is not a scratch-transformer GPT checkpoint (no {GPT_KEY!r} entry)")
    weights = state.get("model")
    if not isinstance(weights, dict) or not isinstance(extra.get("config"), dict) or "vocabulary" not in extra:
        raise ValueError(f"{path} is not a complete scratch-transformer GPT checkpoint (model, config, vocabulary)")
    vocabulary = CharacterVocabulary.from_dict(extra["vocabulary"])
    try:
        config = GPTConfig(**extra["config"])
    except TypeError as error:  # an unknown or missing entry
        raise ValueError(f"{path} holds a GPT config this version cannot read: {error}") from None
    model = build_to_fit(lambda: GPT(config), weights, path)
    model.to(device=resolve_device(device), dtype=weights["token_embedding.weight"].dtype)
    model.load_state_dict(weights)
    model.eval()
    return model, vocabulary, saved_prompt(extra.get("prompt"), vocabulary)
