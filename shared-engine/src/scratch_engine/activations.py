r"""Elementwise activations: :math:`y = f(x)` and :math:`\partial L / \partial x = g \odot f'(x)`.

Each layer accepts any floating input shape, caches the one tensor its derivative needs
(the input, the output or a mask) and has no parameters, so train and eval modes agree.
"""

from __future__ import annotations

import math
from typing import Literal, cast

import torch
from torch import Tensor

from scratch_engine.checks import check_floating, check_grad_output
from scratch_engine.module import Module, caching, missing_forward, scalar, widened


class _Elementwise(Module):
    """Base of the activations: the one tensor that the forward caches, of the output's shape."""

    _cache: Tensor | None = None

    def _cached(self, grad_output: Tensor) -> Tensor:
        """The forward's cache, once ``grad_output`` has its shape (another would broadcast into a wrong gradient)."""
        if self._cache is None:
            raise missing_forward(self)
        check_grad_output(self, grad_output, self._cache.shape)
        return self._cache


class ReLU(_Elementwise):
    r""":math:`f(x) = \max(0, x)`, :math:`f'(x) = [x > 0]` (0 at :math:`x = 0`, as in torch).

    Caches the output: :math:`y > 0` exactly where :math:`x > 0`. Multiplying by :math:`\operatorname{sign}(y)`
    turns an infinite or NaN gradient where :math:`x \le 0` into NaN (torch: 0); such a gradient has already
    broken the step (the Engine stops on a non-finite loss).
    """

    def forward(self, x: Tensor) -> Tensor:
        check_floating(self, x)
        y = x.clamp(min=0)
        self._cache = y if caching() else None
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        # speed trick, ReLU through sign: the plain form is torch.where(y > 0, grad_output, 0); sign(y) is that mask
        # as a float (y >= 0), several times faster to multiply by on the CPU, and takes the product in place
        return self._cached(grad_output).sign().mul_(grad_output)


class LeakyReLU(_Elementwise):
    r""":math:`f(x) = x` for :math:`x > 0`, else :math:`a x`; :math:`f'(x) = 1` for :math:`x > 0`, else :math:`a`.

    ``a`` is ``negative_slope``. Caches the boolean mask :math:`x > 0` (any sign of ``a`` works).
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        check_floating(self, x)
        positive = x > 0
        self._cache = positive if caching() else None
        return torch.where(positive, x, x * self.negative_slope)

    def backward(self, grad_output: Tensor) -> Tensor:
        return torch.where(self._cached(grad_output), grad_output, grad_output * self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Tanh(_Elementwise):
    r""":math:`f(x) = \tanh x`, :math:`f'(x) = 1 - \tanh^2 x = 1 - y^2`. Caches the output."""

    def forward(self, x: Tensor) -> Tensor:
        check_floating(self, x)
        y = torch.tanh(x)
        self._cache = y if caching() else None
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        y = self._cached(grad_output)
        wide = widened(y)  # 1 - y^2 cancels digits as |y| nears 1: in float32 for 16-bit, as torch does
        return (grad_output * (1 - wide * wide)).to(y.dtype)


class Sigmoid(_Elementwise):
    r""":math:`f(x) = \sigma(x) = 1 / (1 + e^{-x})`, :math:`f'(x) = \sigma(x)(1 - \sigma(x)) = y(1 - y)`.

    Computed as :math:`1/(1+e^{-|x|})` for :math:`x \ge 0` and :math:`e^{-|x|}/(1+e^{-|x|})` otherwise:
    :math:`e^{\cdot}` never overflows, and tiny outputs keep their relative precision (:math:`\sigma(\pm 1000)`
    is exactly 1 and 0). Caches the output. A 16-bit input is computed in float32 and rounded once, as torch
    does (in bfloat16, :math:`1 + e^{-x}` is exactly 1 for :math:`x > 5.55`: :math:`y = 1`, zero gradient).
    """

    def forward(self, x: Tensor) -> Tensor:
        check_floating(self, x)
        wide = widened(x)
        e = torch.exp(-wide.abs())
        y = torch.where(wide >= 0, 1 / (1 + e), e / (1 + e)).to(x.dtype)
        self._cache = y if caching() else None
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        y = self._cached(grad_output)
        wide = widened(y)  # one rounding for 16-bit, as torch does
        return (grad_output * wide * (1 - wide)).to(y.dtype)


_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_LOG2_INV_SQRT_2PI = math.log2(1.0 / math.sqrt(2.0 * math.pi))
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715
_LOG2_E = math.log2(math.e)


class GELU(_Elementwise):
    r"""Gaussian error linear unit :math:`f(x) = x\,\Phi(x)`, :math:`\Phi` the standard normal CDF.

    ``approximate="none"``: :math:`\Phi(x) = \tfrac12\left(1 + \operatorname{erf}(x/\sqrt2)\right)
    = \tfrac12 \operatorname{erfc}(-x/\sqrt2)` (computed as the latter: for negative :math:`x`,
    :math:`1 + \operatorname{erf}` cancels the digits of a small :math:`\Phi`) and

    .. math:: f'(x) = \Phi(x) + x\,\varphi(x), \quad \varphi(x) = e^{-x^2/2} / \sqrt{2\pi}

    ``approximate="tanh"``: with :math:`u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)` and :math:`t = \tanh u`,

    .. math::
        f(x) = \tfrac12 x (1 + t), \quad
        f'(x) = \tfrac12 (1 + t) + \tfrac12 x (1 - t^2) \sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\,x^2)

    Caches :math:`x` and :math:`2\Phi(x)` (or :math:`t`): the backward makes :math:`f'(x)` without a second erf,
    and no pass allocates more than its result (on the CPU a fresh ``(N, d_ff)`` tensor costs more in page faults
    than its arithmetic). A 16-bit input is computed in float32 and rounded once, as torch does.
    """

    def __init__(self, approximate: Literal["none", "tanh"] = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._x: Tensor | None = None  # x, beside Phi(x) (or t) in the cache, for backward

    def forward(self, x: Tensor) -> Tensor:
        check_floating(self, x)
        wide = widened(x)
        if self.approximate == "tanh":
            inner = torch.tanh(_SQRT_2_OVER_PI * (wide + _GELU_CUBIC * wide**3))  # t = tanh u
            y = 0.5 * wide * (1 + inner)  # f(x) = x (1 + t) / 2
        else:
            # speed trick: 2 Phi kept, its 1/2 folded into f's product (plain: Phi = erfc(-x / sqrt 2) / 2, f = x Phi)
            inner = (wide * scalar(-_INV_SQRT_2, wide)).erfc_()  # 2 Phi(x) = erfc(-x / sqrt 2)
            y = torch.addcmul(wide.new_zeros(()), wide, inner, value=0.5)  # f(x) = x Phi(x) = x (2 Phi(x)) / 2
        self._cache, self._x = (inner, wide) if caching() else (None, None)
        return y.to(x.dtype)

    def backward(self, grad_output: Tensor) -> Tensor:
        inner, wide = self._cached(grad_output), cast(Tensor, self._x)  # set together by the forward
        if self.approximate == "tanh":  # f'(x) = (1 + t) / 2 + x (1 - t^2) u' / 2
            du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * wide * wide)
            slope = 0.5 * (1 + inner) + 0.5 * wide * (1 - inner * inner) * du
        else:  # f'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
            # speed trick, phi(x) = 2^(log2(1 / sqrt(2 pi)) - x^2 log2(e) / 2), its exponent in one pass (plain form:
            # exp(-x * x / 2) / sqrt(2 pi), the same number; torch's exp2 is 2-3x faster than its exp on the CPU)
            gauss = torch.addcmul(wide.new_full((), _LOG2_INV_SQRT_2PI), wide, wide, value=-0.5 * _LOG2_E).exp2_()
            slope = gauss.mul_(wide).add_(inner, alpha=0.5)  # x phi(x) + Phi(x), in the same buffer (inner is 2 Phi)
        return slope.mul_(grad_output).to(grad_output.dtype)  # g f'(x)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
