"""Convolutions from the "Convolutional Layer" slides, in Flax NNX.

x: (batch, length, channels), channels-last (torch's (batch, channels, length) moved).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.layers import Conv1d, ConvTranspose1d, LogSoftmax, Sequential, Tanh
from flax_arch.registry import Config, Input, ModelEntry, register

__all__ = ["Conv1d", "CausalConv1d", "ConvMLP", "ConvTranspose1d"]


class CausalConv1d(Conv1d):
    """A convolution that sees only the past: left-pad by ``dilation * (kernel_size - 1)``.

    (batch, length, in_channels) -> (batch, length, out_channels); output t depends on inputs <= t.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 bias: bool = True, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias,
                         rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(
                f"CausalConv1d expects a channels-last input of shape (batch, length, "
                f"in_channels={self.in_channels}); got shape {tuple(x.shape)}"
            )
        pad = self.dilation[0] * (self.kernel_size[0] - 1)
        return super().__call__(jnp.pad(x, [(0, 0), (pad, 0), (0, 0)]))


class ConvMLP(Sequential):
    """The slide's "MLP as a CNN": kernel-1 convolutions are a Linear layer swept over time.

    (batch, length, num_inputs) -> (batch, length, num_outputs) log-probabilities.
    """

    def __init__(self, num_inputs: int = 100, hidden_size: int = 1024, num_outputs: int = 20,
                 *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        super().__init__(
            Conv1d(num_inputs, hidden_size, 1, **kw),
            Tanh(),
            Conv1d(hidden_size, hidden_size, 1, **kw),
            Tanh(),
            Conv1d(hidden_size, num_outputs, 1, **kw),
            LogSoftmax(),
        )


register(ModelEntry(
    "conv1d", "conv", Conv1d,
    test=Config({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "padding": 1},
                (Input((2, 4, 16), "NCL"),), Input((2, 8, 16), "NCL")),
    bench=Config({"in_channels": 64, "out_channels": 128, "kernel_size": 3, "padding": 1},
                 (Input((32, 64, 1024), "NCL"),), Input((32, 128, 1024), "NCL")),
    outputs=("NCL",), loss="mse",
))
register(ModelEntry(
    "causal_conv1d", "conv", CausalConv1d,
    test=Config({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "dilation": 2},
                (Input((2, 4, 16), "NCL"),), Input((2, 8, 16), "NCL")),
    bench=Config({"in_channels": 64, "out_channels": 128, "kernel_size": 3, "dilation": 2},
                 (Input((32, 64, 1024), "NCL"),), Input((32, 128, 1024), "NCL")),
    outputs=("NCL",), loss="mse",
))
register(ModelEntry(
    "conv_mlp", "conv", ConvMLP,
    test=Config({"num_inputs": 16, "hidden_size": 32, "num_outputs": 5},
                (Input((2, 16, 6), "NCL"),), Input((2, 6), "NL", "index", 5)),
    bench=Config({}, (Input((16, 100, 64), "NCL"),), Input((16, 64), "NL", "index", 20)),
    outputs=("NCL",), loss="nll",
))
register(ModelEntry(
    "conv_transpose1d", "conv", ConvTranspose1d,
    test=Config({"in_channels": 4, "out_channels": 6, "kernel_size": 8, "stride": 4},
                (Input((2, 4, 5), "NCL"),), Input((2, 6, 24), "NCL")),
    bench=Config({"in_channels": 128, "out_channels": 64, "kernel_size": 8, "stride": 4},
                 (Input((32, 128, 256), "NCL"),), Input((32, 64, 1028), "NCL")),
    outputs=("NCL",), loss="mse",
))
