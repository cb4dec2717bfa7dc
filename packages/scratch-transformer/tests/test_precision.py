"""bfloat16 forward and backward of the Transformer stay within the engine's documented tolerance of float32."""

from __future__ import annotations

import pytest
import torch

from scratch_engine.tools.testing import assert_bfloat16_close, precision_errors, seeded_generator
from scratch_transformer import Transformer, padding_mask

PAD = 0


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-norm", "post-norm"])
def test_bfloat16_transformer_matches_float32_within_tolerance(norm_first: bool) -> None:
    torch.manual_seed(0)
    model = Transformer(40, 45, 64, 4, 2, 2, 128, 0.1, 64, norm_first=norm_first)
    generator = seeded_generator(1)
    src = torch.randint(1, 40, (8, 20), generator=generator, device=generator.device)
    tgt = torch.randint(1, 45, (8, 24), generator=generator, device=generator.device)
    src[:, 15:] = PAD  # padding, masked out
    errors = precision_errors(model, src, tgt, padding_mask(src, PAD), padding_mask(tgt, PAD))
    assert_bfloat16_close(errors)
