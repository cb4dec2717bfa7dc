"""The networks: shapes, parameter counts, the whole default network's backward against autograd."""

from __future__ import annotations

import pytest
import torch

from scratch_cnn import BatchNorm2d, Conv2D, Dropout
from scratch_cnn.models import MODELS, best, lenet
from scratch_engine import CrossEntropyLoss, DataLoader, Engine, GradientDescent, no_cache
from scratch_engine.tools.testing import assert_close, cached_tensors, check_backward, random_inputs


def _lenet_parameters(c1: int = 32, c2: int = 64, k: int = 3, hidden: int = 128) -> int:
    return (1 * k * k * c1 + c1) + (c1 * k * k * c2 + c2) + (c2 * 7 * 7 * hidden + hidden) + (hidden * 10 + 10)


def test_lenet_shapes_and_parameter_count() -> None:
    model = lenet()
    assert model.num_parameters() == _lenet_parameters() == 421_642
    assert lenet(kernel_size=5, channels=(6, 16), hidden=84).num_parameters() == _lenet_parameters(6, 16, 5, 84)
    x = torch.randn(3, 1, 28, 28)
    shapes = []
    with torch.no_grad():
        for layer in model.layers:
            x = layer(x)
            shapes.append(tuple(x.shape))
    assert shapes[:7] == [
        (3, 32, 28, 28),
        (3, 32, 28, 28),
        (3, 32, 14, 14),
        (3, 64, 14, 14),
        (3, 64, 14, 14),
        (3, 64, 7, 7),
        (3, 3136),
    ]
    assert shapes[-1] == (3, 10)


def test_best_shapes_and_parameter_count() -> None:
    model = best()
    convs = 1 * 9 * 32 + 32 * 9 * 32 + 32 * 9 * 64 + 64 * 9 * 64  # no conv bias: BatchNorm's beta replaces it
    norms = 2 * (32 + 32 + 64 + 64)
    dense = 3136 * 256 + 256 + 256 * 10 + 10
    assert model.num_parameters() == convs + norms + dense
    assert sum(isinstance(layer, BatchNorm2d) for layer in model.layers) == 4
    assert sum(isinstance(layer, Dropout) for layer in model.layers) == 2
    assert all(layer.bias is None for layer in model.layers if isinstance(layer, Conv2D))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert best(in_channels=3, num_classes=4, image_size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("name", list(MODELS))
def test_first_convolution_skips_the_input_gradient(name: str) -> None:
    convs = [layer for layer in MODELS[name]().layers if isinstance(layer, Conv2D)]
    assert convs[0].input_grad is False
    assert all(conv.input_grad for conv in convs[1:])


def test_image_size_must_survive_two_poolings() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        lenet(image_size=30)


@pytest.mark.parametrize("impl", ["im2col", "loop"])
@pytest.mark.parametrize("name", list(MODELS))
def test_models_backward_match_autograd(name: str, impl: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name](channels=(4, 6), hidden=16, image_size=8, impl=impl).to(dtype=torch.float64)
    model.layers[0].input_grad = True  # so that dL/dx is checked too, through every layer
    (x,) = random_inputs((3, 1, 8, 8))
    check_backward(model, x)  # Dropout included: checked against the mask it drew


@pytest.mark.parametrize("name", list(MODELS))
def test_skipping_the_input_gradient_changes_no_parameter_gradient(name: str) -> None:
    x, g = random_inputs((4, 1, 8, 8), (4, 10))
    grads = []
    for input_grad in (True, False):
        torch.manual_seed(0)  # the same weights and the same dropout masks
        model = MODELS[name](channels=(4, 6), hidden=16, image_size=8).to(dtype=torch.float64)
        model.layers[0].input_grad = input_grad
        model(x)
        returned = model.backward(g)
        assert (returned is None) == (not input_grad)
        grads.append([p.grad.clone() for p in model.parameters()])
    for with_input_grad, without in zip(*grads, strict=True):
        assert_close(without, with_input_grad, name="parameter gradient")


@pytest.mark.parametrize("impl", ["im2col", "loop"])
def test_conv_input_grad_false_returns_none_and_the_same_parameter_gradients(impl: str) -> None:
    torch.manual_seed(0)
    x, g = random_inputs((2, 3, 7, 6), (2, 5, 4, 4))
    grads = []
    for input_grad in (True, False):
        torch.manual_seed(1)
        layer = Conv2D(3, 5, (3, 2), stride=(2, 2), padding=1, impl=impl, input_grad=input_grad)
        layer = layer.to(dtype=torch.float64)
        layer(x)
        returned = layer.backward(g)
        assert (returned is None) == (not input_grad)
        grads.append([p.grad.clone() for p in layer.parameters()])
    for with_input_grad, without in zip(*grads, strict=True):
        assert_close(without, with_input_grad, name="parameter gradient")
    assert Conv2D(1, 2, 3).input_grad is True
    assert "input_grad=False" in repr(Conv2D(1, 2, 3, input_grad=False))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("impl", ["im2col", "loop"])
def test_predict_keeps_no_cache_for_a_backward(name: str, impl: str) -> None:
    # Engine.predict runs under no_cache(): lenet at batch 500 kept 235 MiB of columns, activations and
    # pooling winners in the model after predicting, best 1.1 GiB
    torch.manual_seed(0)
    model = MODELS[name](image_size=12, impl=impl)
    loss = CrossEntropyLoss()
    engine = Engine(model, loss, GradientDescent(model, 0.01), progress=False)
    x, y = torch.randn(4, 1, 12, 12), torch.randint(0, 10, (4,))
    engine.fit(DataLoader(x, y, batch_size=4), epochs=1)
    assert cached_tensors(model, loss), "a training step keeps its caches (else this test could not fail)"
    engine.predict(x)
    assert cached_tensors(model) == {}
    with no_cache():
        logits = model(x)
    with pytest.raises(RuntimeError, match="no_cache"):
        model.backward(torch.ones_like(logits))
