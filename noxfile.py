"""Build and test every distribution in isolation.

    nox                     lint, typecheck (mypy), the release scripts' tests, every package's tests, the
                            release checks
    nox -s "tests(mlp)"     one package: build its sdist and wheel with hatch, install that wheel
                            and the scratch-engine wheel into a fresh venv, run its tests there
    nox -s "walkthrough(mlp)"
                            a new user's first minutes, checked (scripts/walkthrough.py): the wheel's CLI,
                            --help of every subcommand, a short run's files, a wrong data path's one-line
                            error; every tests(<architecture>) session ends with it too
    nox -s "notebooks(mlp)" execute the package's notebooks (packages/scratch-mlp/notebooks/) in a fresh venv
                            holding its wheel, the engine's and a Jupyter kernel; fail if a cell raises or an
                            output drifted from the committed .ipynb (scripts/notebooks.py); `-- --write`
                            regenerates them
    nox -s demo             train each architecture's default example into runs/<package>/, then
                            print one summary table (runs/summary.md); `nox -s demo -- --full` for
                            the full budgets
    nox -s bench            each architecture's benchmark against torch.nn (runs/bench/*.json), then
                            assets/benchmarks.md and assets/benchmarks.png (bench_report)
    nox -s index_install    every distribution served from a local package index (pypiserver), and
                            `pip install scratch-rnn` from it in a fresh venv (scripts/index_install_check.py)
    nox -s release_check    every sdist and wheel publishable: twine check --strict, wheel contents, the
                            sdist rebuilds the wheel, versions/tags/CHANGELOGs agree; workflows pass
                            check-jsonschema and zizmor (.github/scripts/release_check.py)

Environment:
    SCRATCH_CONSTRAINTS     a pip constraints file applied to every install (CI uses it to pick
                            the light CPU build of torch; published metadata stays torch>=2.1); without
                            it, on Linux with no NVIDIA GPU, torch comes from PyTorch's CPU index (its
                            light build) when that index answers
    SCRATCH_TORCH_INDEX     `pypi`: take torch from PyPI even so (its CUDA build, several GB a venv)
    SCRATCH_VISION_CONSTRAINTS
                            the same for a package that needs torchvision, if one does (it pins torch
                            too); none of the four does since they read MNIST's IDX files themselves
    SCRATCH_DATA_DIR        where the data sets are read from (passed through to the tests)

The tools' versions (ruff, mypy, pytest, hatch, twine, zizmor, ...) are pinned in
.ci/constraints-tools.txt, applied to every install here.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import nox

ROOT = Path(__file__).parent
ENGINE = ROOT / "shared-engine"
ARCHITECTURES = {name: ROOT / "packages" / f"scratch-{name}" for name in ("mlp", "cnn", "rnn", "transformer")}
PROJECTS = {"engine": ENGINE, **ARCHITECTURES}
DIST = ROOT / ".nox" / "_dist"
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONS = ROOT / ".github" / "actions"  # composite actions the workflows share
TOOLS = ROOT / ".ci" / "constraints-tools.txt"  # the tools' versions (ruff, mypy, pytest, hatch, ...)

nox.options.sessions = ["lint", "typecheck", "scripts", "tests", "notebooks", "index_install", "release_check"]
nox.options.error_on_missing_interpreters = True


def needs_vision(project: Path) -> bool:
    """Whether the project depends on torchvision (through the engine's ``vision`` extra)."""
    return "scratch-engine[vision]" in (project / "pyproject.toml").read_text(encoding="utf-8")


def constraints(project: Path | None = None) -> list[str]:
    """pip's arguments for every install: the pinned tools, and the torch build if one is chosen (a constraints
    file, else :func:`torch_index`)."""
    variable = "SCRATCH_VISION_CONSTRAINTS" if project and needs_vision(project) else "SCRATCH_CONSTRAINTS"
    path = os.environ.get(variable)
    return ["--constraint", str(TOOLS), *(["--constraint", str(Path(path).resolve())] if path else torch_index())]


CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


@functools.cache
def torch_index() -> list[str]:
    """Where torch comes from when no constraints file picks its build: PyTorch's CPU index beside PyPI on Linux
    without an NVIDIA GPU (no ``nvidia-smi``), whose ``+cpu`` wheels then win over PyPI's CUDA build of the same
    version (about 0.2 GB a venv instead of several); nothing elsewhere (macOS and Windows wheels on PyPI are
    CPU builds already), when ``SCRATCH_TORCH_INDEX=pypi``, or when the index does not answer within 5 s."""
    if os.environ.get("SCRATCH_TORCH_INDEX") == "pypi" or sys.platform != "linux" or shutil.which("nvidia-smi"):
        return []
    try:
        urllib.request.urlopen(urllib.request.Request(f"{CPU_TORCH_INDEX}/torch/", method="HEAD"), timeout=5)
    except OSError:
        print(f"nox: {CPU_TORCH_INDEX} does not answer: torch comes from PyPI (its CUDA build)", file=sys.stderr)
        return []
    return ["--extra-index-url", CPU_TORCH_INDEX]


def build(session: nox.Session, project: Path, dist: Path = DIST) -> Path:
    """Build the sdist and the wheel of ``project`` with hatch into ``dist/<folder>``; return the wheel."""
    out = dist / project.name
    shutil.rmtree(out, ignore_errors=True)
    with session.chdir(project):
        session.run("hatch", "build", "--target", "sdist", "--target", "wheel", str(out), silent=True)
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist for {project.name}, got {wheels + sdists}")
    return wheels[0]


def install_isolated(session: nox.Session, project: Path, *extra: str) -> None:
    """A fresh venv holding only ``project``'s wheel, the engine wheel and their requirements."""
    session.install("hatch", *constraints())
    wheels = [build(session, ENGINE)]
    if project != ENGINE:
        wheels.append(build(session, project))
    session.install(*constraints(project), *map(str, wheels), *extra)
    # A reused venv (nox -r) already holds wheels of this version, which pip would keep: the code measured and
    # tested would be that of an earlier run. Reinstalling only our own wheels costs seconds.
    session.install("--force-reinstall", "--no-deps", *constraints(project), *map(str, wheels))


@nox.session
@nox.parametrize("package", list(PROJECTS), ids=list(PROJECTS))
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests against its installed wheel (never the source tree)."""
    project = PROJECTS[package]
    install_isolated(session, project, "pytest")
    # Running from the project folder with a src/ layout: the only importable copy is the wheel.
    with session.chdir(project):
        session.run(
            "pytest",
            "tests",
            "-p",
            "no:cacheprovider",
            *session.posargs,
            env={"MPLBACKEND": "Agg", "SCRATCH_DOWNLOAD": "0"},
        )
    if package in ARCHITECTURES:
        run_walkthrough(session, package)


def run_walkthrough(session: nox.Session, package: str) -> None:
    script, out = ROOT / "scripts" / "walkthrough.py", ROOT / "runs" / "walkthrough"
    session.run("python", str(script), package, "--out", str(out), env={"MPLBACKEND": "Agg", "SCRATCH_DOWNLOAD": "0"})


@nox.session
def index_install(session: nox.Session) -> None:
    """The published install path, proven before any release: every distribution built and served from a real
    package index on 127.0.0.1 (pypiserver), then ``pip install scratch-rnn`` in a fresh venv from it (torch and
    the other requirements from the usual indexes) must resolve ``scratch-engine`` from that index, install no
    other architecture, and run ``scratch-rnn --help`` (scripts/index_install_check.py)."""
    session.install("hatch", "pypiserver", *constraints())
    index = DIST / "index"
    shutil.rmtree(index, ignore_errors=True)
    index.mkdir(parents=True)
    for project in PROJECTS.values():
        wheel = build(session, project)
        for built in wheel.parent.iterdir():
            shutil.copy2(built, index / built.name)
    venv = Path(session.create_tmp()) / "fresh"
    shutil.rmtree(venv, ignore_errors=True)
    session.run(
        "python",
        str(ROOT / "scripts" / "index_install_check.py"),
        str(index),
        str(venv),
        "scratch-rnn",
        *(["--constraint", path] if (path := os.environ.get("SCRATCH_CONSTRAINTS")) else []),
    )


@nox.session
@nox.parametrize("package", list(ARCHITECTURES), ids=list(ARCHITECTURES))
def walkthrough(session: nox.Session, package: str) -> None:
    """A fresh venv with only the package's wheel and the engine's, used as a new user would."""
    install_isolated(session, ARCHITECTURES[package])
    run_walkthrough(session, package)


@nox.session
@nox.parametrize("package", list(ARCHITECTURES), ids=list(ARCHITECTURES))
def notebooks(session: nox.Session, package: str) -> None:
    """Execute the package's notebooks against its installed wheel and check them against the committed outputs
    (`-- --write` rewrites them)."""
    install_isolated(session, ARCHITECTURES[package], "nbclient", "nbformat", "ipykernel")
    session.run("python", str(ROOT / "scripts" / "notebooks.py"), package, *session.posargs)


@nox.session
@nox.parametrize("package", list(ARCHITECTURES), ids=list(ARCHITECTURES))
def demo(session: nox.Session, package: str) -> None:
    """Train the package's default example(s), writing plots and metrics.json under runs/."""
    project = ARCHITECTURES[package]
    install_isolated(session, project)
    out = ROOT / "runs" / project.name
    session.run(project.name, "demo", "--out", str(out), *session.posargs, env={"MPLBACKEND": "Agg"})
    session.notify("demo_report", posargs=session.posargs)  # once, after every demo(...) session that runs


@nox.session(venv_backend="none")
def demo_report(session: nox.Session) -> None:
    """One table of every demo's headline metric (runs/summary.md), checked against the README's table (the rows
    of the packages that ran) unless the demos ran their full budgets (`-- --full`); needs nothing but Python."""
    checked = [] if "--full" in session.posargs else ["--check", str(ROOT / "README.md")]
    session.run("python3", "scripts/demo_report.py", str(ROOT / "runs"), *checked)


@nox.session
@nox.parametrize("package", list(ARCHITECTURES), ids=list(ARCHITECTURES))
def bench(session: nox.Session, package: str) -> None:
    """Time a training step against the torch.nn twin in the same process; JSON under runs/bench/."""
    project = ARCHITECTURES[package]
    module = project.name.replace("-", "_")
    if not (project / "src" / module / "bench.py").is_file():
        session.skip(f"{project.name} has no benchmark yet")
    install_isolated(session, project)
    out = ROOT / "runs" / "bench" / f"{project.name}.json"
    session.run("python", "-m", f"{module}.bench", "--json", str(out), *session.posargs)
    session.notify("bench_report")  # once, after every bench(...) session that runs


@nox.session
def bench_report(session: nox.Session) -> None:
    """assets/benchmarks.md and assets/benchmarks.png from the benchmarks' JSON (runs/bench/)."""
    session.install("matplotlib", *constraints())
    session.run("python", "scripts/bench_report.py", str(ROOT / "runs" / "bench"), str(ROOT / "assets"))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install("ruff", *constraints())
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the five distributions' sources and the repository's tooling (.mypy.ini), against what they import."""
    session.install("mypy", "types-tqdm", "types-PyYAML", "matplotlib", "pytest", "nox", *constraints(), "torch")
    session.run("mypy")


@nox.session
def scripts(session: nox.Session) -> None:
    """Tests of the repository's own tooling: release_tag.py (publish.yml), release_check.py and the report scripts."""
    session.install("pytest", "matplotlib", "pyyaml", "readme-renderer[md]", "nox", "nbformat", *constraints())
    session.run(
        "pytest", ".github/scripts", "scripts", "-p", "no:cacheprovider", *session.posargs, env={"MPLBACKEND": "Agg"}
    )


@nox.session
def release_check(session: nox.Session) -> None:
    """Build every distribution and check it is ready to publish, and the workflows that publish it."""
    session.install(
        "hatch",
        "hatchling",
        "hatch-fancy-pypi-readme",
        "build",
        "twine",
        "readme-renderer[md]",
        "check-jsonschema",
        "zizmor",
        *constraints(),
    )
    dist = DIST / "release"  # apart from the tests sessions' builds
    shutil.rmtree(dist, ignore_errors=True)
    for project in PROJECTS.values():
        build(session, project, dist)
    session.run("twine", "check", "--strict", *sorted(map(str, dist.glob("*/*"))))
    session.run("python", str(ROOT / ".github" / "scripts" / "release_check.py"), str(dist))
    workflows = sorted(map(str, WORKFLOWS.glob("*.yml")))
    actions = sorted(map(str, ACTIONS.glob("*/action.yml")))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-actions", *actions)
    session.run("zizmor", "--offline", "--min-severity", "medium", "--no-progress", str(WORKFLOWS), str(ACTIONS))
