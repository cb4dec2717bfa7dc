r"""Gated recurrent unit: ``GRUCell`` for one step, ``GRU`` for a stack over a sequence."""

from __future__ import annotations

import torch
from torch import Tensor

from scratch_rnn.recurrent import Cache, State, _Cell, _Recurrent


class GRUCell(_Cell):
    r"""One GRU step, the layout of ``torch.nn.GRUCell`` (gates stacked r, z, n; ``bias=True``).

    Shapes: ``x (N, in)``, ``h (N, H)``, ``weight_ih (3H, in)``, ``weight_hh (3H, H)``,
    ``bias_ih``, ``bias_hh (3H,)``. With :math:`g^x = x W_{ih}^\top + b_{ih}` and
    :math:`g^h = h W_{hh}^\top + b_{hh}`, each split into r, z, n blocks, and the reset gate
    applied to the *projected* hidden state as in torch (and cuDNN):

    .. math::
        r = \sigma(g^x_r + g^h_r), \quad
        z = \sigma(g^x_z + g^h_z), \quad
        n = \tanh\big(g^x_n + r \odot g^h_n\big), \quad
        h' = (1 - z) \odot n + z \odot h

    Backward, given :math:`\delta h'`:

    .. math::
        \delta a_n = \delta h' (1 - z)(1 - n^2), \quad
        \delta a_z = \delta h' (h - n)\, z(1 - z), \quad
        \delta a_r = \delta a_n\, g^h_n\, r(1 - r)

    .. math::
        \delta g^x = [\delta a_r, \delta a_z, \delta a_n], \quad
        \delta g^h = [\delta a_r, \delta a_z, \delta a_n \odot r], \quad
        \delta h = \delta h' \odot z + \delta g^h W_{hh}, \quad
        \delta x = \delta g^x W_{ih}

    and :math:`\delta W_{ih} = {\delta g^x}^\top x`, :math:`\delta W_{hh} = {\delta g^h}^\top h`,
    :math:`\delta b_{ih} = \sum_\text{rows} \delta g^x`, :math:`\delta b_{hh} = \sum_\text{rows} \delta g^h`.
    Caches :math:`h, r, z, n, g^h_n`.
    """

    gates = 3
    same_gate_gradients = False  # r multiplies h W_hn^T + b_hn only: d_gh differs from d_gx

    @staticmethod
    def step(gx: Tensor, state: State, w_hh_t: Tensor, b_hh: Tensor) -> tuple[State, Cache]:
        (h,) = state
        x_r, x_z, x_n = gx.chunk(3, dim=1)
        h_r, h_z, h_n = torch.addmm(b_hh, h, w_hh_t).chunk(3, dim=1)  # g^h = h W_hh^T + b_hh
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return ((1 - z) * n + z * h,), (h, r, z, n, h_n.clone())  # h_n alone: a view would keep all of (N, 3H)

    @staticmethod
    def step_backward(d_state: State, cache: Cache, w_hh: Tensor) -> tuple[Tensor, Tensor, State]:
        (dh_new,), (h, r, z, n, h_n) = d_state, cache
        da_n = dh_new * (1 - z) * (1 - n * n)  # h' = (1 - z) * n + z * h, n = tanh(a_n)
        da_z = dh_new * (h - n) * z * (1 - z)  # h' = (1 - z) * n + z * h, z = sigmoid(a_z)
        da_r = da_n * h_n * r * (1 - r)  # a_n = x_n + r * h_n, r = sigmoid(a_r)
        d_gx = torch.cat([da_r, da_z, da_n], dim=1)  # x_r, x_z, x_n = gx.chunk(3)
        d_gh = torch.cat([da_r, da_z, da_n * r], dim=1)  # h_r, h_z, h_n = g^h.chunk(3); a_n = x_n + r * h_n
        return d_gx, d_gh, (torch.addmm(dh_new * z, d_gh, w_hh),)  # h' = ... + z * h; g^h = h W_hh^T + b_hh


class GRU(_Recurrent):
    r"""A stack of GRU layers over a sequence, the layout of ``torch.nn.GRU``.

    For each layer, :math:`h_t = \text{GRUCell}(x_t, h_{t-1})`, :math:`t = 0, \dots, T-1`; the
    output is the last layer's :math:`h_t`, the state ``h_n`` ``(num_layers, N, H)``.
    Backprop through time, :math:`t = T-1, \dots, 0`, starting from the final state's gradient:

    .. math::
        \delta h_t \mathrel{+}= \frac{\partial L}{\partial y_t}, \quad
        \delta h_{t-1} = \delta h_t \odot z_t + \delta g^h_t W_{hh}

    (the update gate's direct path plus the path through the hidden projection), with
    :math:`\delta W_{hh} = \sum_t {\delta g^h_t}^\top h_{t-1}` and
    :math:`\delta W_{ih} = \sum_t {\delta g^x_t}^\top x_t`. Everything else: see
    :class:`scratch_rnn.recurrent._Recurrent`.
    """

    cell = GRUCell
