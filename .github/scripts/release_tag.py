"""Map a release tag to the one distribution it publishes, and check the versions agree.

    python .github/scripts/release_tag.py scratch-rnn-v0.2.0

prints ``name=``, ``short=``, ``path=`` and ``version=`` lines (for ``$GITHUB_OUTPUT``) and exits 0, or
names the problem on stderr and exits 1: an unknown distribution, a malformed tag, or a tag
version that differs from the version in the distribution's source.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAG = re.compile(r"^(?P<name>scratch-[a-z]+)-v(?P<version>\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?)$")
VERSION = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)


class ReleaseError(ValueError):
    pass


@dataclass(frozen=True)
class Release:
    name: str
    path: Path
    version: str

    def github_output(self, root: Path = ROOT) -> str:
        return (
            f"name={self.name}\nshort={self.short}\npath={self.path.relative_to(root).as_posix()}\n"
            f"version={self.version}\n"
        )

    @property
    def short(self) -> str:
        """The id of the distribution's nox session: ``tests(rnn)`` for scratch-rnn."""
        return self.name.removeprefix("scratch-")


def distributions(root: Path = ROOT) -> dict[str, Path]:
    """Distribution name -> its folder: shared-engine/ and every packages/*/ with a pyproject.toml."""
    folders = [root / "shared-engine", *sorted((root / "packages").glob("*"))]
    found = {}
    for folder in folders:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            match = re.search(r'^name\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
            if match:
                found[match.group(1)] = folder
    return found


def source_version(name: str, folder: Path) -> str:
    init = folder / "src" / name.replace("-", "_") / "__init__.py"
    match = VERSION.search(init.read_text(encoding="utf-8"))
    if not match:
        raise ReleaseError(f"no __version__ in {init}")
    return match.group(1)


def resolve(tag: str, root: Path = ROOT) -> Release:
    tag = tag.removeprefix("refs/tags/")
    match = TAG.match(tag)
    if not match:
        raise ReleaseError(f"tag {tag!r} is not of the form <distribution>-v<version>, e.g. scratch-rnn-v0.2.0")
    name, version = match.group("name"), match.group("version")
    known = distributions(root)
    if name not in known:
        raise ReleaseError(f"tag {tag!r} names {name!r}, which is not one of {sorted(known)}")
    actual = source_version(name, known[name])
    if actual != version:
        raise ReleaseError(f"tag {tag!r} says version {version} but {name} is at {actual} in its source")
    return Release(name, known[name], version)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: release_tag.py <distribution>-v<version>", file=sys.stderr)
        return 2
    try:
        release = resolve(argv[0])
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(release.github_output())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
