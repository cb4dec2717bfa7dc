"""tools.text.encode_prompt: the checks every character model's sampler makes before drawing anything."""

from __future__ import annotations

import pytest
import torch

from scratch_engine.tools.text import Vocabulary, encode_prompt

VOCABULARY = Vocabulary.from_text("abc \n")


def test_a_prompt_becomes_one_row_of_its_ids() -> None:
    ids = encode_prompt(VOCABULARY, "cab a", len(VOCABULARY))
    assert ids.shape == (1, 5)
    assert torch.equal(ids[0], VOCABULARY.encode("cab a"))
    assert VOCABULARY.decode(ids[0]) == "cab a"


@pytest.mark.parametrize(
    ("prompt", "vocab_size", "message"),
    [
        ("", 5, "sampling needs a prompt of at least one character"),
        ("abz!", 5, r"the prompt has characters the model was not trained on: '!z'"),
        ("ab", 6, "the vocabulary has 5 characters but the model expects 6"),
    ],
    ids=["empty", "unknown-characters", "another-vocabulary"],
)
def test_a_prompt_the_model_cannot_read_is_one_line_naming_why(prompt: str, vocab_size: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        encode_prompt(VOCABULARY, prompt, vocab_size)
