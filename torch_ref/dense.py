"""Fully connected models of the "Fully Connected" slides, as PyTorch references.

Each is the slide's ``nn.Sequential``, so the state_dict keys are the slide's (``0.weight``).
x: (batch, num_inputs) -> (batch, num_outputs).
"""

from torch import nn


__all__ = ["LogisticRegression", "LinearRegression", "SoftmaxClassifier", "MLP"]


class LogisticRegression(nn.Sequential):
    """One unit and a sigmoid: a binary linear classifier. (batch, num_inputs) -> (batch, 1)."""

    def __init__(self, num_inputs: int):
        super().__init__(nn.Linear(num_inputs, 1), nn.Sigmoid())


class LinearRegression(nn.Sequential):
    """One unit, no activation. (batch, num_inputs) -> (batch, 1)."""

    def __init__(self, num_inputs: int):
        super().__init__(nn.Linear(num_inputs, 1))


class SoftmaxClassifier(nn.Sequential):
    """Many units and a log-softmax. (batch, num_inputs) -> (batch, num_outputs) log-probabilities."""

    def __init__(self, num_inputs: int, num_outputs: int):
        super().__init__(nn.Linear(num_inputs, num_outputs), nn.LogSoftmax(dim=1))


class MLP(nn.Sequential):
    """The slide's multilayer perceptron: two tanh hidden layers and a log-softmax.

    (batch, num_inputs) -> (batch, num_outputs) log-probabilities.
    """

    def __init__(self, num_inputs: int = 100, hidden_size: int = 1024, num_outputs: int = 20):
        super().__init__(
            nn.Linear(num_inputs, hidden_size),
            nn.Tanh(),
            nn.Linear(hidden_size, hidden_size),
            nn.Tanh(),
            nn.Linear(hidden_size, num_outputs),
            nn.LogSoftmax(dim=1),
        )
