r"""The vanilla (Elman) RNN: ``RNNCell`` for one step, ``RNN`` for a stack over a sequence, with tanh; and
``ReLURNNCell`` / ``ReLURNN``, the same with :math:`\max(0, a)` (torch's ``nonlinearity="relu"``)."""

from __future__ import annotations

import torch
from torch import Tensor

from scratch_rnn.recurrent import Cache, State, _Cell, _Recurrent


class RNNCell(_Cell):
    r"""One tanh RNN step, the layout of ``torch.nn.RNNCell`` (``bias=True``, ``nonlinearity="tanh"``).

    Shapes: ``x (N, in)``, ``h (N, H)``, ``weight_ih (H, in)``, ``weight_hh (H, H)``,
    ``bias_ih``, ``bias_hh (H,)``. With :math:`\delta h' = \partial L/\partial h'`:

    .. math::
        a = x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh}, \quad h' = \tanh a

    .. math::
        \delta a = \delta h' \odot (1 - h'^2), \quad
        \delta x = \delta a\, W_{ih}, \quad
        \delta h = \delta a\, W_{hh}, \quad
        \delta W_{ih} = \delta a^\top x, \quad
        \delta W_{hh} = \delta a^\top h, \quad
        \delta b_{ih} = \delta b_{hh} = \textstyle\sum_n \delta a_n

    Weights start at :math:`\mathcal{U}(\pm 1/\sqrt{H})`, as in torch. Caches :math:`h'`.
    """

    gates = 1
    nonlinearity = "tanh"

    @staticmethod
    def step(gx: Tensor, state: State, w_hh_t: Tensor, b_hh: Tensor) -> tuple[State, Cache]:
        (h,) = state
        h_new = torch.addmm(gx, h, w_hh_t).add_(b_hh).tanh_()  # a = g^x + h W_hh^T + b_hh; h' = tanh a
        return (h_new,), (h_new,)

    @staticmethod
    def step_backward(d_state: State, cache: Cache, w_hh: Tensor) -> tuple[Tensor, Tensor, State]:
        (dh_new,), (h_new,) = d_state, cache
        da = dh_new * (1 - h_new * h_new)  # h' = tanh a
        return da, da, (da @ w_hh,)  # a = g^x + g^h: both get da; g^h = h W_hh^T + b_hh


class RNN(_Recurrent):
    r"""A stack of tanh RNN layers over a sequence, the layout of ``torch.nn.RNN``.

    For each layer, :math:`h_t = \tanh(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh})`,
    :math:`t = 0, \dots, T-1`; the output is the last layer's :math:`h_t`, the state ``h_n``
    ``(num_layers, N, H)``. Backprop through time, :math:`t = T-1, \dots, 0`, with
    :math:`\delta h_{T-1}` starting at the final state's gradient:

    .. math::
        \delta h_t \mathrel{+}= \frac{\partial L}{\partial y_t}, \quad
        \delta a_t = \delta h_t \odot (1 - h_t^2), \quad
        \delta h_{t-1} = \delta a_t W_{hh}, \quad
        \delta W_{hh} = \textstyle\sum_t \delta a_t^\top h_{t-1}, \quad
        \delta W_{ih} = \textstyle\sum_t \delta a_t^\top x_t

    With ``nonlinearity="relu"`` see :class:`ReLURNN`. Everything else: :class:`scratch_rnn.recurrent._Recurrent`.
    """

    cell = RNNCell


class ReLURNNCell(RNNCell):
    r"""One ReLU RNN step, ``torch.nn.RNNCell(nonlinearity="relu")``: :math:`h' = \max(0, a)` and
    :math:`\delta a = \delta h' \odot [h' > 0]`; the rest as :class:`RNNCell`. Unbounded, unlike tanh: its
    gradients through time neither saturate nor stay bounded (a useful contrast, with clipping)."""

    nonlinearity = "relu"

    @staticmethod
    def step(gx: Tensor, state: State, w_hh_t: Tensor, b_hh: Tensor) -> tuple[State, Cache]:
        (h,) = state
        h_new = torch.addmm(gx, h, w_hh_t).add_(b_hh).clamp_(min=0)  # h' = max(0, a)
        return (h_new,), (h_new,)

    @staticmethod
    def step_backward(d_state: State, cache: Cache, w_hh: Tensor) -> tuple[Tensor, Tensor, State]:
        (dh_new,), (h_new,) = d_state, cache
        da = dh_new * (h_new > 0).to(dh_new.dtype)  # h' = max(0, a): the gradient passes where a > 0
        return da, da, (da @ w_hh,)


class ReLURNN(RNN):
    r"""A stack of ReLU RNN layers, ``torch.nn.RNN(nonlinearity="relu")``:
    :math:`h_t = \max(0, x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh})`; see :class:`RNN`."""

    cell = ReLURNNCell
