"""Fully connected models of the "Fully Connected" slides, in Flax NNX.

Each is the slide's ``nn.Sequential``, so state paths are the slide's (``0/weight``).
x: (batch, num_inputs) -> (batch, num_outputs).
"""

import jax.numpy as jnp
from flax import nnx

from flax_arch.layers import Linear, LogSoftmax, Sequential, Sigmoid, Tanh
from flax_arch.registry import Config, Input, ModelEntry, register

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


def _nc(features: int, batch: int = 4) -> tuple[Input, ...]:
    return (Input((batch, features), "NC"),)


register(ModelEntry(
    "logistic_regression", "dense", LogisticRegression,
    test=Config({"num_inputs": 16}, _nc(16), Input((4, 1), "NC", "unit")),
    bench=Config({"num_inputs": 100}, _nc(100, 256), Input((256, 1), "NC", "unit")),
    outputs=("NC",), loss="bce",
))
register(ModelEntry(
    "linear_regression", "dense", LinearRegression,
    test=Config({"num_inputs": 16}, _nc(16), Input((4, 1), "NC")),
    bench=Config({"num_inputs": 100}, _nc(100, 256), Input((256, 1), "NC")),
    outputs=("NC",), loss="mse",
))
register(ModelEntry(
    "softmax_classifier", "dense", SoftmaxClassifier,
    test=Config({"num_inputs": 16, "num_outputs": 5}, _nc(16), Input((4,), "N", "index", 5)),
    bench=Config({"num_inputs": 100, "num_outputs": 20}, _nc(100, 256),
                 Input((256,), "N", "index", 20)),
    outputs=("NC",), loss="nll",
))
register(ModelEntry(
    "mlp", "dense", MLP,
    test=Config({"num_inputs": 16, "hidden_size": 32, "num_outputs": 5}, _nc(16),
                Input((4,), "N", "index", 5)),
    bench=Config({}, _nc(100, 256), Input((256,), "N", "index", 20)),
    outputs=("NC",), loss="nll",
))
