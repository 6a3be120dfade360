"""Leaf layers with PyTorch's constructor signatures, written in Flax NNX, channels-last.

Every architecture in :mod:`flax_arch.models` is written with these layers so that a Flax file
reads like its PyTorch slide. Each layer keeps torch's argument names, defaults and
initialisation, and names its variables as torch names its ``state_dict`` entries
(``weight``, ``bias``, ``running_mean``, ...), so weight conversion is one rule per layer
type (see :mod:`flax_arch.interop`). The layouts differ: inputs here are channels-last,
``(batch, length, channels)`` and ``(batch, height, width, channels)``.

Stored layouts (torch's in brackets):

* ``Linear.weight``: ``(in_features, out_features)`` [``(out, in)``]
* ``ConvNd.weight``: ``(*kernel, in_channels // groups, out_channels)`` [``(out, in/g, *kernel)``]
* ``ConvTransposeNd.weight``: ``(*kernel, in_channels, out_channels // groups)``
  [``(in, out/g, *kernel)``]
* everything else as torch stores it.

A file per kind, as in ``torch.nn.modules``; where a platform wants another form of the same
mathematics, both forms live in :mod:`flax_arch.nn.lowering`.
"""

from flax_arch.nn.activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Tanh
from flax_arch.nn.containers import Sequential, Stochastic
from flax_arch.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from flax_arch.nn.dropout import Dropout
from flax_arch.nn.embedding import Embedding
from flax_arch.nn.linear import Identity, Linear, flatten_chw
from flax_arch.nn.norm import BatchNorm1d, BatchNorm2d
from flax_arch.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool1d, MaxPool2d


__all__ = [
    "Linear",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Embedding",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Dropout",
    "Sequential",
    "Stochastic",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "LogSoftmax",
    "Identity",
    "flatten_chw",
]
