r"""Optimizers that update ``Parameter.data`` in place from ``Parameter.grad``.

Notation: :math:`\theta_t` parameters, :math:`g_t` the gradient at step :math:`t = 1, 2, \dots`, :math:`\eta` the
learning rate, :math:`\lambda` the weight decay. Steps never read a tensor back to the host: the learning rate and
step counters are Python numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from scratch_engine.module import Module, Parameter

ParamsLike = Module | Iterable[Parameter]


def _as_parameters(params: ParamsLike) -> list[Parameter]:
    items = params.parameters() if isinstance(params, Module) else list(params)
    seen: set[int] = set()
    for i, p in enumerate(items):
        if not isinstance(p, Parameter):
            raise TypeError(f"parameter {i} is a {type(p).__name__}, not a scratch_engine Parameter")
        if id(p) in seen:
            raise ValueError(f"parameter {i} appears more than once; it would be updated twice per step")
        seen.add(id(p))
    return items


def _check_range(name: str, value: float, low: float, high: float = math.inf, high_inclusive: bool = False) -> None:
    if not math.isfinite(value):  # nan fails every comparison below; inf would only fail later, as a nan loss
        raise ValueError(f"{name} must be a finite number, got {value}")
    if not (low <= value <= high if high_inclusive else low <= value < high):
        raise ValueError(f"{name} must be in [{low}, {high}{']' if high_inclusive else ')'}, got {value}")


class Optimizer:
    """Base class: the parameters (a :class:`Module`'s, or an iterable of :class:`Parameter`), the learning rate
    (a plain float that schedules set) and per-parameter ``state`` dicts of tensors and numbers. A subclass writes
    its rule for one parameter in :meth:`_update`, and may write it for all at once in :meth:`_update_all`."""

    def __init__(self, params: ParamsLike, learning_rate: float, foreach: bool | None = None) -> None:
        self.params = _as_parameters(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        _check_range("learning_rate", learning_rate, 0.0)
        self.learning_rate, self.foreach = float(learning_rate), foreach
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def step(self) -> None:
        """Update every parameter once from its current ``grad``."""
        _check_range("learning_rate", self.learning_rate, 0.0)  # a rate set after construction is checked too
        with torch.no_grad():
            if self._use_foreach():  # the same rule, for every parameter at once
                self._update_all([p.data for p in self.params], [p.grad for p in self.params], self.state)
                return
            for param, state in zip(self.params, self.state, strict=True):
                self._update(param.data, param.grad, state)

    def _use_foreach(self) -> bool:
        wanted = self.params[0].data.device.type != "cpu" if self.foreach is None else self.foreach
        return wanted and type(self)._update_all is not Optimizer._update_all and _one_device_and_dtype(self.params)

    def _update(self, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _update")

    def _update_all(self, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]) -> None:
        """Speed trick beside the plain form :meth:`_update`, not another algorithm: torch's multi-tensor ``_foreach``
        ops launch a few kernels for every parameter together where a small model on a GPU would launch several per
        parameter. ``foreach=None`` uses it on an accelerator only."""
        raise NotImplementedError(f"{type(self).__name__} has no multi-tensor update")

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's type (checked on load), learning rate and per-parameter state (tensors cloned)."""
        state = [{k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()} for s in self.state]
        return {"type": type(self).__name__, "learning_rate": self.learning_rate, "state": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s, tensors on each parameter's device and dtype; checked before it
        changes anything: another optimizer's state, or another model's, is a ``ValueError``."""
        if (saved := state_dict.get("type")) not in (None, type(self).__name__):
            raise ValueError(
                f"the state of a {saved} optimizer cannot be loaded into {type(self).__name__}: "
                "build the optimizer the checkpoint was trained with"
            )
        states = state_dict.get("state")
        if not isinstance(states, list) or len(states) != len(self.params):
            got = len(states) if isinstance(states, list) else type(states).__name__
            raise ValueError(f"{type(self).__name__} has {len(self.params)} parameters but the state dict has {got}")
        for i, (param, state) in enumerate(zip(self.params, states, strict=True)):
            for key, value in state.items():
                if isinstance(value, Tensor) and value.shape != param.data.shape:
                    raise ValueError(
                        f"state {key!r} of parameter {i} has shape {tuple(value.shape)}, "
                        f"parameter has {tuple(param.data.shape)}"
                    )
        self.state = [
            {k: v.to(p.data, copy=True) if isinstance(v, Tensor) else v for k, v in state.items()}
            for p, state in zip(self.params, states, strict=True)
        ]
        self.learning_rate = float(state_dict["learning_rate"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return f"learning_rate={self.learning_rate}"


class GradientDescent(Optimizer):
    r"""Stochastic gradient descent with momentum, exactly as PyTorch's ``SGD``.

    With momentum :math:`\mu`, dampening :math:`\tau` and buffer :math:`b`:

    .. math::
        d_t &= g_t + \lambda\,\theta_{t-1} \\
        b_t &= \begin{cases} d_t & t = 1 \\ \mu\, b_{t-1} + (1-\tau)\, d_t & t > 1 \end{cases} \\
        \theta_t &= \theta_{t-1} - \eta\,\big(d_t + \mu\, b_t \text{ if nesterov else } b_t\big)

    Without momentum (:math:`\mu = 0`) it is plain :math:`\theta_t = \theta_{t-1} - \eta\, d_t`; Nesterov needs
    :math:`\mu > 0` and :math:`\tau = 0`.
    """

    def __init__(
        self,
        params: ParamsLike,
        learning_rate: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, learning_rate, foreach)
        _check_range("momentum", momentum, 0.0)
        _check_range("weight_decay", weight_decay, 0.0)
        _check_range("dampening", dampening, 0.0, 1.0, high_inclusive=True)
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError(
                f"nesterov needs momentum > 0 and dampening = 0, got momentum={momentum}, dampening={dampening}"
            )
        self.momentum, self.weight_decay, self.dampening = float(momentum), float(weight_decay), float(dampening)
        self.nesterov = nesterov

    def _update(self, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        d_p = grad.add(param, alpha=self.weight_decay) if self.weight_decay else grad
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d_p.clone()
            else:
                buf.mul_(self.momentum).add_(d_p, alpha=1.0 - self.dampening)
            d_p = d_p.add(buf, alpha=self.momentum) if self.nesterov else buf
        param.add_(d_p, alpha=-self.learning_rate)

    def _update_all(self, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]) -> None:
        if self.momentum and any("momentum_buffer" not in state for state in states):  # step 1: one at a time
            for param, grad, state in zip(params, grads, states, strict=True):
                self._update(param, grad, state)
            return
        d_p = torch._foreach_add(grads, params, alpha=self.weight_decay) if self.weight_decay else grads
        if self.momentum:
            bufs = [state["momentum_buffer"] for state in states]
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, d_p, alpha=1.0 - self.dampening)
            d_p = torch._foreach_add(d_p, bufs, alpha=self.momentum) if self.nesterov else bufs
        torch._foreach_add_(params, d_p, alpha=-self.learning_rate)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
            f"nesterov={self.nesterov}, dampening={self.dampening}"
        )


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), exactly as PyTorch's ``Adam``; weight decay is L2 on the gradient.

    .. math::
        d_t &= g_t + \lambda\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, d_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\, d_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    State per parameter: ``step`` (int), ``exp_avg`` :math:`m`, ``exp_avg_sq`` :math:`v`. ``decay_vectors=False``
    decays matrices only, not biases and norm gains (1-D), as GPT-2 and torch's param groups in nanoGPT do.
    """

    decoupled = False

    def __init__(
        self,
        params: ParamsLike,
        learning_rate: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        decay_vectors: bool = True,
    ) -> None:
        super().__init__(params, learning_rate, foreach)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas}")
        _check_range("betas[0]", betas[0], 0.0, 1.0)
        _check_range("betas[1]", betas[1], 0.0, 1.0)
        _check_range("eps", eps, 0.0)
        _check_range("weight_decay", weight_decay, 0.0)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay, self.decay_vectors = float(eps), float(weight_decay), decay_vectors

    def _decays(self, param: Tensor) -> bool:
        return self.weight_decay > 0 and (self.decay_vectors or param.dim() > 1)

    def _update(self, param: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        beta1, beta2 = self.betas
        if not state:
            state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
        state["step"] += 1
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if self._decays(param) and self.decoupled:  # AdamW: the decay shrinks the parameter itself
            param.mul_(1.0 - self.learning_rate * self.weight_decay)
        elif self._decays(param):  # Adam: L2, added to the gradient
            grad = grad.add(param, alpha=self.weight_decay)
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        step_size = self.learning_rate / (1.0 - beta1**step)
        denom = (exp_avg_sq.sqrt() / (1.0 - beta2**step) ** 0.5).add_(self.eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)

    def _update_all(self, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]]) -> None:
        steps = {state.get("step", 0) for state in states}
        if len(steps) > 1 or 0 in steps:  # step 1 (it makes the state), or steps that differ: one at a time
            for param, grad, state in zip(params, grads, states, strict=True):
                self._update(param, grad, state)
            return
        beta1, beta2 = self.betas
        for state in states:
            state["step"] += 1
        step = states[0]["step"]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        if self.decoupled and (decayed := [param for param in params if self._decays(param)]):
            torch._foreach_mul_(decayed, 1.0 - self.learning_rate * self.weight_decay)
        elif not self.decoupled:
            decay = self.weight_decay
            grads = [g.add(p, alpha=decay) if self._decays(p) else g for p, g in zip(params, grads, strict=True)]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        step_size = self.learning_rate / (1.0 - beta1**step)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, (1.0 - beta2**step) ** 0.5)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)

    def extra_repr(self) -> str:
        vectors = "" if self.decay_vectors else ", decay_vectors=False"
        return f"{super().extra_repr()}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay}{vectors}"


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), exactly as PyTorch's ``AdamW``.

    The decay shrinks the parameters directly instead of entering the moments:

    .. math::
        \theta' &= (1 - \eta\lambda)\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \theta_t &= \theta' - \frac{\eta}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}
    """

    decoupled = True

    def __init__(
        self,
        params: ParamsLike,
        learning_rate: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,  # the one difference from Adam's signature
        foreach: bool | None = None,
        decay_vectors: bool = True,
    ) -> None:
        super().__init__(params, learning_rate, betas, eps, weight_decay, foreach, decay_vectors)


def clip_grad_norm(params: ParamsLike, max_norm: float) -> Tensor:
    r"""Scale all gradients together so their global L2 norm is at most ``max_norm``.

    .. math::
        \|g\| = \sqrt{\textstyle\sum_p \|g_p\|_2^2}, \qquad
        g_p \leftarrow g_p \cdot \min\!\Big(1, \frac{\text{max\_norm}}{\|g\| + 10^{-6}}\Big)

    Returns :math:`\|g\|` *before* clipping as a 0-dim tensor, like ``torch.nn.utils.clip_grad_norm_``. The factor
    is clamped on the device, not read back: a non-finite norm makes the gradients NaN, and the engine stops on the
    loss that follows.
    """
    _check_range("max_norm", max_norm, 0.0)
    parameters = _as_parameters(params)
    grads = [p.grad for p in parameters]
    if not grads:
        return torch.tensor(0.0)
    if _one_device_and_dtype(parameters):  # speed trick, as in Optimizer._update_all; the plain form follows
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).to(grads[0].device) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g))
    return total


def _one_device_and_dtype(params: list[Parameter]) -> bool:
    """Whether torch's multi-tensor (``_foreach``) ops can take all of ``params`` in one call."""
    first = params[0].data
    return all(p.data.device == first.device and p.data.dtype == first.dtype for p in params)
