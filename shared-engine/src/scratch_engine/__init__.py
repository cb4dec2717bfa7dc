"""scratch-engine: the tiny engine shared by every scratch architecture.

Everything here is written by hand on plain torch tensor ops: modules with
``forward`` and ``backward`` side by side, losses, optimizers, learning-rate
schedules, a DataLoader and the ``Engine`` that trains a model.
"""

from scratch_engine.activations import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from scratch_engine.callbacks import Callback, EarlyStopping, ModelCheckpoint
from scratch_engine.data import DataLoader
from scratch_engine.device import resolve_device, seed_everything
from scratch_engine.engine import Engine, NonFiniteLossError
from scratch_engine.history import History
from scratch_engine.layers import Dense, Dropout, Embedding
from scratch_engine.losses import CrossEntropyLoss, Loss, MSELoss
from scratch_engine.module import Module, Parameter, Sequential, caching, missing_forward, no_cache
from scratch_engine.normalization import BatchNorm1d, BatchNorm2d
from scratch_engine.optim import Adam, AdamW, GradientDescent, Optimizer, clip_grad_norm
from scratch_engine.schedules import InverseSqrtWarmup, LRScheduler, StepLR, WarmupCosine

__version__ = "0.1.0"

__all__ = [
    "GELU",
    "Adam",
    "AdamW",
    "BatchNorm1d",
    "BatchNorm2d",
    "Callback",
    "CrossEntropyLoss",
    "DataLoader",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Embedding",
    "Engine",
    "GradientDescent",
    "History",
    "InverseSqrtWarmup",
    "LRScheduler",
    "LeakyReLU",
    "Loss",
    "MSELoss",
    "ModelCheckpoint",
    "Module",
    "NonFiniteLossError",
    "Optimizer",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "StepLR",
    "Tanh",
    "WarmupCosine",
    "__version__",
    "caching",
    "clip_grad_norm",
    "missing_forward",
    "no_cache",
    "resolve_device",
    "seed_everything",
]
