"""scratch-mlp: the multi-layer perceptron, written from scratch on scratch-engine."""

from scratch_engine import (
    GELU,
    BatchNorm1d,
    CrossEntropyLoss,
    Dense,
    Dropout,
    LeakyReLU,
    MSELoss,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from scratch_mlp.model import MLP

__version__ = "0.1.0"

__all__ = [
    "GELU",
    "MLP",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Dense",
    "Dropout",
    "LeakyReLU",
    "MSELoss",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "__version__",
]
