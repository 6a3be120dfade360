"""torch's pooling layers, channels-last: x is (batch, *spatial, channels), or without the
batch axis, as torch's unbatched form.

Indices (``return_indices=True``) are torch's: for each output, the flat index of the chosen
input element within its channel's spatial grid, ``h * width + w`` in 2-D (``d * height *
width + h * width + w`` in 3-D), laid out channels-last like the values. With indices the
maximum is the chain of first-maximum selects on every platform (XLA's ``reduce_window`` has
no argument of the maximum).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from flax_arch.nn import lowering
from flax_arch.nn._util import Array, _NamedInit, _check_input, _check_positive, _tuple

_LAYOUTS = {1: "(batch, length, channels)", 2: "(batch, height, width, channels)",
            3: "(batch, depth, height, width, channels)"}


def _pool_geometry(name, size, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooling output size and the extra right padding ceil_mode needs."""
    eff = dilation * (kernel - 1) + 1
    span = size + 2 * padding - eff
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # last window must start inside
        out -= 1
    if out < 1:  # ceil_mode keeps one window that overhangs a too-small input, as torch does
        raise ValueError(
            f"{name}: the pooling window {kernel} (dilation {dilation}) is larger than the "
            f"padded input {size} + 2 * {padding}"
        )
    extra = (out - 1) * stride + eff - (size + 2 * padding)
    return out, max(extra, 0)


def _lowest(dtype) -> np.ndarray:
    return np.array(-np.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min,
                    dtype)


def _index_dtype():
    return jax.dtypes.canonicalize_dtype(np.int64)  # torch's int64 (int32 unless x64 is on)


def _flat_positions(x: Array, ndim: int) -> Array:
    """Each spatial element's flat index in its channel's grid, shaped to broadcast against
    x: (1, ..., *spatial, 1)."""
    spatial = x.shape[x.ndim - ndim - 1:-1]
    flat = jnp.arange(math.prod(spatial), dtype=_index_dtype()).reshape(spatial)
    return flat.reshape((1,) * (x.ndim - ndim - 1) + spatial + (1,))


class _Pool(_NamedInit, nnx.Module):
    """The window of torch's max and average pools. Each kind's private class carries its
    public constructor; the public classes inherit a copy of their own name (see
    ``_NamedInit``)."""

    ndim: int

    def __init__(self, kernel_size, stride, padding, dilation, ceil_mode):
        n, name = self.ndim, type(self).__name__
        self.kernel_size = _tuple(kernel_size, n, f"{name}: kernel_size")
        self.stride = self.kernel_size if stride is None else _tuple(stride, n, f"{name}: stride")
        self.padding = _tuple(padding, n, f"{name}: padding")
        self.dilation = _tuple(dilation, n, f"{name}: dilation")
        self.ceil_mode = ceil_mode
        _check_positive(f"{name} kernel_size", self.kernel_size)
        _check_positive(f"{name} stride", self.stride)
        _check_positive(f"{name} dilation", self.dilation)
        if any(p < 0 or p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{name}: padding {self.padding} must be non-negative and at most half the "
                f"kernel size {self.kernel_size}"
            )

    def _window(self, x: Array):
        _check_input(type(self).__name__, x, self.ndim + 2, _LAYOUTS[self.ndim], None)
        geo = [
            _pool_geometry(type(self).__name__, s, k, st, p, d, self.ceil_mode)
            for s, k, st, p, d in zip(x.shape[-self.ndim - 1 : -1], self.kernel_size,
                                      self.stride, self.padding, self.dilation)
        ]
        lead = x.ndim - self.ndim - 1
        dims = (1,) * lead + self.kernel_size + (1,)
        strides = (1,) * lead + self.stride + (1,)
        dil = (1,) * lead + self.dilation + (1,)
        pads = [(0, 0)] * lead + [(p, p + e) for p, (_, e) in zip(self.padding, geo)] + [(0, 0)]
        return dims, strides, dil, pads


# ----------------------------------------------------------------------------- max


def _max_with_indices(taps):
    """The first maximum of each window in torch's scan order, and its index; ``taps``
    yields (values, indices) per kernel offset, padding marked by index -1 (a real element
    always replaces padding, a NaN propagates: the rules of torch's kernels)."""
    y = yi = None
    for tap, ti in taps:
        if y is None:
            y, yi = tap, jnp.broadcast_to(ti, tap.shape)
            continue
        take = (tap > y) | ((yi < 0) & (ti >= 0))
        if jnp.issubdtype(tap.dtype, jnp.floating):
            take = take | jnp.isnan(tap)
        y, yi = jnp.where(take, tap, y), jnp.where(take, ti, yi)
    return y, yi


class _MaxPool(_Pool):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.return_indices = return_indices

    def __call__(self, x: Array) -> Array | tuple[Array, Array]:
        dims, strides, dil, pads = self._window(x)
        xp = jnp.pad(x, pads, constant_values=_lowest(x.dtype))
        if not self.return_indices:
            return lowering.max_pool(xp, dims, strides, dil)
        pos = jnp.pad(_flat_positions(x, self.ndim), pads, constant_values=-1)
        out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(xp.shape, dims, strides,
                                                                       dil)]
        spatial = range(x.ndim - self.ndim - 1, x.ndim - 1)

        def taps():  # torch's scan order: row-major over the kernel offsets
            for offset in np.ndindex(*dims):
                start = [o * d for o, d in zip(offset, dil)]
                stop = [a + (m - 1) * s + 1 for a, m, s in zip(start, out, strides)]
                window = [(start[a], stop[a], strides[a]) if a in spatial else (0, 1, 1)
                          for a in range(x.ndim)]
                yield lax.slice(xp, start, stop, strides), lax.slice(pos, *zip(*window))

        return _max_with_indices(taps())


class MaxPool1d(_MaxPool):
    """torch's ``nn.MaxPool1d``. x: (batch, length, channels) -> (batch, length', channels);
    with ``return_indices``, also each maximum's index along the input's length."""

    ndim = 1


class MaxPool2d(_MaxPool):
    """torch's ``nn.MaxPool2d``. x: (batch, height, width, channels) -> (batch, h', w',
    channels); with ``return_indices``, also each maximum's index ``h * width + w``."""

    ndim = 2


class MaxPool3d(_MaxPool):
    """torch's ``nn.MaxPool3d``. x: (batch, depth, height, width, channels); with
    ``return_indices``, also each maximum's index ``(d * height + h) * width + w``."""

    ndim = 3


# ----------------------------------------------------------------------------- average


class _AvgPool(_Pool):
    """The divisor is torch's: the window clipped to the padded input (``count_include_pad``)
    or to the input itself, or ``divisor_override``. The constructor is AvgPool2d's and
    AvgPool3d's; AvgPool1d, which has no ``divisor_override``, writes its own."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        if divisor_override is not None and divisor_override <= 0:
            raise ValueError(f"{type(self).__name__}: divisor_override must be positive, got "
                             f"{divisor_override}")
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def __call__(self, x: Array) -> Array:
        dims, strides, dil, pads = self._window(x)
        zero = np.array(0, x.dtype)  # concrete, so that JAX differentiates it under jit
        total = lax.reduce_window(x, zero, lax.add, dims, strides, pads)
        if self.divisor_override is not None:
            return total / self.divisor_override
        # count the cells of each window that torch counts: the input, plus its zero padding
        # when count_include_pad; never the extra cells ceil_mode adds on the right.
        n = self.ndim
        space = slice(x.ndim - n - 1, x.ndim - 1)
        ones = jnp.ones(x.shape[space], x.dtype)
        if self.count_include_pad:
            ones = jnp.pad(ones, [(p, p) for p in self.padding], constant_values=1)
            cpads = [(0, hi - lo) for lo, hi in pads[space]]
        else:
            cpads = pads[space]
        count = lax.reduce_window(ones, zero, lax.add, dims[space], strides[space], cpads)
        return total / count.reshape((1,) * (x.ndim - n - 1) + count.shape + (1,))


class AvgPool1d(_AvgPool):
    """torch's ``nn.AvgPool1d``. x: (batch, length, channels) -> (batch, length', channels)."""

    ndim = 1

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, None)


class AvgPool2d(_AvgPool):
    """torch's ``nn.AvgPool2d``. x: (batch, height, width, channels) -> (batch, h', w', channels)."""

    ndim = 2


class AvgPool3d(_AvgPool):
    """torch's ``nn.AvgPool3d``. x: (batch, depth, height, width, channels)."""

    ndim = 3


# ----------------------------------------------------------------------------- power average


class _LPPool(_NamedInit, nnx.Module):
    """torch's power-average pooling: ``(sum over the window of x ** p) ** (1 / p)``, from
    torch's unpadded average pool times the kernel size (so with ``ceil_mode`` an overhanging
    window's sum is scaled as torch's is); ``p = inf`` is the maximum of ``|x|``."""

    ndim: int

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False):
        name = type(self).__name__
        if norm_type == 0:
            raise ValueError(f"{name}: norm_type must be a non-zero value, but got {norm_type}")
        self.norm_type, self.ceil_mode = norm_type, ceil_mode
        self.kernel_size = _tuple(kernel_size, self.ndim, f"{name}: kernel_size")
        self.stride = self.kernel_size if stride is None else _tuple(stride, self.ndim,
                                                                      f"{name}: stride")
        if abs(norm_type) == math.inf:
            pool = (MaxPool1d, MaxPool2d, MaxPool3d)[self.ndim - 1]
            self.pool = pool(self.kernel_size, self.stride, ceil_mode=ceil_mode)
        else:
            pool = (AvgPool1d, AvgPool2d, AvgPool3d)[self.ndim - 1]
            self.pool = pool(self.kernel_size, self.stride, ceil_mode=ceil_mode)

    def __call__(self, x: Array) -> Array:
        p = self.norm_type
        if p == math.inf:
            return self.pool(jnp.abs(x))
        if p == -math.inf:
            return -self.pool(-jnp.abs(x))
        out = self.pool(x ** int(p) if float(p).is_integer() else x ** p)
        magnitude = jnp.abs(out)
        # torch's sign(out) * relu(|out|): relu's gradient selects, so a zero sum gets none
        out = jnp.sign(out) * jnp.where(magnitude <= 0, 0, magnitude)
        return (out * math.prod(self.kernel_size)) ** (1.0 / p)


class LPPool1d(_LPPool):
    """torch's ``nn.LPPool1d``. x: (batch, length, channels) -> (batch, length', channels)."""

    ndim = 1


class LPPool2d(_LPPool):
    """torch's ``nn.LPPool2d``. x: (batch, height, width, channels) -> (batch, h', w', channels)."""

    ndim = 2


class LPPool3d(_LPPool):
    """torch's ``nn.LPPool3d``. x: (batch, depth, height, width, channels)."""

    ndim = 3


# ----------------------------------------------------------------------------- adaptive


def _bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive bins: bin i of ``out`` over ``size`` covers
    ``[floor(i * size / out), ceil((i + 1) * size / out))``."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _output_size(name: str, output_size, n: int) -> tuple[int | None, ...]:
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size,) * n
    output_size = tuple(output_size)
    if len(output_size) != n or any(o is not None and o <= 0 for o in output_size):
        raise ValueError(f"{name}: output_size must be a positive int, None, or a tuple of {n} "
                         f"of them; got {output_size}")
    return output_size


class _AdaptivePool(_NamedInit, nnx.Module):
    ndim: int

    def __init__(self, output_size):
        self.output_size = _output_size(type(self).__name__, output_size, self.ndim)

    def _axes(self, x: Array):
        """(axis, output size) for every spatial axis that changes size."""
        name = type(self).__name__
        _check_input(name, x, self.ndim + 2, _LAYOUTS[self.ndim], None)
        first = x.ndim - self.ndim - 1
        for axis, out in zip(range(first, x.ndim - 1), self.output_size):
            if x.shape[axis] == 0:
                raise ValueError(f"{name} expects non-empty spatial axes; got shape "
                                 f"{tuple(x.shape)}")
            if out is not None and out != x.shape[axis]:
                yield axis, out


class _AdaptiveAvgPool(_AdaptivePool):
    def __call__(self, x: Array) -> Array:
        for axis, out in self._axes(x):
            x = _adaptive_mean(x, axis, out)
        return x


def _adaptive_mean(x: Array, axis: int, out: int) -> Array:
    size = x.shape[axis]
    if size % out == 0:  # equal bins: a reshape and a mean
        shape = (*x.shape[:axis], out, size // out, *x.shape[axis + 1 :])
        return jnp.mean(x.reshape(shape), axis=axis + 1)
    starts, ends = _bins(size, out)
    bins = [lax.slice_in_dim(x, int(a), int(b), axis=axis) for a, b in zip(starts, ends)]
    return jnp.stack([jnp.mean(b, axis=axis) for b in bins], axis=axis)


class AdaptiveAvgPool1d(_AdaptiveAvgPool):
    """torch's ``nn.AdaptiveAvgPool1d``: bin i of n over length L averages
    ``[floor(i * L / n), ceil((i + 1) * L / n))``.
    x: (batch, length, channels) -> (batch, output_size, channels)."""

    ndim = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPool):
    """torch's ``nn.AdaptiveAvgPool2d``, bins as :class:`AdaptiveAvgPool1d` on each axis
    (``None`` keeps an axis). x: (batch, h, w, channels) -> (batch, *output_size, channels)."""

    ndim = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPool):
    """torch's ``nn.AdaptiveAvgPool3d``. x: (batch, d, h, w, channels) -> (batch,
    *output_size, channels)."""

    ndim = 3


class _AdaptiveMaxPool(_AdaptivePool):
    """The maximum over torch's adaptive bins, one spatial axis after another from the last
    (so the first maximum along each axis in turn is torch's first in row-major order); the
    index is torch's."""

    def __init__(self, output_size, return_indices: bool = False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def __call__(self, x: Array) -> Array | tuple[Array, Array]:
        axes = list(self._axes(x))
        idx = _flat_positions(x, self.ndim)
        for axis, out in reversed(axes):  # the last axis first: then row-major ties are right
            x, idx = _adaptive_max(x, idx, axis, out)
        if self.return_indices:
            return x, jnp.broadcast_to(idx, x.shape)
        return x


def _adaptive_max(x: Array, idx: Array, axis: int, out: int) -> tuple[Array, Array]:
    starts, ends = _bins(x.shape[axis], out)
    shape = [1] * x.ndim
    shape[axis] = out

    def taps():
        for j in range(int(np.max(ends - starts))):
            valid = starts + j < ends
            at = np.where(valid, starts + j, starts)
            tap = jnp.take(x, at, axis=axis)
            if not valid.all():  # a shorter bin: its missing taps never win
                tap = jnp.where(valid.reshape(shape), tap, _lowest(x.dtype))
            yield tap, jnp.take(idx, at, axis=axis)

    return _max_with_indices(taps())


class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    """torch's ``nn.AdaptiveMaxPool1d``, bins as :class:`AdaptiveAvgPool1d`.
    x: (batch, length, channels) -> (batch, output_size, channels)."""

    ndim = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    """torch's ``nn.AdaptiveMaxPool2d``. x: (batch, h, w, channels) -> (batch, *output_size,
    channels)."""

    ndim = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPool):
    """torch's ``nn.AdaptiveMaxPool3d``. x: (batch, d, h, w, channels) -> (batch,
    *output_size, channels)."""

    ndim = 3
