"""Convolutions from the "Convolutional Layer" slides, as PyTorch references.

x: (batch, channels, length), torch's layout.
"""

import torch.nn.functional as F
from torch import Tensor, nn


__all__ = ["Conv1d", "CausalConv1d", "ConvMLP", "ConvTranspose1d"]

Conv1d = nn.Conv1d
ConvTranspose1d = nn.ConvTranspose1d


class CausalConv1d(nn.Conv1d):
    """A convolution that sees only the past: left-pad by ``dilation * (kernel_size - 1)``.

    (batch, in_channels, length) -> (batch, out_channels, length); output t depends on inputs <= t.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        pad = self.dilation[0] * (self.kernel_size[0] - 1)
        return super().forward(F.pad(x, (pad, 0)))


class ConvMLP(nn.Sequential):
    """The slide's "MLP as a CNN": kernel-1 convolutions are a Linear layer swept over time.

    (batch, num_inputs, length) -> (batch, num_outputs, length) log-probabilities.
    """

    def __init__(self, num_inputs: int = 100, hidden_size: int = 1024, num_outputs: int = 20):
        super().__init__(
            nn.Conv1d(num_inputs, hidden_size, 1),
            nn.Tanh(),
            nn.Conv1d(hidden_size, hidden_size, 1),
            nn.Tanh(),
            nn.Conv1d(hidden_size, num_outputs, 1),
            nn.LogSoftmax(dim=1),
        )
