"""CharLM against torch.nn and autograd, its carried state, the batcher, the vocabulary and sampling."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from scratch_engine.tools.testing import (
    assert_close,
    cached_tensors,
    check_backward,
    run_readme_examples,
    seeded_generator,
)
from scratch_engine.tools.text import split_text
from scratch_rnn import Vocabulary
from scratch_rnn.charlm import CharLM, CharStreams, next_token, sample
from scratch_rnn.reference import TorchCharLM

ARCHS = ("rnn", "lstm", "gru")


def _pair(arch: str, embedding: int, vocab: int = 7, hidden: int = 5, layers: int = 2) -> tuple[CharLM, TorchCharLM]:
    torch.manual_seed(0)
    reference = TorchCharLM(vocab, arch, hidden, layers, embedding).double()
    return CharLM.from_torch(reference), reference


@pytest.mark.parametrize("embedding", [0, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_matches_torch_across_carried_batches(arch: str, embedding: int) -> None:
    model, reference = _pair(arch, embedding)
    assert model.head.weight.data.dtype == torch.float64
    ids = torch.randint(0, 7, (3, 6), generator=seeded_generator(1))
    for _ in range(3):  # the second and third calls start from the carried state
        assert_close(model(ids), reference(ids).detach(), atol=1e-10, rtol=1e-10, name=f"{arch} logits")


@pytest.mark.parametrize("embedding", [0, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_backward_matches_autograd(arch: str, embedding: int) -> None:
    model, _ = _pair(arch, embedding)
    ids = torch.randint(0, 7, (3, 6), generator=seeded_generator(2))
    model(ids)  # a carried state: backward must stop at the chunk boundary, as autograd does
    check_backward(model, ids)


def test_one_hot_input_gets_no_gradient_and_embedding_does() -> None:
    one_hot, _ = _pair("lstm", 0)
    assert one_hot.rnn.input_grad is False
    assert one_hot.embedding is None
    with_embedding, _ = _pair("lstm", 4)
    assert with_embedding.rnn.input_grad is True
    ids = torch.randint(0, 7, (2, 3))
    for model in (one_hot, with_embedding):
        assert model.backward(torch.ones_like(model(ids))) is None


@pytest.mark.parametrize("embedding", [0, 4])
def test_ids_outside_the_vocabulary_or_of_a_non_integer_dtype_are_named(embedding: int) -> None:
    model, _ = _pair("gru", embedding)
    with pytest.raises(ValueError, match=r"\[0, 7\).*max 9"):
        model(torch.tensor([[1, 9]]))
    with pytest.raises(ValueError, match=r"\[0, 7\).*min -1"):
        model(torch.tensor([[-1, 2]]))
    for ids in (torch.tensor([[True, False]]), torch.tensor([[1.0, 2.0]])):
        with pytest.raises(ValueError, match=f"integer .*{ids.dtype}"):
            model(ids)
    uint8 = torch.tensor([[1, 2, 3]], dtype=torch.uint8)  # any integer dtype works, as for the Embedding
    expected = model(uint8.long())
    model.reset_state()  # the same starting state for both
    assert_close(model(uint8), expected, name="uint8 ids")


def test_backward_checks_the_gradient_against_the_logits_shape() -> None:
    model, _ = _pair("lstm", 0)
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(torch.ones(2, 3, 7))
    logits = model(torch.randint(0, 7, (2, 3)))  # (B, T, V) = (2, 3, 7)
    for wrong in (torch.ones(3, 2, 7), torch.ones(2, 3), torch.ones(2, 3, 6)):  # time-major, no V, wrong V
        with pytest.raises(
            ValueError, match=rf"CharLM.backward .* \(2, 3, 7\), got {re.escape(str(tuple(wrong.shape)))}"
        ):
            model.backward(wrong)
    assert all(not p.grad.any() for p in model.parameters())  # nothing was accumulated
    model.backward(torch.ones_like(logits))


def test_state_is_carried_and_reset() -> None:
    model, _ = _pair("lstm", 0)
    ids = torch.randint(0, 7, (2, 5), generator=seeded_generator(3))
    first = model(ids)
    assert model.state is not None
    assert not model.state[0].requires_grad
    assert not torch.allclose(model(ids), first)  # same input, another state
    model.reset_state()
    assert model.state is None
    assert_close(model(ids), first, name="after reset_state")
    model(torch.randint(0, 7, (4, 5)))  # another batch size starts from zeros
    assert model.state[0].shape == (2, 4, 5)


def _engine(model: CharLM) -> Any:
    from scratch_engine import Adam, CrossEntropyLoss, Engine

    return Engine(model, CrossEntropyLoss(), Adam(model, 1e-3), progress=False)


def test_engine_carries_the_state_through_a_pass_and_resets_it_at_each_epoch() -> None:
    from scratch_engine import Callback

    model, _ = _pair("gru", 0)
    model.to(dtype=torch.float32)
    loader = CharStreams(torch.randint(0, 7, (400,), generator=seeded_generator(4)), 4, 10)
    states: list[Any] = []

    class Spy(Callback):
        def on_epoch_begin(self, engine: Any) -> None:
            states.append(model.carried_state())

        def on_train_batch(self, engine: Any, x: Any, y: Any) -> None:
            states.append(model.carried_state())

    _engine(model).fit(loader, 2, callbacks=[Spy()])
    per_epoch = len(loader) + 1  # on_epoch_begin, then one per batch
    assert len(states) == 2 * per_epoch
    for epoch in range(2):
        first, *batches = states[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert first is None  # reset at the start of every pass
        assert batches[0] is None
        assert all(state is not None for state in batches[1:])  # carried from batch to batch within it


def test_evaluation_starts_from_zeros_and_leaves_the_training_state_as_it_was() -> None:
    model, _ = _pair("gru", 0)
    model.to(dtype=torch.float32)
    loader = CharStreams(torch.randint(0, 7, (400,), generator=seeded_generator(4)), 4, 10)
    engine = _engine(model)
    engine.fit(loader, max_steps=3)  # stopped in the middle of a pass: a state is carried
    carried = model.carried_state()
    assert carried is not None
    first = engine.evaluate(loader)
    assert engine.evaluate(loader) == first  # starts from zero both times
    assert model.carried_state() is carried  # and the training run carries on from its own state


def test_a_validation_in_the_middle_of_a_pass_does_not_change_the_training() -> None:
    ids = torch.randint(0, 7, (600,), generator=seeded_generator(7))
    train, val = CharStreams(ids[:500], 4, 10, random_offset=True, seed=1), CharStreams(ids[500:], 4, 10)
    weights = []
    for eval_every in (None, 3):  # 3: validations inside each pass of len(train) == 11 batches
        model, _ = _pair("lstm", 0)
        engine = _engine(model)
        engine.fit(train, 2, val_loader=val if eval_every else None, eval_every=eval_every)
        weights.append(model.state_dict())
    assert len(train) % 3 != 0
    for name, value in weights[0].items():
        assert torch.equal(weights[1][name], value), name


def test_the_carried_state_is_saved_and_set_on_the_models_device_and_dtype() -> None:
    for arch in ARCHS:
        model, reference = _pair(arch, 0)
        ids = torch.randint(0, 7, (2, 5), generator=seeded_generator(8))
        model(ids)
        state = model.carried_state()
        on_cpu = tuple(s.float().cpu() for s in state) if isinstance(state, tuple) else state.float().cpu()
        model.set_carried_state(list(on_cpu) if isinstance(on_cpu, tuple) else on_cpu)  # a checkpoint's, say
        parts = model.state if isinstance(model.state, tuple) else (model.state,)
        assert all(p.dtype == torch.float64 and p.device == model.head.weight.data.device for p in parts)
        assert isinstance(model.state, tuple) == (arch == "lstm")
        reference(ids)
        reference.set_carried_state(model.carried_state())  # the twin takes the same protocol
        assert_close(model(ids), reference(ids).detach(), atol=1e-6, rtol=1e-6, name=f"{arch} after set_carried_state")
        model.set_carried_state(None)
        assert model.state is None


def test_batches_are_contiguous_streams_and_y_is_x_shifted() -> None:
    ids = torch.arange(1000)
    loader = CharStreams(ids, batch_size=4, seq_len=7, random_offset=True, seed=5)
    batches = list(loader)
    assert len(batches) == len(loader) == loader.chunks_per_pass == (250 - 1 - 6) // 7
    offset = loader.offset(0)
    for b in range(4):
        row = torch.cat([x[b] for x, _ in batches])
        start = b * 250 + offset
        assert torch.equal(row, torch.arange(start, start + len(row)))  # stream b, contiguous
    for x, y in batches:
        assert x.shape == y.shape == (4, 7)
        assert torch.equal(y, x + 1)
    again = CharStreams(ids, batch_size=4, seq_len=7, random_offset=True, seed=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))  # a function of the seed


def test_an_epoch_is_one_pass_and_set_epoch_starts_inside_one() -> None:
    ids = torch.arange(1000)
    loader = CharStreams(ids, batch_size=4, seq_len=7, random_offset=True, seed=3)
    passes = [[x for x, _ in loader] for _ in range(3)]  # each new iteration is the next pass
    assert [len(p) for p in passes] == [len(loader)] * 3
    assert loader.epoch == 2
    for p, batches in enumerate(passes):  # pass p starts at the offset drawn from seed + p
        assert int(batches[0][0, 0]) == loader.offset(p)
    assert len({loader.offset(p) for p in range(3)}) > 1  # the chunk boundaries move from pass to pass
    flat = [x for batches in passes for x in batches]  # the old "global step" order of the batches
    for epoch, start in [(0, 0), (1, 0), (1, 5), (2, len(loader) - 1)]:
        loader.set_epoch(epoch, start)
        got = [x for x, _ in loader]
        assert len(got) == len(loader) - start
        assert all(torch.equal(a, b) for a, b in zip(got, flat[epoch * len(loader) + start :], strict=False))
    again = CharStreams(ids, batch_size=4, seq_len=7, random_offset=True, seed=3)
    again.set_epoch(1, 5)
    assert torch.equal(next(iter(again))[0], flat[len(loader) + 5])  # a function of (seed, pass, batch) alone
    with pytest.raises(ValueError, match="too short"):
        CharStreams(torch.arange(20), batch_size=4, seq_len=7)


def test_vocabulary_round_trip_and_split() -> None:
    text = "To be, or not to be:\nthat is the question."
    vocab = Vocabulary.from_text(text)
    assert vocab.chars == sorted(set(text))
    assert vocab.decode(vocab.encode(text)) == text
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab
    assert vocab.specials == []  # ids 0 .. V-1 are the characters
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("Z")
    for ids in ([-1], [len(vocab)], torch.tensor([0, 99])):  # -1 would index the last character
        with pytest.raises(ValueError, match=rf"out of range for a vocabulary of {len(vocab)}"):
            vocab.decode(ids)
    train, val = split_text(text)
    assert train + val == text
    assert len(train) == int(0.9 * len(text))


def test_temperature_to_zero_is_greedy_and_top_k_restricts() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0, 0.5])
    generator = seeded_generator(0)
    assert next_token(logits, 0.0) == 1
    assert all(next_token(logits, 1e-4, generator=generator) == 1 for _ in range(50))
    drawn = {next_token(logits, 5.0, top_k=2, generator=generator) for _ in range(200)}
    assert drawn == {1, 2}
    assert {next_token(logits, 5.0, generator=generator) for _ in range(300)} == set(range(5))
    assert next_token(logits, 1.0, top_k=1) == 1


def test_a_tiny_temperature_is_greedy_not_nan() -> None:
    logits = torch.tensor([300.0, 700.0, -500.0, 699.0])  # divided by 1e-320 first, they overflow: inf - inf
    generator = seeded_generator(0)
    for temperature in (1e-320, 1e-300, 1e-30):  # 1e-320 is subnormal
        assert {next_token(logits, temperature, generator=generator) for _ in range(20)} == {1}
        assert next_token(logits, temperature, top_k=2, generator=generator) == 1
    with pytest.raises(ValueError, match="not finite"):
        next_token(torch.tensor([0.0, float("nan")]), 1.0)


def test_sample_checks_its_arguments_before_drawing() -> None:
    vocab = Vocabulary(list("abcdefg"))
    model, _ = _pair("lstm", 0)
    with pytest.raises(ValueError, match="vocabulary has 5 characters but the model expects 7"):
        sample(model, Vocabulary(list("abcde")), "a", 5)
    with pytest.raises(ValueError, match="vocabulary has 9 characters but the model expects 7"):
        sample(model, Vocabulary(list("abcdefghi")), "a", 5)
    for temperature in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
            sample(model, vocab, "ab", 0, temperature=temperature)  # length 0: checked all the same
    with pytest.raises(TypeError, match="temperature must be a number, got str"):
        sample(model, vocab, "ab", 3, temperature="0.5")  # type: ignore[arg-type]
    for top_k in (0, -1):
        with pytest.raises(ValueError, match="top_k must be >= 1"):
            sample(model, vocab, "ab", 3, temperature=0.0, top_k=top_k)
    with pytest.raises(ValueError, match="length must be >= 0, got -3"):
        sample(model, vocab, "ab", -3)
    with pytest.raises(TypeError, match="length must be an integer, got float"):
        sample(model, vocab, "ab", 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not trained on: 'xz'"):
        sample(model, vocab, "axz", 3)
    assert sample(model, vocab, "ab", 0) == "ab"


def test_sample_greedy_is_the_argmax_path() -> None:
    vocab = Vocabulary(list("abcdefg"))
    model, _ = _pair("gru", 0)
    text = sample(model, vocab, "abc", 8, temperature=0.0)
    assert text.startswith("abc")
    assert len(text) == 11
    model.reset_state()
    ids = vocab.encode("abc").unsqueeze(0)
    expected = []
    for _ in range(8):
        token = int(model(ids)[0, -1].argmax())
        expected.append(token)
        ids = torch.tensor([[token]])
    assert text == "abc" + vocab.decode(expected)
    assert sample(model, vocab, "abc", 8, temperature=1e-6) == text
    assert model.state is None
    assert model.training


def test_readme_examples_run(tmp_path: Path) -> None:
    assert run_readme_examples(Path(__file__).resolve().parents[1] / "README.md", tmp_path) == 2


@pytest.mark.parametrize("embedding", [0, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_keeps_no_cache_for_a_backward(arch: str, embedding: int) -> None:
    model, _ = _pair(arch, embedding)
    model(torch.randint(0, 7, (2, 5), generator=seeded_generator(5)))
    assert cached_tensors(model), "a training forward keeps every step's cache (else this test could not fail)"
    sample(model, Vocabulary(list("abcdefg")), "abc", 4, generator=seeded_generator(6))
    assert cached_tensors(model) == {}
    with pytest.raises(RuntimeError, match="no_cache"):
        model.rnn.backward(torch.zeros(1, 1, 5, dtype=torch.float64))
