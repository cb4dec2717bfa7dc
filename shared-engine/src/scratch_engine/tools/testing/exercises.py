"""An exercise's checker, tested both ways: its solution passes, and each wrong gradient is caught by name."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from scratch_engine.tools.exercises import Exercise, _as_named


def assert_checks_both_ways(exercise: Exercise) -> None:
    """The solution passes; a backward that gets one gradient wrong (each in turn) fails naming that gradient alone."""
    verdict = exercise.verdict(exercise.solution)
    assert verdict.passed, f"{exercise.title}'s solution fails its own check:\n{verdict}"
    for name in exercise.wrt:

        def wrong(grad_output: Any, _name: str = name, **inputs: Tensor) -> tuple[Any, ...]:
            grads = _as_named(exercise.solution(grad_output, **inputs), exercise.wrt)
            grads[_name] = grads[_name] * 1.5 + 0.01  # a wrong factor, and wrong where the gradient is zero
            return tuple(grads[n] for n in exercise.wrt)

        verdict = exercise.verdict(wrong)
        assert not verdict.passed, f"{exercise.title}: a wrong grad of {name} passed"
        assert verdict.wrong == (name,), f"{exercise.title}, wrong grad of {name}:\n{verdict}"
        assert verdict.lines[0].startswith(f"✗ {exercise.title}: grad of {name} is wrong: max abs difference"), verdict
