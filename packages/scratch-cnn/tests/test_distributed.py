"""Data-parallel training of a small CNN on torch.distributed (gloo, 2 CPU processes) equals one process.

Two ranks with batch size B take the same optimizer steps as one process with batch size
2B over the same images and seed, also when the data does not fill the last global batch.
"""

from __future__ import annotations

from typing import Any

import torch

from scratch_cnn.models import lenet
from scratch_engine import CrossEntropyLoss, Engine, GradientDescent
from scratch_engine.tools.device import seed_everything
from scratch_engine.tools.distributed import DataParallel, ShardedDataLoader
from scratch_engine.tools.testing import assert_same_training, run_data_parallel

# 32: every global batch of 8 is full; 37: the last one has 5 (3 + 2); 33: it has 1 (rank 1's share is empty)
SIZES = (32, 37, 33)
PER_RANK_BATCH = 4


def train_cnn(batch_size: int, n: int, epochs: int = 2) -> dict[str, Any]:
    """A LeNet-style network on 8x8 images: no dropout, no batch norm, float64, SGD with momentum."""
    seed_everything(0)
    generator = torch.Generator().manual_seed(n)
    X = torch.randn(n, 1, 8, 8, generator=generator, dtype=torch.float64)
    y = (X[:, 0, :4].mean(dim=(1, 2)) > 0).long() + (X[:, 0, :, :4].mean(dim=(1, 2)) > 0).long()
    model = lenet(num_classes=3, image_size=8, channels=(3, 4), hidden=8, dropout=0.0)
    model.to(device="cpu", dtype=torch.float64)
    optimizer = GradientDescent(model, 0.05, momentum=0.9)
    # the callback averages the gradients over the ranks (in one process it changes nothing)
    engine = Engine(model, CrossEntropyLoss(), optimizer, progress=False, callbacks=[DataParallel()])
    engine.fit(ShardedDataLoader(X, y, batch_size=batch_size, seed=3), epochs=epochs)
    return {
        "state": {name: value.clone() for name, value in model.state_dict().items()},
        "history": engine.history.to_dict(),
    }


def train_each_size(batch_size: int) -> list[dict[str, Any]]:
    return [train_cnn(batch_size, n) for n in SIZES]


def test_two_processes_train_the_cnn_exactly_as_one_process_on_the_global_batches() -> None:
    rank0, rank1 = run_data_parallel(train_each_size, world_size=2, args=(PER_RANK_BATCH,), timeout=120)
    single = train_each_size(2 * PER_RANK_BATCH)
    for n, expected, got0, got1 in zip(SIZES, single, rank0, rank1, strict=True):
        assert_same_training(expected, [got0, got1], f"N={n}")  # epoch logs over every rank's samples
