r"""Exercises: write one time step's backward of the RNN, LSTM and GRU cells yourself, checked against autograd.

Each :class:`~scratch_engine.tools.exercises.Exercise` poses one recurrent step with its forward written as
plain tensor code in this package's layout (which is torch's): the input ``x (N, in)``, the state ``h (N, H)``
(and the LSTM's cell state ``c (N, H)``), and the cell's parameters ``W_ih (G·H, in)``, ``W_hh (G·H, H)``,
``b_ih``, ``b_hh (G·H,)`` — :class:`~scratch_rnn.RNNCell`'s ``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh`` — with ``G`` gate blocks stacked as the cells stack them: 1 for the RNN, 4 for the LSTM
(``i, f, g, o``), 3 for the GRU (``r, z, n``). Each forward equals its cell's forward (the package's tests check
it), so the backward you write is that cell's backward: ``step_backward`` and the weight gradients of
``_Cell.backward`` in ``recurrent.py``. The backward gets only the forward's inputs: it recomputes the gates first::

    from scratch_rnn.exercises import lstm_cell

    def lstm_cell_backward(grad_output, x, h, c, W_ih, W_hh, b_ih, b_hh):
        dh_new, dc_new = grad_output  # the forward returns (h', c'): one gradient for each
        ...
        return dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh  # in the order of lstm_cell.wrt

    lstm_cell.check(lstm_cell_backward)  # one line: ✓, or ✗ naming the wrong gradient, how far off and where
    lstm_cell.show_solution()  # when you want to compare

``EXERCISES`` holds the three: :data:`rnn_cell`, :data:`lstm_cell`, :data:`gru_cell`. The notebook
``notebooks/rnn_from_scratch.ipynb`` poses them with the math to differentiate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratch_engine.tools.exercises import Exercise

BATCH, INPUT, HIDDEN = 4, 3, 5  # small, distinct and non-square: a transposed matrix shows up as a shape error


def _draw(generator: torch.Generator, gates: int, cell_state: bool = False) -> dict[str, Tensor]:
    """``x``, ``h`` (and ``c``) ~ N(0, 1); the weights and biases ~ N(0, 0.5²), so that no gate saturates."""

    def normal(*shape: int, scale: float = 1.0) -> Tensor:
        return scale * torch.randn(shape, generator=generator, dtype=torch.float64, device="cpu")

    rows = gates * HIDDEN
    inputs = {"x": normal(BATCH, INPUT), "h": normal(BATCH, HIDDEN)}
    if cell_state:
        inputs["c"] = normal(BATCH, HIDDEN)
    inputs |= {
        "W_ih": normal(rows, INPUT, scale=0.5),
        "W_hh": normal(rows, HIDDEN, scale=0.5),
        "b_ih": normal(rows, scale=0.5),
        "b_hh": normal(rows, scale=0.5),
    }
    return inputs


# --------------------------------------------------------------------------- the vanilla (tanh) RNN cell


def rnn_cell_forward(x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One tanh RNN step, :class:`~scratch_rnn.RNNCell`: ``h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``."""
    a = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh  # (N, H): the pre-activation
    return torch.tanh(a)  # h'


def rnn_cell_backward(
    grad_output: Tensor, x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    h_new = torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)  # the forward again: tanh' is written with h'
    da = grad_output * (1 - h_new * h_new)  # h' = tanh a  ->  tanh'(a) = 1 - h'²
    dx = da @ W_ih  # a = x W_ihᵀ + ...  ->  dL/dx = δa W_ih
    dh = da @ W_hh  # a = ... + h W_hhᵀ  ->  dL/dh = δa W_hh: what the step before receives
    dW_ih = da.T @ x  # a = x W_ihᵀ + ...  ->  dL/dW_ih = δaᵀ x (the input x, not the output h')
    dW_hh = da.T @ h  # a = ... + h W_hhᵀ  ->  dL/dW_hh = δaᵀ h
    db_ih = da.sum(0)  # a = ... + b_ih, b_ih added to every row  ->  summed over the batch
    db_hh = da.sum(0)  # a = ... + b_hh, the same
    return dx, dh, dW_ih, dW_hh, db_ih, db_hh


rnn_cell = Exercise(
    title="RNNCell (tanh)",
    forward=rnn_cell_forward,
    make_inputs=lambda generator: _draw(generator, gates=1),
    wrt=("x", "h", "W_ih", "W_hh", "b_ih", "b_hh"),
    solution=rnn_cell_backward,
    hint="δa = δh' ⊙ (1 − h'²) with the output h'; then dL/dW_hh = δaᵀ h with the input state h",
)


# --------------------------------------------------------------------------- the LSTM cell


def lstm_cell_forward(
    x: Tensor, h: Tensor, c: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor]:
    """One LSTM step, :class:`~scratch_rnn.LSTMCell`: gates ``i, f, g, o`` stacked in that order; ``(h', c')``."""
    a = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh  # (N, 4H): the four gates' pre-activations
    a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c_new = f * c + i * g  # forget some of the old cell state, write some of the new candidate
    h_new = o * torch.tanh(c_new)  # show some of the cell state
    return h_new, c_new


def lstm_cell_backward(
    grad_output: tuple[Tensor, Tensor],
    x: Tensor,
    h: Tensor,
    c: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    dh_new, dc_new = grad_output  # the gradients reaching h' and c'
    a_i, a_f, a_g, a_o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)  # the forward again
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    tanh_c = torch.tanh(f * c + i * g)
    dc_tot = dc_new + dh_new * o * (1 - tanh_c * tanh_c)  # h' = o * tanh c': c' reaches the loss through h' too
    da_i = dc_tot * g * i * (1 - i)  # c' = f * c + i * g, i = sigmoid(a_i)
    da_f = dc_tot * c * f * (1 - f)  # c' = f * c + i * g, f = sigmoid(a_f)
    da_g = dc_tot * i * (1 - g * g)  # c' = f * c + i * g, g = tanh(a_g)
    da_o = dh_new * tanh_c * o * (1 - o)  # h' = o * tanh c', o = sigmoid(a_o)
    da = torch.cat([da_i, da_f, da_g, da_o], dim=1)  # a_i, a_f, a_g, a_o = a.chunk(4): the same order
    dc = dc_tot * f  # c' = f * c + ...: the additive path, scaled by the forget gate only
    dx = da @ W_ih  # a = x W_ihᵀ + ...
    dh = da @ W_hh  # a = ... + h W_hhᵀ
    dW_ih = da.T @ x  # a = x W_ihᵀ + ...
    dW_hh = da.T @ h  # a = ... + h W_hhᵀ
    db_ih = da.sum(0)  # a = ... + b_ih, summed over the batch
    db_hh = da.sum(0)  # a = ... + b_hh
    return dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh


lstm_cell = Exercise(
    title="LSTMCell",
    forward=lstm_cell_forward,
    make_inputs=lambda generator: _draw(generator, gates=4, cell_state=True),
    wrt=("x", "h", "c", "W_ih", "W_hh", "b_ih", "b_hh"),
    solution=lstm_cell_backward,
    hint="c' reaches the loss twice: δc'_tot = δc' + δh' ⊙ o ⊙ (1 − tanh² c'), then δc = δc'_tot ⊙ f",
)


# --------------------------------------------------------------------------- the GRU cell


def gru_cell_forward(x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step, :class:`~scratch_rnn.GRUCell`: gates ``r, z, n`` stacked in that order; returns ``h'``."""
    x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=1)  # g^x: the input's share of each gate
    h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=1)  # g^h: the state's share
    r = torch.sigmoid(x_r + h_r)  # reset gate
    z = torch.sigmoid(x_z + h_z)  # update gate: how much of the old state to keep
    n = torch.tanh(x_n + r * h_n)  # the candidate; r scales the *projected* state (torch's and cuDNN's GRU)
    return (1 - z) * n + z * h  # h'


def gru_cell_backward(
    grad_output: Tensor, x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    x_r, x_z, x_n = (x @ W_ih.T + b_ih).chunk(3, dim=1)  # the forward again
    h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    da_n = grad_output * (1 - z) * (1 - n * n)  # h' = (1 - z) * n + z * h, n = tanh(a_n)
    da_z = grad_output * (h - n) * z * (1 - z)  # h' = (1 - z) * n + z * h, z = sigmoid(a_z)
    da_r = da_n * h_n * r * (1 - r)  # a_n = x_n + r * h_n, r = sigmoid(a_r)
    d_gx = torch.cat([da_r, da_z, da_n], dim=1)  # x_r, x_z, x_n = g^x.chunk(3)
    d_gh = torch.cat([da_r, da_z, da_n * r], dim=1)  # h_r, h_z, h_n = g^h.chunk(3); a_n = x_n + r * h_n
    dx = d_gx @ W_ih  # g^x = x W_ihᵀ + b_ih
    dh = grad_output * z + d_gh @ W_hh  # h' = ... + z * h directly, and g^h = h W_hhᵀ + b_hh
    dW_ih = d_gx.T @ x  # g^x = x W_ihᵀ + b_ih
    dW_hh = d_gh.T @ h  # g^h = h W_hhᵀ + b_hh
    db_ih = d_gx.sum(0)  # g^x = ... + b_ih, summed over the batch
    db_hh = d_gh.sum(0)  # g^h = ... + b_hh
    return dx, dh, dW_ih, dW_hh, db_ih, db_hh


gru_cell = Exercise(
    title="GRUCell",
    forward=gru_cell_forward,
    make_inputs=lambda generator: _draw(generator, gates=3),
    wrt=("x", "h", "W_ih", "W_hh", "b_ih", "b_hh"),
    solution=gru_cell_backward,
    hint="the hidden side's n block is scaled by r: δg^h_n = δa_n ⊙ r; and δh = δh' ⊙ z + δg^h W_hh",
)


EXERCISES: tuple[Exercise, ...] = (rnn_cell, lstm_cell, gru_cell)
