"""Number formats: float64/float32 casts and bfloat16 mixed precision with float32 master weights."""

from __future__ import annotations

import pytest
import torch

from scratch_engine import (
    GELU,
    Adam,
    BatchNorm1d,
    CrossEntropyLoss,
    DataLoader,
    Dense,
    Embedding,
    Engine,
    GradientDescent,
    MSELoss,
    ReLU,
    Sequential,
)
from scratch_engine.tools.callbacks import EarlyStopping
from scratch_engine.tools.checkpoint import load_checkpoint, save_checkpoint
from scratch_engine.tools.precision import Precision, cast_floating, resolve_dtype, run_dtype
from scratch_engine.tools.testing import assert_bfloat16_close, precision_errors, random_inputs, seeded_generator


def clusters(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = seeded_generator(seed)
    centers = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    y = torch.arange(4).repeat_interleave(n // 4)
    return centers[y] + 0.7 * torch.randn(len(y), 2, generator=generator), y


def mlp() -> Sequential:
    return Sequential([Dense(2, 64), ReLU(), BatchNorm1d(64), Dense(64, 64), GELU(), Dense(64, 4)])


def test_resolve_dtype_names_the_choices() -> None:
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype(torch.float64) is torch.float64
    assert resolve_dtype(None) is None
    with pytest.raises(ValueError, match=r"float16.*float64, float32, bfloat16"):
        resolve_dtype("float16")


def test_cast_floating_leaves_integer_tensors_alone() -> None:
    ids, x = torch.tensor([1, 2]), torch.ones(2)
    cast = cast_floating((ids, {"x": x}), torch.bfloat16)
    assert cast[0].dtype == torch.int64
    assert cast[1]["x"].dtype == torch.bfloat16


def test_run_dtype_is_the_one_rule_for_a_runs_format() -> None:
    assert (run_dtype(None), run_dtype(None, reference=True)) == ("float32", "float64")
    assert run_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="unsupported dtype 'float16'"):
        run_dtype("float16")


def _mixed(model: Sequential, optimizer: GradientDescent | Adam) -> Engine:
    return Engine(model, CrossEntropyLoss(), optimizer, progress=False, callbacks=[Precision("bfloat16")])


def test_mixed_precision_needs_float32_masters() -> None:
    model = Sequential([Dense(2, 2)]).to(dtype=torch.float64)
    with pytest.raises(ValueError, match=r"float32 master weights.*float64"):
        _mixed(model, Adam(model))


def test_master_weights_keep_updates_that_bfloat16_would_round_away() -> None:
    """A weight of 1 moved by 1e-4 per step: bfloat16 alone (spacing 2^-7 at 1) would never move."""
    layer = Dense(1, 1, bias=False)
    layer.weight.data.fill_(1.0)
    engine = _mixed(Sequential([layer]), GradientDescent(layer, learning_rate=1e-4))
    mixed = engine.callbacks[0]
    assert isinstance(mixed, Precision)
    assert mixed.compute is engine.net
    alone = torch.ones((), dtype=torch.bfloat16)
    for _ in range(200):
        engine.net.zero_grad()
        mixed.compute.layers[0].weight.grad.fill_(1.0)
        engine.update()  # the bf16 gradient to the master, the step on it, the master back to the copy
        alone -= 1e-4
    assert layer.weight.data.dtype == torch.float32
    assert layer.weight.data.item() == pytest.approx(1.0 - 200 * 1e-4, abs=1e-5)  # float32 rounding
    assert alone.item() == 1.0  # the lost updates
    assert mixed.compute.layers[0].weight.data.dtype == torch.bfloat16
    assert mixed.compute.layers[0].weight.data.item() == pytest.approx(0.98, abs=4e-3)  # the master, rounded


def test_losses_reduce_bfloat16_in_float32_and_return_bfloat16_gradients() -> None:
    (logits,) = random_inputs((64, 10), dtype=torch.float32)
    target = torch.randint(0, 10, (64,), generator=seeded_generator(0))
    for loss_fn, tgt in ((CrossEntropyLoss(label_smoothing=0.1), target), (MSELoss(), torch.zeros(64, 10))):
        full = loss_fn(logits, tgt)
        full_grad = loss_fn.backward()
        low = loss_fn(logits.bfloat16(), tgt)
        low_grad = loss_fn.backward()
        assert low.dtype == torch.bfloat16
        assert low_grad.dtype == torch.bfloat16
        assert float(low) == pytest.approx(float(full), rel=1e-2)
        assert float((low_grad.float() - full_grad).norm() / full_grad.norm()) < 1e-2


def test_bfloat16_forward_and_backward_of_shared_layers_stay_within_tolerance() -> None:
    torch.manual_seed(0)
    (x,) = random_inputs((32, 2), dtype=torch.float32)
    errors = precision_errors(mlp(), x)
    assert_bfloat16_close(errors)
    ids = torch.randint(0, 50, (8, 12), generator=seeded_generator(1))
    errors = precision_errors(Sequential([Embedding(50, 16), Dense(16, 8)]), ids)
    assert_bfloat16_close(errors)


def train(dtype: str, epochs: int = 4) -> tuple[Engine, dict[str, float]]:
    torch.manual_seed(0)
    X, y = clusters()
    model = mlp()
    engine = Engine(model, CrossEntropyLoss(), Adam(model, 1e-2), progress=False, callbacks=[Precision(dtype)])
    engine.fit(DataLoader(X, y, batch_size=64, seed=0), epochs)
    return engine, engine.evaluate(DataLoader(*clusters(seed=1), batch_size=256, shuffle=False))


def test_engine_trains_in_bfloat16_mixed_precision_about_as_well_as_float32() -> None:
    _, full = train("float32")
    mixed_engine, mixed = train("bfloat16")
    assert mixed_engine.net is mixed_engine.callbacks[0].compute  # type: ignore[attr-defined]
    assert {p.data.dtype for p in mixed_engine.model.parameters()} == {torch.float32}  # masters
    assert {p.data.dtype for p in mixed_engine.net.parameters()} == {torch.bfloat16}
    assert mixed_engine.history["loss"][-1] < 0.5 * mixed_engine.history["loss"][0]
    assert mixed["accuracy"] > 0.95
    assert abs(mixed["accuracy"] - full["accuracy"]) < 0.02
    # the running statistics were carried back from the compute copy to the master model
    master_bn = mixed_engine.model.layers[2]
    assert torch.allclose(master_bn.running_mean, mixed_engine.net.layers[2].running_mean.float())
    assert master_bn.running_mean.abs().sum() > 0


def test_engine_float64_casts_the_model_and_the_inputs() -> None:
    engine, logs = train("float64", epochs=1)
    assert engine.net is engine.model
    assert {p.data.dtype for p in engine.model.parameters()} == {torch.float64}
    assert logs["accuracy"] > 0.8


def test_mixed_precision_checkpoint_resumes_exactly(tmp_path) -> None:
    engine, _ = train("bfloat16", epochs=1)
    save_checkpoint(engine, tmp_path / "ckpt.pt")
    torch.manual_seed(1)
    model = mlp()
    restored = _mixed(model, Adam(model, 1e-2))
    load_checkpoint(restored, tmp_path / "ckpt.pt")
    for a, b in zip(engine.net.parameters(), restored.net.parameters(), strict=True):
        assert torch.equal(a.data, b.data)
    for a, b in zip(engine.model.parameters(), restored.model.parameters(), strict=True):
        assert torch.equal(a.data, b.data)


def test_early_stopping_restores_the_best_weights_into_the_bfloat16_compute_copy() -> None:
    # too high a rate: the validation loss rises after a few epochs and the run stops
    X, y = clusters(400)
    torch.manual_seed(0)
    model = Sequential(Dense(2, 32), ReLU(), Dense(32, 4))
    engine = _mixed(model, Adam(model, learning_rate=0.3))
    val = DataLoader(X[::2], y[::2], shuffle=False)
    stopper = EarlyStopping(patience=2)
    engine.fit(DataLoader(X[1::2], y[1::2], batch_size=8, seed=0), 30, val_loader=val, callbacks=[stopper])
    assert 0 < stopper.best_step < stopper.stopped_step == engine.global_step
    assert engine.history["val_loss"][-1] != stopper.best
    # evaluate and predict run the compute copy: it holds the restored weights, not the last epoch's
    assert engine.evaluate(val)["loss"] == stopper.best
    for master, compute in zip(engine.model.parameters(), engine.net.parameters(), strict=True):
        assert torch.equal(compute.data, master.data.to(torch.bfloat16))
