"""scratch-rnn: the recurrent networks (RNN, LSTM, GRU) and a character-level language model, from scratch."""

from scratch_engine.tools.text import Vocabulary
from scratch_rnn.charlm import CharLM, CharStreams, sample
from scratch_rnn.gru import GRU, GRUCell
from scratch_rnn.lstm import LSTM, LSTMCell
from scratch_rnn.recurrent import detach_state
from scratch_rnn.rnn import RNN, ReLURNN, ReLURNNCell, RNNCell

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "CharLM",
    "CharStreams",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "ReLURNN",
    "ReLURNNCell",
    "Vocabulary",
    "__version__",
    "detach_state",
    "sample",
]
