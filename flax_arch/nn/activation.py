"""torch's activation layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn._util import Array

class ReLU(nnx.Module):
    """torch's ``nn.ReLU`` (``inplace`` is accepted and means nothing in JAX)."""

    def __init__(self, inplace: bool = False):
        del inplace

    def __call__(self, x: Array) -> Array:
        return jax.nn.relu(x)


class LeakyReLU(nnx.Module):
    """torch's ``nn.LeakyReLU``."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        del inplace
        self.negative_slope = negative_slope

    def __call__(self, x: Array) -> Array:
        return jnp.where(x > 0, x, x * self.negative_slope)


class Tanh(nnx.Module):
    """torch's ``nn.Tanh``."""

    def __call__(self, x: Array) -> Array:
        return jnp.tanh(x)


class Sigmoid(nnx.Module):
    """torch's ``nn.Sigmoid``."""

    def __call__(self, x: Array) -> Array:
        return jax.nn.sigmoid(x)


class LogSoftmax(nnx.Module):
    """torch's ``nn.LogSoftmax`` over the feature axis, which channels-last puts last.

    ``dim`` is the axis in *this* layout (default -1, the features); torch's ``dim=1`` on
    (N, C, ...) is ``dim=-1`` here.
    """

    def __init__(self, dim: int = -1):
        self.dim = dim

    def __call__(self, x: Array) -> Array:
        return jax.nn.log_softmax(x, axis=self.dim)
