"""bfloat16 forward and backward through time stay within the engine's documented tolerance of float32."""

from __future__ import annotations

import pytest
import torch

from scratch_engine.tools.testing import assert_bfloat16_close, precision_errors, random_inputs, seeded_generator
from scratch_rnn import GRU, LSTM, RNN
from scratch_rnn.charlm import CharLM


@pytest.mark.parametrize("layer_class", [RNN, LSTM, GRU])
def test_bfloat16_layer_matches_float32_within_tolerance(layer_class: type) -> None:
    torch.manual_seed(0)
    layer = layer_class(32, 64, num_layers=2)
    (x,) = random_inputs((50, 8, 32), dtype=torch.float32)  # 50 steps of backpropagation through time
    errors = precision_errors(layer, x)
    assert_bfloat16_close(errors)


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_bfloat16_language_model_matches_float32_within_tolerance(arch: str) -> None:
    torch.manual_seed(0)
    model = CharLM(65, arch, 128, 2)
    generator = seeded_generator(1)
    ids = torch.randint(0, 65, (8, 40), generator=generator, device=generator.device)
    errors = precision_errors(model, ids)
    assert_bfloat16_close(errors)
