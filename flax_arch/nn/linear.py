"""torch's ``nn.Linear``, ``nn.Identity``, ``nn.Flatten`` and ``nn.Unflatten``, and the
(C, H, W)-order flatten."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from flax_arch.nn._util import Array, Dtype, _bcast, _check_positive, _dtypes
from flax_arch.nn.init import _uniform

class Linear(nnx.Module):
    """torch's ``nn.Linear``: ``y = x @ weight + bias``.

    x: (*, in_features) -> (*, out_features). ``weight`` is stored ``(in, out)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
    ):
        _check_positive("Linear features", (in_features, out_features))
        self.in_features, self.out_features = in_features, out_features
        self.dtype = dtype
        init = _uniform(1.0 / math.sqrt(in_features))
        self.weight = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(init(rngs.params(), (out_features,), param_dtype)) if bias else None

    def __call__(self, x: Array) -> Array:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expects an input of shape (*, in_features={self.in_features}); "
                f"got shape {tuple(x.shape)}"
            )
        x, w, b = _dtypes(x, self.weight[...], None if self.bias is None else self.bias[...],
                          dtype=self.dtype)
        y = lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
        return y if b is None else y + _bcast(b, y.ndim)


class Identity(nnx.Module):
    """torch's ``nn.Identity`` (its constructor arguments are accepted and ignored, as torch's)."""

    def __init__(self, *args, **kwargs):
        del args, kwargs

    def __call__(self, x: Array) -> Array:
        return x


def flatten_chw(x: Array) -> Array:
    """Flattens a channels-last feature map (N, *spatial, C) in torch's (C, *spatial) order.

    Keeps a following Linear layer's weights structurally identical to torch's.
    """
    return jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1)


# Flatten and Unflatten name torch's dimensions: they act as torch's layers on the
# channels-first form of their input and return the channels-last form of torch's result, so
# that a feature map flattens in torch's (C, H, W) order and a following Linear layer keeps
# torch's weights. An array of rank 3 or more is taken as channels-last (batch, *spatial,
# channels); one of rank 2 or less has no channel axis to move.


def _channels_first(x: Array) -> Array:
    return jnp.moveaxis(x, -1, 1) if x.ndim >= 3 else x


def _channels_last(x: Array) -> Array:
    return jnp.moveaxis(x, 1, -1) if x.ndim >= 3 else x


def _dim(layer: str, dim: int, ndim: int) -> int:
    """A torch dimension of an array of rank ``ndim`` (a scalar has one, as in torch)."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise ValueError(f"{layer}: dimension {dim} is out of range for a tensor of rank {ndim} "
                         f"(torch's layout)")
    return dim % n


class Flatten(nnx.Module):
    """torch's ``nn.Flatten``: merges torch's dimensions ``start_dim`` to ``end_dim``.

    The dimensions are torch's, of the channels-first form (batch, channels, *spatial): on a
    channels-last feature map (batch, *spatial, channels) the default flattens in torch's
    (channels, *spatial) order (as :func:`flatten_chw`), and ``Flatten(2)`` gives the
    channels-last (batch, prod(spatial), channels).
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        self.start_dim, self.end_dim = start_dim, end_dim

    def __call__(self, x: Array) -> Array:
        t = _channels_first(x)
        start, end = (_dim("Flatten", d, t.ndim) for d in (self.start_dim, self.end_dim))
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after end_dim="
                             f"{self.end_dim} for a tensor of rank {t.ndim}")
        shape = t.shape[:start] + (math.prod(t.shape[start:end + 1]),) + t.shape[end + 1:]
        return _channels_last(t.reshape(shape))


class Unflatten(nnx.Module):
    """torch's ``nn.Unflatten``: splits torch's dimension ``dim`` into ``unflattened_size``
    (one entry may be -1).

    As :class:`Flatten`, ``dim`` is torch's: ``Unflatten(1, (C, H, W))`` turns (batch, C * H *
    W) into the channels-last (batch, H, W, C).
    """

    def __init__(self, dim: int, unflattened_size: Sequence[int]):
        sizes = tuple(int(s) for s in unflattened_size)
        if not sizes or sum(s == -1 for s in sizes) > 1 or any(s < -1 for s in sizes):
            raise ValueError(f"Unflatten: unflattened_size must be non-empty sizes with at most "
                             f"one -1, got {tuple(unflattened_size)}")
        self.dim, self.unflattened_size = dim, sizes

    def __call__(self, x: Array) -> Array:
        t = _channels_first(x)
        dim = _dim("Unflatten", self.dim, t.ndim)
        size, sizes = t.shape[dim] if t.ndim else 1, list(self.unflattened_size)
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes and known and size % known == 0:
            sizes[sizes.index(-1)] = size // known
        if math.prod(sizes) != size or -1 in sizes:
            raise ValueError(f"Unflatten: unflattened_size {self.unflattened_size} does not "
                             f"split torch's dimension {self.dim} of size {size}")
        return _channels_last(t.reshape(t.shape[:dim] + tuple(sizes) + t.shape[dim + 1:]))
