"""scratch-rnn: the recurrent networks (RNN, LSTM, GRU), written from scratch on scratch-engine."""

__version__ = "0.1.0"

__all__ = ["__version__"]
