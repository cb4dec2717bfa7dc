"""Data-parallel training of the MLP on torch.distributed (gloo, 2 CPU processes) equals one process.

Two ranks with batch size B take, step for step, the same optimizer steps as one process
with batch size 2B over the same data and seed: the engine's ShardedDataLoader splits
each global batch between the ranks and the hand-written all-reduce averages their
gradients, weighted by how many samples each rank held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from scratch_engine import Adam, CrossEntropyLoss, Engine
from scratch_engine.tools.device import seed_everything
from scratch_engine.tools.distributed import DataParallel, ShardedDataLoader, is_distributed
from scratch_engine.tools.testing import assert_same_training, run_data_parallel
from scratch_mlp.model import MLP

# 64: every global batch of 16 is full; 69: the last one has 5 (3 + 2); 65: it has 1 (rank 1's share is empty)
SIZES = (64, 69, 65)
PER_RANK_BATCH = 8


def train_mlp(batch_size: int, n: int, epochs: int = 3) -> dict[str, Any]:
    """Adam with gradient clipping (so the clipped norm must be the global one) in float64."""
    seed_everything(0)
    generator = torch.Generator().manual_seed(n)
    X = torch.randn(n, 5, generator=generator, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    model = MLP.from_sizes([5, 16, 16, 3]).to(device="cpu", dtype=torch.float64)
    callbacks = [DataParallel()] if is_distributed() else []
    engine = Engine(
        model, CrossEntropyLoss(), Adam(model, 0.01), clip_grad_norm=0.5, progress=False, callbacks=callbacks
    )
    engine.fit(ShardedDataLoader(X, y, batch_size=batch_size, seed=3), epochs=epochs)
    return {
        "state": {name: value.clone() for name, value in model.state_dict().items()},
        "history": engine.history.to_dict(),
    }


def train_each_size(batch_size: int) -> list[dict[str, Any]]:
    return [train_mlp(batch_size, n) for n in SIZES]


def test_two_processes_train_the_mlp_exactly_as_one_process_on_the_global_batches() -> None:
    rank0, rank1 = run_data_parallel(train_each_size, world_size=2, args=(PER_RANK_BATCH,), timeout=120)
    single = train_each_size(2 * PER_RANK_BATCH)
    for n, expected, got0, got1 in zip(SIZES, single, rank0, rank1, strict=True):
        assert_same_training(expected, [got0, got1], f"N={n}")  # epoch logs over every rank's samples


def test_torchrun_trains_clusters_and_only_rank_0_writes(tmp_path: Path) -> None:
    out = tmp_path / "clusters"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "scratch_mlp", "train", "clusters", "--distributed", "--device", "cpu"]
    command += ["--epochs", "2", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "decision_boundary.png",
        "loss.png",
        "metrics.json",
    ]
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["config"]["distributed"] is True
    assert record["environment"]["world_size"] == 2
    assert record["epochs"] == 2
    assert 0.0 <= record["test_accuracy"] <= 1.0
    for png in ("decision_boundary.png", "loss.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert done.stdout.count("test_accuracy") == 1, f"only rank 0 prints the summary:\n{done.stdout}"
