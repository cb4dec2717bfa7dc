"""Gradient checks: a module's hand-written ``backward`` against ``torch.autograd``, and what its forward keeps.

torch autograd is the oracle here: :func:`check_backward` runs a module's forward once
with autograd recording, then compares the module's hand-written ``backward`` against
``torch.autograd.grad`` for every floating input and every parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from scratch_engine.module import Module

GRAD_PREFILL = 0.5  # check_backward's gradients before the backward: exact in every float format


def flatten_tensors(value: Any) -> list[Tensor | None]:
    if isinstance(value, Tensor) or value is None:
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flatten_tensors(item)]
    raise TypeError(f"expected tensors or (nested) tuples of tensors, got {type(value).__name__}")


def like_structure(structure: Any, make: Any) -> Any:
    """A copy of ``structure`` (tensors in nested tuples) with each tensor replaced by ``make(t)``."""
    if isinstance(structure, Tensor):
        return make(structure)
    if structure is None:
        return None
    return type(structure)(like_structure(item, make) for item in structure)


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
    leaves = tuple(like_structure(x, _as_leaf) if isinstance(x, (Tensor, tuple, list)) else x for x in inputs)
    float_inputs = [x for x in _flatten_inputs(leaves) if _is_float(x)]
    try:
        for p in params:
            p.data.requires_grad_(True)
        with torch.enable_grad():
            output = module(*leaves, **(forward_kwargs or {}))
        flat_out = flatten_tensors(output)
        if grad_output is None:
            generator = torch.Generator().manual_seed(1234)
            grad_output = like_structure(
                output, lambda t: torch.randn(t.shape, generator=generator, dtype=t.dtype, device="cpu").to(t.device)
            )
        flat_grad_out = flatten_tensors(grad_output)
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
    device = default_device()
    return [torch.randn(tuple(shape), generator=generator, dtype=dtype, device="cpu").to(device) for shape in shapes]


def default_device() -> torch.device:
    """Where factory functions put new tensors (``torch.get_default_device`` only exists from torch 2.3)."""
    return torch.empty(()).device
