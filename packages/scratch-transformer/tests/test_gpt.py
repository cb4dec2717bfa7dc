"""The decoder-only GPT: every backward against autograd, the model against its torch.nn twin, the KV cache against
recomputation, the batches, the ``train shakespeare`` task and ``sample`` on the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from scratch_engine import AdamW, CrossEntropyLoss
from scratch_engine.tools.testing import (
    assert_close,
    assert_sigterm_resume_is_exact,
    check_backward,
    require_data_dir,
)
from scratch_engine.tools.text import Vocabulary
from scratch_engine.tools.twin import torch_optimizer
from scratch_transformer import EncoderLayer, causal_mask
from scratch_transformer.cli import GPT_DEMO, main
from scratch_transformer.embedding import sinusoidal_table
from scratch_transformer.gpt import GPT, GPTConfig, generate, sample
from scratch_transformer.reference import torch_generate_cached, torch_gpt_twin
from scratch_transformer.shakespeare import IGNORE, GPTTrainConfig, RandomBlocks, run, validation_blocks

TINY = GPTConfig(vocab_size=11, block_size=8, layers=2, heads=2, d_model=8)
TINY_FLAGS = ["--layers", "1", "--heads", "2", "--d-model", "16", "--block-size", "16", "--batch-size", "4"]
TINY_FLAGS += ["--device", "cpu", "--threads", "1", "--row-sample", "0", "--sample-length", "20"]


def tiny(**changes: object) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(**{**TINY.__dict__, **changes})  # type: ignore[arg-type]
    return GPT(config).to(dtype=torch.float64)


def ids(batch: int = 3, steps: int = 8, vocab: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, steps), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- backward against autograd


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_gpt_block_is_a_causal_pre_norm_encoder_layer_checked_against_autograd(bias: bool) -> None:
    torch.manual_seed(0)
    block = EncoderLayer(8, 2, 32, dropout=0.1, activation="gelu", norm_first=True, bias=bias).to(torch.float64)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    check_backward(block, x, causal_mask(5))
    vectors = sum(p.data.dim() == 1 for p in block.parameters())
    assert vectors == (2 + 2 + 6 if bias else 2)  # without biases only the two norms' gains are vectors


@pytest.mark.parametrize(
    "changes",
    [{}, {"positions": "sinusoidal"}, {"tie_weights": False, "bias": True}, {"dropout": 0.2}],
    ids=["learned-tied", "sinusoidal", "untied-bias", "dropout"],
)
def test_gpt_backward_matches_autograd_for_every_parameter(changes: dict[str, object]) -> None:
    model = tiny(**changes)
    check_backward(model, ids())  # token ids get no gradient; every parameter is compared, the tied one included


def test_tied_weights_are_one_parameter_whose_gradient_sums_both_uses() -> None:
    model = tiny()
    assert model.head.weight is model.token_embedding.weight
    names = [name for name, _ in model.named_parameters()]
    assert "head.weight" not in names
    assert "token_embedding.weight" in names
    untied = tiny(tie_weights=False)
    assert untied.num_parameters() == model.num_parameters() + 11 * 8


def test_init_follows_gpt2() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, layers=4))
    assert model.blocks[0].add_norm1.norm.weight.data.eq(1).all()
    assert model.blocks[0].self_attn.q_proj.weight.data.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(8)
    assert model.blocks[0].feed_forward.linear2.weight.data.std().item() == pytest.approx(residual, rel=0.05)
    assert model.num_parameters() == 804_096  # nanoGPT's baby model: 0.80M parameters


def test_bad_ids_are_one_line_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="reads at most 8 positions"):
        model(ids(steps=9))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match="11"):
        model(ids(vocab=12, seed=3).clamp(min=11))


# --------------------------------------------------------------------------- the torch.nn twin


@pytest.mark.parametrize("changes", [{}, {"positions": "sinusoidal", "bias": True, "tie_weights": False}])
def test_twin_computes_the_same_logits_and_gradients(changes: dict[str, object]) -> None:
    model = tiny(**changes)
    twin = torch_gpt_twin(model)
    x = ids()
    ours = model(x)
    theirs = twin(x)
    assert_close(ours, theirs.detach(), name="logits")
    g = torch.randn_like(ours)
    model.backward(g)
    theirs.backward(g)
    grads = dict(twin.named_parameters())
    assert_close(model.token_embedding.weight.grad, grads["token_embedding.weight"].grad, name="embedding grad")
    q = model.blocks[1].self_attn
    ours_qkv = torch.cat([q.q_proj.weight.grad, q.k_proj.weight.grad, q.v_proj.weight.grad])
    assert_close(ours_qkv, grads["blocks.1.qkv.weight"].grad, name="qkv grad")


def test_adamw_decays_matrices_only_as_torchs_param_groups_do() -> None:
    model = tiny(bias=True)
    twin = torch_gpt_twin(model)
    optimizer = AdamW(model, 1e-2, betas=(0.9, 0.99), weight_decay=0.5, decay_vectors=False)
    torch_opt = torch_optimizer(optimizer, twin.parameters())
    assert [group["weight_decay"] for group in torch_opt.param_groups] == [0.5, 0.0]
    loss = CrossEntropyLoss()
    x, y = ids(), ids(seed=1)
    for _ in range(3):
        model.zero_grad()
        loss(model(x), y)
        model.backward(loss.backward())
        optimizer.step()
        torch_opt.zero_grad()
        torch.nn.functional.cross_entropy(twin(x).reshape(-1, 11), y.reshape(-1)).backward()
        torch_opt.step()
    assert_close(model.token_embedding.weight.data, twin.token_embedding.weight.detach(), name="decayed matrix")
    assert_close(model.norm.bias.data, twin.norm.bias.detach(), name="undecayed vector")
    plain = tiny(bias=True)
    AdamW(plain, 1e-2, weight_decay=0.5).step()  # zero gradients: only the decay moves the weights
    assert not torch.equal(plain.norm.weight.data, torch.ones(8, dtype=torch.float64))
    kept = tiny(bias=True)
    AdamW(kept, 1e-2, weight_decay=0.5, decay_vectors=False).step()
    assert torch.equal(kept.norm.weight.data, torch.ones(8, dtype=torch.float64))


def test_reference_run_agrees_with_the_torch_twin_over_200_steps(tmp_path: Path) -> None:
    # the acceptance's check at a small size: --reference torch trains both on the same batches in float64
    text = tmp_path / "text.txt"
    generator = torch.Generator().manual_seed(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "\n"]
    text.write_text(" ".join(words[i] for i in torch.randint(0, 9, (4000,), generator=generator).tolist()))
    out = tmp_path / "ref"
    argv = ["train", "shakespeare", "--text", str(text), *TINY_FLAGS, "--max-steps", "200", "--eval-every", "100"]
    assert main([*argv, "--reference", "torch", "--warmup-steps", "20", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["dtype"] == "float64"
    assert record["reference_steps"] >= 200
    assert record["reference_max_relative_deviation"] < 1e-12  # measured 4.4e-16: rounding only
    assert record["reference_max_val_loss_gap"] < 1e-12
    assert record["val_loss"] < 1.6  # it learned the words (uniform over 17 characters: 2.83)


# --------------------------------------------------------------------------- sampling with the KV cache


def test_incremental_forward_equals_the_full_forward() -> None:
    model = tiny().eval()
    x = ids(batch=2)
    full = model(x)
    cache = model.new_cache()
    first = model.forward_incremental(x[:, :5], cache)  # a prompt of 5, then one at a time
    rest = [model.forward_incremental(x[:, t : t + 1], cache) for t in range(5, 8)]
    assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-12, rtol=1e-12, name="cached logits")
    assert len(cache[0]) == 8


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_a_drawn_token_gives_the_logits_of_its_incremental_forward(positions: str) -> None:
    model = tiny(positions=positions).eval()
    x = ids(batch=1)
    cached, drawn = model.new_cache(), model.new_cache()
    model.forward_incremental(x[:, :5], cached)
    model.forward_incremental(x[:, :5], drawn)
    for t in range(5, 8):  # the row slice of forward_drawn against the lookup of forward_incremental
        expected = model.forward_incremental(x[:, t : t + 1], cached)
        assert_close(model.forward_drawn(int(x[0, t]), drawn), expected, atol=0, rtol=0, name=f"position {t}")
    with pytest.raises(ValueError, match=r"reads at most 8 positions, got positions 8\.\.8"):
        model.forward_drawn(0, drawn)  # the block is full: the window must slide instead


def test_sampling_runs_in_inference_mode_but_leaves_only_ordinary_tensors() -> None:
    """generate runs under torch.inference_mode; what it returns and what the model keeps (the causal masks,
    the sinusoidal table) must stay ordinary tensors, else a later in-place write or autograd step fails."""
    model = tiny(positions="sinusoidal", block_size=23)  # a table size no other test builds first
    out = generate(model, ids(batch=1, steps=3), 30, 0.0, use_cache=False)  # past the block: the masks too
    assert not out.is_inference()
    out[0, 0] = 1  # an in-place write to an inference tensor outside inference mode would raise
    assert model._masks
    assert not any(mask.is_inference() for mask in model._masks.values())
    assert not sinusoidal_table(23, model.config.d_model).is_inference()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_sampling_draws_the_tokens_of_recomputation_past_the_block_too(temperature: float) -> None:
    model = tiny()
    prompt = ids(batch=1, steps=3)
    drawn = {}
    for use_cache in (True, False):
        generator = torch.Generator().manual_seed(5)
        drawn[use_cache] = generate(model, prompt, 20, temperature, 4, generator, use_cache=use_cache)
    assert torch.equal(drawn[True], drawn[False])  # 23 ids: past block_size 8, both slide the window
    assert drawn[True].shape == (1, 23)
    assert model.training  # generate puts the mode back


def test_sample_checks_its_prompt() -> None:
    model = tiny(vocab_size=3)
    vocabulary = Vocabulary(["a", "b", "c"])
    assert sample(model, vocabulary, "ab", 10, 0.0).startswith("ab")
    with pytest.raises(ValueError, match="not trained on"):
        sample(model, vocabulary, "az", 5)
    with pytest.raises(ValueError, match="at least one character"):
        sample(model, vocabulary, "", 5)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, vocabulary, "a", 5, temperature=-1.0)


# --------------------------------------------------------------------------- batches


def test_random_blocks_are_reproducible_shifted_and_resumable() -> None:
    text = torch.arange(1000)
    blocks = RandomBlocks(text, batch_size=4, block_size=10, seed=3)
    assert len(blocks) == 1000 // 40
    first = list(blocks)
    x, y = first[0]
    assert x.shape == y.shape == (4, 10)
    assert torch.equal(y, x + 1)  # the text is 0, 1, 2...: the targets are the next characters
    second = list(blocks)
    assert not torch.equal(first[0][0], second[0][0])  # the next epoch draws other places
    blocks.set_epoch(0, start=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[5:], list(blocks), strict=True))
    ranks = [RandomBlocks(text, 2, 10, seed=3, rank=r, world_size=2) for r in range(2)]
    together = torch.cat([next(iter(r))[0] for r in ranks])
    assert torch.equal(together, first[0][0])  # two ranks of 2 read the batch of one process of 4


def test_validation_windows_score_each_character_once() -> None:
    loader = validation_blocks(torch.arange(105), block_size=10)  # consecutive blocks: nanoGPT's estimate
    xs = torch.cat([x for x, _ in loader])
    assert torch.equal(xs.reshape(-1), torch.arange(100))
    halves = validation_blocks(torch.arange(105), block_size=10, stride=5)
    ys = torch.cat([y for _, y in halves])
    scored = ys[ys != IGNORE]
    assert torch.equal(scored, torch.arange(6, 101))  # each once, after the first half block, in order
    assert (ys[:, :5] == IGNORE).all()  # a window's first half was scored by the window before
    with pytest.raises(ValueError, match="shorter than one block"):
        validation_blocks(torch.arange(10), block_size=10)
    with pytest.raises(ValueError, match="stride"):
        validation_blocks(torch.arange(100), block_size=10, stride=11)


# --------------------------------------------------------------------------- the task, on the real text


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return require_data_dir("tinyshakespeare")


def test_short_seeded_run_learns_shakespeare(data_dir: Path) -> None:
    # 150 steps of a 2 x 64 GPT (block 32, batch 16): measured val 2.544 (seed 0), 2.550 (seed 1); uniform: 4.17
    config = GPTTrainConfig(
        layers=2,
        d_model=64,
        block_size=32,
        batch_size=16,
        learning_rate=3e-3,
        warmup_steps=20,
        max_steps=150,
        eval_every=150,
        sample_length=50,
        device="cpu",
        threads=1,
    )
    metrics = run(config, None, progress=False)
    assert metrics["steps"] == 150
    assert metrics["val_loss"] < 2.6
    assert metrics["val_characters"] == 111540  # the RNN's validation split, character for character
    assert metrics["vocab_size"] == 65
    assert metrics["characters_seen"] == 150 * 16 * 32


def test_train_then_sample_on_the_command_line(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", "shakespeare", *TINY_FLAGS, "--max-steps", "5", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "nats/char" in printed
    assert "sample:" in printed
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["steps"] == 5
    assert record["arch"] == "gpt"
    assert (out / "sample.txt").read_text(encoding="utf-8").startswith("ROMEO:")
    texts = []
    for extra in ([], ["--no-cache"]):  # with the KV cache, and recomputing the context: the same draws
        argv = ["sample", "--checkpoint", str(out / "checkpoint.pt"), "--length", "40", "--prompt", "JULIET:"]
        assert main([*argv, *extra]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1]
    assert texts[0].startswith("JULIET:")


def test_sample_refuses_a_translation_checkpoint_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sample", "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    torch.save({"model": {}, "extra": {}}, tmp_path / "other.pt")
    assert main(["sample", "--checkpoint", str(tmp_path / "other.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1


def test_sigterm_then_resume_ends_with_the_weights_of_an_uninterrupted_run(data_dir: Path, tmp_path: Path) -> None:
    argv = ["train", "shakespeare", *TINY_FLAGS, "--eval-every", "5", "--max-steps", "30", "--dropout", "0.1"]
    assert_sigterm_resume_is_exact(main, argv, tmp_path, 30)


def test_demo_budget_is_in_steps() -> None:
    assert GPT_DEMO["max_minutes"] is None
    assert GPT_DEMO["max_steps"] > 0


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_the_torch_nn_cached_decoder_is_right_and_gives_our_tokens(positions: str) -> None:
    """The yardstick gpt_bench times our cache against (#22): its cached greedy decoding equals recomputing the
    twin's whole prefix, and our generate's."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(11, 16, layers=2, heads=2, d_model=8, positions=positions))
    twin = torch_gpt_twin(model).eval()
    prompt = torch.tensor([[3, 1, 4]])
    theirs = torch_generate_cached(twin, prompt, 12)
    recomputed = prompt
    with torch.no_grad():
        for _ in range(12):
            recomputed = torch.cat((recomputed, twin(recomputed)[:, -1:].argmax(dim=-1)), dim=1)
    assert torch.equal(theirs, recomputed)
    assert torch.equal(theirs, generate(model, prompt, 12, temperature=0.0))
