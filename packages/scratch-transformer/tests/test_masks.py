"""Mask helpers: True = may attend."""

from __future__ import annotations

import pytest
import torch

from scratch_transformer import causal_mask, padding_mask


def test_causal_mask_allows_the_past_and_present() -> None:
    mask = causal_mask(4)
    assert mask.dtype == torch.bool
    assert mask.shape == (4, 4)
    for i in range(4):
        for j in range(4):
            assert bool(mask[i, j]) == (j <= i)


def test_padding_mask_is_a_key_mask() -> None:
    ids = torch.tensor([[5, 6, 7, 0], [3, 0, 0, 0]])
    mask = padding_mask(ids, pad_id=0)
    assert mask.shape == (2, 1, 1, 4)
    assert mask.dtype == torch.bool
    assert mask[:, 0, 0].tolist() == [[True, True, True, False], [True, False, False, False]]
    combined = causal_mask(4) & mask
    assert combined.shape == (2, 1, 4, 4)
    assert combined[1, 0, 3].tolist() == [True, False, False, False]


@pytest.mark.parametrize("size", [0, -1])
def test_causal_mask_rejects_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="positive sequence length"):
        causal_mask(size)


@pytest.mark.parametrize(
    "ids", [torch.zeros(3, dtype=torch.long), torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)]
)
def test_padding_mask_rejects_non_id_input(ids: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"integer token ids of shape \(B, T\)"):
        padding_mask(ids, 0)
