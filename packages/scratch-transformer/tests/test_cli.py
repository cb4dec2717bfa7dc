"""The command line: train writes its files, translate reads the checkpoint, errors are one line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scratch_engine.tools import datasets
from scratch_engine.tools.testing import (
    FullDiskStream,
    assert_missing_data_is_one_line_error,
    fill_the_disk,
    require_data_dir,
)
from scratch_transformer.cli import main

TINY = [
    "--d-model",
    "16",
    "--heads",
    "2",
    "--layers",
    "1",
    "--d-ff",
    "32",
    "--max-src-len",
    "10",
    "--threads",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_data_dir()  # fails loudly without SCRATCH_DATA_DIR
    out = tmp_path_factory.mktemp("eng-fra")
    code = main(["train", "eng-fra", "--max-steps", "5", "--test-limit", "10", "--out", str(out), *TINY])
    assert code == 0
    return out


def test_train_writes_metrics_plots_translations_and_checkpoint(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("val_loss", "test_cer", "test_exact_match", "steps", "train_seconds", "parameters"):
        assert key in metrics, key
    assert metrics["steps"] == 5
    assert metrics["test_sentences"] == 10
    known = datasets.DATASETS["eng-fra"].files[0]  # the file trained on is recorded, as verified (#18)
    assert metrics["pairs_source"]["sha256"] == known.sha256
    assert metrics["pairs_source"]["pairs"] == 76_037
    for name in ("loss.png", "attention_1.png", "translations.txt", "checkpoint.pt"):
        assert (trained / name).stat().st_size > 0, name
    assert "reference:" in (trained / "translations.txt").read_text(encoding="utf-8")


def test_a_beam_too_wide_and_a_json_folder_are_refused_before_any_work(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(trained / "checkpoint.pt")
    with pytest.raises(SystemExit) as exit_:
        main(["translate", "--checkpoint", checkpoint, "--beam", "100000", "Go."])  # it used to hang
    assert exit_.value.code == 2
    assert "argument --beam: must be an integer >= 1 and <= 64, got 100000" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", checkpoint, "--json", str(tmp_path)]) == 1
    assert (
        capsys.readouterr().err
        == f"scratch-transformer: error: --json {tmp_path} is a folder: name the JSON file to write\n"
    )


def test_evaluate_on_a_full_disk_is_one_line_and_writes_no_partial_json(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fill_the_disk(monkeypatch)
    target = tmp_path / "figures.json"
    argv = ["evaluate", "--checkpoint", str(trained / "checkpoint.pt"), "--test-limit", "3", "--json", str(target)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"cannot write {target}: No space left on device\n")
    assert err.count("scratch-transformer: error:") == 1
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_translate_arguments_beam_and_stdin(
    trained: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = str(trained / "checkpoint.pt")
    assert main(["translate", "--checkpoint", checkpoint, "I am cold.", "Go."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["translate", "--checkpoint", checkpoint, "--beam", "2", "I am cold."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello.\n\nGo away.\n"))
    assert main(["translate", "--checkpoint", checkpoint]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # one output line per input line: a blank one for the blank line
    assert lines[1] == ""
    assert lines[0]
    assert lines[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_translate_explains_empty_input_unknown_characters_and_stdin(
    trained: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = str(trained / "checkpoint.pt")
    assert main(["translate", "--checkpoint", checkpoint, "Go.", " "]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scratch-transformer: error: cannot translate an empty sentence: sentence 2 of 2")
    assert err.count("\n") == 1
    assert main(["translate", "--checkpoint", checkpoint, "日本語 ☃"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert captured.err == (
        "scratch-transformer: warning: characters outside the model's source vocabulary are translated as <unk>: "
        "'☃', '日', '本', '語'\n"
    )
    monkeypatch.setattr(sys, "stdin", _Terminal("Go.\n"))  # a user at a terminal is told what it waits for
    assert main(["translate", "--checkpoint", checkpoint]) == 0
    assert "reading sentences from stdin, one per line; Ctrl-D to end" in capsys.readouterr().err


def test_an_empty_split_is_one_line_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scratch_transformer.data import split_of

    pairs = tmp_path / "pairs.txt"
    lines = [f"Hi {i}.\tSalut.\n" for i in range(400) if split_of(f"Hi {i}.") != "test"]
    pairs.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["train", "eng-fra", "--pairs", str(pairs), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"scratch-transformer: error: {pairs}: no test pairs (train ")
    assert err.count("\n") == 1
    assert not (out / "checkpoint.pt").exists()


def test_evaluate_decodes_the_checkpoint_again(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    checkpoint, figures = str(trained / "checkpoint.pt"), trained / "evaluate.json"
    assert main(["evaluate", "--checkpoint", checkpoint, "--test-limit", "10", "--json", str(figures)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("eng-fra: test CER")
    assert "decoding: 10/10 sentences" in captured.err  # the decoding shows its progress
    greedy = json.loads(figures.read_text())
    assert greedy["sentences"] == 10
    assert greedy["cer"] == pytest.approx(metrics["test_cer"])  # the same sentences, the same greedy decoding
    assert main(["evaluate", "--checkpoint", checkpoint, "--test-limit", "10", "--beam", "3"]) == 0
    assert "(beam 3, 10 sentences)" in capsys.readouterr().out


def test_evaluate_with_other_pairs_names_the_vocabulary(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "pairs.txt"
    other.write_text("".join(f"Hi {i}.\tSalut {i}.\n" for i in range(200)), encoding="utf-8")
    assert main(["evaluate", "--checkpoint", str(trained / "checkpoint.pt"), "--pairs", str(other)]) == 1
    err = capsys.readouterr().err
    assert "other character vocabularies" in err
    assert err.count("\n") == 1


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["translate", "--checkpoint", str(tmp_path / "none.pt"), "Hi."]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scratch-transformer: error: no checkpoint at")
    assert err.count("\n") == 1


def test_wrong_data_path_is_one_line_and_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "eng-fra", "--pairs", str(tmp_path / "missing.txt"), *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scratch-transformer: error: no pairs file at")
    assert err.count("\n") == 1
    error = assert_missing_data_is_one_line_error(main, ["train", "eng-fra", *TINY], tmp_path, monkeypatch, capsys)
    assert "python -m scratch_engine.tools.datasets fetch eng-fra" in error


def test_demo_without_data_explains_and_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRATCH_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCRATCH_DOWNLOAD", "0")
    result = subprocess.run(
        [sys.executable, "-m", "scratch_transformer", "demo", "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "SCRATCH_DATA_DIR" in result.stderr
    assert "incomplete: eng-fra, shakespeare skipped for missing data" in result.stderr
    assert "fetch tinyshakespeare" in result.stderr  # each skipped task says how to get its data
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "eng-fra", "--help"],
        ["train", "shakespeare", "--help"],
        ["translate", "--help"],
        ["evaluate", "--help"],
        ["sample", "--help"],
    ],
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage: scratch-transformer" in capsys.readouterr().out


def test_a_cer_above_one_is_explained() -> None:
    from scratch_transformer.cli import summary

    metrics = {
        "test_cer": 1.363,
        "decoding": "greedy",
        "test_sentences": 200,
        "test_exact_match": 0.0,
        "val_loss": 2.9,
        "steps": 150,
        "train_seconds": 40.0,
        "parameters": 800_000,
    }
    first = summary("eng-fra", metrics, Path("runs")).splitlines()[0]
    assert first.startswith("eng-fra: test CER 1.363 (above 1: the translations need more character edits than")
    assert "above 1" not in summary("eng-fra", {**metrics, "test_cer": 0.44}, Path("runs"))


def test_translate_into_a_full_disk_is_one_line(
    trained: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", FullDiskStream())
    assert main(["translate", "--checkpoint", str(trained / "checkpoint.pt"), "Go."]) == 1
    assert capsys.readouterr().err == "scratch-transformer: error: [Errno 28] No space left on device\n"
