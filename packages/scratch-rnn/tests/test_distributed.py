"""Data-parallel truncated BPTT on torch.distributed (gloo, 2 CPU processes) equals one process.

Each rank reads its own streams of the text and carries their hidden state; with per-rank batch B
the two ranks together train on exactly the batches of one process with batch 2B.
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
from scratch_engine.tools.checkpoint import read_checkpoint
from scratch_engine.tools.device import seed_everything
from scratch_engine.tools.distributed import DataParallel
from scratch_engine.tools.testing import assert_same_training, run_data_parallel
from scratch_rnn.charlm import CharLM, CharStreams

VOCAB, PER_RANK_BATCH = 7, 3


def text_ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (2000,), generator=generator)


def test_shards_are_the_single_process_streams_split_by_rows() -> None:
    ids = text_ids()
    whole = CharStreams(ids, 2 * PER_RANK_BATCH, 10, random_offset=True, seed=1, rank=0, world_size=1)
    shards = [CharStreams(ids, PER_RANK_BATCH, 10, random_offset=True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in shards] == [len(whole)] * 2
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shards, strict=True):
        assert torch.equal(x, torch.cat([x0, x1]))
        assert torch.equal(y, torch.cat([y0, y1]))


def train_charlm(batch_size: int, arch: str) -> dict[str, Any]:
    seed_everything(0)
    model = CharLM(VOCAB, arch, 12, 2).to(dtype=torch.float64)
    loader = CharStreams(text_ids()[:800], batch_size, 10, random_offset=True, seed=1)  # 12 batches a pass
    optimizer, parallel = Adam(model, 0.01), DataParallel()  # DataParallel: no-op in a single process
    engine = Engine(model, CrossEntropyLoss(), optimizer, clip_grad_norm=1.0, progress=False, callbacks=[parallel])
    engine.fit(loader, epochs=2, eval_every=8)  # the state is reset (a new pass) between the rows of steps 8 and 16
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "history": engine.history.to_dict()}


def train_each_arch(batch_size: int) -> list[dict[str, Any]]:
    return [train_charlm(batch_size, arch) for arch in ("rnn", "lstm", "gru")]


def test_two_processes_train_exactly_as_one_process_with_both_batches() -> None:
    rank0, rank1 = run_data_parallel(train_each_arch, world_size=2, args=(PER_RANK_BATCH,), timeout=120)
    single = train_each_arch(2 * PER_RANK_BATCH)
    for arch, expected, got0, got1 in zip(("rnn", "lstm", "gru"), single, rank0, rank1, strict=True):
        assert_same_training(expected, [got0, got1], arch)  # the epoch losses too, over both ranks' tokens


def test_torchrun_trains_and_only_rank_0_writes(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question. " * 200)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "scratch_rnn", "train", "shakespeare", "--text", str(text), "--distributed", "--device", "cpu"]
    command += ["--arch", "gru", "--hidden", "16", "--layers", "1", "--batch-size", "4", "--seq-len", "20"]
    command += ["--max-steps", "20", "--eval-every", "10", "--max-minutes", "5", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["config"]["distributed"] is True
    assert record["environment"]["world_size"] == 2
    assert record["steps"] == 20
    assert (out / "sample.txt").is_file()
    assert done.stdout.count("best val loss") == 1, f"only rank 0 prints the summary:\n{done.stdout}"
    assert read_checkpoint(out / "checkpoint.pt")["extra"]["run"]["finished"] is True
