"""no_cache(): inference forwards keep nothing for a backward, and a backward after one says so."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from scratch_engine import (
    GELU,
    BatchNorm1d,
    BatchNorm2d,
    CrossEntropyLoss,
    DataLoader,
    Dense,
    Dropout,
    Embedding,
    Engine,
    GradientDescent,
    LeakyReLU,
    Module,
    MSELoss,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    caching,
    no_cache,
)
from scratch_engine.tools.testing import cached_tensors

LAYERS: dict[str, tuple[Callable[[], Module], Callable[[], torch.Tensor]]] = {
    "dense": (lambda: Dense(4, 3), lambda: torch.randn(5, 4)),
    "relu": (ReLU, lambda: torch.randn(5, 4)),
    "leaky_relu": (LeakyReLU, lambda: torch.randn(5, 4)),
    "tanh": (Tanh, lambda: torch.randn(5, 4)),
    "sigmoid": (Sigmoid, lambda: torch.randn(5, 4)),
    "gelu": (GELU, lambda: torch.randn(5, 4)),
    "dropout": (lambda: Dropout(0.5), lambda: torch.randn(5, 4)),  # in training mode: it draws a mask
    "embedding": (lambda: Embedding(10, 3), lambda: torch.randint(0, 10, (5, 2))),
    "batchnorm1d": (lambda: BatchNorm1d(4), lambda: torch.randn(5, 4)),
    "batchnorm2d": (lambda: BatchNorm2d(2), lambda: torch.randn(3, 2, 4, 4)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_forward_under_no_cache_keeps_nothing(name: str) -> None:
    make_layer, make_input = LAYERS[name]
    layer, x = make_layer(), make_input()
    y = layer(x)
    assert cached_tensors(layer), "a training forward keeps its cache (else this test could not fail)"
    layer.backward(torch.ones_like(y))
    with no_cache():
        y_inference = layer(x)
    assert cached_tensors(layer) == {}
    assert y_inference.shape == y.shape
    with pytest.raises(RuntimeError, match=r"backward called before forward \(a forward under no_cache\(\)"):
        layer.backward(torch.ones_like(y))


@pytest.mark.parametrize(
    ("loss", "target"),
    [(MSELoss(), torch.randn(6, 3)), (CrossEntropyLoss(), torch.randint(0, 3, (6,)))],
    ids=["mse", "cross_entropy"],
)
def test_losses_under_no_cache_keep_nothing(loss: MSELoss | CrossEntropyLoss, target: torch.Tensor) -> None:
    logits = torch.randn(6, 3)
    value = loss(logits, target)
    assert cached_tensors(loss)
    with no_cache():
        assert torch.equal(loss(logits, target), value)
    assert cached_tensors(loss) == {}
    with pytest.raises(RuntimeError, match="no_cache"):
        loss.backward()


def test_evaluate_and_predict_leave_no_cache_behind() -> None:
    torch.manual_seed(0)
    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model = Sequential(Dense(4, 32), BatchNorm1d(32), ReLU(), Dropout(0.1), Dense(32, 3))
    loss = CrossEntropyLoss()
    engine = Engine(model, loss, GradientDescent(model, 0.1), progress=False)
    engine.fit(DataLoader(X, y, batch_size=16, seed=0), epochs=1)
    assert cached_tensors(model, loss), "the last training step's caches"
    engine.evaluate(DataLoader(X, y, batch_size=16, shuffle=False))
    assert cached_tensors(model, loss) == {}
    engine.fit(DataLoader(X, y, batch_size=16, seed=0), epochs=1)
    outputs = engine.predict(X, batch_size=16)
    assert cached_tensors(model, loss) == {}
    with no_cache():
        assert torch.equal(model.eval()(X[:16]), outputs[:16])


def test_no_cache_nests_restores_and_is_per_thread() -> None:
    assert caching()
    seen_in_thread: list[bool] = []
    with no_cache():
        thread = threading.Thread(target=lambda: seen_in_thread.append(caching()))
        thread.start()
        thread.join()
        with no_cache():
            assert not caching()
        assert not caching()
    assert caching()
    assert seen_in_thread == [True]  # as torch.no_grad: another thread still caches
    with pytest.raises(KeyError), no_cache():
        raise KeyError("restored even when the block raises")
    assert caching()
