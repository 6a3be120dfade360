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

Axis arguments: a layer that names an axis of its input (``Softmax(dim)``, ``GLU(dim)``,
``LayerNorm``'s trailing ``normalized_shape``) reads it in *this* layout, as torch reads it in
torch's; ``Flatten`` and ``Unflatten`` read torch's dimensions of the channels-first form, so
that a feature map flattens in torch's (C, H, W) order. Indices (``return_indices=True``) are
torch's flat indices into each channel's spatial grid.

A file per kind, as in ``torch.nn.modules``; where a platform wants another form of the same
mathematics, both forms live in :mod:`flax_arch.nn.lowering`.
"""

from flax_arch.nn.activation import (
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    Hardshrink,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmax2d,
    Softmin,
    Softplus,
    Softshrink,
    Softsign,
    Tanh,
    Tanhshrink,
    Threshold,
)
from flax_arch.nn.containers import Sequential, Stochastic
from flax_arch.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from flax_arch.nn.dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d, Dropout3d
from flax_arch.nn.embedding import Embedding
from flax_arch.nn.linear import Flatten, Identity, Linear, Unflatten, flatten_chw
from flax_arch.nn.norm import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    LocalResponseNorm,
    RMSNorm,
)
from flax_arch.nn.padding import (
    CircularPad1d,
    CircularPad2d,
    CircularPad3d,
    ConstantPad1d,
    ConstantPad2d,
    ConstantPad3d,
    ReflectionPad1d,
    ReflectionPad2d,
    ReflectionPad3d,
    ReplicationPad1d,
    ReplicationPad2d,
    ReplicationPad3d,
    ZeroPad1d,
    ZeroPad2d,
    ZeroPad3d,
)
from flax_arch.nn.pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)
from flax_arch.nn.upsampling import (
    PixelShuffle,
    PixelUnshuffle,
    Upsample,
    UpsamplingBilinear2d,
    UpsamplingNearest2d,
)


__all__ = [
    # linear and containers
    "Linear",
    "Identity",
    "Flatten",
    "Unflatten",
    "flatten_chw",
    "Sequential",
    "Stochastic",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "AlphaDropout",
    "Embedding",
    # convolutions
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    # normalisation
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "GroupNorm",
    "LayerNorm",
    "RMSNorm",
    "LocalResponseNorm",
    # pooling
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    # padding
    "ZeroPad1d",
    "ZeroPad2d",
    "ZeroPad3d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ConstantPad3d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReflectionPad3d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ReplicationPad3d",
    "CircularPad1d",
    "CircularPad2d",
    "CircularPad3d",
    # resampling
    "Upsample",
    "UpsamplingNearest2d",
    "UpsamplingBilinear2d",
    "PixelShuffle",
    "PixelUnshuffle",
    # activations
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "CELU",
    "SELU",
    "GELU",
    "SiLU",
    "Mish",
    "Hardtanh",
    "Hardsigmoid",
    "Hardswish",
    "Hardshrink",
    "Softshrink",
    "Tanhshrink",
    "Threshold",
    "Tanh",
    "Sigmoid",
    "LogSigmoid",
    "Softsign",
    "Softplus",
    "Softmax",
    "Softmin",
    "LogSoftmax",
    "Softmax2d",
    "GLU",
]
