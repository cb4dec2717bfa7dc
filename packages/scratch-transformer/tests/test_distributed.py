"""Data-parallel eng-fra: sharded length buckets, and torchrun running the train command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scratch_engine.tools.testing import require_data_dir
from scratch_transformer.data import BucketBatches, EngFra


@pytest.fixture(scope="module")
def data() -> EngFra:
    return EngFra.load(data_dir=require_data_dir(), download=False, max_src_len=12)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_split_the_single_process_batches(data: EngFra, world_size: int, shuffle: bool) -> None:
    pairs = data.split("train")[:1003]  # not a multiple of any global batch below
    single = BucketBatches(pairs, data.src_vocab, data.tgt_vocab, 16 * world_size, shuffle=shuffle, seed=5)
    shards = [
        BucketBatches(pairs, data.src_vocab, data.tgt_vocab, 16, shuffle=shuffle, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for epoch in (0, 1):
        whole = single.batches(epoch)
        parts = [shard.batches(epoch) for shard in shards]
        assert all(len(part) == len(whole) == len(shard) for part, shard in zip(parts, shards, strict=True))
        for b, batch in enumerate(whole):
            pieces = [part[b] for part in parts]
            assert [i for piece in pieces for i in piece] == batch  # disjoint, in order, nothing lost
            assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
        served = sorted(i for part in parts for batch in part for i in batch)
        assert served == list(range(len(pairs)))  # every pair once per epoch


def test_an_empty_share_collates_to_no_rows(data: EngFra) -> None:
    loader = BucketBatches(data.split("train")[:3], data.src_vocab, data.tgt_vocab, 1, seed=0, rank=3, world_size=4)
    [batch] = loader.batches(0)
    assert batch == []
    (src, tgt_in), tgt_out = loader.collate(batch)
    assert src.shape[0] == tgt_in.shape[0] == tgt_out.shape[0] == 0


def test_a_sharded_shuffle_needs_a_seed(data: EngFra) -> None:
    with pytest.raises(ValueError, match="needs a seed"):
        BucketBatches(data.split("train")[:10], data.src_vocab, data.tgt_vocab, 2, rank=0, world_size=2)


def test_torchrun_trains_eng_fra_and_only_rank_0_writes(tmp_path: Path) -> None:
    """Two gloo processes, a time budget they must agree on (a rank stopping alone would hang the other)."""
    out = tmp_path / "eng-fra"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "scratch_transformer", "train", "eng-fra", "--distributed", "--device", "cpu"]
    command += ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--max-src-len", "10"]
    command += ["--batch-size", "16", "--max-minutes", "0.15", "--eval-every", "1000", "--test-limit", "8"]
    command += ["--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "SCRATCH_DATA_DIR": str(require_data_dir())}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["config"]["distributed"] is True
    assert record["environment"]["world_size"] == 2
    assert record["steps"] > 0
    assert record["test_cer"] >= 0.0
    assert (out / "checkpoint.pt").is_file()
    assert (out / "translations.txt").is_file()
    assert done.stdout.count("test CER") == 1, f"only rank 0 prints the summary:\n{done.stdout}"
