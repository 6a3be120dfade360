"""Recurrent layers from the "Recurrent Layer", "From RNN to LSTM" and "LSTM Layer" slides,
as PyTorch references.

``RNN``, ``LSTM`` and ``GRU`` are ``torch.nn``'s own modules: x is (seq_len, batch,
input_size), or (batch, seq_len, input_size) with ``batch_first=True``; states are
(num_layers * num_directions, batch, hidden_size). ``RNNClassifier`` is the slide's
batch-first RNN followed by a Linear layer and a log-softmax over features.
"""

from torch import Tensor, nn


__all__ = ["RNN", "LSTM", "GRU", "RNNClassifier"]

RNN = nn.RNN
LSTM = nn.LSTM
GRU = nn.GRU


class RNNClassifier(nn.Module):
    """The slide "Connecting an RNN with a FC layer": a batch-first Elman RNN (Elman 1990)
    whose every h_t goes through ``fc = Sequential(Linear(hidden_size, num_outputs),
    LogSoftmax())``.

    x: (batch, seq_len, num_inputs) -> (batch, seq_len, num_outputs) log-probabilities
    (unbatched (seq_len, num_inputs) -> (seq_len, num_outputs)).
    """

    def __init__(self, num_inputs: int, hidden_size: int, num_outputs: int, num_layers: int = 1):
        super().__init__()
        self.rnn = nn.RNN(num_inputs, hidden_size, num_layers=num_layers, batch_first=True)
        # The slide's LogSoftmax(dim=2) is the feature axis of a batched input only; dim=-1
        # is the feature axis of unbatched input too.
        self.fc = nn.Sequential(nn.Linear(hidden_size, num_outputs), nn.LogSoftmax(dim=-1))

    def forward(self, x: Tensor) -> Tensor:
        ht, _ = self.rnn(x)  # N x L x hidden_size
        return self.fc(ht)  # N x L x num_outputs
