"""Training on the real Tiny Shakespeare, the command line, whole-run parity with torch.nn, the gradient plot.

The tests that read Tiny Shakespeare take it from $SCRATCH_DATA_DIR and never download:
without it they fail, on purpose, rather than skip.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from scratch_engine.tools.checkpoint import read_checkpoint
from scratch_engine.tools.cli import config_from_args
from scratch_engine.tools.precision import run_dtype
from scratch_engine.tools.runner import RunError
from scratch_engine.tools.testing import FullDiskStream, assert_missing_data_is_one_line_error, require_data_dir
from scratch_rnn import Vocabulary
from scratch_rnn.charlm import CharLM
from scratch_rnn.cli import DEMO, build_parser, main
from scratch_rnn.gradients import gradient_norms
from scratch_rnn.shakespeare import CharLMConfig, run
from scratch_rnn.trained import default_prompt, load_model

SMALL = ["--hidden", "16", "--layers", "1", "--threads", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return require_data_dir("tinyshakespeare")


def word_text(path: Path, words: int, seed: int = 0) -> Path:
    """``words`` words of a tiny vocabulary, drawn from ``seed``: a text with some structure to learn."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary = ["to", "be", "or", "not", "that", "is", "the", "question", "\n"]
    path.write_text(" ".join(vocabulary[i] for i in torch.randint(0, 9, (words,), generator=generator).tolist()))
    return path


def test_short_seeded_lstm_run_learns_shakespeare(data_dir: Path) -> None:
    # 150 steps of a 1 x 64 LSTM: measured val loss 2.257 (seed 0), 2.273 (seed 1); unigram entropy is ~3.3
    config = CharLMConfig(
        hidden=64,
        layers=1,
        batch_size=16,
        seq_len=50,
        learning_rate=1e-2,
        max_steps=150,
        eval_every=150,
        seed=0,
        device="cpu",
        threads=1,  # one thread: on a shared 2-core machine, two contend badly
    )
    metrics = run(config, None, progress=False)
    assert metrics["steps"] == 150
    assert metrics["val_loss"] < 2.45
    assert metrics["val_bpc"] == pytest.approx(metrics["val_loss"] / math.log(2))
    assert metrics["history"]["step"] == [150.0]
    assert metrics["val_characters"] == 111540
    assert metrics["vocab_size"] == 65


def test_train_writes_metrics_plot_sample_and_a_checkpoint_to_sample_from(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", "shakespeare", "--max-steps", "5", "--out", str(out), *SMALL]) == 0
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in ("val_loss", "val_bpc", "steps", "train_seconds", "tokens_per_second", "parameters", "history"):
        assert key in record
    assert record["steps"] == 5
    assert record["config"]["hidden"] == 16
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "sample.txt").read_text(encoding="utf-8").startswith("ROMEO:")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert len(state["extra"]["vocabulary"]["chars"]) == 65
    assert state["extra"]["charlm"]["arch"] == "lstm"
    assert state["extra"]["run"]["finished"] is True
    model, _vocab, _ = load_model(out / "checkpoint.pt")
    assert model.num_parameters() == record["parameters"]
    state["extra"]["charlm"]["hidden"] = 10**7  # crafted: 4 x 10**14 weights; refused before any allocation (#18)
    torch.save(state, tmp_path / "crafted.pt")
    assert main(["sample", "--checkpoint", str(tmp_path / "crafted.pt")]) == 1
    assert "crafted.pt: its config does not fit its weights" in capsys.readouterr().err
    capsys.readouterr()
    argv = ["sample", "--checkpoint", str(out / "checkpoint.pt"), "--prompt", "JULIET:", "--length", "40"]
    assert main([*argv, "--top-k", "5", "--temperature", "0.5"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("JULIET:")
    assert len(text) == len("JULIET:") + 40


def test_help_lists_commands_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "sample", "compare", "gradients", "demo"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["train", "shakespeare", "--help"])
    out = capsys.readouterr().out
    for flag in ("--arch", "--hidden", "--layers", "--seq-len", "--max-steps", "--max-minutes", "--text"):
        assert flag in out
    for flag in ("--data-dir", "--embedding", "--reference", "--epochs", "--lr", "--seed", "--out"):
        assert flag in out
    for flag in ("--clip-grad-norm", "--eval-every", "--no-download", "--resume", "--checkpoint-minutes", "--prompt"):
        assert flag in out
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    for flag in ("--hidden", "--max-steps", "--clip-grad-norm", "--reference", "--out", "--resume"):
        assert flag in out
    assert "--arch" not in out  # compare trains all three


def test_wrong_data_path_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = assert_missing_data_is_one_line_error(
        main, ["train", "shakespeare", "--quiet"], tmp_path, monkeypatch, capsys
    )
    assert "fetch tinyshakespeare" in error
    assert main(["train", "shakespeare", "--text", str(tmp_path / "missing.txt"), "--quiet"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_demo_without_data_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("SCRATCH_DOWNLOAD", "0")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "fetch tinyshakespeare" in err
    assert (
        err.strip().splitlines()[-1] == "scratch-rnn demo: incomplete: shakespeare skipped for missing data (see above)"
    )
    assert DEMO["max_minutes"] is None  # a budget in steps: the demo's result does not depend on the machine


def test_compare_with_the_torch_reference_agrees_over_50_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = word_text(tmp_path / "text.txt", 6000)
    out = tmp_path / "compare"
    argv = ["compare", "--text", str(text), "--max-steps", "50", "--eval-every", "25", "--batch-size", "8"]
    argv += ["--seq-len", "20", "--embedding", "6", "--lr", "0.01", "--reference", "torch", "--out", str(out)]
    assert main([*argv, *SMALL]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| arch")
    assert "max val gap vs torch" in table
    assert "| train s |" in table  # wall-clock time beside the steps (#20)
    assert "| rnn | float64 |" in table
    assert (out / "compare.md").read_text(encoding="utf-8") == table
    runs = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["runs"]
    assert [r["arch"] for r in runs] == ["rnn", "lstm", "gru"]
    for record in runs:
        assert record["steps"] == 50
        assert record["dtype"] == "float64"  # --reference runs both models in float64 unless --dtype says otherwise
        assert record["reference_max_relative_deviation"] < 1e-12  # same batches, same weights: rounding only
        assert record["reference_max_val_loss_gap"] < 1e-12
    assert (out / "compare.png").stat().st_size > 1000
    assert (out / "lstm" / "reference.png").stat().st_size > 1000
    history = json.loads((out / "gru" / "metrics.json").read_text(encoding="utf-8"))["history"]
    assert history["step"] == [25.0, 50.0]
    assert len(history["val_reference_loss"]) == 2  # the twin's validation loss beside ours at every row
    assert read_checkpoint(out / "gru" / "checkpoint.pt")["extra"]["run"]["config"]["reference"] == "torch"


def test_reference_runs_default_to_float64_from_the_float32_initial_weights(tmp_path: Path) -> None:
    defaults = CharLMConfig()
    assert run_dtype(defaults.dtype, defaults.reference is not None) == "float32"
    assert run_dtype(replace(defaults, reference="torch").dtype, True) == "float64"
    parser = build_parser()
    compare = config_from_args(CharLMConfig(), parser.parse_args(["compare", "--reference", "torch"]))
    assert (compare.reference, compare.dtype) == ("torch", None)  # i.e. float64
    for argv, dtype in [([], None), (["--dtype", "bfloat16"], "bfloat16"), (["--dtype", "float32"], "float32")]:
        assert config_from_args(CharLMConfig(), parser.parse_args(["train", "shakespeare", *argv])).dtype == dtype
    # learning rate 0: the checkpoints hold the initial weights
    text = word_text(tmp_path / "text.txt", 1000)
    small = CharLMConfig(arch="rnn", hidden=8, layers=2, batch_size=4, seq_len=10, max_steps=1, learning_rate=0.0)
    small = replace(small, text=str(text), device="cpu", threads=1, sample_length=1)
    run(replace(small, reference="torch"), tmp_path / "twin", progress=False)
    run(small, tmp_path / "plain", progress=False)
    twin, plain = (read_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in ("twin", "plain"))
    for name, value in twin.items():
        assert value.dtype == torch.float64
        assert plain[name].dtype == torch.float32
        assert torch.equal(value, plain[name].double())  # the float32 run's weights, widened
    with pytest.raises(RunError, match="float32 or float64"):
        run(replace(small, reference="torch", dtype="bfloat16"), None, progress=False)


def test_bfloat16_mixed_precision_run_learns(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("abcdefgh" * 600)  # a cycle: easy to learn
    config = CharLMConfig(arch="gru", hidden=32, layers=1, batch_size=8, seq_len=20, learning_rate=1e-2, max_steps=60)
    config = replace(config, eval_every=30, text=str(text), dtype="bfloat16", device="cpu", threads=1)
    metrics = run(config, tmp_path / "run", progress=False)
    assert metrics["dtype"] == "bfloat16"
    assert metrics["val_loss"] < 0.5  # from log(8) = 2.08
    weights = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    assert {value.dtype for value in weights.values()} == {torch.float32}  # the master weights


def test_float32_reference_run_of_the_rnn_still_agrees_closely(tmp_path: Path) -> None:
    # --dtype float32 keeps the float32 comparison available; small and short, it agrees to rounding
    text = tmp_path / "text.txt"
    generator = torch.Generator().manual_seed(1)
    text.write_text("".join(chr(97 + i) for i in torch.randint(0, 12, (4000,), generator=generator).tolist()))
    config = CharLMConfig(
        arch="rnn", hidden=16, layers=2, batch_size=8, seq_len=20, learning_rate=1e-2, max_steps=40, eval_every=20
    )
    config = replace(config, text=str(text), reference="torch", dtype="float32", device="cpu", threads=1)
    metrics = run(config, None, progress=False)
    assert metrics["dtype"] == "float32"
    assert metrics["steps"] == 40
    assert metrics["reference_max_relative_deviation"] < 1e-4
    assert metrics["reference_max_val_loss_gap"] < 1e-4


def test_gradient_vanishes_at_init_unless_the_gates_start_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    norms = {arch: gradient_norms(arch, steps=60, hidden=32, batch=4) for arch in ("rnn", "lstm", "gru")}
    for values in norms.values():
        assert len(values) == 60
        assert values[-1] == pytest.approx(1.0)
    assert max(values[0] for values in norms.values()) < 1e-6  # 59 steps back, at torch's init: vanished for all
    for arch in ("lstm", "gru"):  # forget / update gate starting at 0.95: the additive path keeps the gradient
        assert gradient_norms(arch, steps=60, hidden=32, batch=4, gate_bias=3.0)[0] > 1e-3
    assert main(["gradients", "--out", str(tmp_path), "--steps", "30", "--hidden", "16"]) == 0
    assert (tmp_path / "gradient_norms.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "gradient_norms.json").read_text(encoding="utf-8"))) == 5
    assert "lstm" in capsys.readouterr().out


def test_clip_grad_norm_none_turns_clipping_off_and_training_learns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    for value, clip in [("none", None), ("None", None), ("2.5", 2.5)]:
        args = parser.parse_args(["train", "shakespeare", "--clip-grad-norm", value])
        assert config_from_args(CharLMConfig(), args).clip_grad_norm == clip
    assert CharLMConfig().clip_grad_norm == 5.0
    with pytest.raises(ValueError, match="clip_grad_norm must be a finite number > 0"):
        CharLMConfig(clip_grad_norm=0.0)  # clipping to 0 would scale every gradient to zero: nothing would move
    with pytest.raises(ValueError, match="max_minutes must be a finite number > 0"):
        CharLMConfig(max_minutes=float("nan"))
    with pytest.raises(ValueError, match="prompt must have at least one character"):
        CharLMConfig(prompt="")  # found before training, not by the sample at the end
    text = tmp_path / "cycle.txt"
    text.write_text("abcdefgh" * 600)  # a cycle: easy to learn, and no 'ROMEO:' characters
    out = tmp_path / "run"
    argv = ["train", "shakespeare", "--text", str(text), "--clip-grad-norm", "none", "--max-steps", "30"]
    argv += ["--eval-every", "30", "--batch-size", "8", "--seq-len", "20", "--lr", "0.01", "--out", str(out)]
    assert main([*argv, *SMALL]) == 0
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["config"]["clip_grad_norm"] is None
    assert record["val_loss"] < 1.5  # from log(8) = 2.08
    assert record["prompt"] == "a"  # the text's first character stood in for ROMEO:
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--length", "16", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("a")  # the same default prompt as train's sample
    _, vocab, settings = load_model(out / "checkpoint.pt")
    assert default_prompt({**settings, "prompt": "ROMEO:"}, vocab) == "a"  # an older checkpoint: the first character


def test_incomplete_checkpoints_and_unfit_texts_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = CharLM(3, "gru", 4, 1)
    extra = {"vocabulary": Vocabulary(list("abc")).to_dict(), "charlm": model.config(), "prompt": "ab"}
    complete = {"model": model.state_dict(), "extra": extra}
    for path, state, missing in [
        (tmp_path / "no-arch.pt", {**complete, "extra": {**extra, "charlm": {"hidden": 4}}}, "'arch'"),
        (tmp_path / "no-model.pt", {"extra": extra}, "'model'"),
    ]:
        torch.save(state, path)
        with pytest.raises(ValueError, match=f"{path.name} is not a complete scratch-rnn checkpoint .*{missing}"):
            load_model(path)
    torch.save({"model": model.state_dict(), "extra": {}}, tmp_path / "no-vocabulary.pt")
    with pytest.raises(ValueError, match=r"no-vocabulary\.pt is not a scratch-rnn language-model checkpoint"):
        load_model(tmp_path / "no-vocabulary.pt")
    torch.save(complete, tmp_path / "complete.pt")
    loaded, vocabulary, settings = load_model(tmp_path / "complete.pt")
    assert loaded.config() == model.config()
    assert (vocabulary.chars, settings["prompt"]) == (list("abc"), "ab")
    old = {"model": model.state_dict(), "extra": {"vocab": list("abc"), "config": {**model.config(), "prompt": "b"}}}
    torch.save(old, tmp_path / "old.pt")  # the layout written before the engine's checkpoints
    loaded, vocabulary, settings = load_model(tmp_path / "old.pt")
    assert (loaded.config(), vocabulary.chars) == (model.config(), list("abc"))
    assert default_prompt(settings, vocabulary) == "b"

    text = tmp_path / "short.txt"
    text.write_text("ab" * 500 + "a")  # 1,001 characters: 900 train, 101 validate
    config = CharLMConfig(hidden=4, layers=1, batch_size=4, seq_len=30, max_steps=2, text=str(text), device="cpu")
    with pytest.raises(ValueError, match=r"validation split .*101 characters.*--batch-size 3 or less fits"):
        run(config, None, progress=False)
    with pytest.raises(ValueError, match=r"validation split .*--batch-size 1, --seq-len 100 or less fits"):
        run(replace(config, batch_size=1, seq_len=300), None, progress=False)

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Schön, schön".encode("latin-1"))
    assert main(["train", "shakespeare", "--text", str(latin1), *SMALL]) == 1
    error = capsys.readouterr().err
    assert "latin1.txt is not UTF-8 text" in error
    assert len(error.strip().splitlines()) == 1


def test_gradients_help_names_the_files_it_writes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gradients", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "gradient_norms.png and gradient_norms.json" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "shakespeare", "--embedding", "-1"],
        ["train", "shakespeare", "--device", "tpu9"],
        ["train", "shakespeare", "--arch", "transformer"],
        *(["train", "shakespeare", "--clip-grad-norm", value] for value in ("nan", "-1", "inf", "0")),
        ["train", "shakespeare", "--clip", "5"],  # renamed --clip-grad-norm
        *(["train", "shakespeare", "--max-minutes", value] for value in ("0", "-1", "nan", "inf")),
        ["compare", "--arch", "gru"],  # compare trains all three
        *(["sample", "--checkpoint", "c.pt", "--temperature", value] for value in ("nan", "-0.5", "inf")),
        ["sample", "--checkpoint", "c.pt", "--length", "-5"],
        ["sample"],
    ],
)
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_sample_into_a_full_disk_is_one_line(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", "shakespeare", "--max-steps", "2", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()

    monkeypatch.setattr(sys, "stdout", FullDiskStream())
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--length", "20"]) == 1
    assert capsys.readouterr().err == "scratch-rnn: error: [Errno 28] No space left on device\n"


def test_a_sample_is_printed_at_each_validation_and_changes_nothing_trained(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "shakespeare", "--max-steps", "6", "--eval-every", "3", "--hidden", "16", "--layers", "1"]
    argv += ["--threads", "1", "--device", "cpu", "--row-sample", "40"]
    assert main([*argv, "--out", str(tmp_path / "watched")]) == 0
    err = capsys.readouterr().err
    samples = [line for line in err.splitlines() if line.startswith("sample at step ")]
    assert [line.split(":")[0] for line in samples] == ["sample at step 3", "sample at step 6"]
    assert all(line.split(": ", 1)[1].startswith("ROMEO:") for line in samples)
    assert main([*argv[:-2], "--row-sample", "0", "--out", str(tmp_path / "quiet")]) == 0
    assert "sample at step" not in capsys.readouterr().err
    watched, quiet = (read_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in ("watched", "quiet"))
    assert all(torch.equal(watched[name], quiet[name]) for name in quiet)  # the carried state is put back


def test_the_relu_rnn_trains_as_torchs_nonlinearity_relu_and_samples_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = word_text(tmp_path / "text.txt", 4000)
    out = tmp_path / "relu"
    argv = ["train", "shakespeare", "--text", str(text), "--arch", "rnn-relu", "--max-steps", "30"]
    argv += ["--eval-every", "15", "--batch-size", "8", "--seq-len", "20", "--clip-grad-norm", "1"]
    assert main([*argv, "--reference", "torch", "--out", str(out), *SMALL]) == 0
    record = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert record["config"]["arch"] == "rnn-relu"
    assert record["reference_max_relative_deviation"] < 1e-12  # nn.RNN(nonlinearity="relu"), same batches
    assert record["reference_max_val_loss_gap"] < 1e-12
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--length", "10", "--prompt", "t"]) == 0
    assert len(capsys.readouterr().out.rstrip("\n")) == 11
