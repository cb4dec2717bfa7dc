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

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from scratch_engine.engine import Callback
from scratch_engine.module import Module
from scratch_engine.tools import runner
from scratch_engine.tools.config import NON_NEGATIVE_INT, POSITIVE_INT, option
from scratch_engine.tools.distributed import is_main_process, world_size
from scratch_engine.tools.files import write_text_atomic
from scratch_engine.tools.runner import Run, Task
from scratch_engine.tools.text import RowSample, TextConfig, TextData, read_splits, text_metrics
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


class Shakespeare(Task[CharLMConfig]):
    """A ``CharLM`` on Tiny Shakespeare (or ``--text``): validation loss in nats per character, and a sample."""

    name = "shakespeare"
    help = "Tiny Shakespeare (or --text FILE), next-character prediction"
    config = CharLMConfig()
    resumable = frozenset({"row_sample"})  # what is printed, not what is trained

    def callbacks(self, config: CharLMConfig, data: TextData, progress: bool) -> list[Callback]:
        if not (progress and config.row_sample and is_main_process()) or data.vocabulary is None:
            return []
        return [RowSample(sample, data.vocabulary, data.prompt, config.row_sample, config.temperature, config.seed)]

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

    def evaluate(self, run: Run[CharLMConfig]) -> dict[str, Any]:
        config, data, engine = run.config, run.data, run.engine
        history = engine.history
        val_losses = history["val_loss"] if history.rows else [math.nan]  # no row: no step was trained
        generator = torch.Generator().manual_seed(config.seed)
        model = cast(CharLM, run.model)
        generated = sample(
            model, data.vocabulary, data.prompt, config.sample_length, config.temperature, config.top_k, generator
        )
        tokens = engine.global_step * config.batch_size * config.seq_len  # per process
        metrics: dict[str, Any] = {
            "arch": config.arch,
            "tokens_per_second": tokens / max(engine.seconds, 1e-9),  # validation time included
            **text_metrics(data, val_losses, generated),
        }
        if "val_reference_loss" in history:  # the torch.nn twin's validation loss, beside ours at every row
            pairs = zip(val_losses, history["val_reference_loss"], strict=True)
            metrics["reference_max_val_loss_gap"] = max(abs(ours - theirs) for ours, theirs in pairs)
            metrics["note"] = "tokens_per_second includes the torch twin's steps"
        if run.out is not None and is_main_process():
            write_text_atomic(run.out / "sample.txt", generated + "\n")
        return metrics

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
