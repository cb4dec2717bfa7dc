"""scratch-engine: the tiny engine shared by every scratch architecture.

The core, read top to bottom: :mod:`~scratch_engine.module` (the contract: ``forward`` and
``backward`` side by side), :mod:`~scratch_engine.layers`, :mod:`~scratch_engine.activations`,
:mod:`~scratch_engine.normalization`, :mod:`~scratch_engine.losses`,
:mod:`~scratch_engine.optim`, :mod:`~scratch_engine.schedules`, :mod:`~scratch_engine.data`
and :mod:`~scratch_engine.engine` (the training loop). All of it is plain torch tensor ops,
written by hand.

What the architectures share besides the lesson (command lines and the run recipe, data sets,
plots, mixed precision, data-parallel training, the torch.nn twin, checkpoint files, test
helpers) lives in :mod:`scratch_engine.tools`, which imports the core and never the reverse.
"""

from typing import Any

from scratch_engine.activations import GELU, LeakyReLU, ReLU, Sigmoid, Tanh
from scratch_engine.data import DataLoader
from scratch_engine.engine import Callback, Engine, History, NonFiniteLossError, accuracy, moved
from scratch_engine.layers import Dense, Dropout, Embedding
from scratch_engine.losses import CrossEntropyLoss, Loss, MSELoss
from scratch_engine.module import Module, Parameter, Sequential, caching, missing_forward, no_cache, skip_data_gradient
from scratch_engine.normalization import BatchNorm1d, BatchNorm2d
from scratch_engine.optim import Adam, AdamW, GradientDescent, Optimizer, clip_grad_norm
from scratch_engine.schedules import InverseSqrtWarmup, LRScheduler, StepLR, WarmupCosine

__version__ = "0.1.0"

# What scratch-engine 0.1 exported here and #17 moved into the tools: still found, with a DeprecationWarning.
_MOVED = {
    "EarlyStopping": "scratch_engine.tools.callbacks",
    "ModelCheckpoint": "scratch_engine.tools.checkpoint",
    "resolve_device": "scratch_engine.tools.device",
    "seed_everything": "scratch_engine.tools.device",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return moved(_MOVED[name], name, f"scratch_engine.{name}")
    raise AttributeError(f"module 'scratch_engine' has no attribute {name!r}")


# The public face, by module (what `from scratch_engine import *` gives).
# fmt: off
__all__ = [  # noqa: RUF022 (grouped by module, not sorted)
    "Module", "Parameter", "Sequential", "caching", "missing_forward", "no_cache", "skip_data_gradient",  # module
    "Dense", "Dropout", "Embedding",  # layers
    "GELU", "LeakyReLU", "ReLU", "Sigmoid", "Tanh",  # activations
    "BatchNorm1d", "BatchNorm2d",  # normalization
    "CrossEntropyLoss", "Loss", "MSELoss",  # losses
    "Adam", "AdamW", "GradientDescent", "Optimizer", "clip_grad_norm",  # optim
    "InverseSqrtWarmup", "LRScheduler", "StepLR", "WarmupCosine",  # schedules
    "DataLoader",  # data
    "Callback", "Engine", "History", "NonFiniteLossError", "accuracy",  # engine
    "__version__",
]
# fmt: on
