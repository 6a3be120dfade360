"""Residual networks of the "Deep Residual Networks" slides, as PyTorch references.

``ResLayer`` is the slide's block. ``BasicBlock``, ``Bottleneck`` and ``ResNet`` are
torchvision's (``torchvision.models.resnet``): the same constructor arguments (without
``norm_layer``: the normalisation is always ``nn.BatchNorm2d``), the same module tree and
``state_dict`` keys, the same initialisation. Layout: (batch, channels, height, width).
"""

from functools import partial

from torch import Tensor, nn


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


class ResLayer(nn.Module):
    """The slide's residual block: ``y = relu(x + conv2(conv1(x)))``, He et al. 2016,
    "Deep Residual Learning for Image Recognition".

    Each of ``conv1``/``conv2`` is a 3x3 convolution (padding 1), BatchNorm and ReLU, so the
    block keeps its shape: x: (batch, num_inputs, height, width) -> the same shape.
    """

    def __init__(self, num_inputs: int):
        super().__init__()
        self.num_inputs = num_inputs
        num_outputs = num_inputs
        self.num_outputs = num_outputs
        self.conv1 = nn.Sequential(
            nn.Conv2d(num_inputs, num_outputs, 3, padding=1),
            nn.BatchNorm2d(num_outputs),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(num_outputs, num_outputs, 3, padding=1),
            nn.BatchNorm2d(num_outputs),
            nn.ReLU(inplace=True),
        )
        self.out_relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        # non-linear processing trunk
        conv1_h = self.conv1(x)  # N x C x H x W
        conv2_h = self.conv2(conv1_h)  # N x C x H x W
        # output is result of res connection + non-linear processing
        y = self.out_relu(x + conv2_h)  # N x C x H x W
        return y


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution, padded to keep the size at stride 1, no bias (BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and an identity (or ``downsample``) shortcut, He et al. 2016.

    x: (batch, inplanes, height, width) -> (batch, planes, height / stride, width / stride).
    """

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))  # N x planes x H/s x W/s
        out = self.bn2(self.conv2(out))  # N x planes x H/s x W/s
        if self.downsample is not None:
            identity = self.downsample(x)  # N x planes x H/s x W/s
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped, strided, dilated), 1x1 expand by 4, and a shortcut.

    torchvision's "ResNet v1.5": the stride sits on the 3x3 convolution, not on the first
    1x1 as in He et al. 2016. ``groups`` and ``base_width`` give ResNeXt (Xie et al. 2017)
    and Wide ResNet (Zagoruyko & Komodakis 2016).
    x: (batch, inplanes, height, width) -> (batch, 4 * planes, height / stride, width / stride).
    """

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))  # N x width x H x W
        out = self.relu(self.bn2(self.conv2(out)))  # N x width x H/s x W/s
        out = self.bn3(self.conv3(out))  # N x 4*planes x H/s x W/s
        if self.downsample is not None:
            identity = self.downsample(x)  # N x 4*planes x H/s x W/s
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


class ResNet(nn.Module):
    """torchvision's ResNet, He et al. 2016, "Deep Residual Learning for Image Recognition".

    A 7x7/2 stem and 3x3/2 max-pool, four stages of ``block`` (64, 128, 256, 512 planes,
    ``layers[i]`` blocks each, stride 2 from the second stage on unless replaced by
    dilation), global average pooling and a Linear classifier.
    x: (batch, 3, height, width) -> (batch, num_classes) logits.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int],
                 num_classes: int = 1000, zero_init_residual: bool = False, groups: int = 1,
                 width_per_group: int = 64,
                 replace_stride_with_dilation: list[bool] | None = None):
        super().__init__()
        dilate = _check_resnet_args(block, layers, replace_stride_with_dilation)
        self.inplanes = 64
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # Zero-initialise the last BN of each residual branch: every block starts as the
        # identity (Goyal et al. 2017).
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                        previous_dilation)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups,
                                base_width=self.base_width, dilation=self.dilation))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # N x 64 x H/4 x W/4
        x = self.layer1(x)  # N x 64e x H/4 x W/4   (e = block.expansion)
        x = self.layer2(x)  # N x 128e x H/8 x W/8
        x = self.layer3(x)  # N x 256e x H/16 x W/16
        x = self.layer4(x)  # N x 512e x H/32 x W/32
        x = self.avgpool(x)  # N x 512e x 1 x 1
        x = x.flatten(1)  # N x 512e
        return self.fc(x)  # N x num_classes


resnet18 = partial(ResNet, BasicBlock, [2, 2, 2, 2])
resnet34 = partial(ResNet, BasicBlock, [3, 4, 6, 3])
resnet50 = partial(ResNet, Bottleneck, [3, 4, 6, 3])
resnet101 = partial(ResNet, Bottleneck, [3, 4, 23, 3])
resnet152 = partial(ResNet, Bottleneck, [3, 8, 36, 3])
resnext50_32x4d = partial(ResNet, Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4)
wide_resnet50_2 = partial(ResNet, Bottleneck, [3, 4, 6, 3], width_per_group=64 * 2)
