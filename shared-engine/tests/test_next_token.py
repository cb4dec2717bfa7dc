"""tools.text.next_token: greedy and sampled draws refuse logits a diverged model gives."""

from __future__ import annotations

import pytest
import torch

from scratch_engine.tools.text import next_token

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize(
    "logits",
    [[0.0, NAN, 1.0], [NAN, NAN, NAN], [0.0, INF, 1.0], [-INF, -INF, -INF]],
    ids=["nan", "all-nan", "inf", "all-ninf"],
)
def test_non_finite_logits_raise_greedy_and_sampled(logits: list[float], temperature: float) -> None:
    with pytest.raises(ValueError, match=r"logits are not finite \(nan or inf\): its weights have diverged"):
        next_token(torch.tensor(logits), temperature, generator=torch.Generator().manual_seed(0))


def test_greedy_takes_the_largest_logit_of_any_shape_and_dtype() -> None:
    logits = torch.tensor([[[0.5, 3.0, -INF, 2.999]]])  # a -inf is a probability of 0: greedy never picks it
    assert next_token(logits, 0.0) == 1
    assert next_token(logits.to(torch.bfloat16)[..., :2], 0.0) == 1
    assert next_token(torch.tensor([2.0, 2.0, 1.0]), 0.0) == 0  # ties: the first, as argmax
