"""The workflows as GitHub will run them: every test step gets the data sets, every action is pinned."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from release_tag import distributions

GITHUB = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
DATA_ACTION = "./.github/actions/data"


def _steps(workflow: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    jobs = yaml.safe_load(workflow.read_text(encoding="utf-8"))["jobs"]
    return [(name, job["steps"]) for name, job in jobs.items()]


def _test_runs(workflow: Path) -> list[tuple[str, list[dict[str, Any]], int]]:
    return [
        (job, steps, index)
        for job, steps in _steps(workflow)
        for index, step in enumerate(steps)
        if any(f'nox -s "{session}(' in step.get("run", "") for session in ("tests", "notebooks"))
    ]


def _default_nox_sessions() -> list[str]:
    """The sessions a bare ``nox`` runs (``.ci/run``), read from the noxfile's ``nox.options.sessions``."""
    tree = ast.parse((GITHUB.parent / "noxfile.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "nox.options.sessions":
            return ast.literal_eval(node.value)
    raise AssertionError("noxfile.py sets no nox.options.sessions")


def test_ci_runs_every_session_that_nox_runs_locally() -> None:
    runs = [step.get("run", "") for _, steps in _steps(GITHUB / "workflows" / "ci.yml") for step in steps]
    # `nox -s lint typecheck` names sessions; `nox -s "tests($PACKAGE)"` names one of a parametrized session's runs.
    words = [word for run in runs for line in run.splitlines() if "nox -s" in line for word in line.split()]
    sessions = {word.strip('"').split("(")[0] for word in words}
    missing = [name for name in _default_nox_sessions() if name not in sessions]
    assert missing == [], f"ci.yml never runs these default nox sessions: {missing}"


def test_both_workflows_run_the_tests() -> None:
    assert [path.name for path in WORKFLOWS] == ["ci.yml", "publish.yml"]
    assert all(_test_runs(path) for path in WORKFLOWS)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_every_test_step_reads_the_fetched_data_and_never_downloads(workflow: Path) -> None:
    for job, steps, index in _test_runs(workflow):
        data_steps = [step for step in steps[:index] if step.get("uses") == DATA_ACTION]
        assert [step.get("id") for step in data_steps] == ["data"], f"{workflow.name}: job {job}"
        env = steps[index].get("env", {})
        assert env.get("SCRATCH_DATA_DIR") == "${{ steps.data.outputs.data-dir }}", f"{workflow.name}: job {job}"
        assert env.get("SCRATCH_DOWNLOAD") == "0", f"{workflow.name}: job {job}"


def test_the_data_action_fetches_every_known_data_set_into_its_output() -> None:
    action = yaml.safe_load((GITHUB / "actions" / "data" / "action.yml").read_text(encoding="utf-8"))
    runs = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    assert "python -m scratch_engine.tools.datasets fetch --all" in runs
    cached = [step["with"]["path"] for step in action["runs"]["steps"] if "actions/cache@" in step.get("uses", "")]
    assert cached == [action["outputs"]["data-dir"]["value"]]


@pytest.mark.parametrize("path", [*WORKFLOWS, GITHUB / "actions" / "data" / "action.yml"], ids=lambda path: path.name)
def test_every_remote_action_is_pinned_to_a_commit(path: Path) -> None:
    uses = re.findall(r"uses:\s*(\S+)", path.read_text(encoding="utf-8"))
    remote = [use for use in uses if not use.startswith("./")]
    assert remote
    unpinned = [use for use in remote if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", use)]
    assert unpinned == []


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_every_job_has_a_time_limit(workflow: Path) -> None:
    jobs = yaml.safe_load(workflow.read_text(encoding="utf-8"))["jobs"]
    assert {name: 0 < job.get("timeout-minutes", 0) <= 60 for name, job in jobs.items()} == dict.fromkeys(jobs, True)


TOOL_PINS = GITHUB.parent / ".ci" / "constraints-tools.txt"
RUNTIME_REQUIREMENTS = {
    "torch",
    "matplotlib",
}  # the packages' own needs: pinned by the torch constraints, or not at all


def _pinned_tools() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in TOOL_PINS.read_text(encoding="utf-8").splitlines()]
    pins = dict(line.split("==") for line in lines if line)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins.items()}


def _nox_installs() -> list[ast.Call]:
    tree = ast.parse((GITHUB.parent / "noxfile.py").read_text(encoding="utf-8"))
    return [
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func) == "session.install"
    ]


def test_every_tool_that_nox_installs_has_a_pinned_version() -> None:
    pins = _pinned_tools()
    assert pins
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pins.values()), pins
    installs = _nox_installs()
    named = {
        re.sub(r"[-_.]+", "-", arg.value.split("[")[0]).lower()  # readme-renderer[md] is pinned as readme-renderer
        for call in installs
        for arg in call.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("-")  # pip options
    }
    assert {"ruff", "mypy", "pytest", "hatch", "zizmor"} <= named
    assert sorted(named - RUNTIME_REQUIREMENTS - pins.keys()) == []
    unconstrained = [ast.unparse(call) for call in installs if "*constraints(" not in ast.unparse(call)]
    assert unconstrained == [], "every install must pass *constraints() (which applies the tool pins)"


@pytest.mark.parametrize("path", [*WORKFLOWS, GITHUB.parent / ".ci" / "run"], ids=lambda path: path.name)
def test_nox_itself_is_installed_at_its_pinned_version(path: Path) -> None:
    installs = [
        line for line in path.read_text(encoding="utf-8").splitlines() if re.search(r"pip\"? install.* nox", line)
    ]
    assert installs, f"{path.name} installs no nox"
    assert all("--constraint .ci/constraints-tools.txt" in line for line in installs), installs


def test_publish_uploads_the_files_it_tested_after_the_release_checks() -> None:
    steps = dict(_steps(GITHUB / "workflows" / "publish.yml"))["build"]
    runs = [step.get("run", "") for step in steps]
    tested = next(i for i, run in enumerate(runs) if 'nox -s "tests(' in run)
    checked = next(i for i, run in enumerate(runs) if "nox -s release_check" in run)
    taken = next(i for i, run in enumerate(runs) if ".nox/_dist/" in run)
    assert tested < checked < taken
    assert not any("hatch build" in run for run in runs), "a second build would upload files nothing tested"
    uploaded = [step for step in steps if "actions/upload-artifact@" in step.get("uses", "")]
    assert [step["with"]["path"] for step in uploaded] == ["dist/"]


def _declared_floor(requirement: str) -> str:
    """The ``>=`` bound on ``requirement`` that every distribution declares (one and the same)."""
    pyprojects = [folder / "pyproject.toml" for folder in distributions().values()]
    bounds = {
        match
        for path in pyprojects
        for match in re.findall(rf'"{requirement}(?:\[[^\]]*\])?>=([\d.]+)"', path.read_text(encoding="utf-8"))
    }
    assert len(bounds) == 1, f"{requirement}: the distributions declare {sorted(bounds)}"
    return bounds.pop()


def test_the_oldest_job_tests_the_lower_bounds_the_packages_declare() -> None:
    pins = {}
    for line in (GITHUB.parent / ".ci" / "constraints-oldest.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name] = version
    for requirement in ("torch", "torchvision"):
        floor = _declared_floor(requirement)
        assert pins[requirement].split(".")[:2] == floor.split(".")[:2], (requirement, floor, pins[requirement])
    jobs = yaml.safe_load((GITHUB / "workflows" / "ci.yml").read_text(encoding="utf-8"))["jobs"]
    oldest = jobs["oldest"]
    assert oldest["strategy"]["matrix"]["package"] == jobs["test"]["strategy"]["matrix"]["package"]
    env = next(step["env"] for step in oldest["steps"] if 'nox -s "tests(' in step.get("run", ""))
    assert env["SCRATCH_CONSTRAINTS"] == env["SCRATCH_VISION_CONSTRAINTS"] == ".ci/constraints-oldest.txt"
