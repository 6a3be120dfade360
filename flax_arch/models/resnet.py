"""Residual networks of the "Deep Residual Networks" slides, in Flax NNX.

``ResLayer`` is the slide's block. ``BasicBlock``, ``Bottleneck`` and ``ResNet`` mirror
torchvision's (``torchvision.models.resnet``): the same constructor arguments (without
``norm_layer``: the normalisation is always ``BatchNorm2d``), the same state tree, so a
torchvision ``state_dict()`` loads strictly, and the same initialisation.
Layout: channels-last, (batch, height, width, channels).
"""

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    flatten_chw,
)
from flax_arch.nn.init import kaiming_normal_

__all__ = [
    "ResLayer",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
]


class ResLayer(nnx.Module):
    """The slide's residual block: ``y = relu(x + conv2(conv1(x)))``, He et al. 2016,
    "Deep Residual Learning for Image Recognition".

    Each of ``conv1``/``conv2`` is a 3x3 convolution (padding 1), BatchNorm and ReLU, so the
    block keeps its shape: x: (batch, height, width, num_inputs) -> the same shape.
    """

    def __init__(self, num_inputs: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.num_inputs = num_inputs
        num_outputs = num_inputs
        self.num_outputs = num_outputs
        self.conv1 = Sequential(
            Conv2d(num_inputs, num_outputs, 3, padding=1, rngs=rngs, **kw),
            BatchNorm2d(num_outputs, **kw),
            ReLU(),
        )
        self.conv2 = Sequential(
            Conv2d(num_outputs, num_outputs, 3, padding=1, rngs=rngs, **kw),
            BatchNorm2d(num_outputs, **kw),
            ReLU(),
        )
        self.out_relu = ReLU()

    def __call__(self, x: jax.Array) -> jax.Array:
        # non-linear processing trunk
        conv1_h = self.conv1(x)  # N x H x W x C
        conv2_h = self.conv2(conv1_h)  # N x H x W x C
        # output is result of res connection + non-linear processing
        y = self.out_relu(x + conv2_h)  # N x H x W x C
        return y


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1,
            dilation: int = 1, **kw) -> Conv2d:
    """3x3 convolution, padded to keep the size at stride 1, no bias (BatchNorm follows)."""
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                  groups=groups, bias=False, dilation=dilation, **kw)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, **kw) -> Conv2d:
    """1x1 convolution, no bias."""
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False, **kw)


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions and an identity (or ``downsample``) shortcut, He et al. 2016.

    x: (batch, height, width, inplanes) -> (batch, height / stride, width / stride, planes).
    """

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nnx.Module | None = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.conv1 = conv3x3(inplanes, planes, stride, rngs=rngs, **kw)
        self.bn1 = BatchNorm2d(planes, **kw)
        self.relu = ReLU()
        self.conv2 = conv3x3(planes, planes, rngs=rngs, **kw)
        self.bn2 = BatchNorm2d(planes, **kw)
        self.downsample = downsample
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))  # N x H/s x W/s x planes
        out = self.bn2(self.conv2(out))  # N x H/s x W/s x planes
        if self.downsample is not None:
            identity = self.downsample(x)  # N x H/s x W/s x planes
        return self.relu(out + identity)


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (grouped, strided, dilated), 1x1 expand by 4, and a shortcut.

    torchvision's "ResNet v1.5": the stride sits on the 3x3 convolution, not on the first
    1x1 as in He et al. 2016. ``groups`` and ``base_width`` give ResNeXt (Xie et al. 2017)
    and Wide ResNet (Zagoruyko & Komodakis 2016).
    x: (batch, height, width, inplanes) -> (batch, height / stride, width / stride, 4 * planes).
    """

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nnx.Module | None = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        bn = dict(dtype=dtype, param_dtype=param_dtype)
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width, **kw)
        self.bn1 = BatchNorm2d(width, **bn)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, **kw)
        self.bn2 = BatchNorm2d(width, **bn)
        self.conv3 = conv1x1(width, planes * self.expansion, **kw)
        self.bn3 = BatchNorm2d(planes * self.expansion, **bn)
        self.relu = ReLU()
        self.downsample = downsample
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))  # N x H x W x width
        out = self.relu(self.bn2(self.conv2(out)))  # N x H/s x W/s x width
        out = self.bn3(self.conv3(out))  # N x H/s x W/s x 4*planes
        if self.downsample is not None:
            identity = self.downsample(x)  # N x H/s x W/s x 4*planes
        return self.relu(out + identity)


def _check_resnet_args(block, layers, replace_stride_with_dilation) -> list[bool]:
    if not (isinstance(block, type) and issubclass(block, (BasicBlock, Bottleneck))):
        raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
    if len(layers) != 4 or any(int(n) != n or n < 1 for n in layers):
        raise ValueError(f"layers must be 4 positive block counts, got {layers}")
    if replace_stride_with_dilation is None:
        # each element says whether to replace the 2x2 stride with a dilated convolution
        replace_stride_with_dilation = [False, False, False]
    if len(replace_stride_with_dilation) != 3:
        raise ValueError(
            "replace_stride_with_dilation should be None "
            f"or a 3-element tuple, got {replace_stride_with_dilation}"
        )
    return list(replace_stride_with_dilation)


class ResNet(nnx.Module):
    """torchvision's ResNet, He et al. 2016, "Deep Residual Learning for Image Recognition".

    A 7x7/2 stem and 3x3/2 max-pool, four stages of ``block`` (64, 128, 256, 512 planes,
    ``layers[i]`` blocks each, stride 2 from the second stage on unless replaced by
    dilation), global average pooling and a Linear classifier.
    x: (batch, height, width, 3) -> (batch, num_classes) logits.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int],
                 num_classes: int = 1000, zero_init_residual: bool = False, groups: int = 1,
                 width_per_group: int = 64,
                 replace_stride_with_dilation: list[bool] | None = None,
                 *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        dilate = _check_resnet_args(block, layers, replace_stride_with_dilation)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.inplanes = 64
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False, **kw)
        self.bn1 = BatchNorm2d(self.inplanes, dtype=dtype, param_dtype=param_dtype)
        self.relu = ReLU()
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], **kw)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=dilate[0], **kw)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate[1], **kw)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate[2], **kw)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(512 * block.expansion, num_classes, **kw)

        # BatchNorm2d already starts at weight 1, bias 0.
        kaiming_normal_([m for _, m in nnx.iter_modules(self) if isinstance(m, Conv2d)],
                        rngs.params(), mode="fan_out")
        # Zero-initialise the last BN of each residual branch: every block starts as the
        # identity (Goyal et al. 2017).
        if zero_init_residual:
            for _, m in nnx.iter_modules(self):
                if isinstance(m, Bottleneck):
                    m.bn3.weight[...] = jnp.zeros_like(m.bn3.weight[...])
                elif isinstance(m, BasicBlock):
                    m.bn2.weight[...] = jnp.zeros_like(m.bn2.weight[...])

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False, **kw) -> Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride, **kw),
                BatchNorm2d(planes * block.expansion, dtype=kw["dtype"],
                            param_dtype=kw["param_dtype"]),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                        previous_dilation, **kw)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups,
                                base_width=self.base_width, dilation=self.dilation, **kw))
        return Sequential(*layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                "ResNet expects a channels-last image batch of shape (batch, height, width, "
                f"channels=3); got shape {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # N x H/4 x W/4 x 64
        x = self.layer1(x)  # N x H/4 x W/4 x 64e   (e = block.expansion)
        x = self.layer2(x)  # N x H/8 x W/8 x 128e
        x = self.layer3(x)  # N x H/16 x W/16 x 256e
        x = self.layer4(x)  # N x H/32 x W/32 x 512e
        x = self.avgpool(x)  # N x 1 x 1 x 512e
        x = flatten_chw(x)  # N x 512e
        return self.fc(x)  # N x num_classes


resnet18 = partial(ResNet, BasicBlock, [2, 2, 2, 2])
resnet34 = partial(ResNet, BasicBlock, [3, 4, 6, 3])
resnet50 = partial(ResNet, Bottleneck, [3, 4, 6, 3])
resnet101 = partial(ResNet, Bottleneck, [3, 4, 23, 3])
resnet152 = partial(ResNet, Bottleneck, [3, 8, 36, 3])
resnext50_32x4d = partial(ResNet, Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4)
wide_resnet50_2 = partial(ResNet, Bottleneck, [3, 4, 6, 3], width_per_group=64 * 2)
