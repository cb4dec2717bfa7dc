"""Training for translation: the Translator wrapper, the step budget, a short real run, the torch.nn twin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scratch_engine import CrossEntropyLoss, Dense, Engine, GradientDescent
from scratch_engine.testing import check_backward, require_data_dir
from scratch_transformer import Transformer, Vocabulary
from scratch_transformer.translate import (
    StepBudget,
    TranslateConfig,
    Translator,
    load_translator,
    make_scheduler,
    run,
    save_translator,
    translate,
)


@pytest.fixture(scope="module")
def pairs_file() -> Path:
    root = require_data_dir()  # fails loudly without SCRATCH_DATA_DIR
    path = root / "eng-fra" / "eng-fra.txt"
    assert path.is_file(), f"this test needs {path} (SCRATCH_DATA_DIR={root})"
    return path


def tiny(**changes: object) -> TranslateConfig:
    """A model small enough to train in seconds on the sentences of at most 10 English characters."""
    values: dict[str, object] = {
        "d_model": 32,
        "heads": 2,
        "layers": 1,
        "d_ff": 64,
        "dropout": 0.0,
        "max_src_len": 10,
        "batch_size": 32,
        "max_steps": 150,
        "steps_per_epoch": 50,
        "warmup_steps": 30,
        "lr": 3e-3,
        "max_minutes": None,
        "test_limit": 20,
        "device": "cpu",
    }
    values.update(changes)
    return TranslateConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("norm_first", [True, False])
def test_translator_backward_matches_autograd(norm_first: bool) -> None:
    torch.manual_seed(0)
    model = Translator(Transformer(9, 11, 8, 2, 2, 1, 16, 0.1, 32, norm_first=norm_first)).to(dtype=torch.float64)
    src = torch.tensor([[4, 5, 6, 7, 8], [5, 6, 7, Vocabulary.PAD, Vocabulary.PAD]])
    tgt_in = torch.tensor([[Vocabulary.BOS, 4, 5, 6], [Vocabulary.BOS, 7, 8, Vocabulary.PAD]])
    logits = check_backward(model, (src, tgt_in))
    assert logits.shape == (2, 4, 11)


def test_save_translator_names_a_model_that_is_not_a_translator(tmp_path: Path) -> None:
    model = Dense(4, 3)
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model.parameters(), learning_rate=0.1))
    with pytest.raises(TypeError, match="Engine that trains a Translator, got a Dense"):
        save_translator(tmp_path / "checkpoint.pt", engine, None, TranslateConfig())
    assert not (tmp_path / "checkpoint.pt").exists()


def test_step_budget_serves_fixed_epochs_across_passes() -> None:
    budget = StepBudget([1, 2, 3], steps_per_epoch=2, max_steps=5)
    epochs = [list(budget) for _ in range(4)]
    assert epochs == [[1, 2], [3, 1], [2], []]  # a new pass starts where the last ended; 5 steps in all
    assert budget.spent
    assert budget.steps == 5
    timed = StepBudget(range(100), steps_per_epoch=50, max_minutes=1e-9)
    assert len(list(timed)) <= 1
    assert timed.spent


def test_paper_schedule_peaks_at_lr() -> None:
    from scratch_engine import Adam
    from scratch_transformer.translate import build_model

    config = TranslateConfig(lr=1e-3, warmup_steps=300, d_model=128, schedule="inverse-sqrt")
    model = build_model(config.model_config(), 10, 10)
    scheduler = make_scheduler(config, Adam(model, 1.0), 1000)
    rates = [scheduler.lr_at(s) for s in range(1000)]
    assert max(rates) == pytest.approx(1e-3)
    assert rates.index(max(rates)) == 299
    short = make_scheduler(TranslateConfig(schedule="cosine", warmup_steps=300), Adam(model, 1e-3), 10)
    assert short.lr_at(10) == pytest.approx(0.0, abs=1e-12)  # a run shorter than the warm-up still decays to 0


def test_a_short_training_run_learns(pairs_file: Path, tmp_path: Path) -> None:
    """150 steps of a tiny model: the loss falls from log(V) ~ 4.3 to ~2.5 (measured 2.41 train, 2.54 val)."""
    metrics = run(tiny(pairs=str(pairs_file)), tmp_path, progress=False)
    assert metrics["steps"] == 150
    assert metrics["epochs"] == 3
    assert metrics["val_loss"] < 2.9
    assert metrics["final_train_loss"] < 2.8
    assert 0.0 <= metrics["test_cer"] < 1.0
    model, src_vocab, tgt_vocab, config = load_translator(tmp_path / "checkpoint.pt")
    assert config["d_model"] == 32
    again = translate(model, [english for english, _ in metrics["samples"]], src_vocab, tgt_vocab)
    assert again == [french for _, french in metrics["samples"]]  # the checkpoint holds the trained weights


def test_torch_twin_follows_the_same_curve(pairs_file: Path, tmp_path: Path) -> None:
    """Same weights, same batches, Adam + warm-up + clipping on both sides: 50 float64 steps agree to rounding."""
    metrics = run(
        tiny(pairs=str(pairs_file), max_steps=50, steps_per_epoch=25, warmup_steps=10, test_limit=5),
        tmp_path,
        progress=False,
        reference="torch",
    )
    assert metrics["reference_steps"] == 50
    assert metrics["config"]["dtype"] == "float64"  # a parity run's default
    assert metrics["reference_max_relative_deviation"] < 1e-12  # the same function, not just close
    assert (tmp_path / "reference.png").is_file()


def test_cross_attention_weights_for_plotting() -> None:
    torch.manual_seed(0)
    model = Transformer(9, 11, 8, 2, 1, 2, 16, 0.1, 32, norm_first=True).train()
    src = torch.tensor([[4, 5, 6, Vocabulary.PAD]])
    weights = model.cross_attention_weights(src, torch.tensor([[Vocabulary.BOS, 4, 5]]), src != Vocabulary.PAD)
    assert len(weights) == 2  # one per decoder layer
    assert weights[-1].shape == (1, 2, 3, 4)  # (B, H, T_tgt, T_src)
    assert torch.allclose(weights[-1].sum(-1), torch.ones(1, 2, 3))  # eval mode: no dropout on them
    assert bool((weights[-1][..., 3] == 0).all())  # the padded source position gets nothing
    assert model.training  # the mode is restored
