"""scratch-cnn: the convolutional network, written from scratch on scratch-engine."""

from scratch_cnn.conv import Conv2D
from scratch_cnn.flatten import Flatten
from scratch_cnn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from scratch_engine import BatchNorm2d, CrossEntropyLoss, Dense, Dropout, ReLU, Sequential

__version__ = "0.1.0"

__all__ = [
    "AvgPool2D",
    "BatchNorm2d",
    "Conv2D",
    "CrossEntropyLoss",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "MaxPool2D",
    "ReLU",
    "Sequential",
    "__version__",
]
