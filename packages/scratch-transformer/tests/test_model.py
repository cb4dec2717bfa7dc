"""The whole Transformer: forward against nn.Transformer plus embeddings and head, backward against autograd.

The torch pipeline is built by hand: ``head(nn.Transformer(E_src(src) * sqrt(d) + PE, E_tgt(tgt) * sqrt(d) + PE))``
with PE from the formula, torch's masks meaning the opposite of ours (True = masked out).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from _torch_reference import assert_grads_match_torch, perturbed, sinusoid
from torch import Tensor, nn

from scratch_engine import Parameter
from scratch_engine.tools.testing import assert_close, check_backward, random_inputs, seeded_generator
from scratch_transformer import Transformer, causal_mask, padding_mask

PAD, SRC_VOCAB, TGT_VOCAB, D_MODEL, HEADS, D_FF = 0, 11, 9, 8, 2, 16
B, T_SRC, T_TGT = 3, 6, 5

norm_modes = pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
tying = pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])


def _ids() -> tuple[Tensor, Tensor]:
    """Source and target ids with trailing padding in some sequences."""
    generator = seeded_generator(0)
    src = torch.randint(1, SRC_VOCAB, (B, T_SRC), generator=generator)
    tgt = torch.randint(1, TGT_VOCAB, (B, T_TGT), generator=generator)
    src[1, -2:] = PAD
    src[2, -1:] = PAD
    tgt[1, -1:] = PAD
    return src, tgt


def _torch_parts(norm_first: bool, tie: bool) -> tuple[nn.Transformer, nn.Embedding, nn.Embedding, nn.Linear]:
    torch.manual_seed(0)
    transformer = perturbed(
        nn.Transformer(D_MODEL, HEADS, 2, 2, D_FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    )
    src_embedding = nn.Embedding(SRC_VOCAB, D_MODEL).double()
    tgt_embedding = nn.Embedding(TGT_VOCAB, D_MODEL).double()
    head = perturbed(nn.Linear(D_MODEL, TGT_VOCAB), seed=1)
    if tie:
        head.weight = tgt_embedding.weight
    return transformer, src_embedding, tgt_embedding, head  # type: ignore[return-value]


def _torch_logits(
    parts: tuple[nn.Transformer, nn.Embedding, nn.Embedding, nn.Linear], src: Tensor, tgt: Tensor
) -> Tensor:
    transformer, src_embedding, tgt_embedding, head = parts
    scale = math.sqrt(D_MODEL)
    out = transformer(
        src_embedding(src) * scale + sinusoid(T_SRC, D_MODEL),
        tgt_embedding(tgt) * scale + sinusoid(T_TGT, D_MODEL),
        tgt_mask=~causal_mask(T_TGT),
        src_key_padding_mask=src == PAD,
        tgt_key_padding_mask=tgt == PAD,
        memory_key_padding_mask=src == PAD,
    )
    return head(out)


def _model(norm_first: bool = False, tie: bool = False, dropout: float = 0.0) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(SRC_VOCAB, TGT_VOCAB, D_MODEL, HEADS, 2, 2, D_FF, dropout, 16, tie, norm_first=norm_first)
    return model.to(dtype=torch.float64)  # type: ignore[return-value]


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")  # torch, about pre-norm
@norm_modes
@tying
def test_matches_torch_pipeline(norm_first: bool, tie: bool) -> None:
    parts = _torch_parts(norm_first, tie)
    transformer, src_embedding, tgt_embedding, head = parts
    model = Transformer.from_torch(transformer, src_embedding, tgt_embedding, head, max_len=16)
    assert model.encoder.norm is not None  # nn.Transformer's final norms are mirrored
    assert model.decoder.norm is not None
    assert (model.head.weight is model.tgt_embed.embedding.weight) == tie

    src, tgt = _ids()
    want = _torch_logits(parts, src, tgt)
    logits = model(src, tgt, padding_mask(src, PAD), padding_mask(tgt, PAD))
    assert logits.shape == (B, T_TGT, TGT_VOCAB)
    assert_close(logits, want.detach(), name="logits")

    (g,) = random_inputs(want.shape, seed=1)
    want.backward(g)
    assert model.backward(g) is None
    assert assert_grads_match_torch(model, transformer) == 2 * 12 + 2 * 18 + 4
    assert_close(model.src_embed.embedding.weight.grad, src_embedding.weight.grad, name="grad of source embedding")
    assert_close(model.tgt_embed.embedding.weight.grad, tgt_embedding.weight.grad, name="grad of target embedding")
    assert_close(model.head.weight.grad, head.weight.grad, name="grad of head weight")
    assert_close(model.head.bias.grad, head.bias.grad, name="grad of head bias")


@norm_modes
@tying
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_backward_matches_autograd(norm_first: bool, tie: bool, dropout: float) -> None:
    model = _model(norm_first, tie, dropout)
    src, tgt = _ids()
    # integer ids and boolean masks pass through; backward returns None (no input gradient)
    check_backward(model, src, tgt, padding_mask(src, PAD), padding_mask(tgt, PAD))


def test_tied_weight_accumulates_both_uses() -> None:
    tied = _model(tie=True)
    assert tied.head.weight is tied.tgt_embed.embedding.weight
    untied = copy.deepcopy(tied)
    untied.head.weight = Parameter(untied.head.weight.data.clone())
    assert tied.num_parameters() == untied.num_parameters() - TGT_VOCAB * D_MODEL
    src, tgt = _ids()
    (g,) = random_inputs((B, T_TGT, TGT_VOCAB), seed=2)
    for model in (tied, untied):
        assert_close(model(src, tgt), untied(src, tgt), name="same function")
        model.zero_grad()
        model(src, tgt)
        model.backward(g)
    both = untied.head.weight.grad + untied.tgt_embed.embedding.weight.grad
    assert_close(tied.head.weight.grad, both, name="tied grad = head's + embedding's")


def test_post_norm_model_has_no_final_norm_by_default() -> None:
    assert _model().encoder.norm is None
    assert _model(norm_first=True).decoder.norm is not None


def test_decoder_is_causal() -> None:
    model = _model()
    src, tgt = _ids()
    logits = model(src, tgt)
    changed = tgt.clone()
    changed[:, 3:] = (changed[:, 3:] % (TGT_VOCAB - 1)) + 1
    assert_close(model(src, changed)[:, :3], logits[:, :3], name="logits before the change")
    assert not torch.allclose(model(src, changed)[:, 3:], logits[:, 3:])


def test_left_padded_target_has_no_nan() -> None:
    """Query 0 of a left-padded target sees no key (causal & padding): zeros there, finite everywhere."""
    model = _model()
    src, tgt = _ids()
    tgt[0, :2] = PAD
    logits = check_backward(model, src, tgt, padding_mask(src, PAD), padding_mask(tgt, PAD))
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bad_input_is_a_value_error() -> None:
    model = _model()
    src, tgt = _ids()
    with pytest.raises(ValueError, match=r"src_ids as integer token ids of shape \(B, T\), got \(3, 6\) of dtype"):
        model(src.double(), tgt)
    with pytest.raises(ValueError, match=r"same batch size, got \(3, 6\) and \(2, 5\)"):
        model(src, tgt[:2])
    with pytest.raises(
        ValueError, match=r"src_mask expects a mask broadcastable to \(3, 1, 1, 6\), got shape \(6, 6\)"
    ):
        model(src, tgt, src_mask=causal_mask(T_SRC))
    with pytest.raises(ValueError, match=r"tgt_mask expects a boolean mask \(True = may attend\), got dtype"):
        model(src, tgt, tgt_mask=torch.zeros(T_TGT, T_TGT))
    with pytest.raises(ValueError, match=r"positions 0\.\.15, got positions 0\.\.16"):
        model(src, torch.ones(B, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must be in \[0, 9\)"):
        model(src, tgt + TGT_VOCAB)


def test_from_torch_checks_the_parts_fit() -> None:
    transformer, src_embedding, tgt_embedding, _ = _torch_parts(False, False)
    with pytest.raises(ValueError, match="tgt vocabulary 9, got 7"):
        Transformer.from_torch(transformer, src_embedding, tgt_embedding, nn.Linear(D_MODEL, 7))
    with pytest.raises(ValueError, match=r"dimension d_model=8 .* got 8, 6 and 8"):
        Transformer.from_torch(transformer, src_embedding, nn.Embedding(TGT_VOCAB, 6), nn.Linear(D_MODEL, 9))


def test_empty_batch_or_sequence_is_a_value_error() -> None:
    model = _model()
    src, tgt = _ids()
    with pytest.raises(ValueError, match=r"src_ids must have B >= 1 and T >= 1, got shape \(3, 0\)"):
        model(src[:, :0], tgt)
    with pytest.raises(ValueError, match=r"src_ids must have B >= 1 and T >= 1, got shape \(0, 6\)"):
        model(src[:0], tgt[:0])
    with pytest.raises(ValueError, match=r"tgt_ids must have B >= 1 and T >= 1, got shape \(3, 0\)"):
        model(src, tgt[:, :0])


def test_backward_checks_the_gradient() -> None:
    model = _model()
    with pytest.raises(RuntimeError, match=r"Transformer\.backward called before forward"):
        model.backward(torch.ones(B, T_TGT, TGT_VOCAB, dtype=torch.float64))
    src, tgt = _ids()
    model(src, tgt)
    with pytest.raises(ValueError, match=r"Transformer\.backward expects grad_output of the forward output's shape "):
        model.backward(torch.ones(B, T_TGT - 1, TGT_VOCAB, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(3, 5, 9\), got \(3, 5, 7\)"):
        model.backward(torch.ones(B, T_TGT, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"logits' dtype torch\.float64, got torch\.float32"):
        model.backward(torch.ones(B, T_TGT, TGT_VOCAB))
    model.backward(torch.ones(B, T_TGT, TGT_VOCAB, dtype=torch.float64))  # the right gradient still goes through
