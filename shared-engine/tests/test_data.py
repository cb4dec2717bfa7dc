"""DataLoader: every sample once per epoch, reproducible order, lazy datasets, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scratch_engine import DataLoader
from scratch_engine.tools.datasets import DatasetLoader
from scratch_engine.tools.device import seed_everything


def _tensors(n: int = 10) -> tuple[Tensor, Tensor]:
    return torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3), torch.arange(n)


class CountingDataset:
    """A map-style dataset of (x, y) pairs that counts how often it is indexed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        self.calls += 1
        return torch.full((2, 2), float(i)), i


def _epoch_targets(loader: DataLoader) -> list[int]:
    return [int(t) for _, yb in loader for t in yb]


def test_tensor_loader_serves_every_sample_once_and_pairs_rows() -> None:
    X, y = _tensors(10)
    loader = DataLoader(X, y, batch_size=3, shuffle=True, seed=0)
    for _ in range(3):
        batches = list(loader)
        assert [len(yb) for _, yb in batches] == [3, 3, 3, 1]
        for xb, yb in batches:
            assert torch.equal(xb[:, 0], yb.float())  # x rows travel with their targets
        assert sorted(int(t) for _, yb in batches for t in yb) == list(range(10))


def test_map_style_dataset_is_indexed_lazily_and_collated() -> None:
    dataset = CountingDataset(7)
    loader = DatasetLoader(dataset, batch_size=3, seed=1)
    assert dataset.calls == 0  # not materialised at construction
    first = next(iter(loader))
    assert dataset.calls == 3  # only the first batch was read
    xb, yb = first
    assert xb.shape == (3, 2, 2)
    assert yb.dtype == torch.int64
    assert torch.equal(xb[:, 0, 0], yb.float())
    dataset.calls = 0
    seen = _epoch_targets(loader)
    assert sorted(seen) == list(range(7))
    assert dataset.calls == 7


def test_len_and_drop_last() -> None:
    X, y = _tensors(10)
    assert len(DataLoader(X, y, batch_size=3)) == 4
    assert len(DataLoader(X, y, batch_size=5)) == 2
    loader = DataLoader(X, y, batch_size=3, drop_last=True, seed=0)
    assert len(loader) == 3
    batches = list(loader)
    assert len(batches) == 3
    assert all(len(yb) == 3 for _, yb in batches)
    assert len(set(_epoch_targets(loader))) == 9
    with pytest.raises(ValueError, match=r"drop_last=True with 11 samples a step leaves no batch of the 10 samples"):
        DataLoader(X, y, batch_size=11, drop_last=True)  # it used to serve no batch at all, silently


def test_shuffle_is_a_pure_function_of_seed_and_epoch() -> None:
    X, y = _tensors(50)
    a = DataLoader(X, y, batch_size=8, seed=42)
    b = DataLoader(X, y, batch_size=8, seed=42)
    a0, a1 = _epoch_targets(a), _epoch_targets(a)
    assert a.epoch == 1
    assert a0 == _epoch_targets(b)  # same seed, same order
    assert a0 != a1  # iterating again moves to the next epoch
    assert a0 != list(range(50))
    b.set_epoch(1)
    assert _epoch_targets(b) == a1  # set_epoch reproduces an epoch (resume)
    assert _epoch_targets(DataLoader(X, y, batch_size=8, seed=43)) != a0


def test_seed_none_draws_from_the_global_generator() -> None:
    X, y = _tensors(30)
    seed_everything(3)
    first = _epoch_targets(DataLoader(X, y, batch_size=4))
    seed_everything(3)
    assert _epoch_targets(DataLoader(X, y, batch_size=4)) == first


def test_no_shuffle_keeps_order() -> None:
    X, y = _tensors(10)
    loader = DataLoader(X, y, batch_size=4, shuffle=False)
    assert _epoch_targets(loader) == list(range(10))
    assert _epoch_targets(loader) == list(range(10))
    assert _epoch_targets(DatasetLoader(CountingDataset(5), batch_size=2, shuffle=False)) == [0, 1, 2, 3, 4]


def test_mismatched_lengths_name_both() -> None:
    with pytest.raises(ValueError, match=r"10.*9"):
        DataLoader(torch.zeros(10, 2), torch.zeros(9))


@pytest.mark.parametrize(
    "settings", [{"batch_size": 2.7}, {"batch_size": "4"}, {"batch_size": True}, {"seed": 1.5}, {"seed": False}]
)
def test_batch_size_and_seed_must_be_integers(settings: dict[str, object]) -> None:
    name, value = next(iter(settings.items()))
    with pytest.raises(TypeError, match=f"DataLoader {name} must be an integer, got {value!r}"):
        DataLoader(torch.zeros(4, 2), torch.zeros(4), **settings)  # type: ignore[arg-type]


def test_a_loader_without_shuffle_draws_no_seed_from_the_global_generator() -> None:
    seed_everything(0)
    expected = torch.rand(3)
    seed_everything(0)
    DataLoader(torch.zeros(4, 2), torch.zeros(4), shuffle=False)  # e.g. a validation loader built mid-run
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_size_must_be_positive(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(torch.zeros(4, 2), torch.zeros(4), batch_size=batch_size)


def test_tensor_x_needs_y_and_items_must_be_tensors() -> None:
    with pytest.raises(TypeError, match="DataLoader expects tensors X and y, got a NoneType y"):
        DataLoader(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="got a ndarray X"):
        DataLoader(torch.zeros(4, 2).numpy(), torch.zeros(4))
    with pytest.raises(
        TypeError, match="DatasetLoader expects a map-style dataset, got Tensor: for tensors use DataLoader"
    ):
        DatasetLoader(torch.zeros(4, 2))

    class Images:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple[object, int]:
            return object(), i

    with pytest.raises(TypeError, match="transform"):
        next(iter(DatasetLoader(Images(), batch_size=2)))
