"""Map a release tag to the one distribution it publishes, and check that it is ready to release.

    python .github/scripts/release_tag.py scratch-rnn-v0.2.0

publish.yml runs this first. It prints ``name=``, ``short=``, ``path=`` and ``version=`` lines (for
``$GITHUB_OUTPUT``) and exits 0, or names each problem on stderr and exits 1: an unknown
distribution, a malformed tag, a tag version that differs from the version in the distribution's
source, or a CHANGELOG that does not describe this release: its newest release heading must be
``## [<version>] - YYYY-MM-DD`` and ``## [Unreleased]`` must hold no entries (only the heading, or
no such section), since whatever is listed there would be published under the tag's version.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAG = re.compile(r"^(?P<name>scratch-[a-z]+)-v(?P<version>\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?)$")
VERSION = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)
RELEASE_HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?P<rest>.*)$", re.MULTILINE)
SECTION = re.compile(r"^## ", re.MULTILINE)  # a CHANGELOG section ends at the next level-2 heading
DATED = re.compile(r"^ - (?P<date>\d{4}-\d{2}-\d{2})\s*$")
NOT_AN_ENTRY = re.compile(r"^(#+ .*|<!--.*-->|\[[^\]]+\]:\s*\S+.*)$")  # a subheading, a comment, a link definition


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


def changelog_problems(text: str, version: str) -> list[str]:
    """The newest release heading (after ``[Unreleased]``) must be ``## [<version>] - YYYY-MM-DD``."""
    releases = [m for m in RELEASE_HEADING.finditer(text) if m.group("version") != "Unreleased"]
    if not releases:
        return [f"CHANGELOG has no release heading; expected '## [{version}] - YYYY-MM-DD'"]
    newest = releases[0]
    if newest.group("version") != version:
        listed = "" if version in {m.group("version") for m in releases} else f", and none for {version}"
        return [f"CHANGELOG's newest release is {newest.group('version')}, not {version}{listed}"]
    dated = DATED.match(newest.group("rest"))
    try:
        datetime.date.fromisoformat(dated.group("date") if dated else "")
    except ValueError:
        return [f"CHANGELOG heading {newest.group(0)!r} is not '## [{version}] - YYYY-MM-DD' with a real date"]
    return []


def unreleased_entries(text: str) -> list[str]:
    """The lines of the ``## [Unreleased]`` section that are entries (not blank, not a ``###`` subheading)."""
    heading = next((m for m in RELEASE_HEADING.finditer(text) if m.group("version") == "Unreleased"), None)
    if heading is None:
        return []
    following = SECTION.search(text, heading.end())
    section = text[heading.end() : following.start() if following else len(text)]
    lines = [line.rstrip() for line in section.splitlines()]
    return [line for line in lines if line.strip() and not NOT_AN_ENTRY.match(line.strip())]


def release_problems(release: Release, root: Path = ROOT) -> list[str]:
    """What stops ``release`` from being published now: its CHANGELOG must describe exactly this version.

    In CI a non-empty ``[Unreleased]`` is normal (release_check.py accepts it); at release time it
    means the tag would publish changes that its version's CHANGELOG entry does not list.
    """
    path = release.path / "CHANGELOG.md"
    where = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    if not path.is_file():
        return [f"{where} is missing"]
    text = path.read_text(encoding="utf-8")
    problems = [f"{where}: {problem}" for problem in changelog_problems(text, release.version)]
    entries = unreleased_entries(text)
    if entries:
        items = sum(line.startswith(("- ", "* ", "+ ")) for line in entries) or len(entries)
        first = entries[0].strip()
        first = first if len(first) <= 80 else first[:77] + "..."
        counted = f"{items} {'entry' if items == 1 else 'entries'}"
        problems.append(f"{where}: [Unreleased] is not empty ({counted}, the first: {first!r})")
    if problems:
        problems.append(
            f"to release {release.name} {release.version}: move the [Unreleased] entries under "
            f"## [{release.version}] - YYYY-MM-DD (the release date, e.g. {datetime.date.today().isoformat()}) "
            "as its newest release, leave ## [Unreleased] with no entries, commit, and tag that commit"
        )
    return problems


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(
        prog="release_tag.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "tag",
        metavar="TAG",
        help="the pushed tag, <distribution>-v<version>, e.g. scratch-rnn-v0.2.0 (a leading refs/tags/ is dropped)",
    )
    args = parser.parse_args(argv)
    try:
        release = resolve(args.tag, root)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problems = release_problems(release, root)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    sys.stdout.write(release.github_output(root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
