"""The tag -> distribution logic of publish.yml, on the real repository and on a fake one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from release_tag import ROOT, ReleaseError, distributions, main, resolve, source_version


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


def test_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    version = source_version("scratch-mlp", distributions()["scratch-mlp"])
    assert main([f"scratch-mlp-v{version}"]) == 0
    assert f"version={version}" in capsys.readouterr().out
    assert main(["scratch-mlp-v99.0.0"]) == 1
    assert "99.0.0" in capsys.readouterr().err
    assert main([]) == 2
