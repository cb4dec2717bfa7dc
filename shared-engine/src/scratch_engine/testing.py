"""Test helpers shared by every scratch package.

torch autograd is the oracle here: :func:`check_backward` runs a module's forward once
with autograd recording, then compares the module's hand-written ``backward`` against
``torch.autograd.grad`` for every floating input and every parameter.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import pickle
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratch_engine.module import Module

ARCHITECTURES = ("scratch_mlp", "scratch_cnn", "scratch_rnn", "scratch_transformer")
GRAD_PREFILL = 0.5  # check_backward's gradients before the backward: exact in every float format


def _flatten(value: Any) -> list[Tensor | None]:
    if isinstance(value, Tensor) or value is None:
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flatten(item)]
    raise TypeError(f"expected tensors or (nested) tuples of tensors, got {type(value).__name__}")


def _like(structure: Any, make: Any) -> Any:
    """A copy of ``structure`` (tensors in nested tuples) with each tensor replaced by ``make(t)``."""
    if isinstance(structure, Tensor):
        return make(structure)
    if structure is None:
        return None
    return type(structure)(_like(item, make) for item in structure)


def assert_close(actual: Tensor, expected: Tensor, *, atol: float = 1e-6, rtol: float = 1e-6, name: str = "") -> None:
    """``torch.testing.assert_close`` with a message that names what differed and by how much."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)
    except AssertionError as err:
        diff = (actual.double() - expected.double()).abs().max().item()
        raise AssertionError(f"{name}: max abs difference {diff:.3e} (atol={atol}, rtol={rtol})\n{err}") from None


def check_backward(
    module: Module,
    *inputs: Any,
    grad_output: Any = None,
    atol: float = 1e-6,
    rtol: float = 1e-6,
    forward_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Assert that ``module.backward`` equals autograd for inputs and parameters.

    Run it in float64 (``module.to(dtype=torch.float64)`` and float64 inputs). The module's
    forward runs once, recorded by autograd; its cache then serves the manual backward, so
    stochastic layers (Dropout) are checked against the very mask they drew.

    ``inputs`` are tensors (floating ones get gradients, integer ones such as token ids do
    not), ``None``, or (nested) tuples of those, such as an LSTM's ``(h, c)`` state. The
    output may be a tensor or a nested tuple of tensors; ``backward`` then receives
    gradients in the same structure. ``backward`` must return the input gradient, or a
    tuple with one entry per positional input, each shaped like its input (``None`` where
    there is none). Returns the output of the forward pass.

    ``backward`` must *add* into each ``Parameter.grad``, in place: the gradients are filled
    with :data:`GRAD_PREFILL` first and that is subtracted before comparing (a backward that
    assigns ``p.grad = ...`` or overwrites its values fails), and each ``grad`` must still be
    the tensor it was. The parameters end up holding the gradient of this one backward.
    """
    params = module.parameters()
    for p in params:  # as if earlier backward calls had accumulated into them
        p.grad.fill_(GRAD_PREFILL)
    grads = [p.grad for p in params]
    leaves = tuple(_like(x, _as_leaf) if isinstance(x, (Tensor, tuple, list)) else x for x in inputs)
    float_inputs = [x for x in _flatten_inputs(leaves) if _is_float(x)]
    try:
        for p in params:
            p.data.requires_grad_(True)
        with torch.enable_grad():
            output = module(*leaves, **(forward_kwargs or {}))
        flat_out = _flatten(output)
        if grad_output is None:
            generator = torch.Generator().manual_seed(1234)
            grad_output = _like(
                output, lambda t: torch.randn(t.shape, generator=generator, dtype=t.dtype, device="cpu").to(t.device)
            )
        flat_grad_out = _flatten(grad_output)
        pairs = [
            (o, g)
            for o, g in zip(flat_out, flat_grad_out, strict=True)
            if o is not None and g is not None and o.requires_grad
        ]
        wrt = float_inputs + [p.data for p in params]
        expected = torch.autograd.grad(
            [o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True, retain_graph=False
        )
    finally:
        for p in params:
            p.data.requires_grad_(False)

    with torch.no_grad():
        manual = module.backward(grad_output)
    name = type(module).__name__
    manual_inputs = list(manual) if isinstance(manual, (tuple, list)) and len(leaves) > 1 else [manual]
    if isinstance(manual, (tuple, list)) and len(leaves) == 1 and not isinstance(leaves[0], (tuple, list)):
        manual_inputs = [manual[0], *manual[1:]] if any(g is not None for g in manual[1:]) else [manual[0]]
    if len(manual_inputs) == 1 and len(leaves) > 1:
        manual_inputs = manual_inputs + [None] * (len(leaves) - 1)
    if len(manual_inputs) != len(leaves):
        raise AssertionError(f"{name}.backward returned {len(manual_inputs)} input gradients for {len(leaves)} inputs")
    manual_float = [
        pair
        for i, (x, g) in enumerate(zip(leaves, manual_inputs, strict=True))
        for pair in _pair(x, g, f"input {i}", name)
    ]

    for (where, got), want, leaf in zip(manual_float, expected[: len(float_inputs)], float_inputs, strict=True):
        want = torch.zeros_like(leaf) if want is None else want
        if got is None:
            raise AssertionError(f"{name}.backward returned no gradient for floating {where}")
        assert_close(got, want, atol=atol, rtol=rtol, name=f"{name} grad of {where}")
    for (name, p), grad, want in zip(module.named_parameters(), grads, expected[len(float_inputs) :], strict=True):
        if p.grad is not grad:
            raise AssertionError(
                f"{type(module).__name__}.backward replaced the grad tensor of parameter {name!r} "
                "(p.grad = ...): it must add into it in place (p.grad += ...)"
            )
        want = torch.zeros_like(p.data) if want is None else want
        p.grad.sub_(GRAD_PREFILL)  # what this backward added
        assert_close(
            p.grad,
            want,
            atol=atol,
            rtol=rtol,
            name=f"{type(module).__name__} grad of parameter {name!r} (what backward added to the grad already there)",
        )
    return output


def _as_leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True) if x.is_floating_point() else x


def _flatten_inputs(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [item for v in value for item in _flatten_inputs(v)]
    return [value]


def _pair(leaf: Any, grad: Any, where: str, name: str) -> list[tuple[str, Tensor | None]]:
    """``(where, manual gradient)`` for each floating tensor in ``leaf``, walking nested tuples alike."""
    if _is_float(leaf):
        return [(where, grad)]
    if isinstance(leaf, (tuple, list)):
        grads = [None] * len(leaf) if grad is None else grad
        if not isinstance(grads, (tuple, list)) or len(grads) != len(leaf):
            raise AssertionError(f"{name}.backward: the gradient of {where} should be a tuple of {len(leaf)} entries")
        return [
            pair
            for k, (x, g) in enumerate(zip(leaf, grads, strict=True))
            for pair in _pair(x, g, f"{where}[{k}]", name)
        ]
    return []


def _is_float(x: Any) -> bool:
    return isinstance(x, Tensor) and x.is_floating_point()


# --------------------------------------------------------------------------- isolation

_STDLIB = set(sys.stdlib_module_names)


def _requirement_names(distribution: str) -> set[str]:
    """Names of the distributions ``distribution`` requires, its optional extras included."""
    names = set()
    for req in importlib.metadata.requires(distribution) or []:
        match = re.match(r"[A-Za-z0-9_.\-]+", req)
        if match:
            names.add(match.group(0).lower().replace("_", "-"))
    return names


def allowed_imports(distribution: str) -> set[str]:
    """Top-level module names a distribution may import: stdlib, itself and its declared requirements."""
    requirements = _requirement_names(distribution)
    # a requirement that is not installed (an unused extra) is known by its own name
    allowed = set(_STDLIB) | {name.replace("-", "_") for name in requirements}
    for module_name, dists in importlib.metadata.packages_distributions().items():
        if any(d.lower().replace("_", "-") in requirements | {distribution} for d in dists):
            allowed.add(module_name)
    return allowed


def imported_modules(package_dir: Path) -> dict[str, set[str]]:
    """Top-level names imported at run time (anywhere, including function bodies) by each ``.py`` file.

    The body of an ``if TYPE_CHECKING:`` block never runs, so what it imports (``_typeshed``, a
    class named only in a hint) is no dependency and is left out; its ``else`` branch counts.
    """
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        type_only = _type_checking_lines(tree)
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno in type_only:
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(package_dir))] = names
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """The line numbers of code in the body of an ``if TYPE_CHECKING:`` block: seen by type checkers, never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def assert_isolated(import_name: str, distribution: str | None = None) -> None:
    """Assert that package ``import_name`` stands alone in this environment.

    It is imported from an installed distribution (not a source tree), no other scratch
    architecture is importable beside it, and its modules import nothing but the standard
    library, itself and the requirements its distribution declares.
    """
    distribution = distribution or import_name.replace("_", "-")
    module = importlib.import_module(import_name)
    location = Path(module.__file__ or "").resolve()
    if "site-packages" not in location.parts and "dist-packages" not in location.parts:
        raise AssertionError(f"{import_name} was imported from {location}, not from an installed wheel")
    others = [name for name in ARCHITECTURES if name != import_name and importlib.util.find_spec(name) is not None]
    if others:
        raise AssertionError(f"{import_name}'s environment can also import {others}: it is not isolated")
    allowed = allowed_imports(distribution)
    bad = {
        file: sorted(names - allowed) for file, names in imported_modules(location.parent).items() if names - allowed
    }
    if bad:
        raise AssertionError(f"{import_name} imports undeclared modules: {bad}")


# --------------------------------------------------------------------------- from scratch

FORBIDDEN_IN_TRAINING_PATH = (
    "torch.nn.functional",
    "torch.optim",
    "torch.autograd",
    "requires_grad_(True)",
    "requires_grad=True",
    "import torch.nn",
    "from torch import nn",
    "from torch.nn",
)


def assert_from_scratch(package_dir: Path, allowed_files: Iterable[str] = ()) -> None:
    """Assert no module of ``package_dir`` computes with torch.nn / torch.optim / autograd.

    ``from torch import nn`` under ``if TYPE_CHECKING:`` (for ``from_torch`` type hints)
    is fine; ``allowed_files`` are the opt-in autograd mode and the test helpers.
    """
    allowed = set(allowed_files)
    offences: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = str(path.relative_to(package_dir))
        if rel in allowed:
            continue
        text = path.read_text(encoding="utf-8")
        type_only = _type_checking_lines(ast.parse(text, filename=str(path)))
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if number in type_only or stripped.startswith("#"):
                continue
            code = stripped.split("  #")[0]
            if any(pattern in code for pattern in FORBIDDEN_IN_TRAINING_PATH):
                offences.append(f"{rel}:{number}: {stripped}")
    if offences:
        raise AssertionError("torch.nn / torch.optim / autograd in the training path:\n" + "\n".join(offences))


def cached_tensors(*objects: Any) -> dict[str, Tensor]:
    """The tensors that the modules under ``objects`` (and losses among them) keep in private
    attributes, by attribute path: by this project's convention, what their forwards kept for a backward.

    Follows ``_``-prefixed attributes through tuples, lists, dicts and plain objects. A tensor that
    shares memory with a parameter, a buffer or a public tensor attribute (a constant table) is the
    module's own state, not a cache, and is left out.
    """
    modules = [m for obj in objects if isinstance(obj, Module) for m in obj.modules()]
    owned = {p.data.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
    owned |= {b.untyped_storage().data_ptr() for m in modules for _, b in m.named_buffers()}
    owned |= {
        value.untyped_storage().data_ptr()
        for m in modules
        for name, value in vars(m).items()
        if isinstance(value, Tensor) and not name.startswith("_")
    }
    found: dict[str, Tensor] = {}
    seen: set[int] = set()

    def visit(value: Any, path: str) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, Tensor):
            if value.untyped_storage().data_ptr() not in owned:
                found[path] = value
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                visit(item, f"{path}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f"{path}[{key!r}]")
        elif hasattr(value, "__dict__") and not isinstance(value, (Module, type)):
            for name, item in vars(value).items():
                visit(item, f"{path}.{name}")

    owners = [*modules, *(obj for obj in objects if not isinstance(obj, Module))]
    for owner in owners:
        for name, value in vars(owner).items():
            if not name.startswith("_") or isinstance(value, Module) or name in getattr(owner, "_buffer_names", ()):
                continue
            visit(value, f"{type(owner).__name__}.{name}")
    return found


def random_inputs(*shapes: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float64) -> list[Tensor]:
    """Seeded standard-normal tensors of the given shapes (float64 by default) on the default device.

    Drawn on the CPU, so the numbers are the same whichever device the tests run on.
    """
    generator = torch.Generator().manual_seed(seed)
    device = _default_device()
    return [torch.randn(tuple(shape), generator=generator, dtype=dtype, device="cpu").to(device) for shape in shapes]


# --------------------------------------------------------------------------- devices and number formats

TEST_DEVICE_VARIABLE = "SCRATCH_TEST_DEVICE"

# bfloat16 keeps 8 significant bits (relative rounding error 2**-9, about 0.2%); through a
# network's layers the errors add up, and more so in gradients: a ReLU or a max-pool that
# decides the other way reroutes them, and weight gradients are sums with much cancellation.
# The bounds are relative errors (Frobenius norm) against float32 that every architecture's
# test asserts. For scale: torch.nn's own LeNet in bfloat16 is 0.13 off in its first
# convolution's weight gradient on the same kind of input.
BFLOAT16_OUTPUT_TOLERANCE = 0.02
BFLOAT16_GRADIENT_TOLERANCE = 0.25


def assert_bfloat16_close(errors: dict[str, float]) -> None:
    """Assert :func:`precision_errors` within :data:`BFLOAT16_OUTPUT_TOLERANCE` / ``..._GRADIENT_TOLERANCE``."""
    worst = max((name for name in errors if name.startswith("grad")), key=errors.__getitem__, default=None)
    output_ok = errors["output"] <= BFLOAT16_OUTPUT_TOLERANCE
    grads_ok = worst is None or errors[worst] <= BFLOAT16_GRADIENT_TOLERANCE
    if not (output_ok and grads_ok):
        raise AssertionError(
            f"bfloat16 vs float32: output off by {errors['output']:.3g} (bound {BFLOAT16_OUTPUT_TOLERANCE}), "
            f"worst gradient {worst} off by {0.0 if worst is None else errors[worst]:.3g} "
            f"(bound {BFLOAT16_GRADIENT_TOLERANCE})"
        )


def _seeded_like(t: Tensor, generator: torch.Generator) -> Tensor:
    """Standard-normal numbers shaped like ``t``, drawn in float32 on the CPU, then in ``t``'s device and dtype."""
    return torch.randn(t.shape, generator=generator, device="cpu").to(device=t.device, dtype=t.dtype)


def _default_device() -> torch.device:
    """Where factory functions put new tensors (``torch.get_default_device`` only exists from torch 2.3)."""
    return torch.empty(()).device


def seeded_generator(seed: int) -> torch.Generator:
    """A ``torch.Generator`` on the default device (the GPU under ``$SCRATCH_TEST_DEVICE``), seeded."""
    return torch.Generator(_default_device()).manual_seed(seed)


def use_test_device() -> torch.device:
    """Make ``$SCRATCH_TEST_DEVICE`` (e.g. ``cuda``) torch's default device; returns the device in use.

    A package's ``tests/conftest.py`` calls it, so ``SCRATCH_TEST_DEVICE=cuda pytest`` runs the
    same parity tests with every tensor the tests create (and the layers' parameters) on the GPU.
    """
    import os

    name = os.environ.get(TEST_DEVICE_VARIABLE)
    if name:
        from scratch_engine.device import resolve_device

        torch.set_default_device(resolve_device(name))
    return _default_device()


def precision_errors(
    module: Module, *inputs: Any, dtype: torch.dtype = torch.bfloat16, seed: int = 0
) -> dict[str, float]:
    """Relative errors of ``module``'s forward and backward in ``dtype`` against float32.

    Two copies of ``module`` (in eval mode, so dropout draws nothing) run the same inputs
    (floating ones cast to each dtype) and the same output gradient. Returns
    ``{"output": e, "grad <parameter>": e, ...}`` with ``e = |low - float32| / |float32|`` in
    the Frobenius norm (the floating inputs' gradients too, as ``"grad input i"``).
    """
    import copy

    from scratch_engine.precision import cast_floating

    results = []
    for low_dtype in (torch.float32, dtype):
        copied = copy.deepcopy(module).to(dtype=low_dtype).eval()
        copied.zero_grad()
        output = copied(*cast_floating(inputs, low_dtype))
        grad_output = _like(output, partial(_seeded_like, generator=torch.Generator().manual_seed(seed)))
        input_grads = copied.backward(grad_output)
        input_grads = input_grads if isinstance(input_grads, (tuple, list)) else (input_grads,)
        results.append((output, input_grads, dict(copied.named_parameters())))

    def norm(value: Any) -> float:
        return sum(float(t.float().pow(2).sum()) for t in _flatten(value) if t is not None) ** 0.5

    def relative(low: Any, full: Any, floor: float = 0.0) -> float:
        lows = [t for t in _flatten(low) if t is not None]
        fulls = [t for t in _flatten(full) if t is not None]
        diff = sum(float((a.float() - b.float()).pow(2).sum()) for a, b in zip(lows, fulls, strict=True)) ** 0.5
        return diff / max(norm(fulls), floor, 1e-30)

    (out32, in32, params32), (out_low, in_low, params_low) = results
    # A gradient that vanishes in exact arithmetic (attention's key bias: softmax ignores a shift
    # shared by all keys) is rounding noise in both formats: measure it against a hundredth of the
    # largest parameter gradient instead of against itself.
    floor = 0.01 * max((norm(p.grad) for p in params32.values()), default=0.0)
    errors = {"output": relative(out_low, out32)}
    for i, (g_low, g32) in enumerate(zip(in_low, in32, strict=False)):
        if isinstance(g32, Tensor) and isinstance(g_low, Tensor):
            errors[f"grad input {i}"] = relative(g_low, g32)
    for name, p32 in params32.items():
        errors[f"grad {name}"] = relative(params_low[name].grad, p32.grad, floor)
    return errors


# --------------------------------------------------------------------------- data


def require_data_dir(*datasets: str) -> Path:
    """The folder holding ``datasets``: ``$SCRATCH_DATA_DIR``, else the cache; without them a test *fails*.

    Never skips and never downloads: CI points ``SCRATCH_DATA_DIR`` at its copy (``.ci/run``:
    ``../shared/data``), and a developer may instead fill the cache once with
    ``python -m scratch_engine.datasets fetch --all``.
    """
    import os

    from scratch_engine.datasets import DataNotFoundError, cache_dir, locate

    root = os.environ.get("SCRATCH_DATA_DIR")
    if root and not Path(root).is_dir():
        raise AssertionError(f"SCRATCH_DATA_DIR={root!r} is not a folder; this test needs real data")
    folder = Path(root) if root else cache_dir()
    for name in datasets:
        try:
            locate(name, data_dir=folder, download=False)  # the loaders look there, then in the cache
        except DataNotFoundError as err:
            raise AssertionError(f"this test needs real data: {err}") from None
    return folder


def assert_missing_data_is_one_line_error(
    main: Callable[[list[str]], int], task_argv: Sequence[str], tmp_path: Path, monkeypatch: Any, capsys: Any
) -> str:
    """A CLI's ``train`` pointed at a folder without its data exits 1 with one line naming that folder.

    Runs ``main([*task_argv, "--data-dir", <nowhere>, "--no-download", "--out", <out>])`` with
    an empty cache (pytest's ``monkeypatch`` and ``capsys``); no traceback, nothing written.
    Returns the line, for what else a package wants it to say.
    """
    monkeypatch.setenv("SCRATCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    nowhere, out = tmp_path / "nowhere", tmp_path / "out"
    assert main([*task_argv, "--data-dir", str(nowhere), "--no-download", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    assert "Traceback" not in error
    assert str(nowhere) in error, error
    assert not out.exists()
    return error


# --------------------------------------------------------------------------- documentation


def python_blocks(markdown: Path) -> list[str]:
    """The fenced ```python blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def run_readme_examples(markdown: Path, workdir: Path) -> int:
    """Run every ```python block of ``markdown`` in order, in one namespace, inside ``workdir``.

    Returns how many blocks ran. The README's usage is then tested code, not a promise.
    """
    import os

    blocks = python_blocks(markdown)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for number, block in enumerate(blocks, 1):
            try:
                exec(compile(block, f"{markdown.name}[python block {number}]", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"{markdown} python block {number} failed: {err!r}") from err
    finally:
        os.chdir(previous)
    return len(blocks)


# --------------------------------------------------------------------------- data-parallel runs


class DataParallelError(RuntimeError):
    """A rank of :func:`run_data_parallel` raised, died or did not finish in time."""


def assert_same_training(
    expected: dict[str, Any],
    ranks: Sequence[dict[str, Any]],
    what: str = "",
    logs: Sequence[str] = ("loss", "accuracy"),
) -> None:
    """Data-parallel ranks ended as one process did: ``{"state": state_dict, "history": {log: [...]}}`` each.

    Every rank's parameters and buffers equal the single process's to 1e-6 (float64 runs) and
    each other's exactly; the epoch ``logs`` found in ``history`` agree to a relative 1e-6.
    """
    first = ranks[0]
    for name, value in expected["state"].items():
        assert_close(first["state"][name], value, atol=1e-6, rtol=1e-6, name=f"{what} {name}")
        for k, other in enumerate(ranks[1:], 1):
            if not torch.equal(other["state"][name], first["state"][name]):
                raise AssertionError(f"{what}: rank {k}'s {name} differs from rank 0's")
    for log in logs:
        if log not in expected.get("history", {}):
            continue
        values, got = expected["history"][log], first["history"][log]
        if len(got) != len(values) or any(abs(a - b) > 1e-6 * max(abs(b), 1e-12) for a, b in zip(got, values)):  # noqa: B905
            raise AssertionError(f"{what}: epoch log {log!r} {got} != single process {values}")


def run_data_parallel(
    fn: Callable[..., Any],
    world_size: int = 2,
    *,
    args: Sequence[Any] = (),
    timeout: float = 120.0,
    collective_timeout: float = 30.0,
    backend: str = "gloo",
    threads: int | None = 1,
    start_method: str = "spawn",
) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` fresh processes joined by :func:`scratch_engine.distributed.setup`.

    Each process sees torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, a free
    ``MASTER_PORT`` on 127.0.0.1), joins the ``backend`` process group with
    ``collective_timeout`` seconds per collective, then calls ``fn``; the results (picklable)
    come back as a list indexed by rank. ``fn`` must be importable by name (a module-level
    function), as ``spawn`` starts a new interpreter.

    It never hangs: when a rank raises or dies, the others get a few seconds to report
    (their collectives fail once a peer is gone) and are then stopped, and the whole run
    stops after ``timeout`` seconds. Either raises :class:`DataParallelError` naming the
    rank that failed first and its exception (with traceback), and any other failures.
    """
    import multiprocessing
    import queue as queue_module
    import time

    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    context: Any = multiprocessing.get_context(start_method)  # typeshed's BaseContext declares no Process
    results: Any = context.Queue()
    port = _free_port()
    processes = [
        context.Process(
            target=_data_parallel_worker,
            args=(fn, tuple(args), rank, world_size, port, backend, collective_timeout, threads, results),
            daemon=True,
            name=f"scratch-rank-{rank}",
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, tuple[bool, Any]] = {}
    failed_at: dict[int, float] = {}  # rank -> when it raised (wall clock, as every rank reads it)
    deadline = time.monotonic() + timeout
    grace_end: float | None = None  # after a failure, how long the others may take to report
    try:
        while len(outcomes) < world_size:
            now = time.monotonic()
            if now >= deadline or (grace_end is not None and now >= grace_end):
                break
            try:
                rank, ok, payload, when = results.get(timeout=0.1)
            except queue_module.Empty:
                for rank, process in enumerate(processes):
                    if rank not in outcomes and not process.is_alive() and process.exitcode not in (None, 0):
                        time.sleep(0.2)  # whatever it sent before dying is read first, next round
                        if results.empty() and rank not in outcomes:
                            outcomes[rank] = (False, f"process exited with code {process.exitcode} without a result")
                            failed_at[rank] = time.time()
                if failed_at and grace_end is None:
                    grace_end = time.monotonic() + 2.0
                continue
            outcomes[rank] = (ok, payload)
            if not ok:
                failed_at[rank] = when
                if grace_end is None:
                    grace_end = time.monotonic() + 2.0
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        results.close()
    if failed_at:
        # the first to raise, not the first to report: a peer's collective can fail and report sooner
        failures = sorted(failed_at, key=failed_at.__getitem__)
        first = failures[0]
        message = [f"rank {first} of {world_size} failed first:\n{outcomes[first][1]}"]
        message += [f"rank {rank} failed too: {_last_line(outcomes[rank][1])}" for rank in failures[1:]]
        stopped = [rank for rank in range(world_size) if rank not in outcomes]
        if stopped:
            message.append(f"rank(s) {stopped} were stopped")
        raise DataParallelError("\n".join(message))
    missing = [rank for rank in range(world_size) if rank not in outcomes]
    if missing:
        raise DataParallelError(f"rank(s) {missing} of {world_size} did not finish within {timeout} s and were stopped")
    return [pickle.loads(outcomes[rank][1]) for rank in range(world_size)]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else str(text)


def _data_parallel_worker(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    collective_timeout: float,
    threads: int | None,
    results: Any,
) -> None:
    """One rank of :func:`run_data_parallel`: torchrun's environment, the process group, ``fn``, the report."""
    import os
    import time
    import traceback

    from scratch_engine import distributed

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        distributed.setup(backend, timeout_seconds=collective_timeout, device="cpu" if backend == "gloo" else None)
        # tensors go by value (plain pickle), not through shared memory that dies with this process
        results.put((rank, True, pickle.dumps(fn(*args)), time.time()))
    except BaseException as error:  # any failure, reported to the parent
        raised_at = time.time()
        results.put((rank, False, f"{type(error).__name__}: {error}\n{traceback.format_exc()}", raised_at))
    finally:
        distributed.cleanup()
