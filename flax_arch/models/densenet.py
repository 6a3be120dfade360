"""Densely connected networks of the "Skip connections" slides, in Flax NNX.

Mirrors torchvision's DenseNet-BC (``torchvision.models.densenet``): the same constructor
arguments, the same state tree (``features.denseblock1.denselayer1.norm1``, ...), so a
torchvision ``state_dict()`` loads strictly, and the same initialisation.
Layout: channels-last, (batch, height, width, channels).
"""

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Linear,
    MaxPool2d,
    ReLU,
    Stochastic,
)
from flax_arch.nn.containers import call
from flax_arch.nn.init import kaiming_normal_

__all__ = ["DenseNet", "densenet121", "densenet161", "densenet169", "densenet201"]


class _NamedSequential(Stochastic):
    """torch's ``nn.Sequential(OrderedDict(...))``: children under their own names (the
    state paths), called in order; dense blocks get the call's ``rngs``."""

    def __init__(self, layers: dict[str, nnx.Module]):
        for name, layer in layers.items():
            setattr(self, name, layer)
        self.names = tuple(layers)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        for name in self.names:
            layer = getattr(self, name)
            x = call(layer, x, rngs)
        return x


class _DenseLayer(Stochastic):
    """BN-ReLU-Conv1x1 (to ``bn_size * growth_rate``) then BN-ReLU-Conv3x3 (to ``growth_rate``).

    Takes the list of every earlier feature map of its block, concatenated on the channel
    axis: [(batch, height, width, c_i)] -> (batch, height, width, growth_rate). Dropout
    (train mode, ``drop_rate > 0``) draws its mask from the call's ``rngs``.
    """

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int,
                 drop_rate: float, memory_efficient: bool = False, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = BatchNorm2d(num_input_features, **kw)
        self.relu1 = ReLU()
        self.conv1 = Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1,
                            bias=False, rngs=rngs, **kw)
        self.norm2 = BatchNorm2d(bn_size * growth_rate, **kw)
        self.relu2 = ReLU()
        self.conv2 = Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1,
                            padding=1, bias=False, rngs=rngs, **kw)
        self.drop_rate = float(drop_rate)
        self.dropout = Dropout(self.drop_rate)
        self.memory_efficient = memory_efficient

    def bn_function(self, inputs: list[jax.Array]) -> jax.Array:
        concated_features = jnp.concatenate(inputs, axis=-1)  # N x H x W x sum(c_i)
        return self.conv1(self.relu1(self.norm1(concated_features)))  # N x H x W x bn_size*k

    def __call__(self, input: jax.Array | list[jax.Array], *,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        prev_features = [input] if isinstance(input, jax.Array) else list(input)
        if self.memory_efficient:
            # recompute the bottleneck in the backward pass instead of storing it
            bottleneck_output = nnx.remat(_DenseLayer.bn_function)(self, prev_features)
        else:
            bottleneck_output = self.bn_function(prev_features)
        new_features = self.conv2(self.relu2(self.norm2(bottleneck_output)))  # N x H x W x k
        return self.dropout(new_features, rngs=rngs)


class _DenseBlock(Stochastic):
    """``num_layers`` dense layers, each fed every earlier output of the block.

    x: (batch, height, width, c) -> (batch, height, width, c + num_layers * growth_rate).
    """

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int,
                 growth_rate: int, drop_rate: float, memory_efficient: bool = False, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        for i in range(num_layers):
            layer = _DenseLayer(num_input_features + i * growth_rate, growth_rate=growth_rate,
                                bn_size=bn_size, drop_rate=drop_rate,
                                memory_efficient=memory_efficient, rngs=rngs, dtype=dtype,
                                param_dtype=param_dtype)
            setattr(self, f"denselayer{i + 1}", layer)
        self.num_layers = num_layers

    def __call__(self, init_features: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        features = [init_features]
        for i in range(self.num_layers):
            layer = getattr(self, f"denselayer{i + 1}")
            features.append(layer(features, rngs=rngs))  # N x H x W x k
        return jnp.concatenate(features, axis=-1)  # N x H x W x (c + num_layers * k)


class _Transition(_NamedSequential):
    """BN-ReLU-Conv1x1 and 2x2 average pooling between dense blocks.

    x: (batch, h, w, num_input_features) -> (batch, h / 2, w / 2, num_output_features).
    """

    def __init__(self, num_input_features: int, num_output_features: int, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        super().__init__({
            "norm": BatchNorm2d(num_input_features, **kw),
            "relu": ReLU(),
            "conv": Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1,
                           bias=False, rngs=rngs, **kw),
            "pool": AvgPool2d(kernel_size=2, stride=2),
        })


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


class DenseNet(Stochastic):
    """torchvision's DenseNet-BC, Huang et al. 2017, "Densely Connected Convolutional Networks".

    A 7x7/2 stem and 3x3/2 max-pool, dense blocks of ``block_config[i]`` layers each adding
    ``growth_rate`` channels, transitions halving channels and resolution, a final BatchNorm,
    ReLU, global average pooling and a Linear classifier. ``memory_efficient`` rematerialises
    each bottleneck in the backward pass (``nnx.remat``; Pleiss et al. 2017): same numbers,
    less memory. x: (batch, height, width, 3) -> (batch, num_classes) logits.
    """

    def __init__(self, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0,
                 num_classes: int = 1000, memory_efficient: bool = False, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        _check_densenet_args(growth_rate, block_config, num_init_features, bn_size, drop_rate)
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        features = {
            "conv0": Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3,
                            bias=False, **kw),
            "norm0": BatchNorm2d(num_init_features, dtype=dtype, param_dtype=param_dtype),
            "relu0": ReLU(),
            "pool0": MaxPool2d(kernel_size=3, stride=2, padding=1),
        }
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            features[f"denseblock{i + 1}"] = _DenseBlock(
                num_layers=num_layers, num_input_features=num_features, bn_size=bn_size,
                growth_rate=growth_rate, drop_rate=drop_rate, memory_efficient=memory_efficient,
                **kw)
            num_features = num_features + num_layers * growth_rate
            if i != len(block_config) - 1:
                features[f"transition{i + 1}"] = _Transition(
                    num_input_features=num_features, num_output_features=num_features // 2, **kw)
                num_features = num_features // 2
        features["norm5"] = BatchNorm2d(num_features, dtype=dtype, param_dtype=param_dtype)
        self.features = _NamedSequential(features)
        self.classifier = Linear(num_features, num_classes, **kw)

        # BatchNorm2d already starts at weight 1, bias 0.
        kaiming_normal_([m for _, m in nnx.iter_modules(self) if isinstance(m, Conv2d)],
                        rngs.params(), mode="fan_in")
        self.classifier.bias[...] = jnp.zeros_like(self.classifier.bias[...])

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                "DenseNet expects a channels-last image batch of shape (batch, height, width, "
                f"channels=3); got shape {tuple(x.shape)}"
            )
        features = self.features(x, rngs=rngs)  # N x H/32 x W/32 x C (for four blocks)
        out = jax.nn.relu(features)
        out = jnp.mean(out, axis=(1, 2))  # N x C: adaptive_avg_pool2d to 1x1, flattened
        return self.classifier(out)  # N x num_classes


densenet121 = partial(DenseNet, 32, (6, 12, 24, 16), 64)
densenet161 = partial(DenseNet, 48, (6, 12, 36, 24), 96)
densenet169 = partial(DenseNet, 32, (6, 12, 32, 32), 64)
densenet201 = partial(DenseNet, 32, (6, 12, 48, 32), 64)
