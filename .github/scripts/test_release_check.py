"""The release checks of release_check.py, on fake wheels and sdists and on this repository's sources."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from release_check import (
    changelog_problems,
    check_distribution,
    metadata_problems,
    sdist_wheel_problems,
    tag_problems,
    wheel_problems,
)
from release_tag import distributions, source_version
from test_release_tag import make_repo

GOOD_WHEEL = [
    "scratch_rnn/__init__.py",
    "scratch_rnn/lstm.py",
    "scratch_rnn/py.typed",
    "scratch_rnn-0.2.0.dist-info/METADATA",
    "scratch_rnn-0.2.0.dist-info/RECORD",
    "scratch_rnn-0.2.0.dist-info/licenses/LICENSE",
]
METADATA = """\
Metadata-Version: 2.4
Name: scratch-rnn
Version: {version}
Summary: Recurrent networks from scratch.
Project-URL: Homepage, https://example.org
Project-URL: Source, https://example.org/src
Project-URL: Changelog, https://example.org/changes
Project-URL: Issues, https://example.org/issues
License-Expression: MIT
Keywords: rnn,lstm
Classifier: Programming Language :: Python :: 3
Requires-Python: >=3.10
Description-Content-Type: text/markdown

# scratch-rnn
"""
CHANGELOG = "# Changelog\n\n## [Unreleased]\n\n- more\n\n## [0.2.0] - 2026-11-27\n\n## [0.1.0] - 2026-10-01\n"


def write_wheel(path: Path, files: list[str], version: str = "0.2.0") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in files:
            archive.writestr(name, METADATA.format(version=version) if name.endswith("/METADATA") else "")
    return path


def write_sdist(path: Path, version: str = "0.2.0") -> Path:
    top = path.name.removesuffix(".tar.gz")
    with tarfile.open(path, "w:gz") as archive:
        for name, text in ((f"{top}/PKG-INFO", METADATA.format(version=version)), (f"{top}/pyproject.toml", "")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def copy_of(files: list[str]) -> Callable[[Path, Path], None]:
    """A fake build backend: writes a wheel holding ``files`` into ``out``."""

    def build_wheel(source: Path, out: Path) -> None:
        assert (source / "PKG-INFO").is_file()
        out.mkdir()
        write_wheel(out / "scratch_rnn-0.2.0-py3-none-any.whl", files)

    return build_wheel


def test_a_wheel_of_package_and_dist_info_passes() -> None:
    assert wheel_problems(GOOD_WHEEL, "scratch_rnn", "scratch_rnn-0.2.0.dist-info") == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("tests/test_lstm.py", "files outside scratch_rnn/ and scratch_rnn-0.2.0.dist-info/: tests/test_lstm.py"),
        ("scratch_rnn/tests/helpers.py", "tests in the wheel: scratch_rnn/tests/helpers.py"),
        ("scratch_rnn/test_lstm.py", "tests in the wheel: scratch_rnn/test_lstm.py"),
        ("scratch_rnn/conftest.py", "tests in the wheel: scratch_rnn/conftest.py"),
        ("scratch_rnn/data/shakespeare.txt", "non-Python files in the wheel: scratch_rnn/data/shakespeare.txt"),
        ("scratch_rnn/weights.pt", "non-Python files in the wheel: scratch_rnn/weights.pt"),
        ("scratch_rnn/__pycache__/lstm.cpython-312.pyc", "non-Python files in the wheel: scratch_rnn/__pycache__"),
        ("scratch_cnn/__init__.py", "files outside scratch_rnn/ and scratch_rnn-0.2.0.dist-info/: scratch_cnn/"),
    ],
)
def test_wheel_offenders_are_named(extra: str, message: str) -> None:
    problems = wheel_problems([*GOOD_WHEEL, extra], "scratch_rnn", "scratch_rnn-0.2.0.dist-info")
    assert len(problems) == 1
    assert message in problems[0]


def test_testing_helpers_are_not_tests() -> None:
    files = [*GOOD_WHEEL, "scratch_rnn/testing.py"]
    assert wheel_problems(files, "scratch_rnn", "scratch_rnn-0.2.0.dist-info") == []


@pytest.mark.parametrize("missing", ["scratch_rnn/py.typed", "scratch_rnn/__init__.py", "-0.2.0.dist-info/METADATA"])
def test_wheel_missing_files(missing: str) -> None:
    files = [name for name in GOOD_WHEEL if not name.endswith(missing)]
    problems = wheel_problems(files, "scratch_rnn", "scratch_rnn-0.2.0.dist-info")
    assert any(missing in problem for problem in problems)


def test_wheel_without_license() -> None:
    files = [name for name in GOOD_WHEEL if "licenses" not in name]
    assert wheel_problems(files, "scratch_rnn", "scratch_rnn-0.2.0.dist-info") == [
        "no license file under scratch_rnn-0.2.0.dist-info/licenses/"
    ]


def test_complete_metadata_passes() -> None:
    assert metadata_problems(Parser().parsestr(METADATA.format(version="0.2.0"))) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Summary: Recurrent networks from scratch.\n", "no Summary"),
        ("License-Expression: MIT\n", "no License-Expression"),
        ("Keywords: rnn,lstm\n", "no Keywords"),
        ("Classifier: Programming Language :: Python :: 3\n", "no Classifier"),
        ("Project-URL: Issues, https://example.org/issues\n", "no Project-URL 'Issues'"),
        ("Description-Content-Type: text/markdown\n", "not text/markdown"),
        ("# scratch-rnn\n", "empty long description"),
    ],
)
def test_incomplete_metadata(line: str, message: str) -> None:
    text = METADATA.format(version="0.2.0")
    assert line in text
    problems = metadata_problems(Parser().parsestr(text.replace(line, "")))
    assert any(message in problem for problem in problems), problems


def test_changelog_with_a_dated_heading_for_the_version() -> None:
    assert changelog_problems(CHANGELOG, "0.2.0") == []


@pytest.mark.parametrize(
    ("text", "version", "message"),
    [
        (CHANGELOG, "0.3.0", "newest release is 0.2.0, not 0.3.0, and none for 0.3.0"),
        (CHANGELOG, "0.1.0", "newest release is 0.2.0, not 0.1.0"),
        ("# Changelog\n\n## [Unreleased]\n", "0.1.0", "no release heading"),
        (CHANGELOG.replace(" - 2026-11-27", ""), "0.2.0", "not '## [0.2.0] - YYYY-MM-DD'"),
        (CHANGELOG.replace("2026-11-27", "2026-13-01"), "0.2.0", "with a real date"),
        (CHANGELOG.replace("2026-11-27", "27 Nov 2026"), "0.2.0", "YYYY-MM-DD"),
    ],
)
def test_changelog_problems(text: str, version: str, message: str) -> None:
    problems = changelog_problems(text, version)
    assert len(problems) == 1
    assert message in problems[0]


def test_tags_map_back_to_the_distribution(tmp_path: Path) -> None:
    root = make_repo(tmp_path, {"scratch-engine": "0.1.0", "scratch-rnn": "0.2.0"})
    folder = root / "packages" / "scratch-rnn"
    assert tag_problems("scratch-rnn", folder, "0.2.0", root) == []
    assert "says version 0.3.0 but scratch-rnn is at 0.2.0" in tag_problems("scratch-rnn", folder, "0.3.0", root)[0]
    assert "maps to scratch-rnn" in tag_problems("scratch-rnn", root / "shared-engine", "0.2.0", root)[0]


def test_sdist_builds_the_same_wheel(tmp_path: Path) -> None:
    sdist = write_sdist(tmp_path / "scratch_rnn-0.2.0.tar.gz")
    assert sdist_wheel_problems(sdist, GOOD_WHEEL, copy_of(GOOD_WHEEL)) == []
    problems = sdist_wheel_problems(sdist, GOOD_WHEEL, copy_of([*GOOD_WHEEL[1:], "scratch_rnn/data.csv"]))
    assert problems == [
        "wheel from the sdist lacks scratch_rnn/__init__.py",
        "wheel from the sdist has extra scratch_rnn/data.csv",
    ]


def test_check_distribution_end_to_end(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", {"scratch-engine": "0.1.0", "scratch-rnn": "0.2.0"})
    folder = root / "packages" / "scratch-rnn"
    (folder / "CHANGELOG.md").write_text(CHANGELOG)
    dist = tmp_path / "dist"
    dist.mkdir()
    write_wheel(dist / "scratch_rnn-0.2.0-py3-none-any.whl", GOOD_WHEEL)
    write_sdist(dist / "scratch_rnn-0.2.0.tar.gz")
    assert check_distribution("scratch-rnn", folder, dist, root, copy_of(GOOD_WHEEL)) == ("0.2.0", [])

    write_sdist(dist / "scratch_rnn-0.2.0.tar.gz", version="0.1.9")
    _, problems = check_distribution("scratch-rnn", folder, dist, root, copy_of(GOOD_WHEEL))
    assert problems == ["sdist PKG-INFO says version 0.1.9, src/scratch_rnn/__init__.py says 0.2.0"]

    (dist / "scratch_rnn-0.2.0.tar.gz").unlink()
    _, problems = check_distribution("scratch-rnn", folder, dist, root, copy_of(GOOD_WHEEL))
    assert "expected scratch_rnn-0.2.0.tar.gz and scratch_rnn-0.2.0-py3-none-any.whl" in problems[0]


@pytest.mark.parametrize("name", sorted(distributions()))
def test_this_repository_is_consistent_before_building(name: str) -> None:
    """Without building anything: the source version has a dated CHANGELOG heading and a tag."""
    folder = distributions()[name]
    version = source_version(name, folder)
    assert changelog_problems((folder / "CHANGELOG.md").read_text(encoding="utf-8"), version) == []
    assert tag_problems(name, folder, version) == []


def test_a_failing_sdist_build_is_reported(tmp_path: Path) -> None:
    def fail(source: Path, out: Path) -> None:
        raise subprocess.CalledProcessError(1, ["build"], "", "ERROR Failed to parse pyproject.toml\n")

    problems = sdist_wheel_problems(write_sdist(tmp_path / "scratch_rnn-0.2.0.tar.gz"), GOOD_WHEEL, fail)
    assert len(problems) == 1
    assert problems[0].startswith("building a wheel from scratch_rnn-0.2.0.tar.gz failed")
    assert problems[0].endswith("ERROR Failed to parse pyproject.toml")
