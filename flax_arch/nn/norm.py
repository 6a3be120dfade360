"""torch's normalisation layers, channels-last.

Batch, instance and group normalisation read the channels on the last axis. ``LayerNorm`` and
``RMSNorm`` normalise over the trailing ``len(normalized_shape)`` axes of *their* input, as
torch's do, whatever those axes mean: over the features of a (batch, length, features)
sequence they are the same layer as torch's; applied to a feature map, the trailing axes here
are (..., width, channels), not torch's (..., height, width), and moving the layout is the
caller's (the port's) business.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from flax_arch.nn._util import (Array, Dtype, _NamedInit, _assign, _bcast, _check_positive,
                                _dtypes)


class _NormBase(_NamedInit, nnx.Module):
    """The state of torch's ``_NormBase``: ``weight`` (ones) and ``bias`` (zeros) of
    (num_features,) when ``affine`` (``bias=False`` drops the bias), and the running
    statistics ``running_mean``, ``running_var`` and ``num_batches_tracked`` when
    ``track_running_stats``.

    ``model.train()`` / ``model.eval()`` set ``use_running_average``; eval mode normalises
    with the running statistics when there are any, with the input's own otherwise.

    The constructor is the public one, with torch's ``_NormBase`` defaults (those of the
    batch norms); each public class gets a copy of its own name (see ``_NamedInit``).
    """

    layout: str
    ranks: tuple[int, ...]

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, bias: bool = True,
                 rngs: nnx.Rngs | None = None, use_running_average: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32):
        del rngs  # a constant initialisation, as torch's
        name = type(self).__name__
        _check_positive(f"{name} num_features", (num_features,))
        if eps <= 0:
            raise ValueError(f"{name}: eps must be positive, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.use_running_average, self.dtype = use_running_average, dtype
        self.weight = nnx.Param(jnp.ones((num_features,), param_dtype)) if affine else None
        self.bias = (nnx.Param(jnp.zeros((num_features,), param_dtype)) if affine and bias
                     else None)
        if track_running_stats:
            self.running_mean = nnx.BatchStat(jnp.zeros((num_features,), param_dtype))
            self.running_var = nnx.BatchStat(jnp.ones((num_features,), param_dtype))
            count_dtype = jax.dtypes.canonicalize_dtype(np.int64)  # int32 unless x64 is on
            self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), count_dtype))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _check(self, x: Array) -> None:
        if x.ndim not in self.ranks or x.shape[-1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__} expects a channels-last input of shape {self.layout} "
                f"with {self.num_features} channels on the last axis; got shape "
                f"{tuple(x.shape)}"
            )

    def _params(self, x: Array):
        """x, weight and bias (None where absent) in the computation dtype."""
        x, w, b = _dtypes(x, *(None if p is None else p[...] for p in (self.weight, self.bias)),
                          dtype=self.dtype)
        return x, w, b

    def _update(self, stat: nnx.BatchStat, batch: Array, factor) -> None:
        """``running = (1 - factor) * running + factor * batch`` in the statistic's dtype."""
        batch = lax.stop_gradient(batch).astype(stat[...].dtype)
        _assign(stat, (1 - factor) * stat[...] + factor * batch)


def _affine(y: Array, w: Array | None, b: Array | None) -> Array:
    if w is not None:
        y = y * _bcast(w, y.ndim)
    if b is not None:
        y = y + _bcast(b, y.ndim)
    return y


class _BatchNorm(_NormBase):
    """torch's batch normalisation (Ioffe & Szegedy 2015) over every axis but the last.

    Train mode (``use_running_average=False``, set by ``model.train()``) normalises with the
    batch's biased variance and updates the running statistics as torch does:
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased*
    batch variance, or a cumulative average when ``momentum=None``; ``num_batches_tracked``
    counts the updates. An empty batch gives an empty output and counts a call without
    changing the statistics, as torch's. Eval mode (``model.eval()``) normalises with the
    running statistics.
    """

    def __call__(self, x: Array) -> Array:
        self._check(x)
        x, w, b = self._params(x)
        axes = tuple(range(x.ndim - 1))
        if self.use_running_average and self.track_running_stats:
            mean = self.running_mean[...].astype(x.dtype)
            var = self.running_var[...].astype(x.dtype)
        else:
            n = math.prod(x.shape[:-1])
            if n == 1:
                raise ValueError(
                    f"{type(self).__name__} in train mode needs more than 1 value per channel; "
                    f"got input shape {tuple(x.shape)}"
                )
            if n == 0:  # nothing to normalise, no statistics to take
                mean = jnp.zeros(x.shape[-1:], x.dtype)
                var = jnp.ones(x.shape[-1:], x.dtype)
            else:
                mean = jnp.mean(x, axis=axes)
                var = jnp.mean(jnp.square(x - _bcast(mean, x.ndim)), axis=axes)
            if self.track_running_stats and not self.use_running_average:
                count = self.num_batches_tracked[...] + 1
                if n:
                    factor = 1.0 / count if self.momentum is None else self.momentum
                    self._update(self.running_mean, mean, factor)
                    self._update(self.running_var, var * (n / (n - 1)), factor)
                _assign(self.num_batches_tracked, count)
        y = (x - _bcast(mean, x.ndim)) * _bcast(lax.rsqrt(var + self.eps), x.ndim)
        return _affine(y, w, b)


class BatchNorm1d(_BatchNorm):
    """torch's ``nn.BatchNorm1d``. x: (batch, channels) or (batch, length, channels)."""

    layout, ranks = "(batch, channels) or (batch, length, channels)", (2, 3)


class BatchNorm2d(_BatchNorm):
    """torch's ``nn.BatchNorm2d``. x: (batch, height, width, channels)."""

    layout, ranks = "(batch, height, width, channels)", (4,)


class BatchNorm3d(_BatchNorm):
    """torch's ``nn.BatchNorm3d``. x: (batch, depth, height, width, channels)."""

    layout, ranks = "(batch, depth, height, width, channels)", (5,)


class _InstanceNorm(_NormBase):
    """torch's instance normalisation (Ulyanov et al. 2016): each sample's channels are
    normalised over their spatial positions (biased variance).

    Not affine and without running statistics by default, as torch's ``_InstanceNorm``
    (the only change its constructor makes to the public one of ``_NormBase``). With
    ``track_running_stats``, train mode updates them with the batch average of the
    instances' statistics (``momentum=None`` leaves them as they are, as torch does) and eval
    mode normalises with them; ``num_batches_tracked`` is kept and never counts, as torch's.
    An empty batch leaves the running statistics as they are (torch's become NaN, the mean
    of no instances).
    """

    ndim: int

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, *, bias: bool = True,
                 rngs: nnx.Rngs | None = None, use_running_average: bool = False,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias=bias,
                         rngs=rngs, use_running_average=use_running_average, dtype=dtype,
                         param_dtype=param_dtype)

    def __call__(self, x: Array) -> Array:
        self._check(x)
        x, w, b = self._params(x)
        unbatched = x.ndim == self.ndim + 1
        if unbatched:
            x = x[None]
        axes = tuple(range(1, x.ndim - 1))  # the spatial axes
        if self.use_running_average and self.track_running_stats:
            mean = _bcast(self.running_mean[...].astype(x.dtype), x.ndim)
            var = _bcast(self.running_var[...].astype(x.dtype), x.ndim)
        else:
            n = math.prod(x.shape[1:-1])
            if n == 1:
                raise ValueError(
                    f"{type(self).__name__} in train mode needs more than 1 spatial element; "
                    f"got input shape {tuple(x.shape[1:] if unbatched else x.shape)}"
                )
            mean = jnp.mean(x, axis=axes, keepdims=True)  # N x 1 ... 1 x C
            var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
            if self.track_running_stats and self.momentum is not None and x.shape[0] and n:
                batch_axes = tuple(range(x.ndim - 1))
                self._update(self.running_mean, jnp.mean(mean, axis=batch_axes), self.momentum)
                self._update(self.running_var, jnp.mean(var, axis=batch_axes) * (n / (n - 1)),
                             self.momentum)
        y = _affine((x - mean) * lax.rsqrt(var + self.eps), w, b)
        return y[0] if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """torch's ``nn.InstanceNorm1d``. x: (batch, length, channels) or (length, channels)."""

    ndim, layout, ranks = 1, "(batch, length, channels) or (length, channels)", (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """torch's ``nn.InstanceNorm2d``. x: (batch, height, width, channels), or without batch."""

    ndim, layout, ranks = 2, "(batch, height, width, channels)", (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """torch's ``nn.InstanceNorm3d``. x: (batch, depth, height, width, channels), or without
    batch."""

    ndim, layout, ranks = 3, "(batch, depth, height, width, channels)", (4, 5)


class GroupNorm(nnx.Module):
    """torch's ``nn.GroupNorm`` (Wu & He, "Group Normalization", 2018): each sample's
    channels in ``num_groups`` contiguous groups, each normalised over its channels and every
    position (biased variance), then a per-channel affine map.

    x: (batch, *, num_channels), channels last.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, *, bias: bool = True, rngs: nnx.Rngs | None = None,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32):
        del rngs  # a constant initialisation, as torch's
        _check_positive("GroupNorm num_groups and num_channels", (num_groups, num_channels))
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels={num_channels} must be divisible by "
                             f"num_groups={num_groups}")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.affine, self.dtype = affine, dtype
        self.weight = nnx.Param(jnp.ones((num_channels,), param_dtype)) if affine else None
        self.bias = (nnx.Param(jnp.zeros((num_channels,), param_dtype)) if affine and bias
                     else None)

    def __call__(self, x: Array) -> Array:
        if x.ndim < 2 or x.shape[-1] != self.num_channels:
            raise ValueError(
                f"GroupNorm expects a channels-last input of shape (batch, *, "
                f"{self.num_channels}); got shape {tuple(x.shape)}"
            )
        x, w, b = _dtypes(x, *(None if p is None else p[...] for p in (self.weight, self.bias)),
                          dtype=self.dtype)
        g = x.reshape(*x.shape[:-1], self.num_groups, self.num_channels // self.num_groups)
        axes = (*range(1, g.ndim - 2), g.ndim - 1)
        mean = jnp.mean(g, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=axes, keepdims=True)
        y = ((g - mean) * lax.rsqrt(var + self.eps)).reshape(x.shape)
        return _affine(y, w, b)


def _normalized_shape(name: str, normalized_shape) -> tuple[int, ...]:
    shape = ((normalized_shape,) if isinstance(normalized_shape, (int, np.integer))
             else tuple(normalized_shape))
    if not shape or any(not isinstance(s, (int, np.integer)) or s < 0 for s in shape):
        raise ValueError(f"{name}: normalized_shape must be an int or a non-empty sequence of "
                         f"non-negative ints, got {normalized_shape!r}")
    return tuple(int(s) for s in shape)


def _check_trailing(name: str, x: Array, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The trailing axes ``shape`` covers, after checking that x ends with it."""
    if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
        raise ValueError(f"{name} with normalized_shape={list(shape)} expects an input of "
                         f"shape (*, {', '.join(map(str, shape))}); got {tuple(x.shape)}")
    return tuple(range(x.ndim - len(shape), x.ndim))


class LayerNorm(nnx.Module):
    """torch's ``nn.LayerNorm`` (Ba et al., "Layer Normalization", 2016): normalises over the
    trailing axes ``normalized_shape`` of its input (biased variance), then an elementwise
    affine map (``weight``, ``bias`` of that shape).

    x: (*, *normalized_shape) -> the same shape. The axes are those of *this* input: over
    the features of (batch, length, features), ``LayerNorm(features)`` is torch's.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, *,
                 rngs: nnx.Rngs | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        del rngs  # a constant initialisation, as torch's
        self.normalized_shape = _normalized_shape("LayerNorm", normalized_shape)
        self.eps, self.elementwise_affine, self.dtype = eps, elementwise_affine, dtype
        shape = self.normalized_shape
        self.weight = nnx.Param(jnp.ones(shape, param_dtype)) if elementwise_affine else None
        self.bias = (nnx.Param(jnp.zeros(shape, param_dtype)) if elementwise_affine and bias
                     else None)

    def __call__(self, x: Array) -> Array:
        axes = _check_trailing("LayerNorm", x, self.normalized_shape)
        x, w, b = _dtypes(x, *(None if p is None else p[...] for p in (self.weight, self.bias)),
                          dtype=self.dtype)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
        y = (x - mean) * lax.rsqrt(var + self.eps)
        lead = (1,) * (x.ndim - len(axes))
        if w is not None:
            y = y * w.reshape(lead + w.shape)
        if b is not None:
            y = y + b.reshape(lead + b.shape)
        return y


class RMSNorm(nnx.Module):
    """torch's ``nn.RMSNorm`` (Zhang & Sennrich 2019): ``x / sqrt(mean(x**2) + eps) * weight``
    over the trailing axes ``normalized_shape`` of its input; ``eps=None`` is the machine
    epsilon of the computation dtype, as torch's.

    x: (*, *normalized_shape) -> the same shape.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True, *, rngs: nnx.Rngs | None = None,
                 dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32):
        del rngs  # a constant initialisation, as torch's
        self.normalized_shape = _normalized_shape("RMSNorm", normalized_shape)
        self.eps, self.elementwise_affine, self.dtype = eps, elementwise_affine, dtype
        self.weight = (nnx.Param(jnp.ones(self.normalized_shape, param_dtype))
                       if elementwise_affine else None)

    def __call__(self, x: Array) -> Array:
        axes = _check_trailing("RMSNorm", x, self.normalized_shape)
        x, w = _dtypes(x, None if self.weight is None else self.weight[...], dtype=self.dtype)
        eps = jnp.finfo(x.dtype).eps if self.eps is None else self.eps
        y = x * lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + eps)
        if w is not None:
            y = y * w.reshape((1,) * (x.ndim - w.ndim) + w.shape)
        return y


class LocalResponseNorm(nnx.Module):
    """torch's ``nn.LocalResponseNorm`` (Krizhevsky et al. 2012, AlexNet):
    ``x_c / (k + alpha / size * sum(x_j**2 for j in the size channels around c)) ** beta``,
    the window zero-padded by ``size // 2`` below and ``(size - 1) // 2`` above.

    x: (batch, *, channels) with at least one spatial axis, channels last.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        _check_positive("LocalResponseNorm size", (size,))
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def __call__(self, x: Array) -> Array:
        if x.ndim < 3:
            raise ValueError("LocalResponseNorm expects a channels-last input of shape "
                             f"(batch, *spatial, channels) with 3 or more axes; got shape "
                             f"{tuple(x.shape)}")
        if x.size == 0:
            return x
        lead = (1,) * (x.ndim - 1)
        pads = ((0, 0),) * (x.ndim - 1) + ((self.size // 2, (self.size - 1) // 2),)
        total = lax.reduce_window(jnp.square(x), np.array(0, x.dtype), lax.add,
                                  lead + (self.size,), lead + (1,), pads)
        return x / (total / self.size * self.alpha + self.k) ** self.beta
