"""Fully connected models of the "Fully Connected" slides, in Flax NNX.

Each is the slide's ``nn.Sequential``, so state paths are the slide's (``0/weight``).
x: (batch, num_inputs) -> (batch, num_outputs).
"""

import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import Linear, LogSoftmax, Sequential, Sigmoid, Tanh

__all__ = ["LogisticRegression", "LinearRegression", "SoftmaxClassifier", "MLP"]


class LogisticRegression(Sequential):
    """One unit and a sigmoid: a binary linear classifier. (batch, num_inputs) -> (batch, 1)."""

    def __init__(self, num_inputs: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        super().__init__(
            Linear(num_inputs, 1, rngs=rngs, dtype=dtype, param_dtype=param_dtype), Sigmoid()
        )


class LinearRegression(Sequential):
    """One unit, no activation. (batch, num_inputs) -> (batch, 1)."""

    def __init__(self, num_inputs: int, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        super().__init__(Linear(num_inputs, 1, rngs=rngs, dtype=dtype, param_dtype=param_dtype))


class SoftmaxClassifier(Sequential):
    """Many units and a log-softmax. (batch, num_inputs) -> (batch, num_outputs) log-probabilities."""

    def __init__(self, num_inputs: int, num_outputs: int, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        super().__init__(
            Linear(num_inputs, num_outputs, rngs=rngs, dtype=dtype, param_dtype=param_dtype),
            LogSoftmax(),
        )


class MLP(Sequential):
    """The slide's multilayer perceptron: two tanh hidden layers and a log-softmax.

    (batch, num_inputs) -> (batch, num_outputs) log-probabilities.
    """

    def __init__(self, num_inputs: int = 100, hidden_size: int = 1024, num_outputs: int = 20,
                 *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        super().__init__(
            Linear(num_inputs, hidden_size, **kw),
            Tanh(),
            Linear(hidden_size, hidden_size, **kw),
            Tanh(),
            Linear(hidden_size, num_outputs, **kw),
            LogSoftmax(),
        )
