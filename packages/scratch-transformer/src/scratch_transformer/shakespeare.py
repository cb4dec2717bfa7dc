r"""The ``train shakespeare`` task: a character-level GPT on Tiny Shakespeare, measured as the RNN is.

    scratch-transformer train shakespeare --out runs/scratch-transformer/shakespeare
    scratch-transformer sample --checkpoint runs/scratch-transformer/shakespeare/checkpoint.pt --prompt "ROMEO:"

**The same text, the same split, the same unit.** The text, its character vocabulary and its
split (the first 90% trains, the last 10% validates) are the engine's
(:mod:`scratch_engine.tools.text`), the very ones ``scratch-rnn train shakespeare`` reads, and
the loss is the mean cross-entropy in nats per character: the two packages' validation losses
are measured on the same characters.

**Batches.** Training reads ``batch_size`` blocks of ``block_size`` characters at random places
in the text (:class:`RandomBlocks`, as nanoGPT samples them); the targets are the same blocks
shifted by one character. Validation reads the whole validation split once in windows of a block
(:func:`validation_blocks`), each scoring the characters it adds: by default the windows advance
by half a block, so every character is predicted with at least half a block of context before it,
as the RNN predicts each from all the text before it (its state carried through the split).
``--val-stride BLOCK_SIZE`` scores consecutive blocks instead, each character from the start of
its block: nanoGPT's estimate, which the first, context-poor positions of each block raise.

**Optimisation** as nanoGPT: AdamW (:math:`\beta_2 = 0.99` for its small batches) with weight
decay on the matrices only, a linear warm-up then a cosine down to ``--min-lr`` at the last
step, the gradients' norm clipped to 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from scratch_engine import Adam, AdamW, CrossEntropyLoss, DataLoader, Module, Optimizer
from scratch_engine.data import EpochBatches
from scratch_engine.tools import runner
from scratch_engine.tools.config import (
    NON_NEGATIVE,
    POSITIVE_INT,
    PROBABILITY,
    option,
)
from scratch_engine.tools.distributed import shard
from scratch_engine.tools.runner import Run
from scratch_engine.tools.text import TextConfig, TextData, TextTask, read_splits
from scratch_transformer.gpt import GPT, POSITIONS, GPTConfig, sample

if TYPE_CHECKING:  # torch.nn only for the twin, built on request
    from scratch_transformer.reference import TorchGPT

VAL_BATCH_SIZE = 64  # validation windows per forward
IGNORE = -100  # a validation target that is not scored (the cross-entropy's ignore_index)


class RandomBlocks(EpochBatches):
    """``(x, y)`` batches of ``batch_size`` blocks of ``block_size`` ids starting at random places; ``y`` is ``x``
    shifted by one.

    An epoch is ``len(ids) // (batch_size * block_size)`` batches: as many characters as the text
    has, each read once on average. The starts of epoch ``e`` are drawn from a generator seeded
    with ``seed + e``, so batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)`` and a
    resumed run reads the very batches it would have. Data-parallel: ``batch_size`` is per rank,
    and rank ``r`` takes its share of the draws of one process with ``batch_size * world_size``.
    """

    def __init__(
        self,
        ids: Tensor,
        batch_size: int,
        block_size: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if ids.dim() != 1 or len(ids) < block_size + 1:
            raise ValueError(f"RandomBlocks needs 1-D ids longer than block_size ({block_size}), got {len(ids)}")
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size and block_size must be positive, got {batch_size} and {block_size}")
        self.rank, self.world_size = shard(rank, world_size, seed, True)
        self.windows = ids.unfold(0, block_size + 1, 1)  # (N - block_size, block_size + 1): views, no copy
        self.batch_size, self.block_size, self.seed = batch_size, block_size, seed
        self.batches = max(1, len(ids) // (batch_size * self.world_size * block_size))

    def __len__(self) -> int:
        return self.batches

    def starts(self, epoch: int) -> Tensor:
        """``(len(self), batch_size)``: where each block of each batch of ``epoch`` starts, for this rank."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        every = torch.randint(
            0, len(self.windows), (self.batches, self.batch_size * self.world_size), generator=generator
        )
        return every[:, self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.next_epoch()
        starts = self.starts(epoch).to(self.windows.device)
        for i in range(start, self.batches):
            blocks = self.windows[starts[i]]  # (B, block_size + 1)
            yield blocks[:, :-1], blocks[:, 1:]


def validation_blocks(ids: Tensor, block_size: int, stride: int | None = None) -> DataLoader:
    """Windows of ``block_size`` ids every ``stride`` ids (default: the block, consecutive blocks), in order,
    ``VAL_BATCH_SIZE`` a batch; each window scores only its last ``stride`` targets, the others are ``IGNORE``.

    With ``stride = block_size`` every character is scored from the start of its block (nanoGPT's estimate);
    with a smaller stride every scored character has at least ``block_size - stride`` characters of context
    (the first ``block_size - stride`` characters of the split are not scored). The text's last, partial
    window is left out.
    """
    stride = block_size if stride is None else stride
    if not 1 <= stride <= block_size:
        raise ValueError(f"the validation stride must be in [1, block_size={block_size}], got {stride}")
    if len(ids) < block_size + 1:
        raise ValueError(f"a validation split of {len(ids)} characters is shorter than one block of {block_size} + 1")
    x = ids[:-1].unfold(0, block_size, stride)  # (W, block_size): window w starts at w * stride
    y = ids[1:].unfold(0, block_size, stride).clone()
    y[:, : block_size - stride] = IGNORE  # scored by the window before (or, in the first, not at all)
    return DataLoader(x, y, batch_size=VAL_BATCH_SIZE, shuffle=False)


@dataclass
class GPTTrainConfig(TextConfig):
    """Every setting of ``scratch-transformer train shakespeare``; the defaults are the README's default run.

    The model is nanoGPT's CPU "baby" shape (4 layers, 4 heads, width 128) with twice its context and a
    larger batch; the optimisation is its recipe at twice its peak rate. 4,200 steps, about 9 minutes on 2
    CPU cores: validation 1.54 nats/char (README).
    """

    epochs: int | None = None
    max_steps: int | None = 4200
    eval_every: int | None = 500
    batch_size: int = 16
    learning_rate: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.1
    schedule: str = "cosine"
    warmup_steps: int = 200
    clip_grad_norm: float | None = 1.0
    min_learning_rate: float = option(
        1e-4, "where the cosine ends, at the last step", check=NON_NEGATIVE, flags=("--min-lr",), group="optimisation"
    )
    beta2: float = option(0.99, "Adam's second-moment decay", check=PROBABILITY, group="optimisation")
    block_size: int = option(128, "characters of context", check=POSITIVE_INT, group="model")
    layers: int = option(4, "transformer blocks", check=POSITIVE_INT, group="model")
    heads: int = option(4, "attention heads per block", check=POSITIVE_INT, group="model")
    d_model: int = option(128, "model width (a multiple of --heads)", check=POSITIVE_INT, group="model")
    dropout: float = option(0.0, "dropout everywhere (0 with --reference)", check=PROBABILITY, group="model")
    bias: bool = option(False, "biases in the projections, the feed-forward and the norms", group="model")
    tie_weights: bool = option(True, "the output projection is the token embedding", group="model")
    positions: str = option("learned", "position embeddings", choices=POSITIONS, group="model")
    val_stride: int | None = option(
        None,
        "validation windows start every STRIDE characters and score their last STRIDE (none: half a block, so each "
        "has half a block of context or more; --block-size: consecutive blocks, nanoGPT's estimate)",
        check=POSITIVE_INT,
        group="data",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.val_stride is not None and self.val_stride > self.block_size:
            raise ValueError(f"--val-stride ({self.val_stride}) is longer than --block-size ({self.block_size})")
        if self.min_learning_rate > self.learning_rate:
            raise ValueError(f"--min-lr ({self.min_learning_rate}) is above --lr ({self.learning_rate})")

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            vocab_size,
            self.block_size,
            self.layers,
            self.heads,
            self.d_model,
            self.dropout,
            self.bias,
            self.tie_weights,
            self.positions,
        )


class Shakespeare(TextTask[GPTTrainConfig]):
    """A GPT on Tiny Shakespeare (or ``--text``): validation loss in nats per character, and a sample."""

    name = "shakespeare"
    help = "a decoder-only GPT on Tiny Shakespeare (or --text FILE), next-character prediction"
    config = GPTTrainConfig()
    sampler = staticmethod(sample)

    def load_data(self, config: GPTTrainConfig, device: torch.device) -> TextData:
        train_ids, val_ids, data = read_splits(config, device)
        for split, ids in (("training", train_ids), ("validation", val_ids)):
            if len(ids) < config.block_size + 1:
                raise ValueError(
                    f"the {split} split ({len(ids):,} characters) is shorter than one block of --block-size "
                    f"{config.block_size} + 1: use a smaller --block-size or a longer text"
                )
        train = RandomBlocks(train_ids, config.batch_size, config.block_size, seed=config.seed)
        stride = config.val_stride if config.val_stride is not None else max(1, config.block_size // 2)
        return replace(data, train=train, val=validation_blocks(val_ids, config.block_size, stride))

    def build_model(self, config: GPTTrainConfig, data: TextData) -> GPT:
        assert data.vocabulary is not None
        return GPT(config.model_config(len(data.vocabulary)))

    def loss(self, config: GPTTrainConfig, data: TextData) -> CrossEntropyLoss:
        return CrossEntropyLoss(ignore_index=IGNORE)  # only validation targets are ever ignored

    def make_optimizer(self, config: GPTTrainConfig, model: Module) -> Optimizer:
        """AdamW (or Adam) with ``beta2``, decaying the matrices only (``decay_vectors=False``), as GPT-2 does."""
        if config.optimizer not in ("adam", "adamw"):
            return super().make_optimizer(config, model)
        kind = AdamW if config.optimizer == "adamw" else Adam
        betas = (0.9, config.beta2)
        return kind(model, config.learning_rate, betas=betas, weight_decay=config.weight_decay, decay_vectors=False)

    def torch_twin(self, config: GPTTrainConfig, data: TextData, model: Module) -> TorchGPT:
        from scratch_transformer.reference import torch_gpt_twin  # torch.nn only on request

        return torch_gpt_twin(cast(GPT, model))

    def characters_per_step(self, config: GPTTrainConfig) -> int:
        return config.batch_size * config.block_size

    def own_metrics(self, run: Run[GPTTrainConfig]) -> dict[str, Any]:
        model = cast(GPT, run.model)
        return {
            "arch": "gpt",
            "characters_seen": run.engine.global_step * self.characters_per_step(run.config),  # per process
            "parameters_without_positions": model.num_parameters_without_positions(),
        }

    def checkpoint_extra(self, run: Run[GPTTrainConfig]) -> dict[str, Any]:
        """The vocabulary, the model's config and the prompt: what ``scratch-transformer sample`` rebuilds it from."""
        model = cast(GPT, run.model)
        return {
            "gpt": {
                "vocabulary": run.data.vocabulary.to_dict(),
                "config": model.config_dict(),
                "prompt": run.data.prompt,
            }
        }


SHAKESPEARE = Shakespeare()


def run(
    config: GPTTrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool | str | Path = False,
) -> dict[str, Any]:
    """Train the GPT; returns (and, given ``out_dir``, writes) the metrics, ``sample.txt`` and the checkpoint.

    A missing data set raises :class:`scratch_engine.tools.datasets.DataNotFoundError` before any training.
    """
    return runner.run(SHAKESPEARE, config, out_dir, progress, resume)
