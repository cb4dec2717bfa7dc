r"""Long short-term memory: ``LSTMCell`` for one step, ``LSTM`` for a stack over a sequence."""

from __future__ import annotations

import torch
from torch import Tensor

from scratch_rnn.recurrent import Cache, State, _Cell, _Recurrent


class LSTMCell(_Cell):
    r"""One LSTM step, the layout of ``torch.nn.LSTMCell`` (gates stacked i, f, g, o; ``bias=True``).

    Shapes: ``x (N, in)``, ``h, c (N, H)``, ``weight_ih (4H, in)``, ``weight_hh (4H, H)``,
    ``bias_ih``, ``bias_hh (4H,)``. The state is the pair ``(h, c)``.

    .. math::
        [a_i, a_f, a_g, a_o] = x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh}, \quad
        i, f, o = \sigma(a_i), \sigma(a_f), \sigma(a_o), \quad g = \tanh a_g

    .. math::
        c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh c'

    Backward, given :math:`\delta h'` and :math:`\delta c'` (the gradient reaching :math:`c'`
    from later steps or from the loss on the final state):

    .. math::
        \delta c'_{\text{tot}} = \delta c' + \delta h' \odot o \odot (1 - \tanh^2 c'), \quad
        \delta c = \delta c'_{\text{tot}} \odot f

    .. math::
        \delta a_i = \delta c'_{\text{tot}} g\, i(1-i), \quad
        \delta a_f = \delta c'_{\text{tot}} c\, f(1-f), \quad
        \delta a_g = \delta c'_{\text{tot}} i\,(1-g^2), \quad
        \delta a_o = \delta h' \tanh c'\; o(1-o)

    and with :math:`\delta a = [\delta a_i, \delta a_f, \delta a_g, \delta a_o]`:
    :math:`\delta h = \delta a\, W_{hh}`, :math:`\delta x = \delta a\, W_{ih}`,
    :math:`\delta W_{ih} = \delta a^\top x`, :math:`\delta W_{hh} = \delta a^\top h`,
    :math:`\delta b_{ih} = \delta b_{hh} = \sum_n \delta a_n`.
    Caches :math:`i, f, g, o, c, \tanh c'`.
    """

    gates = 4
    state_size = 2

    @staticmethod
    def step(gx: Tensor, state: State, w_hh_t: Tensor, b_hh: Tensor) -> tuple[State, Cache]:
        h, c = state
        a_i, a_f, a_g, a_o = torch.addmm(gx, h, w_hh_t).add_(b_hh).chunk(4, dim=1)  # a = g^x + h W_hh^T + b_hh
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c_new = torch.addcmul(f * c, i, g)  # c' = f * c + i * g
        tanh_c = torch.tanh(c_new)
        return (o * tanh_c, c_new), (i, f, g, o, c, tanh_c)  # h' = o * tanh c'

    @staticmethod
    def step_backward(d_state: State, cache: Cache, w_hh: Tensor) -> tuple[Tensor, Tensor, State]:
        (dh_new, dc_new), (i, f, g, o, c, tanh_c) = d_state, cache
        dc_tot = dc_new + dh_new * o * (1 - tanh_c * tanh_c)  # h' = o * tanh c': c' reaches the loss through h' too
        da_i = dc_tot * g * i * (1 - i)  # c' = f * c + i * g, i = sigmoid(a_i)
        da_f = dc_tot * c * f * (1 - f)  # c' = f * c + i * g, f = sigmoid(a_f)
        da_g = dc_tot * i * (1 - g * g)  # c' = f * c + i * g, g = tanh(a_g)
        da_o = dh_new * tanh_c * o * (1 - o)  # h' = o * tanh c', o = sigmoid(a_o)
        da = torch.cat([da_i, da_f, da_g, da_o], dim=1)  # a_i, a_f, a_g, a_o = a.chunk(4)
        return da, da, (da @ w_hh, dc_tot * f)  # a = g^x + h W_hh^T + b_hh; c' = f * c + ...


class LSTM(_Recurrent):
    r"""A stack of LSTM layers over a sequence, the layout of ``torch.nn.LSTM`` (no ``proj_size``).

    For each layer, :math:`(h_t, c_t) = \text{LSTMCell}(x_t, (h_{t-1}, c_{t-1}))`,
    :math:`t = 0, \dots, T-1`; the output is the last layer's :math:`h_t`, the state
    ``(h_n, c_n)``, each ``(num_layers, N, H)``. Backprop through time carries two gradients,
    :math:`t = T-1, \dots, 0`, starting from the final state's gradients:

    .. math::
        \delta h_t \mathrel{+}= \frac{\partial L}{\partial y_t}, \quad
        (\delta a_t,\ \delta h_{t-1},\ \delta c_{t-1}) = \text{LSTMCell.step\_backward}(\delta h_t, \delta c_t)

    with :math:`\delta h_{t-1} = \delta a_t W_{hh}` and :math:`\delta c_{t-1} = \delta c_{t,\text{tot}} \odot f_t`
    (the cell state's additive path); :math:`\delta W_{hh} = \sum_t \delta a_t^\top h_{t-1}`,
    :math:`\delta W_{ih} = \sum_t \delta a_t^\top x_t`. Everything else: see
    :class:`scratch_rnn.recurrent._Recurrent`.
    """

    cell = LSTMCell
