"""bfloat16 forward and backward of the MLP stay within the engine's documented tolerance of float32."""

from __future__ import annotations

import torch

from scratch_engine.tools.testing import assert_bfloat16_close, precision_errors, random_inputs
from scratch_mlp.model import MLP


def test_bfloat16_mlp_matches_float32_within_tolerance() -> None:
    torch.manual_seed(0)
    model = MLP.from_sizes([784, 512, 256, 10], dropout=0.2)
    (x,) = random_inputs((64, 784), dtype=torch.float32)
    errors = precision_errors(model, x)
    assert_bfloat16_close(errors)
