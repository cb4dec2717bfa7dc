"""Data-parallel training: the ShardedDataLoader, the hand-written gradient all-reduce, rank 0's files, failures.

The multi-process tests start real ``torch.distributed`` processes on gloo (CPU) through
:func:`scratch_engine.tools.testing.run_data_parallel`; the functions they run live at module
level so that ``spawn`` can import them.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from scratch_engine import Callback, CrossEntropyLoss, DataLoader, Dense, Engine, GradientDescent, ReLU, Sequential
from scratch_engine.module import Parameter
from scratch_engine.tools import distributed
from scratch_engine.tools.checkpoint import save_checkpoint
from scratch_engine.tools.datasets import DatasetLoader
from scratch_engine.tools.distributed import DataParallel, ShardedDataLoader
from scratch_engine.tools.plots import new_figure, plot_history, save_figure
from scratch_engine.tools.records import write_metrics
from scratch_engine.tools.testing import DataParallelError, run_data_parallel

# --------------------------------------------------------------------------- the sampler


def shards(n: int, batch_size: int, world_size: int, **kwargs: Any) -> list[list[list[int]]]:
    """``[rank][batch] -> sample ids`` for two consecutive epochs of each rank's loader."""
    ids = torch.arange(n)
    per_rank = []
    for rank in range(world_size):
        loader = ShardedDataLoader(ids, ids, batch_size, rank=rank, world_size=world_size, seed=7, **kwargs)
        epochs = [[y.tolist() for _, y in loader] for _ in range(2)]
        per_rank.append(epochs)
    return per_rank


@pytest.mark.parametrize(
    ("n", "batch_size", "world_size"),
    [(1, 1, 2), (7, 2, 2), (16, 4, 2), (33, 4, 2), (33, 3, 3), (10, 1, 4), (64, 8, 3), (5, 8, 2)],
)
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_each_rank_gets_a_disjoint_shard_of_the_single_process_batches(
    n: int, batch_size: int, world_size: int, shuffle: bool, drop_last: bool
) -> None:
    ids = torch.arange(n)
    if drop_last and n < batch_size * world_size:  # not one whole global batch: refused, not zero batches
        with pytest.raises(
            ValueError, match=rf"drop_last=True with {batch_size * world_size} samples a step leaves no"
        ):
            shards(n, batch_size, world_size, shuffle=shuffle, drop_last=drop_last)
        return
    single = DataLoader(ids, ids, batch_size=batch_size * world_size, shuffle=shuffle, drop_last=drop_last, seed=7)
    expected = [[y.tolist() for _, y in single] for _ in range(2)]  # two epochs
    per_rank = shards(n, batch_size, world_size, shuffle=shuffle, drop_last=drop_last)
    for epoch in range(2):
        lengths = {len(per_rank[rank][epoch]) for rank in range(world_size)}
        assert lengths == {len(expected[epoch])}, "every rank has as many batches as the single-process loader"
        for b, global_batch in enumerate(expected[epoch]):
            parts = [per_rank[rank][epoch][b] for rank in range(world_size)]
            assert list(itertools.chain(*parts)) == global_batch  # rank order rebuilds the global batch
            assert all(len(part) <= batch_size for part in parts)
        seen = sorted(i for rank in range(world_size) for batch in per_rank[rank][epoch] for i in batch)
        if drop_last:
            assert len(seen) == len(set(seen)) == (n // (batch_size * world_size)) * batch_size * world_size
        else:
            assert seen == list(range(n)), "together the ranks see every sample exactly once"
    if shuffle and expected[0] and n > 2:
        assert expected[0] != expected[1], "the order changes from epoch to epoch"


def test_an_empty_share_keeps_the_batch_structure() -> None:
    X, y = torch.randn(5, 3), torch.arange(5)
    loader = ShardedDataLoader(X, y, batch_size=2, rank=1, world_size=2, seed=0)  # global batches of 4: 4, then 1
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [2, 0]
    assert batches[1][0].shape == (0, 3)
    dataset = [(torch.full((2,), float(i)), i) for i in range(5)]
    empty_x, empty_y = DatasetLoader(dataset, batch_size=2).batch(torch.arange(0))  # a rank's empty share
    assert empty_x.shape == (0, 2)
    assert empty_y.shape == (0,)


def test_sharding_arguments_are_checked() -> None:
    X = torch.zeros(4, 1)
    with pytest.raises(ValueError, match="rank"):
        ShardedDataLoader(X, X, rank=2, world_size=2, seed=0)
    with pytest.raises(ValueError, match="needs a seed"):  # no process group to agree on a drawn one
        ShardedDataLoader(X, X, rank=0, world_size=2)
    assert ShardedDataLoader(X, X, rank=1, world_size=2, shuffle=False).rank == 1
    single = ShardedDataLoader(X, X, batch_size=3)  # not distributed: the whole data set
    assert (single.rank, single.world_size, len(single)) == (0, 1, 2)
    assert [len(y) for _, y in single] == [3, 1]


def test_outside_torchrun_the_process_is_alone() -> None:
    assert not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.setup()


def test_gradient_buckets_split_by_size_dtype_and_device() -> None:
    grads = [torch.zeros(10), torch.zeros(10), torch.zeros(300), torch.zeros(5, dtype=torch.float64), torch.zeros(1)]
    buckets = distributed.gradient_buckets(grads, bucket_bytes=100)
    assert [[g.numel() for g in bucket] for bucket in buckets] == [[10, 10], [300], [5], [1]]


# --------------------------------------------------------------------------- processes


def _weighted_gradients(tmp: str) -> dict[str, Any]:
    """Each rank: gradients from its own count of samples, in three buckets and two dtypes; rank 1 also bf16."""
    rank = distributed.rank()
    samples = [3, 0, 2][rank]  # rank 1 holds no samples: zeros, but it joins the all-reduce
    params = [Parameter(torch.zeros(4, dtype=torch.float64)), Parameter(torch.zeros(50)), Parameter(torch.zeros(3))]
    for k, p in enumerate(params):
        p.grad.fill_(0.0 if samples == 0 else float(rank + 1 + k))
    total = distributed.all_reduce_gradients(params, samples, bucket_bytes=64)
    low = [Parameter(torch.zeros(8, dtype=torch.bfloat16))]  # a bfloat16 first bucket: the count travels alone
    low[0].grad.fill_(0.0 if samples == 0 else float(rank + 1))
    low_total = distributed.all_reduce_gradients(low, samples)
    loader = ShardedDataLoader(torch.arange(10), torch.arange(10), batch_size=2, seed=3)
    try:
        ShardedDataLoader(torch.arange(10), torch.arange(10), batch_size=2)  # each rank would draw another order
        refused = ""
    except ValueError as error:
        refused = str(error)
    return {
        "grads": [p.grad.double().tolist() for p in params],
        "low": low[0].grad.double().tolist(),
        "totals": (float(total), float(low_total)),
        "loader": (loader.seed, loader.rank, loader.world_size),
        "refused": refused,
    }


def _files_and_logs(tmp: str) -> dict[str, Any]:
    """Rank 0 alone writes; logs, evaluation and broadcast weights are the same on every rank."""
    rank = distributed.rank()
    out = Path(tmp) / f"rank{rank}"
    torch.manual_seed(100 + rank)  # different initial weights: the engine must broadcast rank 0's
    model = Sequential(Dense(2, 8), ReLU(), Dense(8, 3)).to(dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    X, y = torch.randn(37, 2, generator=generator, dtype=torch.float64), torch.randint(0, 3, (37,), generator=generator)
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.1), progress=False, callbacks=[DataParallel()])
    engine.fit(ShardedDataLoader(X, y, batch_size=5, seed=1), epochs=2)
    evaluated = engine.evaluate(ShardedDataLoader(X, y, batch_size=4, shuffle=False))
    write_metrics(out, {"rank": rank})
    plot_history(engine.history, out / "loss.png")
    save_figure(new_figure(2, 2), out / "figure.png")
    save_checkpoint(engine, out / "model.ckpt")
    return {
        "weights": {name: value.tolist() for name, value in model.state_dict().items()},
        "history": engine.history.to_dict(),
        "evaluated": evaluated,
        "X": X.tolist(),
        "y": y.tolist(),
    }


class _FailOnRankOne(Callback):
    def on_log(self, engine: Engine, logs: dict[str, float]) -> None:
        if distributed.rank() == 1 and engine.epoch == 2:
            raise RuntimeError("rank one gave up in epoch 2")


def _fails_mid_training() -> None:
    model = Sequential(Dense(2, 4), ReLU(), Dense(4, 2))
    X, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.1), progress=False, callbacks=[DataParallel()])
    engine.fit(ShardedDataLoader(X, y, batch_size=4, seed=0), epochs=50, callbacks=[_FailOnRankOne()])


def _non_finite_on_rank_one() -> None:
    X, y = torch.randn(40, 2), torch.randint(0, 2, (40,))
    if distributed.rank() == 1:
        X[:] = float("nan")  # every loss on rank 1 is nan; rank 0's own losses are finite at first
    model = Sequential(Dense(2, 4), ReLU(), Dense(4, 2))
    engine = Engine(
        model, CrossEntropyLoss(), GradientDescent(model, 0.1), progress=False, log_every=3, callbacks=[DataParallel()]
    )
    engine.fit(ShardedDataLoader(X, y, batch_size=4, seed=0), epochs=2)


def _never_joins() -> None:
    if distributed.rank() == 1:
        time.sleep(120)  # alive but silent: only the collective timeout can end rank 0's wait
    distributed.all_reduce_sum(torch.ones(1))


def test_gradients_become_the_gradient_of_the_global_mean_loss() -> None:
    results = run_data_parallel(_weighted_gradients, world_size=3, args=("",), timeout=90)
    # ranks 0 and 2 hold 3 and 2 samples with gradients rank + 1 + k; rank 1 holds none
    expected = [(3 * (1 + k) + 2 * (3 + k)) / 5 for k in range(3)]
    for result in results:
        assert result["totals"] == (5.0, 5.0)
        for k, grad in enumerate(result["grads"]):
            assert grad == pytest.approx([expected[k]] * len(grad), rel=1e-6)
        assert result["low"] == pytest.approx([(3 * 1 + 2 * 3) / 5] * 8, rel=1e-2)
    # a ShardedDataLoader made inside the process group takes its rank there; shuffled, it needs a seed
    assert [result["loader"][1:] for result in results] == [(0, 3), (1, 3), (2, 3)]
    assert {result["refused"] for result in results} == {
        "a sharded, shuffled loader needs a seed: every rank must draw the same order"
    }


def test_only_rank_0_writes_and_every_rank_logs_the_global_numbers(tmp_path: Path) -> None:
    results = run_data_parallel(_files_and_logs, world_size=2, args=(str(tmp_path),), timeout=120)
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == [
        "figure.png",
        "loss.png",
        "metrics.json",
        "model.ckpt",
    ]
    assert not (tmp_path / "rank1").exists()
    assert json.loads((tmp_path / "rank0" / "metrics.json").read_text())["environment"]["world_size"] == 2
    assert results[0]["weights"] == results[1]["weights"]  # broadcast at the start, same steps since
    for name in ("loss", "accuracy"):
        assert results[0]["history"][name] == pytest.approx(results[1]["history"][name], rel=1e-12)
    assert results[0]["evaluated"] == pytest.approx(results[1]["evaluated"], rel=1e-12)

    # the same two epochs in one process, from rank 0's initial weights, on batches of 2 x 5
    torch.manual_seed(100)
    model = Sequential(Dense(2, 8), ReLU(), Dense(8, 3)).to(dtype=torch.float64)
    X, y = torch.tensor(results[0]["X"], dtype=torch.float64), torch.tensor(results[0]["y"])
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.1), progress=False)
    engine.fit(DataLoader(X, y, batch_size=10, seed=1), epochs=2)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(torch.tensor(results[0]["weights"][name], dtype=torch.float64), value)
    for name in ("loss", "accuracy"):  # the epoch logs cover every rank's samples
        assert results[0]["history"][name] == pytest.approx(engine.history[name], rel=1e-10)
    assert results[0]["evaluated"] == pytest.approx(engine.evaluate(DataLoader(X, y, batch_size=8)), rel=1e-10)


def test_a_rank_that_raises_stops_the_run_with_its_error() -> None:
    start = time.monotonic()
    with pytest.raises(DataParallelError, match=r"(?s)rank 1 of 2 failed first.*rank one gave up in epoch 2"):
        run_data_parallel(_fails_mid_training, world_size=2, timeout=90)
    assert time.monotonic() - start < 60


def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_step() -> None:
    with pytest.raises(DataParallelError) as error:
        run_data_parallel(_non_finite_on_rank_one, world_size=2, timeout=90)
    message = str(error.value)
    # both ranks stop with the same message (not one of them with a broken connection)
    first, also = message.split("failed too:")
    assert "loss became non-finite (nan) at step 1;" in first, message
    assert "NonFiniteLossError: loss became non-finite (nan) at step 1;" in also, message


def test_a_silent_rank_makes_the_others_time_out_instead_of_hanging() -> None:
    start = time.monotonic()
    with pytest.raises(DataParallelError, match=r"(?s)rank 0 of 2 failed first.*[Tt]imed out"):
        run_data_parallel(_never_joins, world_size=2, timeout=90, collective_timeout=2)
    assert time.monotonic() - start < 60
