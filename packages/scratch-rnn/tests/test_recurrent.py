"""RNN, LSTM and GRU, cells and sequence layers: forward against torch.nn, backward against autograd.

Every test runs for the three architectures; LSTM differs only in its state, the pair (h, c).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from scratch_engine import Module, no_cache
from scratch_engine.tools.testing import assert_close, cached_tensors, check_backward, random_inputs
from scratch_rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, ReLURNN, ReLURNNCell, RNNCell, detach_state

STEPS, BATCH, IN, HIDDEN = 5, 3, 4, 5

RELU = {"nonlinearity": "relu"}
LAYERS: dict[str, tuple[Any, Any]] = {
    "rnn": (RNN, nn.RNN),
    "lstm": (LSTM, nn.LSTM),
    "gru": (GRU, nn.GRU),
    "rnn-relu": (ReLURNN, partial(nn.RNN, **RELU)),  # torch's nn.RNN(nonlinearity="relu")
}
CELLS: dict[str, tuple[Any, Any]] = {
    "rnn": (RNNCell, nn.RNNCell),
    "lstm": (LSTMCell, nn.LSTMCell),
    "gru": (GRUCell, nn.GRUCell),
    "rnn-relu": (ReLURNNCell, partial(nn.RNNCell, **RELU)),
}
architectures = pytest.mark.parametrize("arch", list(LAYERS))


def _input(batch_first: bool, steps: int = STEPS, seed: int = 0) -> Tensor:
    (x,) = random_inputs((BATCH, steps, IN) if batch_first else (steps, BATCH, IN), seed=seed)
    return x


def _state(arch: str, shape: tuple[int, ...], seed: int = 1) -> Tensor | tuple[Tensor, Tensor]:
    h, c = random_inputs(shape, shape, seed=seed)
    return (h, c) if arch == "lstm" else h


def _parts(state: Any) -> tuple[Tensor, ...]:
    if state is None:
        return ()
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _assert_states_close(got: Any, want: Any, name: str, **tol: float) -> None:
    got, want = _parts(got), _parts(want)
    assert len(got) == len(want), f"{name}: {len(got)} state tensors, expected {len(want)}"
    for label, g, w in zip("hc", got, want, strict=False):
        assert_close(g, w.detach(), name=f"{name} {label}", **tol)


class _StateAsInputs(Module):
    """``layer(x, state)`` with the state's tensors as separate positional inputs.

    check_backward differentiates positional *tensor* inputs; LSTM's state is a tuple ``(h, c)``,
    which it would pass through without checking its gradient. Spelled out as ``(x, h, c)``,
    the initial state's gradient is checked too.
    """

    def __init__(self, layer: Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, *state: Tensor) -> Any:
        return self.layer(x, None if not state else state[0] if len(state) == 1 else state)

    def backward(self, grad_output: Any) -> tuple[Tensor | None, ...]:
        grad_x, grad_state = self.layer.backward(grad_output)
        return (grad_x, *_parts(grad_state))


def _check(layer: Module, x: Tensor, state: Any, **kwargs: Any) -> Any:
    """check_backward for inputs ``(x, state)``: directly for a tensor state, through the adapter for (h, c)."""
    if isinstance(state, tuple):
        return check_backward(_StateAsInputs(layer), x, *state, **kwargs)
    return check_backward(layer, x, state, **kwargs)


# --------------------------------------------------------------------------- sequence layers


@architectures
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_matches_torch(arch: str, num_layers: int, batch_first: bool, with_state: bool) -> None:
    torch.manual_seed(0)
    ours, theirs = LAYERS[arch]
    reference = theirs(IN, HIDDEN, num_layers=num_layers, batch_first=batch_first).double()
    layer = ours.from_torch(reference)
    x = _input(batch_first)
    state = _state(arch, (num_layers, BATCH, HIDDEN)) if with_state else None
    output, final = layer(x, state)
    want_output, want_final = reference(x, state)
    assert_close(output, want_output.detach(), name=f"{arch} output")
    _assert_states_close(final, want_final, f"{arch} final state")


@architectures
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_backward_matches_autograd(arch: str, num_layers: int, batch_first: bool, with_state: bool) -> None:
    torch.manual_seed(0)
    layer = LAYERS[arch][0](IN, HIDDEN, num_layers=num_layers, batch_first=batch_first).to(dtype=torch.float64)
    state = _state(arch, (num_layers, BATCH, HIDDEN)) if with_state else None
    _check(layer, _input(batch_first), state)  # random gradients for the output *and* the final state


def _assert_parameter_grads_match(ours: Any, reference: nn.Module, label: str) -> None:
    """Same parameter names, in torch's order, and each gradient equal to the torch module's."""
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in reference.named_parameters()]
    for (name, p), want in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert_close(p.grad, want.grad, name=f"{label} grad of {name}")


@architectures
@pytest.mark.parametrize("batch_first", [False, True])
def test_backward_matches_torch(arch: str, batch_first: bool) -> None:
    """Against torch's own module (not autograd through our forward): input, initial state and every parameter."""
    torch.manual_seed(0)
    ours, theirs = LAYERS[arch]
    reference = theirs(IN, HIDDEN, num_layers=2, batch_first=batch_first).double()
    layer = ours.from_torch(reference)
    x, shape = _input(batch_first), (2, BATCH, HIDDEN)
    state = _state(arch, shape)
    x_torch = x.clone().requires_grad_(True)
    state_torch = tuple(s.clone().requires_grad_(True) for s in _parts(state))
    output, final = reference(x_torch, state_torch if arch == "lstm" else state_torch[0])
    (g,) = random_inputs(output.shape, seed=2)
    grad_final = _parts(_state(arch, shape, seed=3))
    torch.autograd.backward([output, *_parts(final)], [g, *grad_final])

    layer(x, state)
    grad_x, grad_state = layer.backward(g, grad_final if arch == "lstm" else grad_final[0])
    assert_close(grad_x, x_torch.grad, name=f"{arch} grad of input")
    _assert_states_close(grad_state, tuple(s.grad for s in state_torch), f"{arch} grad of initial state")
    _assert_parameter_grads_match(layer, reference, arch)


@architectures
@pytest.mark.parametrize("num_layers", [1, 2])
def test_backward_loss_on_final_state_only(arch: str, num_layers: int) -> None:
    torch.manual_seed(0)
    layer = LAYERS[arch][0](IN, HIDDEN, num_layers=num_layers).to(dtype=torch.float64)
    shape = (num_layers, BATCH, HIDDEN)
    grad = (torch.zeros(STEPS, BATCH, HIDDEN, dtype=torch.float64), _state(arch, shape, seed=7))
    _check(layer, _input(False), _state(arch, shape), grad_output=grad)


@architectures
def test_backward_call_forms_agree(arch: str) -> None:
    """``backward(g, gs)`` == ``backward((g, gs))``; a missing state gradient counts as zeros."""
    torch.manual_seed(0)
    layer = LAYERS[arch][0](IN, HIDDEN, num_layers=2).to(dtype=torch.float64)
    x, state = _input(False), _state(arch, (2, BATCH, HIDDEN))
    (g,) = random_inputs((STEPS, BATCH, HIDDEN), seed=3)
    zeros = tuple(torch.zeros(2, BATCH, HIDDEN, dtype=torch.float64) for _ in _parts(state))
    layer(x, state)
    two_args = layer.backward(g, None)
    pair = layer.backward((g, None))
    explicit = layer.backward(g, zeros if arch == "lstm" else zeros[0])
    partial = layer.backward(g, (zeros[0], None) if arch == "lstm" else None)  # LSTM: dh given, dc absent
    for other in (pair, explicit, partial):
        assert_close(other[0], two_args[0], name="grad_input")
        _assert_states_close(other[1], two_args[1], "grad_initial_state")


@architectures
def test_without_state_grad_initial_state_is_none(arch: str) -> None:
    layer = LAYERS[arch][0](IN, HIDDEN).to(dtype=torch.float64)
    output, _ = layer(_input(False))
    grad_input, grad_state = layer.backward(torch.ones_like(output))
    assert grad_input.shape == (STEPS, BATCH, IN)
    assert grad_state is None


@architectures
def test_parameter_names_and_state_dict_match_torch(arch: str) -> None:
    torch.manual_seed(0)
    ours, theirs = LAYERS[arch]
    reference = theirs(IN, HIDDEN, num_layers=2).double()
    layer = ours(IN, HIDDEN, num_layers=2).to(dtype=torch.float64)
    assert list(layer.state_dict()) == list(reference.state_dict())
    layer.load_state_dict(reference.state_dict())
    x = _input(False)
    assert_close(layer(x)[0], reference(x)[0].detach(), name=f"{arch} output after load_state_dict")


@architectures
def test_init_is_uniform_within_one_over_sqrt_hidden(arch: str) -> None:
    torch.manual_seed(0)
    layer = LAYERS[arch][0](64, 256, num_layers=2)
    bound = 1 / math.sqrt(256)
    for name, p in layer.named_parameters():
        assert p.data.abs().max() <= bound, name
        if p.data.dim() == 2:
            assert abs(p.data.std().item() - bound / math.sqrt(3)) < 0.05 * bound, name  # std of U(-b, b)


@architectures
def test_gradients_accumulate(arch: str) -> None:
    torch.manual_seed(0)
    layer = LAYERS[arch][0](IN, HIDDEN).to(dtype=torch.float64)
    x = _input(False)
    output, _ = layer(x)
    layer.backward(torch.ones_like(output))
    once = [p.grad.clone() for p in layer.parameters()]
    layer.backward(torch.ones_like(output))
    for p, g in zip(layer.parameters(), once, strict=True):
        assert_close(p.grad, 2 * g, name="grad after two backward calls")


# --------------------------------------------------------------------------- truncated BPTT


@architectures
@pytest.mark.parametrize("batch_first", [False, True])
def test_chunks_with_carried_state_equal_the_whole_sequence(arch: str, batch_first: bool) -> None:
    torch.manual_seed(0)
    layer = LAYERS[arch][0](IN, HIDDEN, num_layers=2, batch_first=batch_first).to(dtype=torch.float64)
    x = _input(batch_first, steps=6)
    time = 1 if batch_first else 0
    whole, whole_state = layer(x)
    first, state = layer(x.narrow(time, 0, 2))
    second, state = layer(x.narrow(time, 2, 4), detach_state(state))
    # equal up to float64 rounding: the input projection is one matmul over T*N rows, whose
    # BLAS kernel may differ with the number of rows
    exact = {"atol": 1e-13, "rtol": 1e-13}
    assert_close(torch.cat([first, second], dim=time), whole, name="chunked output", **exact)
    _assert_states_close(state, whole_state, "chunked final state", **exact)


@architectures
def test_chunk_gradients_match_autograd_with_detached_state(arch: str) -> None:
    """Two chunks, backward after each, state carried: the gradients torch gets with ``.detach()`` between."""
    torch.manual_seed(0)
    ours, theirs = LAYERS[arch]
    reference = theirs(IN, HIDDEN, num_layers=2).double()
    layer = ours.from_torch(reference)
    x = _input(False, steps=6)
    g1, g2 = random_inputs((2, BATCH, HIDDEN), (4, BATCH, HIDDEN), seed=5)

    out, state = reference(x[:2])
    (out * g1).sum().backward()
    out, _ = reference(x[2:], tuple(s.detach() for s in state) if arch == "lstm" else state.detach())
    (out * g2).sum().backward()

    _, state = layer(x[:2])
    layer.backward(g1)
    carried = detach_state(state)
    layer(x[2:], carried)
    grad_x2, _dropped = layer.backward(g2)
    for (name, p), (_, want) in zip(layer.named_parameters(), reference.named_parameters(), strict=True):
        assert_close(p.grad, want.grad, name=f"{arch} {name} grad over two chunks")

    # and chunk 2 alone, initial state included, via check_backward
    _check(ours.from_torch(reference), x[2:], carried)
    assert grad_x2.shape == (4, BATCH, IN)


def test_detach_state() -> None:
    h = torch.randn(1, 2, 3, requires_grad=True) * 2
    c = torch.randn(1, 2, 3, requires_grad=True) * 2
    assert detach_state(None) is None
    assert not detach_state(h).requires_grad  # type: ignore[union-attr]
    pair = detach_state((h, c))
    assert isinstance(pair, tuple)
    assert len(pair) == 2
    assert not any(s.requires_grad for s in pair)
    assert torch.equal(pair[0], h.detach())


# --------------------------------------------------------------------------- cells


def _cell_pair(arch: str, with_state: bool) -> tuple[Any, Any, Tensor, Any]:
    """Our cell made from a float64 torch cell, an input, and a state (or ``None``)."""
    torch.manual_seed(0)
    ours, theirs = CELLS[arch]
    reference = theirs(IN, HIDDEN).double()
    (x,) = random_inputs((BATCH, IN))
    return ours.from_torch(reference), reference, x, _state(arch, (BATCH, HIDDEN)) if with_state else None


@architectures
@pytest.mark.parametrize("with_state", [False, True])
def test_cell_forward_matches_torch(arch: str, with_state: bool) -> None:
    cell, reference, x, state = _cell_pair(arch, with_state)
    _assert_states_close(cell(x, state), reference(x, state), f"{arch} cell")


@architectures
@pytest.mark.parametrize("with_state", [False, True])
def test_cell_backward_matches_autograd(arch: str, with_state: bool) -> None:
    torch.manual_seed(0)
    cell = CELLS[arch][0](IN, HIDDEN).to(dtype=torch.float64)
    (x,) = random_inputs((BATCH, IN))
    _check(cell, x, _state(arch, (BATCH, HIDDEN)) if with_state else None)


@architectures
@pytest.mark.parametrize("with_state", [False, True])
def test_cell_backward_matches_torch(arch: str, with_state: bool) -> None:
    cell, reference, x, state = _cell_pair(arch, with_state)
    x_torch = x.clone().requires_grad_(True)
    state_torch = tuple(s.clone().requires_grad_(True) for s in _parts(state))
    new = reference(x_torch, None if not state_torch else state_torch if arch == "lstm" else state_torch[0])
    grad_new = _parts(_state(arch, (BATCH, HIDDEN), seed=4))
    torch.autograd.backward(list(_parts(new)), list(grad_new))

    cell(x, state)
    grad_x, grad_state = cell.backward(grad_new if arch == "lstm" else grad_new[0])
    assert_close(grad_x, x_torch.grad, name=f"{arch} cell grad of input")
    _assert_states_close(grad_state, tuple(s.grad for s in state_torch), f"{arch} cell grad of state")
    _assert_parameter_grads_match(cell, reference, f"{arch} cell")


@architectures
def test_cell_is_one_step_of_the_layer(arch: str) -> None:
    torch.manual_seed(0)
    layer = LAYERS[arch][0](IN, HIDDEN).to(dtype=torch.float64)
    cell = CELLS[arch][0](IN, HIDDEN).to(dtype=torch.float64)
    cell.load_state_dict({name[: -len("_l0")]: value for name, value in layer.state_dict().items()})
    x = _input(False, steps=1)
    _, final = layer(x)
    _assert_states_close(cell(x[0]), tuple(s[0] for s in _parts(final)), f"{arch} cell vs layer")


# --------------------------------------------------------------------------- validation


@architectures
def test_input_shape_and_dtype_errors(arch: str) -> None:
    layer = LAYERS[arch][0](IN, HIDDEN, num_layers=2)
    with pytest.raises(ValueError, match=rf"\(T, N, {IN}\).*got \(3, {IN}\)"):
        layer(torch.randn(3, IN))  # unbatched input is not supported
    with pytest.raises(ValueError, match=r"got \(5, 3, 7\)"):
        layer(torch.randn(5, 3, 7))
    with pytest.raises(ValueError, match=r"dtype torch\.float32.*got torch\.float64"):
        layer(torch.randn(5, 3, IN, dtype=torch.float64))
    small = torch.zeros(1, 3, HIDDEN)
    with pytest.raises(ValueError, match=r"state h of shape \(2, 3, 5\), got \(1, 3, 5\)"):
        layer(torch.randn(5, 3, IN), (small, small) if arch == "lstm" else small)
    cell = CELLS[arch][0](IN, HIDDEN)
    with pytest.raises(ValueError, match=rf"\(N, {IN}\), got \(5, 3, {IN}\)"):
        cell(torch.randn(5, 3, IN))


def test_lstm_state_must_be_a_pair() -> None:
    with pytest.raises(ValueError, match=r"tuple \(h, c\).*got Tensor"):
        LSTM(IN, HIDDEN)(torch.randn(5, 3, IN), torch.zeros(1, 3, HIDDEN))
    with pytest.raises(ValueError, match=r"tuple \(h, c\).*got Tensor"):
        LSTMCell(IN, HIDDEN)(torch.randn(3, IN), torch.zeros(3, HIDDEN))


def _zeros(arch: str, shape: tuple[int, ...]) -> Tensor | tuple[Tensor, Tensor]:
    return (torch.zeros(shape), torch.zeros(shape)) if arch == "lstm" else torch.zeros(shape)


@architectures
def test_backward_errors(arch: str) -> None:
    layer = LAYERS[arch][0](IN, HIDDEN)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(torch.zeros(STEPS, BATCH, HIDDEN))
    with pytest.raises(RuntimeError, match="before forward"):
        CELLS[arch][0](IN, HIDDEN).backward(torch.zeros(BATCH, HIDDEN))
    layer(torch.randn(STEPS, BATCH, IN))
    with pytest.raises(ValueError, match=r"backward expects grad_output .* shape \(5, 3, 5\), got \(5, 3, 4\)"):
        layer.backward(torch.zeros(STEPS, BATCH, 4))
    with pytest.raises(ValueError, match=r"shape \(5, 3, 5\), got \(3, 5, 5\)"):  # batch-first for time-major
        layer.backward(torch.zeros(BATCH, STEPS, HIDDEN))
    with pytest.raises(TypeError, match=r"expects a torch\.Tensor"):
        layer.backward(0.0)
    with pytest.raises(ValueError, match=r"gradient of state h of shape \(1, 3, 5\), got \(3, 5\)"):
        layer.backward(torch.zeros(STEPS, BATCH, HIDDEN), _zeros(arch, (BATCH, HIDDEN)))  # (N, H), not (L, N, H)
    batch_first = LAYERS[arch][0](IN, HIDDEN, batch_first=True)
    batch_first(torch.randn(BATCH, STEPS, IN))
    with pytest.raises(ValueError, match=r"shape \(3, 5, 5\), got \(5, 3, 5\)"):  # time-major for batch-first
        batch_first.backward(torch.zeros(STEPS, BATCH, HIDDEN))
    cell = CELLS[arch][0](IN, HIDDEN)
    cell(torch.randn(BATCH, IN))
    with pytest.raises(ValueError, match=r"gradient of state h of shape \(3, 5\), got \(5, 3\)"):
        cell.backward(_zeros(arch, (HIDDEN, BATCH)))


@architectures
def test_unsupported_options(arch: str) -> None:
    ours, theirs = LAYERS[arch]
    with pytest.raises(ValueError, match="bias=True only"):
        ours(IN, HIDDEN, bias=False)
    for kwargs, option in [({"bidirectional": True}, "bidirectional"), ({"num_layers": 2, "dropout": 0.5}, "dropout")]:
        with pytest.raises(ValueError, match=option):
            ours.from_torch(theirs(IN, HIDDEN, **kwargs))
    other = "gru" if arch != "gru" else "lstm"
    with pytest.raises(ValueError, match="torch counterpart"):
        ours.from_torch(LAYERS[other][1](IN, HIDDEN))
    with pytest.raises(ValueError, match="torch counterpart"):
        CELLS[arch][0].from_torch(CELLS[other][1](IN, HIDDEN))


def test_a_torch_rnn_of_the_other_nonlinearity_is_refused() -> None:
    with pytest.raises(ValueError, match="does not support nonlinearity='relu'"):
        RNN.from_torch(nn.RNN(IN, HIDDEN, nonlinearity="relu"))
    with pytest.raises(ValueError, match="does not support nonlinearity='tanh'"):
        ReLURNN.from_torch(nn.RNN(IN, HIDDEN))
    with pytest.raises(ValueError, match="does not support nonlinearity='relu'"):
        RNNCell.from_torch(nn.RNNCell(IN, HIDDEN, nonlinearity="relu"))


@architectures
def test_no_cache_keeps_nothing(arch: str) -> None:
    layer, cell = LAYERS[arch][0](3, 4, num_layers=2), CELLS[arch][0](3, 4)
    x = torch.randn(5, 2, 3)
    layer(x)
    cell(x[0])
    assert cached_tensors(layer)
    assert cached_tensors(cell)
    with no_cache():
        output, _ = layer(x)
        cell(x[0])
    assert cached_tensors(layer) == cached_tensors(cell) == {}
    for module, grad in ((layer, torch.ones_like(output)), (cell, torch.ones(2, 4))):
        with pytest.raises(RuntimeError, match="no_cache"):
            module.backward(grad)


def test_gru_step_cache_keeps_only_its_own_memory() -> None:
    # h_n (N, H) was a view of the step's (N, 3H) product W_hh h + b_hh, which kept all of it alive
    layer = GRU(3, 4, num_layers=2)
    layer(torch.randn(5, 2, 3))
    for k, layer_cache in enumerate(layer._caches):
        for t, (_, _, _, _, h_n) in enumerate(layer_cache.steps):
            assert h_n.untyped_storage().nbytes() == h_n.numel() * h_n.element_size(), (k, t)
