"""torch's batch normalisation over the last (channel) axis."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from flax_arch.nn._util import Array, Dtype, _bcast, _check_positive, _dtypes

class _BatchNorm(nnx.Module):
    """torch's batch normalisation over the last (channel) axis.

    Train mode (``use_running_average=False``, set by ``model.train()``) normalises with the
    batch's biased variance and updates the running statistics as torch does:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased*
    batch variance, or a cumulative average when ``momentum=None``; ``num_batches_tracked``
    counts the updates. Eval mode (``model.eval()``) normalises with the running statistics.
    """

    layout: str
    ranks: tuple[int, ...]

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        rngs: nnx.Rngs | None = None,
        use_running_average: bool = False,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
    ):
        name = type(self).__name__
        _check_positive(f"{name} num_features", (num_features,))
        if eps <= 0:
            raise ValueError(f"{name}: eps must be positive, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.use_running_average, self.dtype = use_running_average, dtype
        if affine:
            self.weight = nnx.Param(jnp.ones((num_features,), param_dtype))
            self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.running_mean = nnx.BatchStat(jnp.zeros((num_features,), param_dtype))
            self.running_var = nnx.BatchStat(jnp.ones((num_features,), param_dtype))
            count_dtype = jax.dtypes.canonicalize_dtype(np.int64)  # int32 unless x64 is on
            self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), count_dtype))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def __call__(self, x: Array) -> Array:
        name = type(self).__name__
        if x.ndim not in self.ranks or x.shape[-1] != self.num_features:
            raise ValueError(
                f"{name} expects a channels-last input of shape {self.layout} with "
                f"{self.num_features} channels on the last axis; got shape {tuple(x.shape)}"
            )
        params = [self.weight, self.bias] if self.affine else []
        x, *wb = _dtypes(x, *[p[...] for p in params], dtype=self.dtype)
        axes = tuple(range(x.ndim - 1))
        if self.use_running_average and self.track_running_stats:
            mean = self.running_mean[...].astype(x.dtype)
            var = self.running_var[...].astype(x.dtype)
        else:
            n = math.prod(x.shape[:-1])
            if n <= 1:
                raise ValueError(
                    f"{name} in train mode needs more than 1 value per channel; got input "
                    f"shape {tuple(x.shape)}"
                )
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - _bcast(mean, x.ndim)), axis=axes)
            if self.track_running_stats:
                count = self.num_batches_tracked[...] + 1
                if self.momentum is None:
                    factor = 1.0 / count
                else:
                    factor = self.momentum
                stats_dtype = self.running_mean[...].dtype
                unbiased = lax.stop_gradient(var) * (n / (n - 1))
                for stat, batch in ((self.running_mean, lax.stop_gradient(mean)),
                                    (self.running_var, unbiased)):
                    new = (1 - factor) * stat[...] + factor * batch.astype(stats_dtype)
                    stat[...] = new.astype(stats_dtype)
                self.num_batches_tracked[...] = count
        y = (x - _bcast(mean, x.ndim)) * _bcast(lax.rsqrt(var + self.eps), x.ndim)
        if self.affine:
            y = y * _bcast(wb[0], x.ndim) + _bcast(wb[1], x.ndim)
        return y


class BatchNorm1d(_BatchNorm):
    """torch's ``nn.BatchNorm1d``. x: (batch, channels) or (batch, length, channels)."""

    layout, ranks = "(batch, channels) or (batch, length, channels)", (2, 3)


class BatchNorm2d(_BatchNorm):
    """torch's ``nn.BatchNorm2d``. x: (batch, height, width, channels)."""

    layout, ranks = "(batch, height, width, channels)", (4,)
