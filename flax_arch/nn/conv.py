"""torch's convolutions, channels-last: Conv1d/2d and ConvTranspose1d/2d."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from flax_arch.nn import lowering
from flax_arch.nn._util import (_PADDING_MODES, Array, Dtype, _NamedInit, _bcast, _check_input,
                                _check_positive, _dtypes, _tuple)
from flax_arch.nn.init import _uniform


class _ConvNd(_NamedInit, nnx.Module):
    """Shared code of Conv1d/Conv2d (``transposed=False``) and ConvTranspose1d/2d. Its
    constructor takes every argument of both, as torch's ``_ConvNd``; ``_PlainConvNd`` and
    ``_ConvTransposeNd`` carry torch's two public signatures, and each public class
    inherits a copy of its own name (see ``_NamedInit``)."""

    ndim: int
    transposed: bool
    layout: str

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding,
                 dilation, groups: int, bias: bool, padding_mode: str, output_padding, *,
                 rngs: nnx.Rngs, dtype: Dtype | None, param_dtype: Dtype):
        name, n = type(self).__name__, self.ndim
        _check_positive(f"{name} channels", (in_channels, out_channels))
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: groups={groups} must be positive and divide both "
                f"in_channels={in_channels} and out_channels={out_channels}"
            )
        self.kernel_size = _tuple(kernel_size, n, f"{name}: kernel_size")
        self.stride = _tuple(stride, n, f"{name}: stride")
        self.dilation = _tuple(dilation, n, f"{name}: dilation")
        _check_positive(f"{name} kernel_size", self.kernel_size)
        _check_positive(f"{name} stride", self.stride)
        _check_positive(f"{name} dilation", self.dilation)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{name}: padding_mode must be one of {sorted(_PADDING_MODES)}, got {padding_mode!r}"
            )
        if isinstance(padding, str):
            if self.transposed:
                raise ValueError(f"{name}: padding must be an int or a tuple of {n} ints, "
                                 f"got {padding!r}")
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be 'same', 'valid', or ints; got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' needs stride 1 (as in torch), "
                                 f"got stride={self.stride}")
        else:
            padding = _tuple(padding, n, f"{name}: padding")
            if any(p < 0 for p in padding):
                raise ValueError(f"{name}: padding must be non-negative, got {padding}")
        if self.transposed:
            if padding_mode != "zeros":
                raise ValueError(f"{name}: only padding_mode='zeros' is supported (as in torch)")
            self.output_padding = _tuple(output_padding, n, f"{name}: output_padding")
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if not 0 <= op < max(s, d):
                    raise ValueError(
                        f"{name}: output_padding={self.output_padding} must be non-negative and "
                        f"smaller than stride or dilation ({self.stride}, {self.dilation})"
                    )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding, self.padding_mode, self.dtype = padding, padding_mode, dtype

        ksize = math.prod(self.kernel_size)
        if self.transposed:  # torch's fan_in is weight.size(1) * prod(kernel)
            shape = (*self.kernel_size, in_channels, out_channels // groups)
            fan_in = out_channels // groups * ksize
        else:
            shape = (*self.kernel_size, in_channels // groups, out_channels)
            fan_in = in_channels // groups * ksize
        init = _uniform(1.0 / math.sqrt(fan_in))
        self.weight = nnx.Param(init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(init(rngs.params(), (out_channels,), param_dtype)) if bias else None

    def _explicit_padding(self) -> list[tuple[int, int]]:
        if self.padding == "valid":
            return [(0, 0)] * self.ndim
        if self.padding == "same":  # torch puts the odd element on the right
            totals = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in self.padding]

    def _output_sizes(self, sizes) -> list[int]:
        if self.transposed:
            return [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
                    zip(sizes, self.stride, self.padding, self.dilation, self.kernel_size,
                        self.output_padding)]
        return [(n + lo + hi - d * (k - 1) - 1) // s + 1 for n, (lo, hi), s, d, k in
                zip(sizes, self._explicit_padding(), self.stride, self.dilation,
                    self.kernel_size)]

    def __call__(self, x: Array) -> Array:
        name = type(self).__name__
        _check_input(name, x, self.ndim + 2, self.layout, self.in_channels)
        unbatched = x.ndim == self.ndim + 1
        if unbatched:
            x = x[None]
        sizes = x.shape[1:1 + self.ndim]
        out_sizes = self._output_sizes(sizes)
        if min(out_sizes) < 1:
            raise ValueError(
                f"{name}: an input of spatial size {tuple(sizes)} gives an output of size "
                f"{tuple(out_sizes)}: too small for kernel_size="
                f"{self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}"
            )
        x, w, b = _dtypes(x, self.weight[...], None if self.bias is None else self.bias[...],
                          dtype=self.dtype)
        spatial = {1: "W", 2: "HW"}[self.ndim]
        lhs = "N" + spatial + "C"
        dn = lax.conv_dimension_numbers(x.shape, w.shape, (lhs, spatial + "IO", lhs))
        if self.transposed:
            y = lowering.conv_transpose(
                x, w, stride=self.stride, padding=self.padding, dilation=self.dilation,
                output_padding=self.output_padding, groups=self.groups, out_sizes=out_sizes,
                dimension_numbers=dn)
        else:
            pads = self._explicit_padding()
            if self.padding_mode != "zeros":
                x = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode=_PADDING_MODES[self.padding_mode])
                pads = [(0, 0)] * self.ndim
            y = lowering.grouped_conv(x, w, self.groups, window_strides=self.stride, padding=pads,
                              rhs_dilation=self.dilation, dimension_numbers=dn)
        if b is not None:
            y = y + _bcast(b, y.ndim)
        return y[0] if unbatched else y


class _PlainConvNd(_ConvNd):
    """torch's ``Conv1d`` / ``Conv2d`` constructor (no ``output_padding``: torch's is 0)."""

    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)


class _ConvTransposeNd(_ConvNd):
    """torch's ``ConvTranspose1d`` / ``ConvTranspose2d`` constructor, in torch's order."""

    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros", *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)


class Conv1d(_PlainConvNd):
    """torch's ``nn.Conv1d``. x: (batch, length, in_channels) -> (batch, length', out_channels).

    ``padding`` is an int, ``'same'`` or ``'valid'``; ``padding_mode`` one of torch's four.
    """

    ndim, layout = 1, "(batch, length, in_channels)"


class Conv2d(_PlainConvNd):
    """torch's ``nn.Conv2d``. x: (batch, height, width, in_channels) -> (batch, h', w', out_channels)."""

    ndim, layout = 2, "(batch, height, width, in_channels)"


class ConvTranspose1d(_ConvTransposeNd):
    """torch's ``nn.ConvTranspose1d``, a learnable upsampler.

    x: (batch, length, in_channels) -> (batch, length', out_channels) with
    ``length' = (length - 1) * stride - 2 * padding + dilation * (kernel_size - 1)
    + output_padding + 1``.
    """

    ndim, layout = 1, "(batch, length, in_channels)"


class ConvTranspose2d(_ConvTransposeNd):
    """torch's ``nn.ConvTranspose2d``. x: (batch, height, width, in_channels) -> (batch, h', w', out_channels)."""

    ndim, layout = 2, "(batch, height, width, in_channels)"
