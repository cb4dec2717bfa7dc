"""Greedy and beam search: the KV cache changes nothing but the work done.

On small randomly initialised models (seeded, float64, padded sources), cached and re-computed
decoding must produce the same tokens, and every cached step's logits must equal the full
re-computation to 1e-9. Beam search is also checked against exhaustive search.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from scratch_engine.tools.testing import assert_close, cached_tensors, seeded_generator
from scratch_transformer import Transformer, padding_mask
from scratch_transformer.bench import decode_speed
from scratch_transformer.decoding import beam_search, greedy_decode, length_penalty_factor

PAD, BOS, EOS = 0, 1, 2
SRC_VOCAB, TGT_VOCAB, MAX_LEN = 13, 11, 12

norm_modes = pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])


def _model(norm_first: bool = True, tgt_vocab: int = TGT_VOCAB, seed: int = 0) -> Transformer:
    """A small random model whose outputs vary with the source and the step (pre-norm: weights scaled up)."""
    torch.manual_seed(seed)
    model = Transformer(SRC_VOCAB, tgt_vocab, 16, 2, 2, 2, 32, 0.1, 32, norm_first=norm_first)
    model.to(dtype=torch.float64)
    for p in model.parameters():
        p.data.mul_(3.0 if norm_first else 1.0)
    model.head.bias.data[EOS] -= 1.0  # <eos> a little less likely: outputs of many lengths
    return model


def _sources(batch: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Source ids with trailing padding in every other sentence, and their padding mask."""
    generator = seeded_generator(seed)
    src = torch.randint(4, SRC_VOCAB, (batch, 7), generator=generator)
    for b in range(1, batch, 2):
        src[b, 7 - b % 5 - 1 :] = PAD
    return src, padding_mask(src, PAD)


def _until_eos(row: list[int]) -> list[int]:
    return row[: row.index(EOS)] if EOS in row else row


@norm_modes
def test_cached_step_logits_equal_full_recompute(norm_first: bool) -> None:
    model = _model(norm_first).eval()
    src, src_mask = _sources(3)
    tgt = torch.randint(3, TGT_VOCAB, (3, 9), generator=seeded_generator(2))
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, src_mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, :3], memory, src_mask, cache=cache)]  # a 3-position prompt, then one by one
        assert len(cache) == 3
        for t in range(3, 9):
            steps.append(model.decode(tgt[:, t : t + 1], memory, src_mask, cache=cache))
            assert len(cache) == t + 1
            assert cache.self_attn[0].key.shape == (3, 2, t + 1, 8)  # grows by one position per step
            assert cache.cross_attn[0].key.shape == (3, 2, 7, 8)  # the memory's, computed once
    assert_close(torch.cat(steps, dim=1), full, atol=1e-9, rtol=1e-9, name="cached logits")


@norm_modes
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_greedy_cached_equals_recompute(norm_first: bool, batch: int) -> None:
    model = _model(norm_first)
    src, src_mask = _sources(batch)
    cached = greedy_decode(model, src, src_mask, BOS, EOS, MAX_LEN, pad_id=PAD)
    plain = greedy_decode(model, src, src_mask, BOS, EOS, MAX_LEN, use_cache=False, pad_id=PAD)
    assert torch.equal(cached, plain)
    assert cached.dtype == torch.long
    assert cached.shape[0] == batch
    assert cached.shape[1] <= MAX_LEN
    for row in cached.tolist():  # after <eos> only padding
        if EOS in row:
            assert set(row[row.index(EOS) + 1 :]) <= {PAD}


def test_greedy_rows_are_independent_of_the_batch() -> None:
    """A padded source decodes as it does alone: padding is masked out of the cross-attention."""
    model = _model()
    src, src_mask = _sources(5)
    together = greedy_decode(model, src, src_mask, BOS, EOS, MAX_LEN, pad_id=PAD).tolist()
    lengths = set()
    for b in range(5):
        real = src[b : b + 1, : int(src_mask[b].sum())]
        alone = greedy_decode(model, real, None, BOS, EOS, MAX_LEN).tolist()[0]
        assert _until_eos(alone) == _until_eos(together[b])
        lengths.add(len(_until_eos(alone)))
    assert len(lengths) >= 2  # the random test model is not degenerate: outputs of several lengths


@norm_modes
@pytest.mark.parametrize(("batch", "beam_size", "alpha"), [(1, 4, 0.6), (3, 3, 0.0), (4, 5, 1.0)])
def test_beam_cached_equals_recompute(norm_first: bool, batch: int, beam_size: int, alpha: float) -> None:
    model = _model(norm_first)
    src, src_mask = _sources(batch)
    cached = beam_search(model, src, src_mask, BOS, EOS, MAX_LEN, beam_size, alpha)
    plain = beam_search(model, src, src_mask, BOS, EOS, MAX_LEN, beam_size, alpha, use_cache=False)
    assert cached == plain
    assert len(cached) == batch
    assert all(EOS not in hypothesis and len(hypothesis) <= MAX_LEN for hypothesis in cached)


@pytest.mark.parametrize("batch", [1, 4])
def test_beam_of_one_is_greedy(batch: int) -> None:
    model = _model()
    src, src_mask = _sources(batch)
    greedy = [_until_eos(row) for row in greedy_decode(model, src, src_mask, BOS, EOS, MAX_LEN).tolist()]
    assert beam_search(model, src, src_mask, BOS, EOS, MAX_LEN, beam_size=1) == greedy


def _exhaustive_best(model: Transformer, src: Tensor, max_len: int, alpha: float, vocab: int) -> list[int]:
    """argmax over every output of at most ``max_len`` tokens of log p(Y) / lp(Y), by brute force."""
    candidates = [(*body, EOS) for n in range(max_len) for body in itertools.product(range(vocab), repeat=n)]
    candidates = [c for c in candidates if EOS not in c[:-1]]
    candidates += [c for c in itertools.product(range(vocab), repeat=max_len) if EOS not in c]  # cut at max_len
    best, best_score = None, -math.inf
    with torch.no_grad():
        memory = model.eval().encode(src)
        for c in candidates:
            ids = torch.tensor([[BOS, *c]])
            logits = model.decode(ids[:, :-1], memory)[0]
            log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            score = log_probs[torch.arange(len(c)), ids[0, 1:]].sum().item() / length_penalty_factor(len(c), alpha)
            if score > best_score:
                best, best_score = list(c), score
    assert best is not None
    return best[:-1] if best[-1] == EOS else best  # beam_search drops the <eos>


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_finds_the_exhaustive_best(alpha: float) -> None:
    """With more beams than hypotheses nothing is pruned: beam search is exact."""
    vocab, max_len = 5, 3
    model = _model(tgt_vocab=vocab, seed=3)
    src, _ = _sources(1, seed=4)
    want = _exhaustive_best(model, src, max_len, alpha, vocab)
    for use_cache in (True, False):
        got = beam_search(model, src, None, BOS, EOS, max_len, beam_size=100, length_penalty=alpha, use_cache=use_cache)
        assert got == [want]


def test_decoding_leaves_the_model_as_it_was() -> None:
    model = _model()
    src, src_mask = _sources(2)
    model.train()
    greedy_decode(model, src, src_mask, BOS, EOS, 4)
    beam_search(model, src, src_mask, BOS, EOS, 4)
    assert model.training
    assert all(m.training for m in model.modules())
    assert not any(p.data.requires_grad for p in model.parameters())


def test_no_early_stop_without_eos_and_speed_report() -> None:
    model = _model()
    src, src_mask = _sources(2)
    assert greedy_decode(model, src, src_mask, BOS, None, 6).shape == (2, 6)
    speed = decode_speed(model, src, src_mask, max_len=6, repeats=1)
    assert set(speed) == {"cached_tokens_per_s", "uncached_tokens_per_s", "speedup"}
    assert all(value > 0 for value in speed.values())


def test_cache_misuse_is_a_value_error() -> None:
    model = _model().eval()
    src, src_mask = _sources(2)
    memory = model.encode(src, src_mask)
    cache = model.new_cache()
    model.decode(torch.full((2, 1), BOS), memory, src_mask, cache=cache)
    with pytest.raises(ValueError, match=r"cannot append keys of shape \(3, 2, 1, 8\)"):
        model.decode(torch.full((3, 1), BOS), memory, src_mask, cache=cache)
    with pytest.raises(ValueError, match="with a cache takes no tgt_mask"):
        model.decode(torch.full((2, 1), BOS), memory, src_mask, tgt_mask=padding_mask(src, PAD), cache=cache)
    with pytest.raises(ValueError, match="DecoderCache has 3 layers, the decoder has 2"):
        model.decoder(torch.zeros(2, 1, 16, dtype=torch.float64), memory, cache=type(cache)(3))
    model.train()
    with pytest.raises(RuntimeError, match=r"for inference: call model\.eval\(\) first"):
        model.decode(torch.full((2, 1), BOS), memory, src_mask, cache=cache)


def test_bad_arguments_are_value_errors() -> None:
    model = _model()
    src, src_mask = _sources(2)
    with pytest.raises(ValueError, match=r"max_len must be an int in \[1, 32\]"):
        greedy_decode(model, src, src_mask, BOS, EOS, 33)
    with pytest.raises(ValueError, match=r"eos_id must be a target token id in \[0, 11\), got 11"):
        greedy_decode(model, src, src_mask, BOS, TGT_VOCAB, 5)
    with pytest.raises(ValueError, match=r"src_ids as integer token ids of shape \(B, T_src\)"):
        greedy_decode(model, src[0], None, BOS, EOS, 5)
    with pytest.raises(ValueError, match=r"src_ids must have B >= 1 and T >= 1, got shape \(2, 0\)"):
        greedy_decode(model, src[:, :0], None, BOS, EOS, 5)
    with pytest.raises(ValueError, match=r"src_ids must have B >= 1 and T >= 1, got shape \(0, 7\)"):
        beam_search(model, src[:0], None, BOS, EOS, 5)
    with pytest.raises(ValueError, match=r"src_mask expects a mask broadcastable to \(2, 1, 1, 7\)"):
        greedy_decode(model, src, src_mask[:, :, :, :3], BOS, EOS, 5)
    with pytest.raises(ValueError, match="beam_size must be a positive int, got 0"):
        beam_search(model, src, src_mask, BOS, EOS, 5, beam_size=0)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(model, src, src_mask, BOS, EOS, 5, length_penalty=-1.0)


@norm_modes
def test_decoding_keeps_no_cache_for_a_backward(norm_first: bool) -> None:
    # a forward keeps q, k, v and P in every attention, x_hat in every norm, ...; decoding (under no_cache())
    # keeps none of it: only its own KV cache, which lives in the decoding loop
    model = _model(norm_first)
    src, src_mask = _sources(3)
    model(src, torch.full((3, 4), BOS), src_mask)
    assert cached_tensors(model), "a training forward keeps its caches (else this test could not fail)"
    for decode in (
        lambda model: greedy_decode(model, src, src_mask, BOS, EOS, MAX_LEN, pad_id=PAD),
        lambda model: greedy_decode(model, src, src_mask, BOS, EOS, MAX_LEN, use_cache=False, pad_id=PAD),
        lambda model: beam_search(model, src[:1], src_mask[:1], BOS, EOS, MAX_LEN, beam_size=3),
    ):
        fresh = _model(norm_first)
        decode(fresh)
        assert cached_tensors(fresh) == {}
        assert fresh.training  # the mode is restored
