"""Densely connected networks of the "Skip connections" slides, as PyTorch references.

torchvision's DenseNet-BC (``torchvision.models.densenet``): the same constructor
arguments, module tree and ``state_dict`` keys (``features.denseblock1.denselayer1.norm1``,
...), the same initialisation. Layout: (batch, channels, height, width).
"""

from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn


__all__ = ["DenseNet", "densenet121", "densenet161", "densenet169", "densenet201"]


@contextmanager
def _restored_running_stats(norm: nn.BatchNorm2d):
    """Undoes the running-statistics update of a train-mode BatchNorm run inside."""
    saved = [b.clone() for b in (norm.running_mean, norm.running_var, norm.num_batches_tracked)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip((norm.running_mean, norm.running_var,
                                      norm.num_batches_tracked), saved):
                buffer.copy_(value)


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (to ``bn_size * growth_rate``) then BN-ReLU-Conv3x3 (to ``growth_rate``).

    Takes the list of every earlier feature map of its block, concatenated on the channel
    axis: [(batch, c_i, height, width)] -> (batch, growth_rate, height, width).
    """

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int,
                 drop_rate: float, memory_efficient: bool = False):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1,
                               stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1,
                               padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bn_function(self, inputs: list[Tensor]) -> Tensor:
        concated_features = torch.cat(inputs, 1)  # N x sum(c_i) x H x W
        return self.conv1(self.relu1(self.norm1(concated_features)))  # N x bn_size*k x H x W

    def forward(self, input: Tensor | list[Tensor]) -> Tensor:
        prev_features = [input] if isinstance(input, Tensor) else input
        if self.memory_efficient and any(t.requires_grad for t in prev_features):
            # Recompute the bottleneck in the backward pass instead of storing it. Fixed from
            # torchvision: its recomputation updates norm1's running statistics a second time.
            bottleneck_output = cp.checkpoint(
                lambda *xs: self.bn_function(list(xs)), *prev_features, use_reentrant=False,
                context_fn=lambda: (nullcontext(), _restored_running_stats(self.norm1)))
        else:
            bottleneck_output = self.bn_function(prev_features)
        new_features = self.conv2(self.relu2(self.norm2(bottleneck_output)))  # N x k x H x W
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each fed every earlier output of the block.

    x: (batch, c, height, width) -> (batch, c + num_layers * growth_rate, height, width).
    """

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int,
                 growth_rate: int, drop_rate: float, memory_efficient: bool = False):
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(num_input_features + i * growth_rate, growth_rate=growth_rate,
                                bn_size=bn_size, drop_rate=drop_rate,
                                memory_efficient=memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))  # N x k x H x W
        return torch.cat(features, 1)  # N x (c + num_layers * k) x H x W


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 and 2x2 average pooling between dense blocks.

    x: (batch, num_input_features, h, w) -> (batch, num_output_features, h / 2, w / 2).
    """

    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1,
                              bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


def _check_densenet_args(growth_rate, block_config, num_init_features, bn_size, drop_rate):
    if growth_rate < 1 or num_init_features < 1 or bn_size < 1:
        raise ValueError(
            "growth_rate, num_init_features and bn_size must be positive, got "
            f"{growth_rate}, {num_init_features}, {bn_size}"
        )
    if len(block_config) < 1 or any(int(n) != n or n < 1 for n in block_config):
        raise ValueError(f"block_config must be positive layer counts, got {block_config}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")


class DenseNet(nn.Module):
    """torchvision's DenseNet-BC, Huang et al. 2017, "Densely Connected Convolutional Networks".

    A 7x7/2 stem and 3x3/2 max-pool, dense blocks of ``block_config[i]`` layers each adding
    ``growth_rate`` channels, transitions halving channels and resolution, a final BatchNorm,
    ReLU, global average pooling and a Linear classifier. ``memory_efficient`` recomputes
    each bottleneck in the backward pass (Pleiss et al. 2017): same numbers, less memory.
    x: (batch, 3, height, width) -> (batch, num_classes) logits.
    """

    def __init__(self, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0,
                 num_classes: int = 1000, memory_efficient: bool = False):
        super().__init__()
        _check_densenet_args(growth_rate, block_config, num_init_features, bn_size, drop_rate)
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3,
                                bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers=num_layers, num_input_features=num_features,
                                bn_size=bn_size, growth_rate=growth_rate, drop_rate=drop_rate,
                                memory_efficient=memory_efficient)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features = num_features + num_layers * growth_rate
            if i != len(block_config) - 1:
                trans = _Transition(num_input_features=num_features,
                                    num_output_features=num_features // 2)
                self.features.add_module(f"transition{i + 1}", trans)
                num_features = num_features // 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)  # N x C x H/32 x W/32 (for four blocks)
        out = F.relu(features)
        out = F.adaptive_avg_pool2d(out, (1, 1))  # N x C x 1 x 1
        out = torch.flatten(out, 1)  # N x C
        return self.classifier(out)  # N x num_classes


densenet121 = partial(DenseNet, 32, (6, 12, 24, 16), 64)
densenet161 = partial(DenseNet, 48, (6, 12, 36, 24), 96)
densenet169 = partial(DenseNet, 32, (6, 12, 32, 32), 64)
densenet201 = partial(DenseNet, 32, (6, 12, 48, 32), 64)
