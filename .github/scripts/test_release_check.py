"""The release checks of release_check.py, on fake wheels and sdists and on this repository's sources."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from release_check import (
    check_distribution,
    declared_packages,
    main,
    metadata_problems,
    readme_problems,
    render_markdown,
    sdist_wheel_problems,
    tag_problems,
    wheel_problems,
)
from release_tag import changelog_problems, distributions, source_version
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


SCRIPT = Path(__file__).parent / "release_check.py"


def write_wheel(path: Path, files: list[str], version: str = "0.2.0", readme: str = "# scratch-rnn\n") -> Path:
    metadata = METADATA.format(version=version).replace("# scratch-rnn\n", readme)
    with zipfile.ZipFile(path, "w") as archive:
        for name in files:
            archive.writestr(name, metadata if name.endswith("/METADATA") else "")
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


def _rnn_release(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A repository releasing scratch-rnn 0.2.0 (its CHANGELOG ready) and an empty dist folder: root, folder, dist."""
    root = make_repo(tmp_path / "repo", {"scratch-engine": "0.1.0", "scratch-rnn": "0.2.0"})
    folder = root / "packages" / "scratch-rnn"
    (folder / "CHANGELOG.md").write_text(CHANGELOG)
    dist = tmp_path / "dist"
    dist.mkdir()
    return root, folder, dist


def test_check_distribution_end_to_end(tmp_path: Path) -> None:
    root, folder, dist = _rnn_release(tmp_path)
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


# ---- the command line


@pytest.mark.parametrize("argv", [["--help"], ["-h"]])
def test_help_exits_0_and_prints_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: release_check.py [-h] DIST\n")
    assert "Check that every built distribution is ready to publish" in out  # the docstring's first line
    assert "a folder per distribution" in out


@pytest.mark.parametrize(("argv", "message"), [([], "required: DIST"), (["a", "b"], "unrecognized arguments: b")])
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: release_check.py")
    assert message in err


def test_dist_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "missing")])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "is not a folder" in captured.err
    assert "FAIL" not in captured.out


def test_the_script_itself_answers_help_and_refuses_no_dist() -> None:
    help_ = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert (help_.returncode, help_.stdout.startswith("usage: release_check.py"), help_.stderr) == (0, True, "")
    assert "FAIL" not in help_.stdout
    missing = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert "the following arguments are required: DIST" in missing.stderr


# ---- how PyPI renders the readme: no math leaking as raw $...$

LEAKS = "# scratch-rnn\n\nThe hidden state is $h_t = \\tanh(W x_{i} + b)$ at every step.\n"
SAFE = """\
# scratch-rnn

The hidden state is $`h_t = \\tanh(W x_{i} + b)`$ at every step, and the loss is

```math
L = -\\frac{1}{T} \\sum_{t} \\log p(x_{t+1} \\mid x_{\\le t})
```

Prices of `$HOME`, shell lines:

```bash
echo "$SCRATCH_DATA_DIR"
```

| symbol | meaning |
| --- | --- |
| $`x_{i}`$ | the input |

[a link](https://example.org/?q=$x)
"""


def markdown_metadata(readme: str, content_type: str = "text/markdown") -> Message:
    return Parser().parsestr(f"Name: scratch-rnn\nDescription-Content-Type: {content_type}\n\n{readme}")


NO_MATH = """\
# scratch-rnn

Prices of `$HOME`, shell lines:

```bash
echo "$SCRATCH_DATA_DIR"
```

[a link](https://example.org/?q=$x), and the math [on GitHub](https://github.com/scratch-dl/scratch).
"""


def test_dollars_in_code_and_links_pass() -> None:
    assert readme_problems("scratch-rnn", markdown_metadata(NO_MATH)) == []


def test_github_math_syntax_is_latex_source_on_pypi_and_fails() -> None:
    problems = readme_problems("scratch-rnn", markdown_metadata(SAFE))  # renders as math on GitHub only
    assert problems == [
        "scratch-rnn's long description shows LaTeX source on PyPI (3 $`...`$ span(s) or ```math block(s)), "
        "which PyPI cannot render: end it before the math (the hatch-fancy-pypi-readme fragments in "
        "pyproject.toml) and point to the README on GitHub"
    ]


def test_inline_math_written_with_dollars_is_named_with_its_context() -> None:
    problems = readme_problems("scratch-rnn", markdown_metadata(LEAKS))
    assert len(problems) == 1
    assert problems[0].startswith("scratch-rnn's readme shows math on PyPI as raw text (1 place(s)")
    assert "The hidden state is $h_t = \\tanh(W x_{i} + b)$ at every step" in problems[0]
    assert "PyPI renders no math: leave it out of the long description" in problems[0]


@pytest.mark.parametrize(
    "leak",
    [
        "Inline $x_{i}$ math.",
        "Display math:\n\n$$\n\\sum_i x_i\n$$",
        "Half a pair: $x alone and $y.",
        "An entity: &#36;x&#36;.",
        "In a list:\n\n- the weight $W$",
        "# A heading with $x$",
    ],
)
def test_every_dollar_outside_code_fails(leak: str) -> None:
    problems = readme_problems("scratch-cnn", markdown_metadata(f"# scratch-cnn\n\n{leak}\n"))
    assert len(problems) == 1
    assert problems[0].startswith("scratch-cnn's readme shows math on PyPI as raw text")


def test_many_leaks_are_counted_and_three_shown() -> None:
    readme = "\n\n".join(
        f"Paragraph {i} has ${i}x$ in it, and then some more words to keep them apart." for i in range(5)
    )
    problems = readme_problems("scratch-mlp", markdown_metadata(readme))
    assert "(5 place(s) with '$' outside code)" in problems[0]
    assert "$0x$" in problems[0]
    assert "$2x$" in problems[0]
    assert "$3x$" not in problems[0]
    assert problems[0].count("; ...") == 1


def test_the_declared_markdown_variant_is_rendered() -> None:
    seen: list[str] = []

    def render(text: str, variant: str) -> str:
        seen.append(variant)
        return "<p>fine</p>"

    assert readme_problems("scratch-rnn", markdown_metadata(SAFE), render) == []
    assert readme_problems("scratch-rnn", markdown_metadata(SAFE, "text/markdown; variant=CommonMark"), render) == []
    assert seen == ["GFM", "CommonMark"]


def test_a_readme_that_does_not_render_fails() -> None:
    problems = readme_problems("scratch-rnn", markdown_metadata(SAFE), lambda text, variant: None)
    assert problems == ["scratch-rnn's readme does not render on PyPI (readme_renderer returned nothing)"]


def test_without_readme_renderer_the_check_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "readme_renderer", None)
    monkeypatch.setitem(sys.modules, "readme_renderer.markdown", None)
    problems = readme_problems("scratch-rnn", markdown_metadata(SAFE))
    assert len(problems) == 1
    assert problems[0].startswith("cannot check how PyPI renders scratch-rnn's readme")
    assert "install readme-renderer[md]" in problems[0]


def test_without_the_markdown_extra_the_check_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    import readme_renderer.markdown as markdown  # installed where the release checks run (and their tests)

    monkeypatch.setattr(markdown, "variants", {})  # what readme_renderer is without its [md] extra
    with pytest.raises(ImportError, match="Markdown renderers are not available"):
        render_markdown(SAFE)
    problems = readme_problems("scratch-rnn", markdown_metadata(SAFE))
    assert "Markdown renderers are not available" in problems[0]
    assert "install readme-renderer[md]" in problems[0]


def test_other_content_types_are_left_to_metadata_problems() -> None:
    metadata = markdown_metadata("Plain $x$ text", "text/plain")
    assert readme_problems("scratch-rnn", metadata, lambda text, variant: None) == []
    assert any("not text/markdown" in problem for problem in metadata_problems(metadata))


def test_check_distribution_names_a_readme_that_leaks_math(tmp_path: Path) -> None:
    root, folder, dist = _rnn_release(tmp_path)
    write_wheel(dist / "scratch_rnn-0.2.0-py3-none-any.whl", GOOD_WHEEL, readme=LEAKS)
    write_sdist(dist / "scratch_rnn-0.2.0.tar.gz")
    _, problems = check_distribution("scratch-rnn", folder, dist, root, copy_of(GOOD_WHEEL))
    assert len(problems) == 1
    assert problems[0].startswith("scratch-rnn's readme shows math on PyPI as raw text")
    write_wheel(dist / "scratch_rnn-0.2.0-py3-none-any.whl", GOOD_WHEEL, readme=NO_MATH)
    assert check_distribution("scratch-rnn", folder, dist, root, copy_of(GOOD_WHEEL)) == ("0.2.0", [])


def test_a_second_package_the_pyproject_declares_may_be_in_the_wheel() -> None:
    pyproject = (
        '[project]\nname = "x"\n\n[tool.hatch.build.targets.wheel]\npackages = ["src/scratch_rnn", "src/entry"]\n'
    )
    assert declared_packages(pyproject) == ["scratch_rnn", "entry"]
    assert declared_packages('[tool.hatch.build.targets.sdist]\npackages = ["src/other"]\n') == []
    files = [*GOOD_WHEEL, "entry/__init__.py"]
    assert wheel_problems(files, "scratch_rnn", "scratch_rnn-0.2.0.dist-info", also=["entry"]) == []
    assert wheel_problems(files, "scratch_rnn", "scratch_rnn-0.2.0.dist-info") == [
        "files outside scratch_rnn/ and scratch_rnn-0.2.0.dist-info/: entry/__init__.py"
    ]
    (problem,) = wheel_problems([*files, "entry/data.bin"], "scratch_rnn", "scratch_rnn-0.2.0.dist-info", ["entry"])
    assert problem == "data or other non-Python files in the wheel: entry/data.bin"
