"""Check that every built distribution is ready to publish (run by ``nox -s release_check``).

    python .github/scripts/release_check.py DIST

DIST holds one folder per distribution, named like its source folder (``shared-engine``,
``scratch-mlp``, ...), with the sdist and the wheel that noxfile's ``build()`` wrote there. For each
distribution found by ``release_tag.distributions()`` it checks that

- the wheel holds only the import package (Python modules and ``py.typed``; no tests, no data)
  and its ``.dist-info`` (with the license);
- the metadata PyPI shows is complete: summary, Markdown readme, license, keywords, classifiers,
  Python requirement and the project URLs;
- the long description renders on PyPI (``readme_renderer``, as PyPI renders it) with no math in it:
  no ``$`` outside code, and none of GitHub's math syntax (```` ```math ```` blocks, ``$`...`$``), which
  PyPI shows as LaTeX source. The READMEs keep their math for GitHub; each ``pyproject.toml`` ends the
  long description before it (hatch-fancy-pypi-readme). Without ``readme_renderer[md]`` installed this
  check fails; it never skips;
- the sdist builds a wheel (``python -m build --wheel --no-isolation``) with the same files;
- the version in ``src/<package>/__init__.py`` is the one in the wheel and the sdist, the CHANGELOG's
  newest release is ``## [<version>] - YYYY-MM-DD``, and the tag ``<distribution>-v<version>``
  maps back to this distribution through ``release_tag.resolve()``. (Entries under
  ``## [Unreleased]`` are fine here; ``release_tag.py``, run when a tag is pushed, refuses them.)

It prints one line per distribution and exits 1 if anything is wrong, naming each problem.
twine, check-jsonschema and zizmor are run by the nox session itself.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from email.message import Message
from email.parser import Parser
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).parent))
# changelog_problems lives in release_tag.py, which publish.yml runs first with a bare Python at release time
from release_tag import ROOT, ReleaseError, changelog_problems, distributions, resolve, source_version

TEST_NAME = re.compile(r"^(test_.*\.py|.*_test\.py|conftest\.py)$")
REQUIRED_URLS = ("Homepage", "Source", "Changelog", "Issues")
# the rendered readme's code, which may hold a "$": blocks, inline math written $`...`$ (shown on PyPI
# as code between two dollars), other inline code; then any tag (a "$" in a link's address is no math)
CODE_BLOCK = re.compile(r"<pre\b[^>]*>.*?</pre>", re.DOTALL | re.IGNORECASE)
INLINE_MATH = re.compile(r"\$<code\b[^>]*>.*?</code>\$", re.DOTALL | re.IGNORECASE)
INLINE_CODE = re.compile(r"<code\b[^>]*>.*?</code>", re.DOTALL | re.IGNORECASE)
MATH_BLOCK = re.compile(r"<code\b[^>]*\blanguage-math\b", re.IGNORECASE)  # a ```math fence, as PyPI shows it
HTML_TAG = re.compile(r"<[^>]*>")

BuildWheel = Callable[[Path, Path], None]
Render = Callable[[str, str], str | None]  # (readme, variant) -> HTML, like render_markdown


def normalized(name: str) -> str:
    """The file-name form of a distribution name: scratch-mlp -> scratch_mlp."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_problems(files: Iterable[str], package: str, dist_info: str, also: Iterable[str] = ()) -> list[str]:
    """What is wrong with a wheel's file list: missing files, tests, data, anything outside the package (and the
    other top-level packages ``also`` that its pyproject declares, :func:`declared_packages`)."""
    files, packages = sorted(files), (package, *also)
    problems = [
        f"missing {required}"
        for required in (f"{package}/__init__.py", f"{package}/py.typed", f"{dist_info}/METADATA")
        if required not in files
    ]
    if not any(name.startswith(f"{dist_info}/licenses/") for name in files):
        problems.append(f"no license file under {dist_info}/licenses/")
    outside = [name for name in files if PurePosixPath(name).parts[0] not in (*packages, dist_info)]
    if outside:
        problems.append(f"files outside {'/, '.join(packages)}/ and {dist_info}/: {', '.join(outside)}")
    inside = [PurePosixPath(name) for name in files if PurePosixPath(name).parts[0] in packages]
    tests = [str(p) for p in inside if TEST_NAME.match(p.name) or {"tests", "test"} & set(p.parts[1:-1])]
    if tests:
        problems.append(f"tests in the wheel: {', '.join(tests)}")
    data = [str(p) for p in inside if str(p) not in tests and p.suffix != ".py" and p.name != "py.typed"]
    if data:
        problems.append(f"data or other non-Python files in the wheel: {', '.join(data)}")
    return problems


def declared_packages(pyproject: str) -> list[str]:
    """The top-level packages a pyproject's ``[tool.hatch.build.targets.wheel] packages = [...]`` names (the engine's
    wheel also ships ``scratch_entry``, the console scripts' torch-free entry point); ``[]`` when it names none."""
    section = re.search(r"^\[tool\.hatch\.build\.targets\.wheel\]\s*$(.*?)(?=^\[|\Z)", pyproject, re.M | re.S)
    listed = re.search(r"^packages\s*=\s*\[(.*?)\]", section.group(1), re.M | re.S) if section else None
    return [PurePosixPath(path).name for path in re.findall(r'"([^"]+)"', listed.group(1))] if listed else []


def metadata_problems(metadata: Message) -> list[str]:
    """The fields a PyPI page needs that are missing or empty."""
    problems = [
        f"metadata has no {field}"
        for field in ("Summary", "License-Expression", "Keywords", "Requires-Python")
        if not (metadata.get(field) or "").strip()
    ]
    if metadata.get("Description-Content-Type", "").split(";")[0].strip() != "text/markdown":
        problems.append("metadata's Description-Content-Type is not text/markdown (readme missing?)")
    if not str(metadata.get_payload() or "").strip():
        problems.append("metadata has an empty long description (readme missing?)")
    if not metadata.get_all("Classifier"):
        problems.append("metadata has no Classifier")
    urls = {url.split(",", 1)[0].strip() for url in metadata.get_all("Project-URL") or []}
    problems += [f"metadata has no Project-URL {label!r}" for label in REQUIRED_URLS if label not in urls]
    return problems


def render_markdown(text: str, variant: str = "GFM") -> str | None:
    """The HTML PyPI makes of a Markdown readme (``readme_renderer``); None if it renders nothing.

    Raises ``ImportError`` when ``readme_renderer`` or its Markdown extra is not installed.
    """
    from readme_renderer.markdown import render  # the renderer PyPI (warehouse) uses

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rendered = render(text, variant=variant)
    unavailable = [str(w.message) for w in caught if "renderers are not available" in str(w.message)]
    if rendered is None and unavailable:
        raise ImportError(unavailable[0])
    return rendered


def visible_dollars(rendered: str, context: int = 30, pair: int = 100) -> list[str]:
    """Snippets of the rendered page's text around each ``$`` outside code blocks, inline code and $`...`$.

    A ``$`` and the next one within ``pair`` characters (the two ends of ``$...$``) share a snippet.
    """
    text = INLINE_CODE.sub(" `…` ", INLINE_MATH.sub(" `…` ", CODE_BLOCK.sub(" [code block] ", rendered)))
    text = " ".join(html.unescape(HTML_TAG.sub(" ", text)).split())
    dollars = [match.start() for match in re.finditer(r"\$", text)]
    snippets, index = [], 0
    while index < len(dollars):
        first = last = dollars[index]
        index += 1
        if index < len(dollars) and dollars[index] - first <= pair:
            last = dollars[index]
            index += 1
        start, end = max(0, first - context), min(len(text), last + 1 + context)
        snippets.append(("..." if start else "") + text[start:end] + ("..." if end < len(text) else ""))
    return snippets


def readme_problems(name: str, metadata: Message, render: Render = render_markdown) -> list[str]:
    """The long description must render on PyPI, and show no math: no ``$`` outside code."""
    content_type = metadata.get("Description-Content-Type", "")
    description = str(metadata.get_payload() or "")
    if content_type.split(";")[0].strip() != "text/markdown" or not description.strip():
        return []  # metadata_problems names these
    variant = re.search(r"variant\s*=\s*([\w-]+)", content_type)
    try:
        rendered = render(description, variant.group(1) if variant else "GFM")
    except ImportError as err:
        return [
            f"cannot check how PyPI renders {name}'s readme: {err}; install readme-renderer[md] "
            "(this release check never skips)"
        ]
    if rendered is None:
        return [f"{name}'s readme does not render on PyPI (readme_renderer returned nothing)"]
    latex = len(INLINE_MATH.findall(rendered)) + len(MATH_BLOCK.findall(rendered))
    if latex:  # GitHub's math syntax: code on PyPI, LaTeX source a reader cannot use
        return [
            f"{name}'s long description shows LaTeX source on PyPI ({latex} $`...`$ span(s) or ```math block(s)), "
            "which PyPI cannot render: end it before the math (the hatch-fancy-pypi-readme fragments in "
            "pyproject.toml) and point to the README on GitHub"
        ]
    dollars = visible_dollars(rendered)
    if not dollars:
        return []
    shown = "; ".join(f'"{snippet}"' for snippet in dollars[:3]) + ("; ..." if len(dollars) > 3 else "")
    return [
        f"{name}'s readme shows math on PyPI as raw text ({len(dollars)} place(s) with '$' outside code): {shown}. "
        "PyPI renders no math: leave it out of the long description (the README on GitHub renders it)"
    ]


def tag_problems(name: str, folder: Path, version: str, root: Path = ROOT) -> list[str]:
    """The tag ``<name>-v<version>`` must select this distribution in publish.yml."""
    tag = f"{name}-v{version}"
    try:
        release = resolve(tag, root)
    except ReleaseError as err:
        return [f"tag {tag}: {err}"]
    if (release.name, release.path, release.version) != (name, folder, version):
        return [f"tag {tag} maps to {release.name} {release.version} at {release.path}, not to {folder}"]
    return []


def read_wheel(wheel: Path) -> tuple[list[str], Message]:
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        metadata_name = next((n for n in files if n.endswith(".dist-info/METADATA")), None)
        text = archive.read(metadata_name).decode("utf-8") if metadata_name else ""
    return files, Parser().parsestr(text)


def read_sdist_metadata(sdist: Path) -> Message:
    with tarfile.open(sdist) as archive:
        top = sdist.name.removesuffix(".tar.gz")
        member = archive.extractfile(f"{top}/PKG-INFO")
        text = member.read().decode("utf-8") if member else ""
    return Parser().parsestr(text)


def build_with_build(source: Path, out: Path) -> None:
    """Build a wheel from an unpacked sdist with the current interpreter's hatchling (no downloads)."""
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)


def sdist_wheel_problems(sdist: Path, expected: Iterable[str], build_wheel: BuildWheel = build_with_build) -> list[str]:
    """Unpack the sdist, build a wheel from it and compare its file list with ``expected``."""
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse links and absolute paths
                archive.extractall(tmp, filter="data")
            else:  # pragma: no cover
                archive.extractall(tmp)
        unpacked = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(unpacked) != 1:
            return [f"sdist {sdist.name} does not unpack to one folder: {[p.name for p in unpacked]}"]
        out = Path(tmp) / "wheel"
        try:
            build_wheel(unpacked[0], out)
        except subprocess.CalledProcessError as err:
            output = "\n".join(f"{err.stdout or ''}{err.stderr or ''}".strip().splitlines()[-20:])
            return [f"building a wheel from {sdist.name} failed ({err}):\n{output}"]
        wheels = list(out.glob("*.whl"))
        if len(wheels) != 1:
            return [f"building a wheel from {sdist.name} gave {[w.name for w in wheels]}"]
        rebuilt, _ = read_wheel(wheels[0])
    missing, extra = sorted(set(expected) - set(rebuilt)), sorted(set(rebuilt) - set(expected))
    problems = [f"wheel from the sdist lacks {', '.join(missing)}"] if missing else []
    return problems + ([f"wheel from the sdist has extra {', '.join(extra)}"] if extra else [])


def check_distribution(
    name: str,
    folder: Path,
    dist: Path,
    root: Path = ROOT,
    build_wheel: BuildWheel = build_with_build,
    render: Render = render_markdown,
) -> tuple[str, list[str]]:
    """(version, problems) of one distribution whose sdist and wheel are in ``dist``."""
    version = source_version(name, folder)
    stem = f"{normalized(name)}-{version}"
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    expected_wheel, expected_sdist = f"{stem}-py3-none-any.whl", f"{stem}.tar.gz"
    if [w.name for w in wheels] != [expected_wheel] or [s.name for s in sdists] != [expected_sdist]:
        found = [p.name for p in wheels + sdists]
        return version, [f"expected {expected_sdist} and {expected_wheel} in {dist} (source version), found {found}"]

    files, metadata = read_wheel(wheels[0])
    also = [
        p for p in declared_packages((folder / "pyproject.toml").read_text(encoding="utf-8")) if p != normalized(name)
    ]
    problems = [f"wheel: {p}" for p in wheel_problems(files, normalized(name), f"{stem}.dist-info", also)]
    problems += metadata_problems(metadata)
    problems += readme_problems(name, metadata, render)
    sdist_version = read_sdist_metadata(sdists[0]).get("Version")
    for where, stated in (("wheel metadata", metadata.get("Version")), ("sdist PKG-INFO", sdist_version)):
        if stated != version:
            problems.append(f"{where} says version {stated}, src/{normalized(name)}/__init__.py says {version}")
    problems += changelog_problems((folder / "CHANGELOG.md").read_text(encoding="utf-8"), version)
    problems += tag_problems(name, folder, version, root)
    problems += sdist_wheel_problems(sdists[0], files, build_wheel)
    return version, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="release_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dist",
        metavar="DIST",
        type=Path,
        help="a folder per distribution (shared-engine, scratch-mlp, ...) holding its sdist and wheel",
    )
    args = parser.parse_args(argv)
    if not args.dist.is_dir():
        parser.error(f"DIST {str(args.dist)!r} is not a folder")
    failed = False
    for name, folder in distributions().items():
        version, problems = check_distribution(name, folder, args.dist / folder.name)
        print(f"{'FAIL' if problems else 'ok  '} {name} {version}")
        for problem in problems:
            print(f"     - {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
