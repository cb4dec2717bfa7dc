"""bfloat16 forward and backward of both networks stay within the engine's documented tolerance of float32."""

from __future__ import annotations

import pytest
import torch

from scratch_cnn.models import MODELS
from scratch_engine.tools.testing import assert_bfloat16_close, precision_errors, random_inputs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bfloat16_network_matches_float32_within_tolerance(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name](num_classes=10)
    (x,) = random_inputs((16, 1, 28, 28), dtype=torch.float32)
    errors = precision_errors(model, x)
    assert_bfloat16_close(errors)
