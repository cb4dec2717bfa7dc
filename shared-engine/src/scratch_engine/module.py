"""Parameters and modules: the contract every layer in scratch follows.

No autograd: each layer writes its own chain rule. A :class:`Module`'s ``forward(x)`` keeps what its backward
will need (its *cache*); ``backward(grad_output)``, given the loss's gradient with respect to the output, returns
the gradient with respect to the input and *adds* its parameters' gradients into ``Parameter.grad``. Inference
needs no cache: inside :func:`no_cache` (``torch.no_grad`` for hand-written backward) layers keep none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor

_inference = threading.local()  # per thread, as torch.no_grad


def caching() -> bool:
    """Whether a forward should keep what its backward needs: True, except inside :func:`no_cache`."""
    return not getattr(_inference, "active", False)


@contextmanager
def no_cache() -> Iterator[None]:
    """Forward passes inside keep no cache for a backward (inference); a backward after one raises."""
    previous, _inference.active = caching(), True
    try:
        yield
    finally:
        _inference.active = not previous


HALF = (torch.bfloat16, torch.float16)  # 16-bit formats: 8 or 11 significant bits, too few for some sums


def widened(x: Tensor) -> Tensor:
    r"""``x`` in float32 when it is 16-bit, else itself: for arithmetic that cancels digits (:math:`x - \bar x`,
    :math:`1 + e^{-x}`) or sums many terms, computed in float32 and rounded once, as torch's own kernels do."""
    return x.float() if x.dtype in HALF else x


_SCALARS: dict[tuple[float, torch.dtype], Tensor] = {}  # scalar()'s 0-d tensors, one per constant and dtype
_FULL = (torch.float32, torch.float64)


def scalar(value: float, like: Tensor) -> Tensor | float:
    """A layer's constant ``value`` for an operation with ``like``: ``x * scalar(0.5, x)`` is ``x * 0.5``. Speed
    trick: on the CPU torch makes a Python number a new tensor of ``like``'s dtype in every operation, as dear as a
    small operation (a decoding step makes dozens); a 0-d tensor of that dtype, made once and kept, costs nothing.
    Elsewhere, and for 16-bit ``like`` (whose operations keep the number in float32), the number itself. Constants
    only: every value asked for is kept."""
    if not like.is_cpu or like.dtype not in _FULL:
        return value
    if (found := _SCALARS.get((value, like.dtype))) is None:
        with torch.inference_mode(False):  # an ordinary tensor, even when sampling asks for it first
            found = _SCALARS[value, like.dtype] = torch.tensor(value, dtype=like.dtype)
    return found


def missing_forward(layer: object) -> RuntimeError:
    """The error of a backward that has no cache to go back through: no forward ran, or it ran under no_cache()."""
    return RuntimeError(
        f"{type(layer).__name__}.backward called before forward (a forward under no_cache() keeps nothing for it)"
    )


class Parameter:
    """A trainable tensor ``data`` and the ``grad`` accumulated for it: same shape, zero at first, *added
    into* by every ``backward`` until :meth:`Module.zero_grad`."""

    __slots__ = ("data", "grad")

    def __init__(self, data: Tensor) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter expects a torch.Tensor, got {type(data).__name__}")
        self.data = data.detach()
        self.grad = torch.zeros_like(self.data)

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def zero_grad(self) -> None:
        self.grad.zero_()

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}, device={self.data.device})"


ModuleT = TypeVar("ModuleT", bound="Module")  # train/eval/to return the module itself, with its own type


class Module:
    """Base class of every layer and model: subclasses implement ``forward`` and ``backward`` side by side.

    Parameters and child modules are found among its attributes (inside lists, tuples and dicts too) in
    assignment order: nothing to register but checkpointed state that does not train (:meth:`register_buffer`).
    """

    training: bool = True  # set on every module by train() and eval()

    def __init__(self) -> None:
        self._buffer_names: list[str] = []

    # ------------------------------------------------------------------ compute
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output: Tensor) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def register_buffer(self, name: str, tensor: Tensor) -> None:
        """Store ``tensor`` as attribute ``name`` and include it in ``state_dict``."""
        if not hasattr(self, "_buffer_names"):
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        setattr(self, name, tensor)
        if name not in self._buffer_names:
            self._buffer_names.append(name)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            yield from _named_of_type(name, value, Module)

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (name ``prefix``) and all its descendants with their dotted names, depth first."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        return (module for _, module in self.named_modules())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter once (a shared one under its first name), in assignment order."""
        found: dict[int, tuple[str, Parameter]] = {}  # by id, the first name kept
        _find_parameters(self, prefix, found)
        return iter(found.values())

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for name in getattr(self, "_buffer_names", []):
            yield prefix + name, getattr(self, name)
        for child_name, child in self.named_children():
            yield from child.named_buffers(prefix + child_name + ".")

    def num_parameters(self) -> int:
        return sum(p.data.numel() for p in self.parameters())

    # ------------------------------------------------------------------ state
    def zero_grad(self) -> None:
        if grads := [p.grad for p in self.parameters()]:
            torch._foreach_zero_(grads)  # one multi-tensor kernel rather than one per parameter

    def train(self: ModuleT, mode: bool = True) -> ModuleT:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self: ModuleT) -> ModuleT:
        return self.train(False)

    def to(
        self: ModuleT, device: torch.device | str | torch.dtype | None = None, dtype: torch.dtype | None = None
    ) -> ModuleT:
        """Move parameters (with their gradients) and buffers in place, and cast the floating ones to ``dtype``
        (a floating one: parameters have gradients). As in torch, it may come first: ``to(torch.float64)``."""
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise TypeError(f"to() got two dtypes: {device} and dtype={dtype}")
            device, dtype = None, device
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"parameters must stay floating point (they have gradients), got dtype {dtype}")
        for p in self.parameters():
            p.data, p.grad = p.data.to(device, dtype), p.grad.to(device, dtype)
        for m in self.modules():
            for name in getattr(m, "_buffer_names", []):
                buf = getattr(m, name)
                setattr(m, name, buf.to(device=device, dtype=dtype if buf.is_floating_point() else None))
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """Name -> tensor for every parameter and buffer (detached, not copied)."""
        return {name: p.data for name, p in self.named_parameters()} | dict(self.named_buffers())

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Copy values in place; any missing, unexpected or mis-shaped entry is a ``ValueError`` (nothing copied)."""
        if problem := self.state_dict_mismatch(state_dict):
            raise ValueError(problem)
        with torch.no_grad():
            for name, value in self.state_dict().items():
                value.copy_(state_dict[name])

    def state_dict_mismatch(self, state_dict: dict[str, Tensor]) -> str | None:
        """Why ``state_dict`` does not fit this module (missing, unexpected or mis-shaped entries), or ``None``."""
        own = self.state_dict()
        if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
            return f"a state dict of {type(self).__name__} maps names to tensors"
        found = {
            "missing keys": [k for k in own if k not in state_dict],
            "unexpected keys": [k for k in state_dict if k not in own],
            "shape mismatch": [
                f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                for k, v in own.items()
                if k in state_dict and state_dict[k].shape != v.shape
            ],
        }
        if not (problems := [f"{kind} {keys}" for kind, keys in found.items() if keys]):
            return None
        return f"state dict does not fit {type(self).__name__} (is it from another model?): " + "; ".join(problems)

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        return "\n".join([f"{type(self).__name__}(", *children, ")"])


def _find_parameters(module: Module, prefix: str, found: dict[int, tuple[str, Parameter]]) -> None:
    # speed trick (zero_grad walks the model every step): one plain recursion that passes over the plain attributes;
    # the plain form, a generator nested per attribute, made the walk about 1.7 times as slow
    for name, value in vars(module).items():
        if isinstance(value, Parameter):
            found.setdefault(id(value), (prefix + name, value))
        elif isinstance(value, Module) or (isinstance(value, (list, tuple, dict)) and value):  # layers in a list
            for full, item in _named_of_type(prefix + name, value, (Parameter, Module)):
                if isinstance(item, Module):
                    _find_parameters(item, full + ".", found)
                else:
                    found.setdefault(id(item), (full, item))


def _named_of_type(name: str, value: Any, kind: type | tuple[type, ...]) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` if ``value`` is of ``kind``, else what a list, tuple or dict holds, named ``name.key``."""
    if isinstance(value, kind):
        yield name, value
    elif isinstance(value, (list, tuple, dict)):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _named_of_type(f"{name}.{key}", item, kind)


class Sequential(Module):
    """Layers applied in order, ``layers[n-1](... layers[0](x))``; backward runs them in reverse."""

    def __init__(self, *layers: Module | Sequence[Module]) -> None:
        super().__init__()
        items: list[Any] = list(layers[0] if len(layers) == 1 and isinstance(layers[0], (list, tuple)) else layers)
        for i, layer in enumerate(items):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential item {i} is a {type(layer).__name__}, not a Module")
        self.layers: list[Module] = items

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_output: Tensor) -> Tensor | None:
        for index in reversed(range(len(self.layers))):
            grad_output = self.layers[index].backward(grad_output)
            if grad_output is None:  # input_grad=False: legitimate where nothing before it trains
                if any(layer.parameters() for layer in self.layers[:index]):
                    raise ValueError(
                        f"Sequential layer {index} ({type(self.layers[index]).__name__}) returned no input "
                        "gradient (input_grad=False), but layers before it have parameters to train; "
                        "only the first layer, whose input is data, may skip it"
                    )
                return None
        return grad_output

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)


def skip_data_gradient(model: Module) -> None:
    r"""Let the layer that first sees ``model``'s input (through Sequentials, past layers without parameters) skip
    :math:`\partial L/\partial x`: the engine's inputs are data whose gradient nobody reads (autograd skips it too)."""
    layer: Module | None = model
    while isinstance(layer, Sequential):
        layer = next((item for item in layer if item.parameters()), None)
    if getattr(layer, "input_grad", False) is True:
        layer.input_grad = False  # type: ignore[union-attr]
