"""The tag -> distribution logic of publish.yml, on the real repository and on a fake one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from release_tag import (
    ROOT,
    ReleaseError,
    distributions,
    main,
    release_problems,
    resolve,
    source_version,
    unreleased_entries,
)

SCRIPT = Path(__file__).parent / "release_tag.py"
HEADER = "# Changelog\n\nAll notable changes are documented here.\n\n"
READY = (
    HEADER
    + "## [Unreleased]\n\n## [0.2.0] - 2026-11-27\n\n### Added\n- LSTM\n\n## [0.1.0] - 2026-10-01\n\n- skeleton\n"
)


def make_repo(root: Path, versions: dict[str, str]) -> Path:
    for name, version in versions.items():
        folder = root / "shared-engine" if name == "scratch-engine" else root / "packages" / name
        package = folder / "src" / name.replace("-", "_")
        package.mkdir(parents=True)
        (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\ndynamic = ["version"]\n')
        (package / "__init__.py").write_text(f'"""doc"""\n\n__version__ = "{version}"\n')
    return root


def test_every_distribution_of_this_repository_is_found() -> None:
    found = distributions()
    assert set(found) == {"scratch-engine", "scratch-mlp", "scratch-cnn", "scratch-rnn", "scratch-transformer"}
    assert found["scratch-engine"] == ROOT / "shared-engine"
    assert found["scratch-rnn"] == ROOT / "packages" / "scratch-rnn"


def test_current_versions_resolve() -> None:
    for name, folder in distributions().items():
        version = source_version(name, folder)
        assert resolve(f"{name}-v{version}").path == folder


def test_tag_selects_one_distribution(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {"scratch-engine": "0.3.1", "scratch-rnn": "0.2.0", "scratch-cnn": "0.2.0"})
    release = resolve("refs/tags/scratch-rnn-v0.2.0", root)
    assert (release.name, release.version) == ("scratch-rnn", "0.2.0")
    assert release.github_output(root) == ("name=scratch-rnn\nshort=rnn\npath=packages/scratch-rnn\nversion=0.2.0\n")
    engine = resolve("scratch-engine-v0.3.1", root)
    assert engine.github_output(root).startswith("name=scratch-engine\nshort=engine\npath=shared-engine\n")


def test_prerelease_versions(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {"scratch-mlp": "1.0.0rc1"})
    assert resolve("scratch-mlp-v1.0.0rc1", root).version == "1.0.0rc1"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("scratch-rnn-v0.3.0", "says version 0.3.0 but scratch-rnn is at 0.2.0"),
        ("scratch-gan-v0.1.0", "not one of"),
        ("scratch-rnn-0.2.0", "not of the form"),
        ("v0.2.0", "not of the form"),
        ("scratch-rnn-v0.2", "not of the form"),
    ],
)
def test_bad_tags_are_rejected(tmp_path: Path, tag: str, message: str) -> None:
    root = make_repo(tmp_path, {"scratch-rnn": "0.2.0"})
    with pytest.raises(ReleaseError, match=message):
        resolve(tag, root)


def write_changelog(root: Path, name: str, text: str) -> None:
    folder = root / "shared-engine" if name == "scratch-engine" else root / "packages" / name
    (folder / "CHANGELOG.md").write_text(text, encoding="utf-8")


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_repo(tmp_path, {"scratch-mlp": "0.2.0"})
    write_changelog(root, "scratch-mlp", READY.replace("LSTM", "MLP"))
    assert main(["scratch-mlp-v0.2.0"], root) == 0
    assert capsys.readouterr().out == "name=scratch-mlp\nshort=mlp\npath=packages/scratch-mlp\nversion=0.2.0\n"
    assert main(["refs/tags/scratch-mlp-v0.2.0"], root) == 0
    capsys.readouterr()
    assert main(["scratch-mlp-v99.0.0"], root) == 1
    assert "99.0.0" in capsys.readouterr().err
    version = source_version("scratch-mlp", distributions()["scratch-mlp"])
    assert main([f"scratch-mlp-v{version}1"]) == 1  # this repository: the tag's version is not the source's
    assert "but scratch-mlp is at" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["-h"]])
def test_help_exits_0_and_prints_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: release_tag.py [-h] TAG\n")
    assert "Map a release tag to the one distribution it publishes" in out  # the docstring's first line
    assert "TAG " in out
    assert "scratch-rnn-v0.2.0" in out


@pytest.mark.parametrize("argv", [[], ["scratch-rnn-v0.2.0", "scratch-cnn-v0.2.0"], ["--bogus"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: release_tag.py")
    assert "error:" in err


def test_the_script_itself_answers_help_and_refuses_no_tag() -> None:
    help_ = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert (help_.returncode, help_.stdout.startswith("usage: release_tag.py"), help_.stderr) == (0, True, "")
    missing = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert "the following arguments are required: TAG" in missing.stderr


# ---- at release time: the CHANGELOG describes exactly this version, and nothing waits under [Unreleased]


@pytest.mark.parametrize(
    "text",
    [
        READY,
        READY.replace("## [Unreleased]\n\n", ""),  # no [Unreleased] section at all
        READY.replace("## [Unreleased]\n", "## [Unreleased]\n\n### Added\n\n### Fixed\n<!-- next -->\n"),
        READY + "\n[Unreleased]: https://example.org/compare/scratch-rnn-v0.2.0...HEAD\n",
    ],
    ids=["heading-only", "absent", "empty-subheadings", "link-definitions"],
)
def test_a_changelog_ready_for_the_release(tmp_path: Path, text: str) -> None:
    root = make_repo(tmp_path, {"scratch-rnn": "0.2.0"})
    write_changelog(root, "scratch-rnn", text)
    assert release_problems(resolve("scratch-rnn-v0.2.0", root), root) == []


def test_unreleased_entries_stop_the_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_repo(tmp_path, {"scratch-rnn": "0.2.0"})
    pending = "## [Unreleased]\n\n### Added\n- GRU\n  with its backward\n- RNN\n\n### Fixed\n- a typo\n\n"
    write_changelog(root, "scratch-rnn", READY.replace("## [Unreleased]\n\n", pending))
    problems = release_problems(resolve("scratch-rnn-v0.2.0", root), root)
    assert problems[0] == "packages/scratch-rnn/CHANGELOG.md: [Unreleased] is not empty (3 entries, the first: '- GRU')"
    assert "move the [Unreleased] entries under ## [0.2.0] - YYYY-MM-DD" in problems[1]
    assert len(problems) == 2
    assert main(["scratch-rnn-v0.2.0"], root) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no name=... lines: publish.yml goes no further
    assert "[Unreleased] is not empty" in captured.err
    assert "move the [Unreleased] entries under ## [0.2.0] - YYYY-MM-DD" in captured.err


def test_the_skeleton_case_of_this_repository(tmp_path: Path) -> None:
    """0.1.0 already has a dated heading, but the work since is under [Unreleased]: tagging it must fail."""
    root = make_repo(tmp_path, {"scratch-rnn": "0.1.0"})
    skeleton = "## [Unreleased]\n\n### Added\n- LSTM, GRU\n\n## [0.1.0] - 2026-11-27\n\n### Added\n- Package skeleton\n"
    write_changelog(root, "scratch-rnn", HEADER + skeleton)
    problems = release_problems(resolve("scratch-rnn-v0.1.0", root), root)
    assert "[Unreleased] is not empty (1 entry" in problems[0]
    assert "move the [Unreleased] entries under ## [0.1.0] - YYYY-MM-DD" in problems[-1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (READY, "newest release is 0.2.0, not 0.3.0, and none for 0.3.0"),
        (READY.replace("[0.2.0] - 2026-11-27", "[0.3.0]"), "is not '## [0.3.0] - YYYY-MM-DD' with a real date"),
        (HEADER + "## [Unreleased]\n", "no release heading"),
    ],
)
def test_the_tagged_version_must_be_the_newest_dated_release(tmp_path: Path, text: str, message: str) -> None:
    root = make_repo(tmp_path, {"scratch-rnn": "0.3.0"})
    write_changelog(root, "scratch-rnn", text)
    problems = release_problems(resolve("scratch-rnn-v0.3.0", root), root)
    assert len(problems) == 2
    assert problems[0].startswith("packages/scratch-rnn/CHANGELOG.md: ")
    assert message in problems[0]
    assert "move the [Unreleased] entries under ## [0.3.0] - YYYY-MM-DD" in problems[1]


def test_a_missing_changelog_stops_the_release(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {"scratch-engine": "0.2.0"})
    assert release_problems(resolve("scratch-engine-v0.2.0", root), root)[0] == "shared-engine/CHANGELOG.md is missing"


def test_unreleased_entries_end_at_the_next_release() -> None:
    text = HEADER + "## [Unreleased]\n\n### Changed\n* faster\n\n## [0.2.0] - 2026-11-27\n\n- not pending\n"
    assert unreleased_entries(text) == ["* faster"]
    assert unreleased_entries(READY) == []
    assert unreleased_entries(HEADER + "## [Unreleased]\nsome prose, still an entry\n") == [
        "some prose, still an entry"
    ]
