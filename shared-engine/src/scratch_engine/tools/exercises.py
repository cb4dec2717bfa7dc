"""Exercises: write a layer's backward yourself, and one call says whether it matches autograd, and where not.

An :class:`Exercise` holds a layer's forward as plain tensor code, a way to draw small float64 inputs, and a
solution. The learner writes ``backward(grad_output, **inputs)`` returning one gradient per input named in
``wrt``; :meth:`Exercise.check` runs the forward under autograd on fresh inputs and prints one line per
verdict::

    >>> dense.check(my_dense_backward)
    ✗ Dense: grad of W is wrong: max abs difference 1.3e+00 (autograd's largest entry 2.1e+00) at index (2, 0);
      grad of x, b match

The packages define their exercises (``scratch_mlp.exercises``, ...) with the solutions in the package, not in the
notebooks that pose them; ``exercise.show_solution()`` prints one.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

ROUNDOFF = 1e-9  # float64: a difference this small is rounding, not a wrong formula


@dataclass(frozen=True)
class Verdict:
    """What :meth:`Exercise.verdict` found: ``passed``, the gradients that differ, and the lines ``check`` prints."""

    passed: bool
    lines: tuple[str, ...]
    wrong: tuple[str, ...] = ()  # the names of the gradients that differ (or are missing)

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def __bool__(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class Exercise:
    """One backward to write: ``forward(**inputs)`` is the math, ``solution`` its backward.

    ``make_inputs(generator)`` returns the named inputs (float64 tensors; integer ones such as token ids are
    allowed and get no gradient). ``wrt`` names the inputs whose gradients ``backward`` returns, in order.
    ``forward`` may return a tensor or a tuple of tensors (an LSTM cell's ``(h, c)``); ``backward`` then gets
    ``grad_output`` in the same structure.
    """

    title: str
    forward: Callable[..., Any]
    make_inputs: Callable[[torch.Generator], dict[str, Tensor]]
    wrt: tuple[str, ...]
    solution: Callable[..., Any] = field(repr=False)
    hint: str = ""

    def inputs(self, seed: int = 0) -> dict[str, Tensor]:
        """The inputs the check draws with ``seed``: to print their shapes, or to try a backward by hand."""
        return self.make_inputs(torch.Generator().manual_seed(seed))

    def check(self, backward: Callable[..., Any], *, seed: int = 0) -> None:
        """Compare ``backward(grad_output, **inputs)`` with autograd and print the verdict: a notebook cell's answer."""
        print(self.verdict(backward, seed=seed))

    def verdict(self, backward: Callable[..., Any], *, seed: int = 0) -> Verdict:
        """What :meth:`check` prints, as a :class:`Verdict` (``passed``, ``wrong``, ``lines``), printing nothing."""
        return _check(self, backward, seed)

    def show_solution(self) -> None:
        """Print the solution's source."""
        print(inspect.getsource(self.solution))


def _check(exercise: Exercise, backward: Callable[..., Any], seed: int) -> Verdict:
    title = exercise.title
    inputs = exercise.inputs(seed)
    leaves = {
        name: value.detach().clone().requires_grad_(name in exercise.wrt) if isinstance(value, Tensor) else value
        for name, value in inputs.items()
    }
    with torch.enable_grad():
        output = exercise.forward(**leaves)
    outputs = list(output) if isinstance(output, (tuple, list)) else [output]
    generator = torch.Generator().manual_seed(seed + 1)
    grad_outputs = [torch.randn(o.shape, generator=generator, dtype=o.dtype).to(o.device) for o in outputs]
    expected = torch.autograd.grad(outputs, [leaves[n] for n in exercise.wrt], grad_outputs, allow_unused=True)
    grad_output: Any = tuple(grad_outputs) if isinstance(output, (tuple, list)) else grad_outputs[0]

    fresh = {name: value.detach().clone() if isinstance(value, Tensor) else value for name, value in inputs.items()}
    try:
        with torch.no_grad():
            got = backward(grad_output, **fresh)
    except Exception as err:  # the learner's code: say where it failed, in one line
        return Verdict(False, (f"✗ {title}: your backward raised {type(err).__name__}: {err}{_where(err)}",))
    try:
        grads = _as_named(got, exercise.wrt)
    except ValueError as err:
        return Verdict(False, (f"✗ {title}: {err}",))

    wrong: list[str] = []
    notes: list[str] = []
    worst = 0.0
    for name, want in zip(exercise.wrt, expected, strict=True):
        want = torch.zeros_like(inputs[name]) if want is None else want
        have = grads[name]
        if have is None:
            wrong.append(name)
            notes.append(f"grad of {name} is missing (None)")
            continue
        if not isinstance(have, Tensor):
            wrong.append(name)
            notes.append(f"grad of {name} is a {type(have).__name__}, not a tensor")
            continue
        if tuple(have.shape) != tuple(want.shape):
            wrong.append(name)
            notes.append(f"grad of {name} has shape {tuple(have.shape)}; it should be {tuple(want.shape)}, as {name}")
            continue
        diff = (have.double() - want).abs()
        if not torch.isfinite(diff).all():
            wrong.append(name)
            notes.append(f"grad of {name} holds NaN or inf")
            continue
        largest = diff.max().item()
        if largest > ROUNDOFF * max(1.0, want.abs().max().item()):
            index = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
            wrong.append(name)
            notes.append(
                f"grad of {name} is wrong: max abs difference {largest:.1e} "
                f"(autograd's largest entry {want.abs().max().item():.1e}) at index {index}"
            )
        worst = max(worst, largest)
    if not wrong:
        return Verdict(True, (f"✓ {title}: every gradient matches autograd (max abs difference {worst:.1e})",))
    right = [n for n in exercise.wrt if n not in wrong]
    lines = [f"✗ {title}: {notes[0]}", *(f"  {note}" for note in notes[1:])]
    if right:
        lines.append(f"  grad of {', '.join(right)} {'matches' if len(right) == 1 else 'match'}")
    if exercise.hint:
        lines.append(f"  hint: {exercise.hint}")
    return Verdict(False, tuple(lines), tuple(wrong))


def _as_named(got: Any, names: Sequence[str]) -> dict[str, Any]:
    """The learner's gradients by name: a dict, a tuple in ``wrt`` order, or one tensor when there is one."""
    if isinstance(got, Mapping):
        missing = [n for n in names if n not in got]
        if missing:
            raise ValueError(f"your backward's dict has no {', '.join(missing)} (it should hold {', '.join(names)})")
        return {n: got[n] for n in names}
    if not isinstance(got, (tuple, list)):
        got = (got,)
    if len(got) != len(names):
        wanted = f"{len(names)}: {', '.join(names)}"
        raise ValueError(f"your backward returned {len(got)} gradients; it should return {wanted}")
    return dict(zip(names, got, strict=True))


def _where(err: Exception) -> str:
    """`` (line N: <code>)`` of the innermost frame outside this module, if there is one."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != __file__]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (line {frame.lineno}: {frame.line})" if frame.line else f" (line {frame.lineno})"
