"""Character-level Shakespeare as a task of ``scratch-rnn train``: the config, the data, the model, the results.

    scratch-rnn train shakespeare --arch lstm --out runs/scratch-rnn/lstm
    scratch-rnn train shakespeare --text my.txt --hidden 128 --max-minutes 5

The text (Tiny Shakespeare, or any UTF-8 file with ``--text``) is split once: the first 90%
trains, the last 10% validates. Training reads it as ``batch_size`` contiguous streams in
``seq_len`` chunks (:class:`~scratch_rnn.charlm.CharStreams`), the model's state carried from
chunk to chunk. An epoch is one pass over the text; the state starts from zeros at each. Every
``eval_every`` steps the run validates, from the zero state, and then carries on with the state
it had. The shared runner (:func:`scratch_engine.tools.runner.run`) does the rest: the budget
(``epochs`` passes, ``max_steps``, ``max_minutes`` checked after every step), checkpoints,
``--resume``, the ``torch.nn`` twin, ``metrics.json`` and ``loss.png``. This task adds a
sample of the trained model (``sample.txt``) and what ``scratch-rnn sample`` needs to the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from scratch_engine.module import Module
from scratch_engine.tools import runner
from scratch_engine.tools.config import NON_NEGATIVE_INT, POSITIVE_INT, option
from scratch_engine.tools.distributed import world_size
from scratch_engine.tools.runner import Run
from scratch_engine.tools.text import TextConfig, TextData, TextTask, read_splits
from scratch_rnn.charlm import LAYERS, CharLM, CharStreams, sample

if TYPE_CHECKING:  # torch.nn only for the twin, built on request
    from scratch_rnn.reference import TorchCharLM


@dataclass
class CompareConfig(TextConfig):
    """Every setting of a run but the architecture: what ``scratch-rnn compare`` gives all three.

    The defaults are the acceptance configuration: a 2 x 256 network on one-hot input, batch
    32 x 100 characters, Adam 2e-3, the gradients' norm clipped to 5, a 20-minute budget.
    """

    epochs: int | None = 20  # passes over the text: an upper bound, the time budget usually ends the run first
    max_minutes: float | None = 20.0
    eval_every: int | None = 200
    batch_size: int = 32
    learning_rate: float = 2e-3
    clip_grad_norm: float | None = 5.0
    hidden: int = option(256, "units per recurrent layer", check=POSITIVE_INT, group="model")
    layers: int = option(2, "stacked recurrent layers", check=POSITIVE_INT, group="model")
    embedding: int = option(0, "embedding width; 0: one-hot input", check=NON_NEGATIVE_INT, group="model")
    seq_len: int = option(
        100, "characters per chunk: how far back the gradient flows", check=POSITIVE_INT, group="data"
    )


@dataclass
class CharLMConfig(CompareConfig):
    """A run: the settings of :class:`CompareConfig` and the architecture."""

    arch: str = option(
        "lstm", "the recurrent layer (rnn-relu: the vanilla RNN with ReLU)", choices=tuple(LAYERS), group="model"
    )


class Shakespeare(TextTask[CharLMConfig]):
    """A ``CharLM`` on Tiny Shakespeare (or ``--text``): validation loss in nats per character, and a sample."""

    name = "shakespeare"
    help = "Tiny Shakespeare (or --text FILE), next-character prediction"
    config = CharLMConfig()
    sampler = staticmethod(sample)

    def load_data(self, config: CharLMConfig, device: torch.device) -> TextData:
        train_ids, val_ids, data = read_splits(config, device)
        check_splits_fit(len(train_ids), len(val_ids), config.batch_size, config.seq_len)
        train = CharStreams(train_ids, config.batch_size, config.seq_len, random_offset=True, seed=config.seed)
        return replace(data, train=train, val=CharStreams(val_ids, config.batch_size, config.seq_len))

    def build_model(self, config: CharLMConfig, data: TextData) -> CharLM:
        assert data.vocabulary is not None
        return CharLM(len(data.vocabulary), config.arch, config.hidden, config.layers, config.embedding)

    def torch_twin(self, config: CharLMConfig, data: TextData, model: Module) -> TorchCharLM:
        from scratch_rnn.reference import TorchCharLM  # torch.nn only on request

        return TorchCharLM.from_scratch(cast(CharLM, model))  # ours: build_model made it

    def characters_per_step(self, config: CharLMConfig) -> int:
        return config.batch_size * config.seq_len

    def own_metrics(self, run: Run[CharLMConfig]) -> dict[str, Any]:
        return {"arch": run.config.arch}

    def checkpoint_extra(self, run: Run[CharLMConfig]) -> dict[str, Any]:
        """The vocabulary, the model's sizes and the prompt: what ``scratch-rnn sample`` rebuilds the model from."""
        model = cast(CharLM, run.model)
        return {"vocabulary": run.data.vocabulary.to_dict(), "charlm": model.config(), "prompt": run.data.prompt}


SHAKESPEARE = Shakespeare()


def run(
    config: CharLMConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool | str | Path = False,
) -> dict[str, Any]:
    """Train a ``CharLM``; returns (and, given ``out_dir``, writes) the metrics, ``sample.txt`` and the checkpoint.

    A missing data set raises :class:`scratch_engine.tools.datasets.DataNotFoundError` before any training.
    """
    return runner.run(SHAKESPEARE, config, out_dir, progress, resume)


def check_splits_fit(train_size: int, val_size: int, batch_size: int, seq_len: int) -> None:
    """A ``ValueError`` naming the split, its size and the sizes that fit, where :class:`CharStreams` would refuse it.

    The rule is :meth:`CharStreams.max_batch_size`'s (the training split reads at a random offset).
    """
    world = world_size()
    splits = [("training", "the first 90%", train_size, True), ("validation", "the last 10%", val_size, False)]

    def longest_chunk(size: int, offset: bool) -> int:  # with one stream per process
        return size // world // 2 if offset else size // world - 1

    for split, where, size, offset in splits:
        if CharStreams.max_batch_size(size, seq_len, offset, world) >= batch_size:
            continue
        # both splits must fit
        fits = min(CharStreams.max_batch_size(n, seq_len, o, world) for _, _, n, o in splits)
        longest = min(longest_chunk(n, o) for _, _, n, o in splits)
        if fits >= 1:
            hint = f"--batch-size {fits} or less fits with --seq-len {seq_len}"
        else:
            hint = f"with --batch-size 1, --seq-len {longest} or less fits" if longest >= 1 else "use a longer text"
        raise ValueError(
            f"the {split} split ({where} of the text, {size:,} characters) is too short for --batch-size "
            f"{batch_size} and --seq-len {seq_len}: {hint}"
        )
