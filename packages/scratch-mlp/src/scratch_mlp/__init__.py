"""scratch-mlp: the multi-layer perceptron, written from scratch on scratch-engine."""

__version__ = "0.1.0"

__all__ = ["__version__"]
