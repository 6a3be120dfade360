"""torch's resampling layers, channels-last: ``Upsample`` (and its two fixed-mode forms),
``PixelShuffle`` and ``PixelUnshuffle``.

``Upsample`` (and the port's ``F.interpolate``, through :func:`_resample`) computes each
output's source indices and weights as torch's CPU kernels do (torch 2.14, a contiguous
(N, C, *spatial) input), in the same precision, and resamples one spatial axis after another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_arch.nn._util import Array, _check_positive
from flax_arch.nn.pooling import _adaptive_mean

_MODES = {"nearest": None, "nearest-exact": None, "area": None, "linear": 1, "bilinear": 2,
          "bicubic": 2, "trilinear": 3}
_NEAREST = ("nearest", "nearest-exact")
_LAYOUTS = {3: "(batch, length, channels)", 4: "(batch, height, width, channels)",
            5: "(batch, depth, height, width, channels)"}


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """torch's cubic convolution coefficients (A = -0.75) for fractions t: (out, 4)."""
    a = -0.75

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _taps(mode: str, n_in: int, n_out: int, factor: float | None, align_corners: bool,
          t: type, shortcuts: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Source indices (n_out, taps) and weights (n_out, taps) of one axis, None for the
    nearest modes, by torch's rules: the scale ``1 / factor`` (``n_in / n_out`` without a
    factor, ``(n_in - 1) / (n_out - 1)`` with align_corners) rounded to the type ``t``, the
    source position computed in float64 (as torch's fused multiply-add does in float32) and
    rounded to ``t`` (to float32 for the nearest modes), floored in float32; the interpolating
    modes keep the fraction in ``t``. An interpolating mode other than bicubic copies an
    axis whose size does not change; with ``shortcuts`` 'nearest' does too, and halves the
    index where the size doubles."""
    dst = np.arange(n_out)
    if n_out == n_in and (shortcuts if mode in _NEAREST else mode != "bicubic"):
        return dst[:, None], None
    if shortcuts and mode == "nearest" and n_out == 2 * n_in:
        return (dst >> 1)[:, None], None
    if align_corners:
        s = t(n_in - 1) / t(n_out - 1) if n_out > 1 else t(0)
    else:
        s = t(1.0 / factor) if factor else t(n_in) / t(n_out)
    s = np.float64(s)
    if mode in _NEAREST:
        pos = s * (dst + (0.5 if mode == "nearest-exact" else 0.0))
        i0 = np.floor(pos.astype(np.float32)).astype(np.int64)
        return np.minimum(i0, n_in - 1)[:, None], None
    real = (s * dst if align_corners else s * (dst + 0.5) - 0.5).astype(t)
    if not align_corners and mode != "bicubic":
        real = np.maximum(real, t(0))
    # torch's guard_index_and_lambda: floorf (a float32 floor) of the source position
    i0 = np.minimum(np.floor(real.astype(np.float32)).astype(np.int64), n_in - 1)
    lam = np.clip(real - i0.astype(t), t(0), t(1))
    if mode == "bicubic":
        return np.clip(i0[:, None] + np.arange(-1, 3), 0, n_in - 1), _cubic_weights(lam)
    i1 = i0 + (i0 < n_in - 1)
    return np.stack([i0, i1], axis=-1), np.stack([1 - lam, lam], axis=-1)


def _resample(x: Array, axes: Sequence[int], size: Sequence[int] | None,
              factors: Sequence[float] | None, mode: str, align_corners: bool | None,
              recompute_scale_factor: bool | None) -> Array:
    """torch's ``F.interpolate`` along ``axes`` of ``x`` (its spatial dims, in torch's
    order), given one ``size`` or one scale factor per axis.

    A factor f makes the output ``floor(n * f)`` and places the samples at scale ``1 / f``
    unless ``recompute_scale_factor``. 'area' is adaptive average pooling. The scale's type
    is the opmath type (float64 for a float64 input, else float32), except in torch's
    vectorised 2-D nearest kernel, which it takes where the output's height + width <= 128:
    there the scale is float32, and 'nearest' copies an unchanged axis and halves the index
    of a doubled one.
    """
    in_sizes = [x.shape[a] for a in axes]
    if size is not None:
        out, factors = tuple(size), (None,) * len(axes)
    else:
        out = tuple(math.floor(float(n * f)) for n, f in zip(in_sizes, factors))
        if recompute_scale_factor:
            factors = (None,) * len(axes)
    if mode == "area":
        for axis, n_in, n_out in zip(axes, in_sizes, out):
            if n_out != n_in:
                x = _adaptive_mean(x, axis, n_out)
        return x
    vectorised = mode in _NEAREST and len(axes) == 2 and sum(out) <= 128
    t = np.float32 if vectorised or x.dtype != np.float64 else np.float64
    for axis, n_in, n_out, f in zip(axes, in_sizes, out, factors):
        idx, w = _taps(mode, n_in, n_out, f, bool(align_corners), t, vectorised)
        if w is None:
            x = jnp.take(x, idx[:, 0], axis=axis)
            continue
        shape = [1] * x.ndim
        shape[axis] = n_out
        x = sum(jnp.take(x, idx[:, k], axis=axis) * w[:, k].astype(x.dtype).reshape(shape)
                for k in range(idx.shape[1]))
    return x


class Upsample(nnx.Module):
    """torch's ``nn.Upsample`` (``F.interpolate``): ``size`` or ``scale_factor`` (the output
    is ``floor(size * scale_factor)``, and the factor itself places the samples unless
    ``recompute_scale_factor``); modes ``'nearest'``, ``'nearest-exact'``, ``'linear'``
    (3-D input), ``'bilinear'``, ``'bicubic'`` (4-D), ``'trilinear'`` (5-D), ``'area'``
    (adaptive average pooling), with ``align_corners`` for the interpolating ones, at
    torch's source positions (:func:`_resample`).

    x: (batch, *spatial, channels) with 1 to 3 spatial axes -> (batch, *size, channels).
    """

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None):
        name = type(self).__name__
        if mode not in _MODES:
            raise ValueError(f"{name}: mode must be one of {sorted(_MODES)}, got {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError(f"{name}: give exactly one of size and scale_factor")
        if align_corners is not None and _MODES[mode] is None:
            raise ValueError(f"{name}: align_corners can only be set with the interpolating "
                             f"modes linear | bilinear | bicubic | trilinear, not {mode!r}")
        if recompute_scale_factor and size is not None:
            raise ValueError(f"{name}: recompute_scale_factor needs scale_factor, not size")
        self.size, self.mode = size, mode
        self.scale_factor = (tuple(float(s) for s in scale_factor)
                             if isinstance(scale_factor, (tuple, list))
                             else None if scale_factor is None else float(scale_factor))
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def _per_axis(self, value, n: int, what: str):
        if value is None or isinstance(value, (tuple, list)):
            if value is not None and len(value) != n:
                raise ValueError(f"{type(self).__name__}: {what} {tuple(value)} must have one "
                                 f"entry per spatial axis ({n})")
            return value
        return (value,) * n

    def __call__(self, x: Array) -> Array:
        name, n = type(self).__name__, x.ndim - 2
        if x.ndim not in _LAYOUTS or _MODES[self.mode] not in (None, n):
            want = (" or ".join(_LAYOUTS.values()) if _MODES[self.mode] is None
                    else _LAYOUTS[_MODES[self.mode] + 2])
            raise ValueError(f"{name} in mode {self.mode!r} expects a channels-last input of "
                             f"shape {want}; got shape {tuple(x.shape)}")
        return _resample(x, range(1, n + 1), self._per_axis(self.size, n, "size"),
                         self._per_axis(self.scale_factor, n, "scale_factor"), self.mode,
                         self.align_corners, self.recompute_scale_factor)


class UpsamplingNearest2d(Upsample):
    """torch's ``nn.UpsamplingNearest2d``: ``Upsample(size, scale_factor, mode='nearest')``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """torch's ``nn.UpsamplingBilinear2d``: ``Upsample(size, scale_factor, mode='bilinear',
    align_corners=True)``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class PixelShuffle(nnx.Module):
    """torch's ``nn.PixelShuffle`` (Shi et al., "Real-Time Single Image and Video
    Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", 2016):
    channel ``c * r**2 + i * r + j`` at (h, w) goes to channel c at (h * r + i, w * r + j).

    x: (*, height, width, channels * r**2) -> (*, height * r, width * r, channels).
    """

    def __init__(self, upscale_factor: int):
        _check_positive("PixelShuffle upscale_factor", (upscale_factor,))
        self.upscale_factor = upscale_factor

    def __call__(self, x: Array) -> Array:
        r = self.upscale_factor
        if x.ndim < 3 or x.shape[-1] % (r * r):
            raise ValueError(f"PixelShuffle({r}) expects a channels-last input (*, height, "
                             f"width, channels) with channels divisible by {r * r}; got shape "
                             f"{tuple(x.shape)}")
        *lead, h, w, c = x.shape
        y = x.reshape(*lead, h, w, c // (r * r), r, r)
        k = len(lead)
        y = jnp.moveaxis(y, (k + 3, k + 4), (k + 1, k + 3))  # (*, h, r, w, r, c / r**2)
        return y.reshape(*lead, h * r, w * r, c // (r * r))


class PixelUnshuffle(nnx.Module):
    """torch's ``nn.PixelUnshuffle``, the inverse of :class:`PixelShuffle`.

    x: (*, height * r, width * r, channels) -> (*, height, width, channels * r**2).
    """

    def __init__(self, downscale_factor: int):
        _check_positive("PixelUnshuffle downscale_factor", (downscale_factor,))
        self.downscale_factor = downscale_factor

    def __call__(self, x: Array) -> Array:
        r = self.downscale_factor
        if x.ndim < 3 or x.shape[-3] % r or x.shape[-2] % r:
            raise ValueError(f"PixelUnshuffle({r}) expects a channels-last input (*, height, "
                             f"width, channels) with height and width divisible by {r}; got "
                             f"shape {tuple(x.shape)}")
        *lead, h, w, c = x.shape
        k = len(lead)
        y = x.reshape(*lead, h // r, r, w // r, r, c)
        y = jnp.moveaxis(y, (k + 1, k + 3), (k + 3, k + 4))  # (*, h / r, w / r, c, r, r)
        return y.reshape(*lead, h // r, w // r, c * r * r)
