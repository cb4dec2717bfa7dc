"""Optimizers and gradient clipping against torch.optim / torch.nn.utils, step by step in float64."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch

from scratch_engine.layers import Dense
from scratch_engine.module import Parameter, Sequential
from scratch_engine.optim import Adam, AdamW, GradientDescent, Optimizer, clip_grad_norm
from scratch_engine.tools.testing import assert_close, random_inputs

SHAPES = [(4, 3), (3,), (2, 2, 2)]


def _twins(seed: int = 0) -> tuple[list[Parameter], list[torch.Tensor]]:
    """The same starting values as our Parameters and as torch leaf tensors."""
    values = random_inputs(*SHAPES, seed=seed)
    return [Parameter(v.clone()) for v in values], [v.clone().requires_grad_(True) for v in values]


def _gradient(params: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    """A gradient that depends on the current parameters (a quartic bowl) plus seeded noise."""
    noise = random_inputs(*SHAPES, seed=100 + step)
    return [p**3 - 0.5 * p + n for p, n in zip(params, noise, strict=True)]


def _run_against_torch(
    make_ours: Callable[[list[Parameter]], Optimizer],
    make_torch: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    steps: int = 12,
) -> None:
    ours, theirs = _twins()
    opt, ref = make_ours(ours), make_torch(theirs)
    for step in range(steps):
        for p, g in zip(ours, _gradient([p.data for p in ours], step), strict=True):
            p.grad.copy_(g)
        for t, g in zip(theirs, _gradient([t.detach() for t in theirs], step), strict=True):
            t.grad = g.clone()
        opt.step()
        ref.step()
        for i, (p, t) in enumerate(zip(ours, theirs, strict=True)):
            assert_close(p.data, t.detach(), name=f"parameter {i} after step {step + 1}")


SGD_CASES = [
    pytest.param({}, id="plain"),
    pytest.param({"momentum": 0.9}, id="momentum"),
    pytest.param({"momentum": 0.9, "nesterov": True}, id="nesterov"),
    pytest.param({"momentum": 0.8, "dampening": 0.3}, id="dampening"),
    pytest.param({"weight_decay": 0.05}, id="weight_decay"),
    pytest.param({"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, id="nesterov+wd"),
    pytest.param({"momentum": 0.7, "dampening": 0.5, "weight_decay": 0.1}, id="all"),
]


FOREACH = pytest.mark.parametrize("foreach", [False, True], ids=["one_by_one", "foreach"])


@FOREACH
@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_gradient_descent_matches_torch_sgd(kwargs: dict, foreach: bool) -> None:
    _run_against_torch(
        lambda ps: GradientDescent(ps, learning_rate=0.05, foreach=foreach, **kwargs),
        lambda ts: torch.optim.SGD(ts, lr=0.05, **kwargs),
    )


ADAM_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"betas": (0.8, 0.95), "eps": 1e-6}, id="betas_eps"),
    pytest.param({"weight_decay": 0.1}, id="weight_decay"),
]


@FOREACH
@pytest.mark.parametrize("kwargs", ADAM_CASES)
def test_adam_matches_torch(kwargs: dict, foreach: bool) -> None:
    _run_against_torch(
        lambda ps: Adam(ps, learning_rate=0.01, foreach=foreach, **kwargs),
        lambda ts: torch.optim.Adam(ts, lr=0.01, **kwargs),
    )


@FOREACH
@pytest.mark.parametrize("kwargs", [*ADAM_CASES, pytest.param({"weight_decay": 0.0}, id="no_decay")])
def test_adamw_matches_torch(kwargs: dict, foreach: bool) -> None:
    _run_against_torch(
        lambda ps: AdamW(ps, learning_rate=0.01, foreach=foreach, **kwargs),
        lambda ts: torch.optim.AdamW(ts, lr=0.01, **kwargs),
    )


def test_learning_rate_change_is_used() -> None:
    """A schedule sets ``learning_rate`` between steps; torch's param_groups lr is the twin."""
    ours, theirs = _twins()
    opt, ref = Adam(ours, learning_rate=0.01), torch.optim.Adam(theirs, lr=0.01)
    for step in range(6):
        opt.learning_rate = ref.param_groups[0]["lr"] = 0.01 / (step + 1)
        for p, t, g in zip(ours, theirs, _gradient([p.data for p in ours], step), strict=True):
            p.grad.copy_(g)
            t.grad = g.clone()
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs, strict=True):
        assert_close(p.data, t.detach(), name="parameter after lr changes")


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: GradientDescent(ps, learning_rate=0.05, momentum=0.9, nesterov=True),
        lambda ps: Adam(ps, learning_rate=0.01, weight_decay=0.1),
        lambda ps: AdamW(ps, learning_rate=0.01),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_state_dict_round_trip_continues_identically(make: Callable[[list[Parameter]], Optimizer]) -> None:
    reference, _ = _twins()
    opt = make(reference)

    def train(optimizer: Optimizer, params: list[Parameter], steps: range) -> None:
        for step in steps:
            for p, g in zip(params, _gradient([p.data for p in params], step), strict=True):
                p.grad.copy_(g)
            optimizer.step()

    train(opt, reference, range(5))
    opt.learning_rate *= 0.5  # a schedule's change must survive the round trip too
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "params": [p.data.clone() for p in reference]}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = [Parameter(v) for v in saved["params"]]
    fresh = make(resumed)
    fresh.load_state_dict(saved["optimizer"])
    assert fresh.learning_rate == opt.learning_rate
    train(opt, reference, range(5, 10))
    train(fresh, resumed, range(5, 10))
    for i, (a, b) in enumerate(zip(reference, resumed, strict=True)):
        assert torch.equal(a.data, b.data), f"parameter {i} diverged after resuming"


def test_state_dict_is_a_copy_and_load_checks_shapes() -> None:
    params, _ = _twins()
    opt = Adam(params)
    for p in params:
        p.grad.fill_(1.0)
    opt.step()
    state = opt.state_dict()
    opt.step()
    assert state["state"][0]["step"] == 1
    assert not torch.equal(state["state"][0]["exp_avg"], opt.state[0]["exp_avg"])
    with pytest.raises(ValueError, match="3 parameters but the state dict has 2"):
        opt.load_state_dict({"learning_rate": 0.1, "state": state["state"][:2]})
    state["state"][1]["exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 1 has shape \(5,\).*\(3,\)"):
        opt.load_state_dict(state)


def test_the_state_of_another_optimizer_type_is_refused_and_old_untyped_states_load() -> None:
    params, _ = _twins()
    sgd = GradientDescent(params, learning_rate=0.1, momentum=0.9)
    for p in params:
        p.grad.fill_(1.0)
    sgd.step()
    state = sgd.state_dict()
    assert state["type"] == "GradientDescent"
    with pytest.raises(ValueError, match="the state of a GradientDescent optimizer cannot be loaded into Adam"):
        Adam(params).load_state_dict(state)  # it used to load, and fail at the next step on a KeyError 'step'
    with pytest.raises(ValueError, match="the state of a GradientDescent optimizer cannot be loaded into AdamW"):
        AdamW(params).load_state_dict(state)
    untyped = {key: value for key, value in state.items() if key != "type"}  # a checkpoint from before the type
    fresh = GradientDescent(params, learning_rate=0.5, momentum=0.9)
    fresh.load_state_dict(untyped)
    assert torch.equal(fresh.state[0]["momentum_buffer"], sgd.state[0]["momentum_buffer"])


def test_accepts_a_module_and_zero_grad() -> None:
    torch.manual_seed(0)
    model = Sequential(Dense(3, 4), Dense(4, 2))
    opt = GradientDescent(model, learning_rate=0.1)
    assert len(opt.params) == 4
    for p in model.parameters():
        p.grad.fill_(1.0)
    before = [p.data.clone() for p in model.parameters()]
    opt.step()
    for b, p in zip(before, model.parameters(), strict=True):
        assert_close(p.data, b - 0.1, name="plain step")
    opt.zero_grad()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_hyperparameter_validation() -> None:
    params, _ = _twins()
    cases = [
        (lambda: GradientDescent(params, learning_rate=-0.1), "learning_rate"),
        (lambda: GradientDescent(params, 0.1, momentum=-0.5), "momentum"),
        (lambda: GradientDescent(params, 0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: GradientDescent(params, 0.1, dampening=1.5), "dampening"),
        (lambda: GradientDescent(params, 0.1, nesterov=True), "nesterov needs momentum > 0"),
        (lambda: GradientDescent(params, 0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening = 0"),
        (lambda: Adam(params, betas=(1.0, 0.999)), r"betas\[0\]"),
        (lambda: Adam(params, betas=(0.9, -0.1)), r"betas\[1\]"),
        (lambda: Adam(params, eps=-1e-8), "eps"),
        (lambda: AdamW(params, weight_decay=-0.01), "weight_decay"),
        (lambda: Adam([]), "empty parameter list"),
        (lambda: Adam([params[0], params[0]]), "more than once"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(TypeError, match="not a scratch_engine Parameter"):
        Adam([torch.zeros(3)])  # type: ignore[list-item]


@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "no_clip"])
def test_clip_grad_norm_matches_torch(max_norm: float) -> None:
    ours, theirs = _twins()
    grads = random_inputs(*SHAPES, seed=42)
    for p, t, g in zip(ours, theirs, grads, strict=True):
        p.grad.copy_(g)
        t.grad = g.clone()
    norm = clip_grad_norm(ours, max_norm)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm.dim() == 0
    assert_close(norm, want, name="returned norm")
    for i, (p, t) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(p.grad, t.grad, name=f"clipped grad {i}")
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in ours]))
    assert clipped.item() <= max_norm + 1e-9
    if max_norm > norm.item():
        for p, g in zip(ours, grads, strict=True):
            assert torch.equal(p.grad, g)


@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "no_clip"])
def test_clip_grad_norm_of_mixed_dtypes_matches_torch(max_norm: float) -> None:
    """float64 and float32 gradients together: the one-norm-per-parameter path, not the multi-tensor one."""
    values, grads = random_inputs(*SHAPES, seed=3), random_inputs(*SHAPES, seed=4)
    dtypes = [torch.float64, torch.float32, torch.float64]
    ours = [Parameter(v.to(d, copy=True)) for v, d in zip(values, dtypes, strict=True)]
    theirs = [v.to(d, copy=True).requires_grad_(True) for v, d in zip(values, dtypes, strict=True)]
    for p, t, g, d in zip(ours, theirs, grads, dtypes, strict=True):
        p.grad.copy_(g)
        t.grad = g.to(d, copy=True)
    norm = clip_grad_norm(ours, max_norm)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert_close(norm, want, name="returned norm")
    assert norm.item() > 1.0  # so max_norm=0.5 does clip
    for i, (p, t) in enumerate(zip(ours, theirs, strict=True)):
        assert p.grad.dtype == dtypes[i]
        assert_close(p.grad, t.grad, name=f"clipped grad {i}")


@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("mixed", [False, True], ids=["one_kernel", "per_parameter"])
def test_clip_grad_norm_with_a_non_finite_gradient_as_torch(bad: float, mixed: bool) -> None:
    dtypes = [torch.float64, torch.float32 if mixed else torch.float64, torch.float64]
    grads = [g.to(d) for g, d in zip(random_inputs(*SHAPES, seed=5), dtypes, strict=True)]
    grads[1].view(-1)[0] = bad
    ours = [Parameter(torch.zeros_like(g)) for g in grads]
    theirs = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, t, g in zip(ours, theirs, grads, strict=True):
        p.grad.copy_(g)
        t.grad = g.clone()
    norm = clip_grad_norm(ours, 1.0)  # as torch's default: scaled by the non-finite norm
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert torch.equal(norm.isnan(), want.isnan())
    for p, t in zip(ours, theirs, strict=True):
        assert torch.equal(p.grad.isnan(), t.grad.isnan())


def test_clip_grad_norm_accepts_module() -> None:
    torch.manual_seed(0)
    model = Dense(3, 2)
    for p in model.parameters():
        p.grad.fill_(10.0)
    norm = clip_grad_norm(model, 1.0)
    assert_close(norm, torch.tensor(10.0 * 8**0.5), atol=1e-5, rtol=1e-6, name="norm")
    total = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    assert_close(total, torch.tensor(1.0), atol=1e-5, rtol=1e-5, name="clipped norm")
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(model, -1.0)


def test_step_and_clip_never_read_values_back() -> None:
    """On the meta device any host sync (``.item()``, ``bool(tensor)``) raises, so this proves there is none."""
    params = [Parameter(torch.empty(3, 4, device="meta")), Parameter(torch.empty(5, device="meta"))]
    for opt in (
        GradientDescent(params, 0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
        Adam(params, weight_decay=0.1),
        AdamW(params),
    ):
        opt.step()
        opt.step()
    mixed = [Parameter(torch.empty(2, dtype=torch.float64, device="meta")), Parameter(torch.empty(5, device="meta"))]
    clip_paths = [mixed]  # one norm per parameter
    try:
        torch._foreach_norm([torch.empty(1, device="meta")])
        clip_paths.append(params)  # torch's multi-tensor norm, which has no meta kernel in older torch (2.1)
    except NotImplementedError:
        pass
    for clipped in clip_paths:
        norm = clip_grad_norm(clipped, 1.0)
        assert norm.device.type == "meta"
