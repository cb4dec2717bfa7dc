r"""What RNN, LSTM and GRU share: torch's weight layout, the state, and backprop through time.

An architecture is one *cell* class contributing the recurrence of a single time step and
its backward, as two static methods side by side (see ``rnn.py``, ``lstm.py``, ``gru.py``):

- ``step(gx, state, w_hh_t, b_hh) -> (new_state, cache)``, where
  :math:`g^x = x_t W_{ih}^\top + b_{ih}` is the input's share of the gate pre-activations and ``w_hh_t`` is
  :math:`W_{hh}^\top` ``(H, G·H)``;
- ``step_backward(d_new_state, cache, w_hh) -> (d_gx, d_gh, d_state)``: the gradients with
  respect to :math:`g^x`, to the hidden side :math:`g^h = h_{t-1} W_{hh}^\top + b_{hh}`, and
  to the previous state.

``d_gx`` and ``d_gh`` are the same tensor except for GRU's n-gate. Everything that touches
:math:`W_{ih}` is done here for all time steps at once: the forward computes
:math:`g^x` for the whole sequence in one matmul, and the backward, after the loop over
:math:`t = T-1, \dots, 0` that only carries the state gradient, accumulates

.. math::
    \frac{\partial L}{\partial W_{ih}} = \sum_t {\delta g^x_t}^\top x_t, \quad
    \frac{\partial L}{\partial b_{ih}} = \sum_{t,n} \delta g^x_{t,n}, \quad
    \frac{\partial L}{\partial W_{hh}} = \sum_t {\delta g^h_t}^\top h_{t-1}, \quad
    \frac{\partial L}{\partial b_{hh}} = \sum_{t,n} \delta g^h_{t,n}, \quad
    \frac{\partial L}{\partial x_t} = \delta g^x_t W_{ih}

each as one matmul over the :math:`T \cdot N` rows (:math:`\delta` marks :math:`\partial L/\partial\cdot`).
Both are speed tricks over the plain form, a matmul per time step inside the loop: one large
matmul instead of ``T`` small ones gives the same sums, and the loop keeps only what must be
sequential. ``torch.addmm(b, x, W.t())`` is ``x @ W.t() + b`` in one call (used throughout).

The state is a tensor ``h`` for RNN and GRU and a pair ``(h, c)`` for LSTM, as in torch;
inside, it is always a tuple: ``(h,)`` or ``(h, c)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from scratch_engine.checks import check_grad_output
from scratch_engine.module import Module, Parameter, caching, missing_forward

if TYPE_CHECKING:  # torch.nn is only the source of weights to copy, never used to compute
    from torch import nn

State = tuple[Tensor, ...]  # (h,) or (h, c), each (N, H)
Cache = tuple[Tensor, ...]  # what one step's backward needs
HiddenState = Tensor | tuple[Tensor, Tensor]  # the public form: h, or (h, c) for LSTM
_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_CellT = TypeVar("_CellT", bound="_Cell")
_RecurrentT = TypeVar("_RecurrentT", bound="_Recurrent")


def detach_state(state: HiddenState | None) -> HiddenState | None:
    """The final state of one chunk, as the initial state of the next (truncated BPTT).

    The hand-written backward of a chunk stops at its initial state anyway: it *returns* the
    gradient for it, and the caller drops it. Detaching also cuts the state from a graph torch
    may have recorded (``Engine(Autograd(model), ...)``), so both modes truncate alike.
    """
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    h, c = state
    return h.detach(), c.detach()


def _init_weights(gates: int, input_size: int, hidden_size: int) -> list[Tensor]:
    """``weight_ih (G·H, in)``, ``weight_hh (G·H, H)``, ``bias_ih``, ``bias_hh (G·H,)``, all ~ U(±1/√H) as in torch."""
    bound = 1.0 / math.sqrt(hidden_size)
    rows = gates * hidden_size
    shapes = [(rows, input_size), (rows, hidden_size), (rows,), (rows,)]
    return [torch.empty(shape).uniform_(-bound, bound) for shape in shapes]


def _check_sizes(layer: Module, input_size: int, hidden_size: int, num_layers: int, bias: bool) -> None:
    name = type(layer).__name__
    if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
        raise ValueError(
            f"{name} needs positive sizes, got input_size={input_size}, hidden_size={hidden_size}, "
            f"num_layers={num_layers}"
        )
    if not bias:
        raise ValueError(f"{name} supports bias=True only, got bias=False")


def _check_tensor(layer: Module, what: str, t: Any, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    name = type(layer).__name__
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} expects {what} to be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise ValueError(f"{name} expects {what} of dtype {dtype} (its parameters' dtype), got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} expects {what} of shape {shape}, got {tuple(t.shape)}")


def _unpack(layer: Module, state: Any, state_size: int, shape: tuple[int, ...], dtype: torch.dtype) -> State:
    """Validate a public state (``h`` or ``(h, c)``) of the given per-tensor shape; return it as a tuple."""
    if state_size == 1:
        parts = (state,)
    elif isinstance(state, (tuple, list)) and len(state) == state_size:
        parts = tuple(state)
    else:
        raise ValueError(
            f"{type(layer).__name__} expects its state as a tuple (h, c) of {state_size} tensors, "
            f"got {type(state).__name__}" + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
        )
    for label, part in zip("hc", parts, strict=False):  # h, then c for LSTM
        _check_tensor(layer, f"state {label}", part, shape, dtype)
    return parts


def _pack(parts: State) -> HiddenState:
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _grad_parts(layer: Module, grad: Any, state_size: int, shape: tuple[int, ...], like: Tensor) -> State:
    """Validate a state's gradient (``None``, ``dh``, or ``(dh, dc)`` with ``None`` entries); zeros where absent."""
    parts: tuple[Tensor | None, ...]
    if grad is None:
        parts = (None,) * state_size
    elif state_size == 1:
        parts = (grad,)
    elif isinstance(grad, (tuple, list)) and len(grad) == state_size:
        parts = tuple(grad)
    else:
        raise ValueError(
            f"{type(layer).__name__} expects the state's gradient as a tuple (dh, dc) of {state_size} tensors "
            f"or None, got {type(grad).__name__}"
        )
    filled = tuple(like.new_zeros(shape) if g is None else g for g in parts)
    for label, g in zip("hc", filled, strict=False):
        _check_tensor(layer, f"gradient of state {label}", g, shape, like.dtype)
    return filled


def _check_from_torch(cls: type, module: nn.RNNCellBase | nn.RNNBase, gates: int, nonlinearity: str = "tanh") -> None:
    weight = getattr(module, "weight_ih", None)
    if weight is None:
        weight = getattr(module, "weight_ih_l0", None)
    if weight is None or weight.shape[0] != gates * module.hidden_size:
        raise ValueError(f"{cls.__name__}.from_torch expects the torch counterpart, got {type(module).__name__}")
    unsupported = {
        "bias=False": not getattr(module, "bias", True),
        f"nonlinearity={getattr(module, 'nonlinearity', 'tanh')!r}": getattr(module, "nonlinearity", "tanh")
        != nonlinearity,
        "bidirectional=True": getattr(module, "bidirectional", False),
        "dropout>0": getattr(module, "dropout", 0.0) != 0.0,
        "proj_size>0": getattr(module, "proj_size", 0) != 0,
    }
    found = [option for option, present in unsupported.items() if present]
    if found:
        raise ValueError(f"{cls.__name__}.from_torch does not support {', '.join(found)}")


class _Cell(Module):
    """One time step (``RNNCell``, ``LSTMCell``, ``GRUCell``): ``forward(x, state=None) -> new_state``.

    ``x (N, input_size)``; the state is ``h (N, H)`` (``(h, c)`` for LSTM), zeros when omitted.
    ``backward(grad_new_state) -> (grad_x, grad_state)``: ``grad_new_state`` has the structure of
    the returned state; ``grad_state`` is ``None`` when forward was called without a state.
    Parameters as in torch: ``weight_ih (G·H, in)``, ``weight_hh (G·H, H)``, ``bias_ih``, ``bias_hh``.
    """

    gates: int  # gate blocks stacked in weight_ih / weight_hh: 1 (RNN), 4 (LSTM), 3 (GRU)
    state_size: int = 1  # tensors in the state: h, or h and c
    same_gate_gradients = True  # step_backward's d_gx is its d_gh (a = g^x + g^h): not so for the GRU
    weight_ih: Parameter
    weight_hh: Parameter
    bias_ih: Parameter
    bias_hh: Parameter

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        _check_sizes(self, input_size, hidden_size, 1, bias)
        self.input_size = input_size
        self.hidden_size = hidden_size
        for name, value in zip(_WEIGHTS, _init_weights(self.gates, input_size, hidden_size), strict=True):
            setattr(self, name, Parameter(value))
        self._x: Tensor | None = None
        self._h: Tensor | None = None
        self._cache: Cache | None = None
        self._state_given = False

    @staticmethod
    def step(gx: Tensor, state: State, w_hh_t: Tensor, b_hh: Tensor) -> tuple[State, Cache]:
        raise NotImplementedError

    @staticmethod
    def step_backward(d_state: State, cache: Cache, w_hh: Tensor) -> tuple[Tensor, Tensor, State]:
        raise NotImplementedError

    @classmethod
    def from_torch(cls: type[_CellT], cell: nn.RNNCellBase) -> _CellT:
        _check_from_torch(cls, cell, cls.gates, getattr(cls, "nonlinearity", "tanh"))
        layer = cls(cell.input_size, cell.hidden_size)
        for name in _WEIGHTS:
            setattr(layer, name, Parameter(getattr(cell, name).detach().clone()))
        return layer

    def _check(self, x: Tensor, state: HiddenState | None) -> State:
        """Validate ``x (N, in)`` and the state; return the state as a tuple (zeros when omitted)."""
        dtype = self.weight_ih.data.dtype
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects input of shape (N, {self.input_size}), got {shape}")
        _check_tensor(self, "input", x, (x.shape[0], self.input_size), dtype)
        if state is None:
            return (x.new_zeros(x.shape[0], self.hidden_size),) * self.state_size
        return _unpack(self, state, self.state_size, (x.shape[0], self.hidden_size), dtype)

    def forward(self, x: Tensor, state: HiddenState | None = None) -> HiddenState:
        parts = self._check(x, state)
        w_ih, w_hh, b_ih, b_hh = (getattr(self, name).data for name in _WEIGHTS)
        new_state, cache = self.step(torch.addmm(b_ih, x, w_ih.t()), parts, w_hh.t(), b_hh)  # g^x = x W_ih^T + b_ih
        keep = caching()
        self._cache, self._x, self._h = (cache, x, parts[0]) if keep else (None, None, None)
        self._state_given = state is not None
        return _pack(new_state)

    def backward(self, grad_output: HiddenState) -> tuple[Tensor, HiddenState | None]:
        if self._cache is None or self._x is None or self._h is None:
            raise missing_forward(self)
        d_new = _grad_parts(self, grad_output, self.state_size, tuple(self._h.shape), self._h)
        d_gx, d_gh, d_state = self.step_backward(d_new, self._cache, self.weight_hh.data)
        self.weight_ih.grad.addmm_(d_gx.t(), self._x)  # g^x = x W_ih^T + b_ih
        self.bias_ih.grad.add_(d_gx.sum(0))
        self.weight_hh.grad.addmm_(d_gh.t(), self._h)  # g^h = h W_hh^T + b_hh (inside step)
        self.bias_hh.grad.add_(d_gh.sum(0))
        return d_gx @ self.weight_ih.data, _pack(d_state) if self._state_given else None

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


@dataclass
class _LayerCache:
    """What one layer's backward needs (a dataclass, so Module's attribute walk skips it)."""

    x: Tensor  # (T, N, in), the layer's input
    hs: list[Tensor]  # h_0 .. h_T, each (N, H)
    steps: list[Cache]  # one cache per time step


class _Recurrent(Module):
    r"""A stack of ``num_layers`` recurrent layers over a sequence: ``forward(x, state=None) -> (output, state)``.

    ``x`` is ``(T, N, input_size)`` (``(N, T, input_size)`` with ``batch_first=True``); the output
    holds the last layer's :math:`h_t` for every step, ``(T, N, H)`` (or ``(N, T, H)``). The state
    is ``h (num_layers, N, H)``, for LSTM ``(h, c)``; zeros when omitted. Layer :math:`k`'s input
    sequence is layer :math:`k-1`'s output. Parameters as in torch: ``weight_ih_l{k}``,
    ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, so ``from_torch`` and
    ``load_state_dict(torch_module.state_dict())`` copy weights exactly. Only ``bias=True``,
    unidirectional, no dropout between layers. Setting ``input_grad = False`` (input that is
    data, such as one-hot characters) skips :math:`\delta x = \delta g^x W_{ih}` of the first
    layer: ``backward`` then returns ``None`` as the input gradient.

    ``backward(grad_output, grad_state=None) -> (grad_input, grad_initial_state)``: ``grad_output``
    has the shape of the output, ``grad_state`` (optional, entries may be ``None``) the
    structure of the returned final state. Passing the pair ``(grad_output, grad_state)`` as the
    only argument also works: it is the gradient of what ``forward`` returned, which is how
    :func:`scratch_engine.tools.testing.check_backward` calls it. ``grad_initial_state`` is ``None``
    when forward was called without a state. Backprop through time, per layer, from the top:

    .. math::
        \delta s_{T-1} = \frac{\partial L}{\partial s_{T-1}}; \quad
        \text{for } t = T-1, \dots, 0: \quad
        \delta h_t \mathrel{+}= \frac{\partial L}{\partial y_t}, \quad
        (\delta g^x_t,\ \delta g^h_t,\ \delta s_{t-1}) = \text{step\_backward}(\delta s_t)

    with the state :math:`s_t` = :math:`h_t` or :math:`(h_t, c_t)`; :math:`\delta s_{-1}` is the
    gradient of the initial state and :math:`\delta x_t = \delta g^x_t W_{ih}` is
    :math:`\partial L/\partial y_t` of the layer below. The weight gradients follow in one
    matmul each (see the module docstring).

    Truncated BPTT: feed each chunk the previous chunk's final state (:func:`detach_state`),
    call ``backward`` for a chunk before the next chunk's ``forward`` (one cache per layer),
    and drop the returned ``grad_initial_state``.
    """

    cell: type[_Cell]
    weight_ih_l0: Parameter  # and the rest of weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False
    ) -> None:
        super().__init__()
        _check_sizes(self, input_size, hidden_size, num_layers, bias)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        for k in range(num_layers):  # torch's order, so state dicts line up key for key
            layer_in = input_size if k == 0 else hidden_size
            for name, value in zip(_WEIGHTS, _init_weights(self.cell.gates, layer_in, hidden_size), strict=True):
                setattr(self, f"{name}_l{k}", Parameter(value))
        self.input_grad = True  # False: the input is data (one-hot characters); backward returns None for it
        self._caches: list[_LayerCache] = []
        self._state_given = False

    @classmethod
    def from_torch(cls: type[_RecurrentT], module: nn.RNNBase) -> _RecurrentT:
        _check_from_torch(cls, module, cls.cell.gates, getattr(cls.cell, "nonlinearity", "tanh"))
        layer = cls(module.input_size, module.hidden_size, module.num_layers, batch_first=module.batch_first)
        for name, _ in layer.named_parameters():
            setattr(layer, name, Parameter(getattr(module, name).detach().clone()))
        return layer

    def _weights(self, k: int) -> list[Parameter]:
        return [getattr(self, f"{name}_l{k}") for name in _WEIGHTS]

    def _check(self, x: Tensor, state: HiddenState | None) -> State:
        """Validate the input sequence and the state; return the initial state as a tuple (zeros when omitted)."""
        dtype = self.weight_ih_l0.data.dtype
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.input_size or 0 in x.shape:
            layout = f"(N, T, {self.input_size})" if self.batch_first else f"(T, N, {self.input_size})"
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects input of shape {layout} (T, N > 0), got {got}")
        _check_tensor(self, "input", x, tuple(x.shape), dtype)
        shape = (self.num_layers, x.shape[0] if self.batch_first else x.shape[1], self.hidden_size)
        if state is None:
            return (x.new_zeros(shape),) * self.cell.state_size
        return _unpack(self, state, self.cell.state_size, shape, dtype)

    def forward(self, x: Tensor, state: HiddenState | None = None) -> tuple[Tensor, HiddenState]:
        initial = self._check(x, state)
        x = x.transpose(0, 1) if self.batch_first else x  # time-major from here on
        steps, n = x.shape[0], x.shape[1]
        self._state_given = state is not None
        self._caches, final = [], []
        keep = caching()
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (p.data for p in self._weights(k))
            # g^x_t = x_t W_ih^T + b_ih for all t in one matmul (plain form: one per step, inside the loop)
            gx = torch.addmm(b_ih, x.reshape(steps * n, -1), w_ih.t()).reshape(steps, n, -1)
            # speed trick, W_hh^T made contiguous once per sequence: the plain form passes the view w_hh.t(), and a
            # matrix product with a transposed view is ~20% slower on the CPU, T times over
            w_hh_t = w_hh.t().contiguous()
            s = tuple(part[k] for part in initial)
            hs, caches = [s[0]], []
            for t in range(steps):
                s, cache = self.cell.step(gx[t], s, w_hh_t, b_hh)
                hs.append(s[0])
                if keep:
                    caches.append(cache)
            if keep:
                self._caches.append(_LayerCache(x, hs, caches))
            final.append(s)
            x = torch.stack(hs[1:])  # the next layer's input
        output = x.transpose(0, 1) if self.batch_first else x
        return output, _pack(tuple(torch.stack(parts) for parts in zip(*final, strict=True)))

    def _check_backward(self, grad_output: Any, grad_state: Any) -> State:
        """Validate the gradients of the output and of the final state; return the latter, zeros where absent."""
        if not self._caches:
            raise missing_forward(self)
        top = self._caches[-1]
        steps, n = len(top.steps), top.hs[0].shape[0]
        h_shape = (self.num_layers, n, self.hidden_size)
        out_shape = (n, steps, self.hidden_size) if self.batch_first else (steps, n, self.hidden_size)
        check_grad_output(self, grad_output, out_shape)  # a (N, T, H) for a (T, N, H) layout is an error, not a reshape
        _check_tensor(self, "grad_output", grad_output, out_shape, top.hs[0].dtype)
        return _grad_parts(self, grad_state, self.cell.state_size, h_shape, top.hs[0])

    def backward(self, grad_output: Any, grad_state: Any = None) -> tuple[Tensor | None, HiddenState | None]:
        if isinstance(grad_output, (tuple, list)):  # the gradient of forward's (output, state) pair
            grad_output, grad_state = grad_output
        d_final = self._check_backward(grad_output, grad_state)
        g = grad_output.transpose(0, 1) if self.batch_first else grad_output
        d_initial = []
        for k in reversed(range(self.num_layers)):
            g, d_s = self._layer_backward(k, g, tuple(part[k] for part in d_final))
            d_initial.append(d_s)
        grad_input = None if g is None else (g.transpose(0, 1) if self.batch_first else g)
        if not self._state_given:
            return grad_input, None
        return grad_input, _pack(tuple(torch.stack(parts[::-1]) for parts in zip(*d_initial, strict=True)))

    def _layer_backward(self, k: int, grad_out: Tensor, d_s: State) -> tuple[Tensor | None, State]:
        """BPTT through layer ``k``: ``grad_out (T, N, H)`` and the final state's gradient in, ``(dx, δs_{-1})`` out.

        ``dx`` is ``None`` for the first layer when ``input_grad`` is off (its input is data).
        """
        w_ih, w_hh, b_ih, b_hh = self._weights(k)
        cache = self._caches[k]
        steps, n, width = grad_out.shape[0], grad_out.shape[1], self.cell.gates * self.hidden_size
        shared = self.cell.same_gate_gradients  # then one buffer holds both, written once a step
        d_gx = grad_out.new_empty(steps, n, width)
        d_gh = d_gx if shared else grad_out.new_empty(steps, n, width)
        for t in reversed(range(steps)):  # inverts s_t = step(g^x_t, s_{t-1}), from t = T-1 down to 0
            d_s = (d_s[0] + grad_out[t], *d_s[1:])  # h_t feeds both the output y_t and step t+1
            d_gx[t], d_gh_t, d_s = self.cell.step_backward(d_s, cache.steps[t], w_hh.data)
            if not shared:
                d_gh[t] = d_gh_t
        # the sums over t as one matmul over the T·N rows (plain form: one addmm_ per step, inside the loop)
        d_gx2, d_gh2 = d_gx.reshape(steps * n, width), d_gh.reshape(steps * n, width)
        w_ih.grad.addmm_(d_gx2.t(), cache.x.reshape(steps * n, -1))  # g^x_t = x_t W_ih^T + b_ih
        b_ih.grad.add_(d_bias := d_gx2.sum(0))
        w_hh.grad.addmm_(d_gh2.t(), torch.stack(cache.hs[:-1]).reshape(steps * n, -1))  # g^h_t = h_{t-1} W_hh^T + b_hh
        b_hh.grad.add_(d_bias if shared else d_gh2.sum(0))
        if k == 0 and not self.input_grad:
            return None, d_s
        return (d_gx2 @ w_ih.data).reshape(steps, n, -1), d_s  # g^x_t = x_t W_ih^T + b_ih, for dx_t

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}"
