"""Training for translation: the Translator wrapper, the budget over the batches, a short real run, the torch twin."""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from scratch_engine import Adam, Callback, CrossEntropyLoss, Dense, Engine, GradientDescent
from scratch_engine.tools.checkpoint import save_checkpoint
from scratch_engine.tools.testing import check_backward, require_data_dir
from scratch_transformer import Transformer, Vocabulary
from scratch_transformer.checkpoint import translator_extra
from scratch_transformer.data import EngFra, split_of
from scratch_transformer.eng_fra import ENG_FRA
from scratch_transformer.translate import (
    TranslateConfig,
    Translator,
    build_translator,
    evaluate_translations,
    load_translator,
    plot_attention,
    run,
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
        "eval_every": 50,
        "warmup_steps": 30,
        "learning_rate": 3e-3,
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


def test_a_checkpoint_of_a_model_that_is_not_a_translator_is_named() -> None:
    with pytest.raises(TypeError, match="a translation checkpoint holds a Translator, got a Dense"):
        translator_extra(Dense(4, 3), _small_data(), asdict(TranslateConfig()))


class _Batches(Callback):
    """The source ids of every training batch, in the order the engine trained on them."""

    def __init__(self) -> None:
        self.sources: list[list[list[int]]] = []

    def on_train_batch(self, engine: Engine, x: Any, y: Any) -> None:
        self.sources.append(x[0].tolist())


def test_steps_run_on_across_passes_and_stop_mid_pass() -> None:
    """The batches of pass 0, then of pass 1, ... cut at max_steps: the sequence the old StepBudget served."""
    data = _small_data()
    loader = data.loader("train", 8, seed=3)
    passes = len(loader)
    model = _untrained(data)
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, learning_rate=0.01), progress=False)
    seen = _Batches()
    engine.fit(loader, 1000, max_steps=passes + 2, eval_every=3, callbacks=[seen])
    expected = [loader.collate(b)[0][0].tolist() for b in [*loader.batches(0), *loader.batches(1)[:2]]]
    assert seen.sources == expected
    assert (engine.global_step, engine.epoch, engine.batch) == (passes + 2, 1, 2)
    timed = Engine(model, CrossEntropyLoss(), GradientDescent(model, learning_rate=0.01), progress=False)
    timed.fit(loader, 1000, max_seconds=1e-9)  # time is checked after every step
    assert timed.global_step == 1


def test_paper_schedule_peaks_at_learning_rate() -> None:
    config = TranslateConfig(learning_rate=1e-3, warmup_steps=300, d_model=128, schedule="inverse-sqrt")
    model = build_translator(config.model_config(), 10, 10)
    scheduler = ENG_FRA.make_scheduler(config, Adam(model, 1.0), 1000)
    assert scheduler is not None
    rates = [scheduler.learning_rate_at(s) for s in range(1000)]
    assert max(rates) == pytest.approx(1e-3)
    assert rates.index(max(rates)) == 299
    short = ENG_FRA.make_scheduler(TranslateConfig(schedule="cosine", warmup_steps=300), Adam(model, 1e-3), 10)
    assert short is not None
    assert short.learning_rate_at(10) == pytest.approx(
        0.0, abs=1e-12
    )  # a run shorter than the warm-up still decays to 0
    with pytest.raises(ValueError, match="inverse-sqrt schedule needs warmup_steps >= 1"):
        TranslateConfig(schedule="inverse-sqrt", warmup_steps=0)


def test_a_short_training_run_learns(pairs_file: Path, tmp_path: Path) -> None:
    """150 steps of a tiny model: the loss falls from log(V) ~ 4.3 to ~2.5 (measured 2.42 train, 2.59 val)."""
    metrics = run(tiny(pairs=str(pairs_file)), tmp_path, progress=False)
    assert metrics["steps"] == 150
    assert metrics["history"]["step"] == [50, 100, 150]  # a validation every eval_every steps
    assert metrics["val_loss"] < 2.9
    assert metrics["final_train_loss"] < 2.8
    assert 0.0 <= metrics["test_cer"] < 1.0
    model, src_vocab, tgt_vocab, config = load_translator(tmp_path / "checkpoint.pt")
    assert config["d_model"] == 32
    again = translate(model, [english for english, _ in metrics["samples"]], src_vocab, tgt_vocab)
    assert again == [french for _, french in metrics["samples"]]  # the checkpoint holds the trained weights


def test_torch_twin_follows_the_same_curve(pairs_file: Path, tmp_path: Path) -> None:
    """Same weights, same batches, Adam + warm-up + clipping on both sides: 50 float64 steps agree to rounding."""
    config = tiny(pairs=str(pairs_file), max_steps=50, eval_every=25, warmup_steps=10, test_limit=5, reference="torch")
    metrics = run(config, tmp_path, progress=False)
    assert metrics["reference_steps"] == 50
    assert metrics["dtype"] == "float64"  # a parity run's default
    assert metrics["reference_max_relative_deviation"] < 1e-12  # the same function, not just close
    assert (tmp_path / "reference.png").is_file()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_the_torch_twin_computes_what_our_model_computes(norm: str) -> None:
    from scratch_transformer.reference import torch_twin

    torch.manual_seed(0)
    sizes = {"d_model": 8, "heads": 2, "layers": 2, "d_ff": 16, "dropout": 0.0, "norm": norm}
    model = build_translator(sizes, 9, 11, 32).to(dtype=torch.float64)
    state = torch.get_rng_state()
    twin = torch_twin(model)
    assert torch.equal(torch.get_rng_state(), state)  # building it draws nothing a run would miss
    src = torch.tensor([[4, 5, 6, 7, 8], [5, 6, 7, Vocabulary.PAD, Vocabulary.PAD]])
    tgt_in = torch.tensor([[Vocabulary.BOS, 4, 5, 6], [Vocabulary.BOS, 7, 8, Vocabulary.PAD]])
    with torch.no_grad():
        expected = twin((src, tgt_in))
    torch.testing.assert_close(model((src, tgt_in)), expected, rtol=1e-12, atol=1e-12)  # final norms as ours


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


# --------------------------------------------------------------------------- translating text, checkpoints


def _small_data() -> EngFra:
    """A few pairs in every split (the split goes by a hash of the English sentence)."""
    return EngFra([(f"{i} am cold.", f"{i} a froid.") for i in range(40)])  # train 32, val 4, test 4


def _untrained(data: EngFra) -> Translator:
    torch.manual_seed(0)
    config = tiny().model_config()
    return build_translator(config, len(data.src_vocab), len(data.tgt_vocab), 64).eval()


def test_translate_normalises_like_the_training_pairs() -> None:
    data = _small_data()
    model = _untrained(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unnormalised, the no-break space would be an unknown character
        messy = translate(model, ["1  am\u00a0cold. ", "\t2 am cold."], data.src_vocab, data.tgt_vocab)
    assert messy == translate(model, ["1 am cold.", "2 am cold."], data.src_vocab, data.tgt_vocab)


def test_translate_rejects_empty_sentences_and_a_bare_string_and_names_unknown_characters() -> None:
    data = _small_data()
    model = _untrained(data)
    with pytest.raises(ValueError, match=r"empty sentence: sentence 2 of 2 is empty"):
        translate(model, ["1 am cold.", "  "], data.src_vocab, data.tgt_vocab)
    with pytest.raises(TypeError, match="a list of sentences, got one str"):
        translate(model, "1 am cold.", data.src_vocab, data.tgt_vocab)
    with pytest.warns(UserWarning, match=r"translated as <unk>: '☃', '日'") as caught:
        (french,) = translate(model, ["1 am ☃ 日."], data.src_vocab, data.tgt_vocab)
    assert caught[0].filename == __file__  # the warning points at the caller
    assert isinstance(french, str)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translate(model, ["1 am ☃."], data.src_vocab, data.tgt_vocab, warn_unknown=False)


def test_evaluation_reports_its_progress(capsys: pytest.CaptureFixture[str]) -> None:
    data = _small_data()
    model = _untrained(data)
    sentences = len(data.references("test"))
    result = evaluate_translations(model, data, "test", progress=True)
    assert result["sentences"] == sentences
    assert f"decoding: {sentences:,}/{sentences:,} sentences" in capsys.readouterr().err
    evaluate_translations(model, data, "test")  # progress=False: silence
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("empty", ["val", "test"])
def test_an_empty_split_is_named_before_training(empty: str, tmp_path: Path) -> None:
    english = [f"Hi {i}." for i in range(400)]
    kept = [e for e in english if split_of(e) != empty]
    path = tmp_path / "pairs.txt"
    path.write_text("".join(f"{e}\tSalut.\n" for e in kept), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"pairs\.txt: no {empty} pairs \(train \d+, val \d+, test \d+\)"):
        run(tiny(pairs=str(path)), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_a_dollar_in_the_sentence_stays_literal_in_the_plot_title(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scratch_engine.tools.plots

    figures = []
    save = scratch_engine.tools.plots.save_figure
    monkeypatch.setattr(scratch_engine.tools.plots, "save_figure", lambda f, p: (figures.append(f), save(f, p))[1])
    english, french = "It's $5 or $6.", "C'est 5 $."
    weights = torch.full((2, len(french) + 1, len(english)), 1.0 / len(english))
    path = plot_attention(weights, english, french, tmp_path / "attention.png")
    assert path.stat().st_size > 0  # drawn (mathtext may fail only when the figure is rendered)
    title = figures[0].get_suptitle()
    assert r"It's \$5 or \$6. → C'est 5 \$." in title  # escaped: matplotlib shows the dollars as they are


def _saved_state(tmp_path: Path) -> dict[str, Any]:
    """The contents of a small untrained translator's checkpoint, to alter."""
    data = _small_data()
    model = _untrained(data)
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, learning_rate=0.1), progress=False)
    path = save_checkpoint(engine, tmp_path / "checkpoint.pt", translator_extra(model, data, asdict(tiny())))
    state: dict[str, Any] = torch.load(path, weights_only=True)
    return state


def test_load_translator_names_a_missing_entry(tmp_path: Path) -> None:
    state = _saved_state(tmp_path)
    del state["extra"]["translator"]["config"]
    torch.save(state, tmp_path / "no-config.pt")
    with pytest.raises(
        ValueError, match=r"no-config\.pt is not a complete scratch-transformer checkpoint: missing 'config'"
    ):
        load_translator(tmp_path / "no-config.pt")
    state["extra"]["translator"]["config"] = {"d_model": 32}
    torch.save(state, tmp_path / "short-config.pt")
    with pytest.raises(ValueError, match=r"missing 'config\.heads', 'config\.layers'"):
        load_translator(tmp_path / "short-config.pt")


def test_a_checkpoint_loads_and_translates_in_a_fresh_process(tmp_path: Path) -> None:
    """The meta-device check runs first and must not leave a storage-less positional table in the cache: in a
    fresh process (nothing cached yet) translate and evaluate once failed with 'Cannot copy out of meta tensor'."""
    torch.save(_saved_state(tmp_path), tmp_path / "fresh.pt")
    code = (
        "import sys\n"
        "from scratch_transformer.translate import load_translator, translate\n"
        "model, src, tgt, _ = load_translator(sys.argv[1])\n"
        "print(len(translate(model, ['Go.', 'Run!'], src, tgt, max_len=8, warn_unknown=False)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "fresh.pt")], capture_output=True, text=True, timeout=300
    )
    assert (result.returncode, result.stdout) == (0, "2\n"), result.stderr[-2000:]


def test_a_crafted_config_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    state = _saved_state(tmp_path)
    state["extra"]["translator"]["max_len"] = 10**9  # a positional table of 10**9 rows: gigabytes (#18)
    torch.save(state, tmp_path / "long.pt")
    with pytest.raises(ValueError, match=r"long\.pt: its config asks for [\d,]+ MiB of tables beside"):
        load_translator(tmp_path / "long.pt")
    state["extra"]["translator"]["max_len"] = 512
    state["extra"]["translator"]["config"]["d_model"] = 10**6  # every weight would be of another shape
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide\.pt: its config does not fit its weights: .*shape mismatch"):
        load_translator(tmp_path / "wide.pt")
    state["extra"]["translator"]["config"]["d_model"] = "wide"
    torch.save(state, tmp_path / "text.pt")
    with pytest.raises(ValueError, match=r"text\.pt: its config cannot build the model"):
        load_translator(tmp_path / "text.pt")
