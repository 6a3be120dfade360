"""Convolutions from the "Convolutional Layer" slides, in Flax NNX.

x: (batch, length, channels), channels-last (torch's (batch, channels, length) moved).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import Conv1d, ConvTranspose1d, LogSoftmax, Sequential, Tanh

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
