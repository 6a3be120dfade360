"""torch's pooling layers, channels-last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from flax_arch.nn import lowering
from flax_arch.nn._util import Array, _check_input, _check_positive, _tuple

def _pool_geometry(size, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooling output size and the extra right padding ceil_mode needs."""
    eff = dilation * (kernel - 1) + 1
    span = size + 2 * padding - eff
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # last window must start inside
        out -= 1
    if out < 1:  # ceil_mode keeps one window that overhangs a too-small input, as torch does
        raise ValueError(
            f"pooling window {kernel} (dilation {dilation}) is larger than the padded input "
            f"{size} + 2 * {padding}"
        )
    extra = (out - 1) * stride + eff - (size + 2 * padding)
    return out, max(extra, 0)


class _Pool(nnx.Module):
    ndim: int
    layout: str

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        n, name = self.ndim, type(self).__name__
        self.kernel_size = _tuple(kernel_size, n, "kernel_size")
        self.stride = self.kernel_size if stride is None else _tuple(stride, n, "stride")
        self.padding = _tuple(padding, n, "padding")
        self.dilation = _tuple(dilation, n, "dilation")
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
        _check_input(type(self).__name__, x, self.ndim + 2, self.layout, None)
        geo = [
            _pool_geometry(s, k, st, p, d, self.ceil_mode)
            for s, k, st, p, d in zip(x.shape[-self.ndim - 1 : -1], self.kernel_size,
                                      self.stride, self.padding, self.dilation)
        ]
        lead = x.ndim - self.ndim - 1
        dims = (1,) * lead + self.kernel_size + (1,)
        strides = (1,) * lead + self.stride + (1,)
        dil = (1,) * lead + self.dilation + (1,)
        pads = [(0, 0)] * lead + [(p, p + e) for p, (_, e) in zip(self.padding, geo)] + [(0, 0)]
        return dims, strides, dil, pads


class _MaxPool(_Pool):
    def __call__(self, x: Array) -> Array:
        dims, strides, dil, pads = self._window(x)
        init = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        return lowering.max_pool(jnp.pad(x, pads, constant_values=init), dims, strides, dil)


class MaxPool1d(_MaxPool):
    """torch's ``nn.MaxPool1d`` (``ceil_mode`` included). x: (batch, length, channels)."""

    ndim, layout = 1, "(batch, length, channels)"


class MaxPool2d(_MaxPool):
    """torch's ``nn.MaxPool2d`` (``ceil_mode`` included). x: (batch, height, width, channels)."""

    ndim, layout = 2, "(batch, height, width, channels)"


class AvgPool2d(_Pool):
    """torch's ``nn.AvgPool2d``. x: (batch, height, width, channels).

    The divisor is torch's: the window clipped to the padded input (``count_include_pad``)
    or to the input itself, or ``divisor_override``.
    """

    ndim, layout = 2, "(batch, height, width, channels)"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        if divisor_override is not None and divisor_override <= 0:
            raise ValueError(f"AvgPool2d: divisor_override must be positive, got {divisor_override}")
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def __call__(self, x: Array) -> Array:
        dims, strides, dil, pads = self._window(x)
        zero = np.array(0, x.dtype)  # concrete, so that JAX differentiates it under jit
        total = lax.reduce_window(x, zero, lax.add, dims, strides, pads)
        if self.divisor_override is not None:
            return total / self.divisor_override
        # count the cells of each window that torch counts: the input, plus its zero padding
        # when count_include_pad; never the extra cells ceil_mode adds on the right.
        h, w = x.shape[-3:-1]
        ones = jnp.ones((h, w), x.dtype)
        if self.count_include_pad:
            (ph, pw) = self.padding
            ones = jnp.pad(ones, [(ph, ph), (pw, pw)], constant_values=1)
            cpads = [(0, hi - lo) for lo, hi in pads[-3:-1]]
        else:
            cpads = pads[-3:-1]
        count = lax.reduce_window(ones, zero, lax.add, dims[-3:-1], strides[-3:-1], cpads)
        return total / count.reshape((1,) * (x.ndim - 3) + count.shape + (1,))


class AdaptiveAvgPool2d(nnx.Module):
    """torch's ``nn.AdaptiveAvgPool2d``: bin i of n over size L covers
    ``[floor(i * L / n), ceil((i + 1) * L / n))``. x: (batch, h, w, channels) -> (batch, *output_size, channels).
    """

    def __init__(self, output_size):
        if isinstance(output_size, int) or output_size is None:
            output_size = (output_size, output_size)
        output_size = tuple(output_size)
        if len(output_size) != 2 or any(o is not None and o <= 0 for o in output_size):
            raise ValueError(f"AdaptiveAvgPool2d: output_size must be positive, got {output_size}")
        self.output_size = output_size

    def __call__(self, x: Array) -> Array:
        _check_input("AdaptiveAvgPool2d", x, 4, "(batch, height, width, channels)", None)
        for axis, out in zip((-3, -2), self.output_size):
            if out is not None and out != x.shape[axis]:
                x = _adaptive_mean(x, axis, out)
        return x


def _adaptive_mean(x: Array, axis: int, out: int) -> Array:
    axis %= x.ndim
    size = x.shape[axis]
    if size % out == 0:  # equal bins: a reshape and a mean
        shape = (*x.shape[:axis], out, size // out, *x.shape[axis + 1 :])
        return jnp.mean(x.reshape(shape), axis=axis + 1)
    bins = [
        lax.slice_in_dim(x, (i * size) // out, -((-(i + 1) * size) // out), axis=axis)
        for i in range(out)
    ]
    return jnp.stack([jnp.mean(b, axis=axis) for b in bins], axis=axis)


# ----------------------------------------------------------------------------- activations
