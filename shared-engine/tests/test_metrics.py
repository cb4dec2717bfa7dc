"""The accuracy metric and the running means the engine logs, against hand-counted values and torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from scratch_engine import CrossEntropyLoss, DataLoader, Dense, Engine, GradientDescent, ReLU, Sequential, accuracy
from scratch_engine.engine import Meter
from scratch_engine.tools.testing import assert_close, random_inputs, seeded_generator


def _logits() -> torch.Tensor:
    """``(2, 3, 4)`` logits whose arg-maxes are ``[[1, 3, 0], [2, 2, 1]]``."""
    logits = torch.zeros(2, 3, 4, dtype=torch.float64)
    for (b, t), c in {(0, 0): 1, (0, 1): 3, (0, 2): 0, (1, 0): 2, (1, 1): 2, (1, 2): 1}.items():
        logits[b, t, c] = 1.0
    return logits


def _added(total: torch.Tensor, count: torch.Tensor | int) -> tuple[int, int]:
    """What the meter adds up: every element of each."""
    return int(total.sum()), int(count if isinstance(count, int) else count.sum())


def test_accuracy_counts_hits_over_the_last_dimension() -> None:
    target = torch.tensor([[1, 0, 0], [2, 1, 1]])  # hits at (0, 0), (0, 2), (1, 0), (1, 2): 4 of 6
    total, count = accuracy(_logits(), target)
    assert _added(total, count) == (4, 6)
    assert total.tolist() == [[True, False, True], [True, False, True]]  # one per target, summed by the meter
    assert total.device == target.device


def test_accuracy_leaves_out_ignored_targets() -> None:
    target = torch.tensor([[1, -100, 0], [-100, 1, 1]])  # kept: 4; hits among them: (0, 0), (0, 2), (1, 2)
    total, count = accuracy(_logits(), target, ignore_index=-100)
    assert _added(total, count) == (3, 4)
    target[0, 1] = 3  # a kept target that the ignored position used to hide: one more hit, one more counted
    total, count = accuracy(_logits(), target, ignore_index=-100)
    assert _added(total, count) == (4, 5)


def test_accuracy_ignores_a_class_id_even_where_it_is_predicted() -> None:
    """ignore_index may be a real class: a position whose target and prediction are both that class is no hit."""
    target = torch.tensor([[1, 2, 0], [2, 1, 1]])  # (1, 0) predicts 2 and is ignored; kept hits: 3 of 4
    total, count = accuracy(_logits(), target, ignore_index=2)
    assert _added(total, count) == (3, 4)


def test_accuracy_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"logits \(\.\.\., C\) and targets \(\.\.\.\), got \(2, 3, 4\) and \(2, 4\)"):
        accuracy(_logits(), torch.zeros(2, 4, dtype=torch.long))


def test_the_meter_keeps_sample_weighted_means_and_the_first_non_finite_step() -> None:
    meter = Meter({"accuracy": accuracy}, torch.empty(()).device)
    logits, target = _logits().reshape(6, 4), torch.tensor([1, 0, 0, 2, 1, 1])
    meter.update(torch.tensor(2.0), logits[:4], target[:4], step=1)  # hits 3 of 4
    meter.update(torch.tensor(0.5), logits[4:], target[4:], step=2)  # hits 1 of 2
    assert meter.first_non_finite() is None
    logs = meter.compute()
    assert logs["loss"] == pytest.approx((2.0 * 4 + 0.5 * 2) / 6, rel=1e-12)
    assert logs["accuracy"] == pytest.approx(4 / 6, rel=1e-12)
    assert (meter.samples, meter.steps) == (6, 2)
    meter.update(torch.tensor(float("inf")), logits[:1], target[:1], step=3)
    meter.update(torch.tensor(float("nan")), logits[:1], target[:1], step=4)
    assert meter.first_non_finite() == (3, float("inf"))  # the first one, not the latest

    meter.update(torch.tensor(1.0), logits[:1], target[:1], step=5)
    assert meter.first_non_finite() == (3, float("inf"))  # later finite steps leave it

    opposite = Meter({}, torch.empty(()).device)  # +inf and -inf in one flush: their weighted sum is nan
    opposite.update(torch.tensor(1.0), logits[:1], target[:1], step=1)
    opposite.update(torch.tensor(float("-inf")), logits[:1], target[:1], step=2)
    opposite.update(torch.tensor(float("inf")), logits[:1], target[:1], step=3)
    assert opposite.first_non_finite() == (2, float("-inf"))


def test_a_metric_may_give_numbers_tensors_of_any_shape_or_both() -> None:
    """The meter adds up every element of a metric's total and count, whatever their form, in its own dtype."""

    def mixed(output: Tensor, target: Tensor) -> tuple[Tensor | float, int]:  # a number total for one target
        return (float(output.sum()) if len(target) == 1 else output.sum(dim=0)), len(target)

    meter = Meter({"mixed": mixed}, torch.empty(()).device)
    meter.update(torch.tensor(1.0), torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2), step=1)
    meter.update(torch.tensor(1.0), torch.tensor([[0.5, 0.25]]), torch.zeros(1), step=2)
    meter.flush()
    assert meter.totals["mixed"].tolist() == [10.75, 3.0]
    assert meter.compute()["mixed"] == pytest.approx(10.75 / 3, rel=1e-12)


def test_evaluate_logs_the_loss_and_accuracy_of_the_whole_set() -> None:
    """Batches of 7 over 30 samples (a short last batch): the means of the whole set, as torch computes them."""
    torch.manual_seed(0)
    model = Sequential(Dense(3, 8), ReLU(), Dense(8, 4)).to(dtype=torch.float64)
    (x,) = random_inputs((30, 3), seed=5)
    y = torch.randint(0, 4, (30,), generator=seeded_generator(6))
    engine = Engine(model, CrossEntropyLoss(), GradientDescent(model, 0.1), progress=False)
    logs = engine.evaluate(DataLoader(x, y, batch_size=7, shuffle=False))
    with torch.no_grad():
        logits = model(x)
    assert logs["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-12)
    assert logs["accuracy"] == pytest.approx((logits.argmax(dim=1) == y).double().mean().item(), rel=1e-12)
    assert_close(logits, model(x), name="evaluate left the model as it was")
