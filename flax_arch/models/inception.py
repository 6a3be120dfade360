"""The Inception module and GoogLeNet, from the "Inception module" slides, in Flax NNX.

x: (batch, height, width, channels), channels-last. The module tree, constructor arguments
and initialisation are torchvision's (``torchvision.models.googlenet``), so a torchvision
``state_dict`` loads structurally (:func:`flax_arch.load_torch_state_dict`).
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_arch.models._checks import check_image_input
from flax_arch.nn import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Linear,
    MaxPool2d,
    Sequential,
    Stochastic,
    flatten_chw,
)
from flax_arch.nn.init import normal_

__all__ = ["BasicConv2d", "Inception", "InceptionAux", "GoogLeNet"]

# torchvision's ``min_size`` of GoogLeNet: the smallest input its ceil-mode pools accept.
MIN_SIZE = 15


class BasicConv2d(nnx.Module):
    """Convolution (no bias), BatchNorm (eps=0.001) and ReLU, as torchvision's.

    (batch, height, width, in_channels) -> (batch, height', width', out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                           padding=padding, bias=False, rngs=rngs, dtype=dtype,
                           param_dtype=param_dtype)
        self.bn = BatchNorm2d(out_channels, eps=0.001, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


class Inception(nnx.Module):
    """The Inception module of Szegedy et al., "Going deeper with convolutions", CVPR 2015.

    Four parallel branches concatenated on the channel axis: a 1x1 convolution; a 1x1
    reduction and a 3x3; a 1x1 reduction and a "5x5"; a 3x3 max-pool and a 1x1 projection.
    (batch, h, w, in_channels) -> (batch, h, w, ch1x1 + ch3x3 + ch5x5 + pool_proj).

    The "5x5" branch convolves 3x3, as torchvision's does (a known deviation from the paper,
    pytorch/vision#906, kept so that torchvision's weights load).
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1, **kw)
        self.branch2 = Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1, **kw),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1, **kw),
        )
        self.branch3 = Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1, **kw),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1, **kw),
        )
        self.branch4 = Sequential(
            MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1, **kw),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        # N x h x w x ch1x1, N x h x w x ch3x3, N x h x w x ch5x5, N x h x w x pool_proj
        return jnp.concatenate(branches, axis=-1)


class InceptionAux(Stochastic):
    """GoogLeNet's auxiliary classifier: 4x4 average pool, 1x1 convolution to 128 channels,
    fc1 (2048 -> 1024), ReLU, dropout, fc2.

    (batch, h, w, in_channels) -> (batch, num_classes) logits.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1, **kw)
        self.fc1 = Linear(2048, 1024, **kw)
        self.fc2 = Linear(1024, num_classes, **kw)
        self.dropout = Dropout(p=dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        # aux1: N x 14 x 14 x 512, aux2: N x 14 x 14 x 528
        x = AdaptiveAvgPool2d((4, 4))(x)  # torch's F.adaptive_avg_pool2d
        # aux1: N x 4 x 4 x 512, aux2: N x 4 x 4 x 528
        x = self.conv(x)
        # N x 4 x 4 x 128
        x = flatten_chw(x)
        # N x 2048, in torch's (C, H, W) order
        x = jax.nn.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x, rngs=rngs)
        x = self.fc2(x)
        # N x num_classes
        return x


class GoogLeNet(Stochastic):
    """GoogLeNet (Inception v1) of Szegedy et al., "Going deeper with convolutions", CVPR
    2015: a stem, nine Inception modules (3a, 3b, 4a-4e, 5a, 5b) between ceil-mode
    max-pools, global average pooling, dropout and a linear classifier.

    torchvision's module tree, arguments and initialisation (truncated normal, std 0.01, for
    convolution and linear weights); ``transform_input`` maps ImageNet-normalised inputs to
    the (x - 0.5) / 0.5 scaling the original weights were trained with.
    (batch, h, w, 3) -> (batch, num_classes) logits, h and w >= 15.

    Differences from torchvision, on purpose: ``aux_logits`` defaults to False, and the
    return type does not depend on the mode. With ``aux_logits=True`` this model returns
    ``(logits, aux2, aux1)`` in train *and* eval mode (the auxiliary heads then use their
    running statistics); torchvision returns the tuple in train mode and the logits alone in
    eval mode. Without auxiliary heads it returns the logits.
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False,
                 transform_input: bool = False, dropout: float = 0.2, dropout_aux: float = 0.7,
                 *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.aux_logits = aux_logits
        self.transform_input = transform_input

        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3, **kw)
        self.maxpool1 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1, **kw)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1, **kw)
        self.maxpool2 = MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, **kw)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, **kw)
        self.maxpool3 = MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, **kw)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, **kw)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, **kw)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, **kw)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, **kw)
        self.maxpool4 = MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, **kw)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, **kw)

        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=dropout_aux, **kw)
            self.aux2 = InceptionAux(528, num_classes, dropout=dropout_aux, **kw)
        else:
            self.aux1 = self.aux2 = None

        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(p=dropout, rngs=rngs)
        self.fc = Linear(1024, num_classes, **kw)

        # torchvision's initialisation of every conv and linear weight (BatchNorm's is 1, 0)
        weights = [m.weight for _, m in nnx.iter_modules(self) if isinstance(m, (Conv2d, Linear))]
        # trunc_normal_(w, std=0.01, a=-2, b=2): its bounds lie 200 standard deviations out,
        # where no draw lands, so a plain N(0, 0.01^2)
        normal_(weights, rngs.params(), std=0.01)

    def _transform_input(self, x: jax.Array) -> jax.Array:
        if self.transform_input:
            scale = jnp.array([0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5], x.dtype)
            shift = jnp.array([(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5],
                              x.dtype)
            x = x * scale.reshape(1, 1, 1, 3) + shift.reshape(1, 1, 1, 3)
        return x

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None
                 ) -> jax.Array | tuple[jax.Array, jax.Array, jax.Array]:
        check_image_input("GoogLeNet", x, MIN_SIZE)
        x = self._transform_input(x)
        # N x 224 x 224 x 3
        x = self.conv1(x)
        # N x 112 x 112 x 64
        x = self.maxpool1(x)
        # N x 56 x 56 x 64
        x = self.conv2(x)
        # N x 56 x 56 x 64
        x = self.conv3(x)
        # N x 56 x 56 x 192
        x = self.maxpool2(x)
        # N x 28 x 28 x 192
        x = self.inception3a(x)
        # N x 28 x 28 x 256
        x = self.inception3b(x)
        # N x 28 x 28 x 480
        x = self.maxpool3(x)
        # N x 14 x 14 x 480
        x = self.inception4a(x)
        # N x 14 x 14 x 512
        aux1 = self.aux1(x, rngs=rngs) if self.aux1 is not None else None
        # N x num_classes
        x = self.inception4b(x)
        # N x 14 x 14 x 512
        x = self.inception4c(x)
        # N x 14 x 14 x 512
        x = self.inception4d(x)
        # N x 14 x 14 x 528
        aux2 = self.aux2(x, rngs=rngs) if self.aux2 is not None else None
        # N x num_classes
        x = self.inception4e(x)
        # N x 14 x 14 x 832
        x = self.maxpool4(x)
        # N x 7 x 7 x 832
        x = self.inception5a(x)
        # N x 7 x 7 x 832
        x = self.inception5b(x)
        # N x 7 x 7 x 1024
        x = self.avgpool(x)
        # N x 1 x 1 x 1024
        x = flatten_chw(x)
        # N x 1024
        x = self.dropout(x, rngs=rngs)
        x = self.fc(x)
        # N x num_classes
        if self.aux_logits:
            return x, aux2, aux1
        return x
