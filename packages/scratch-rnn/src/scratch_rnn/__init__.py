"""scratch-rnn: the recurrent networks (RNN, LSTM, GRU), written from scratch on scratch-engine."""

from scratch_rnn.gru import GRU, GRUCell
from scratch_rnn.lstm import LSTM, LSTMCell
from scratch_rnn.recurrent import detach_state
from scratch_rnn.rnn import RNN, RNNCell

__version__ = "0.1.0"

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell", "__version__", "detach_state"]
