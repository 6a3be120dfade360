"""Leaf layers with PyTorch's constructor signatures, written in Flax NNX, channels-last.

Every architecture in :mod:`flax_arch` is written with these layers so that a Flax file
reads like its PyTorch slide. Each layer keeps torch's argument names, defaults and
initialisation, and names its variables as torch names its ``state_dict`` entries
(``weight``, ``bias``, ``running_mean``, ...), so weight conversion is one rule per layer
type (see :mod:`flax_arch.interop`). The layouts differ: inputs here are channels-last,
``(batch, length, channels)`` and ``(batch, height, width, channels)``.

Stored layouts (torch's in brackets):

* ``Linear.weight``: ``(in_features, out_features)`` [``(out, in)``]
* ``ConvNd.weight``: ``(*kernel, in_channels // groups, out_channels)`` [``(out, in/g, *kernel)``]
* ``ConvTransposeNd.weight``: ``(*kernel, in_channels, out_channels // groups)``
  [``(in, out/g, *kernel)``]
* everything else as torch stores it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

Array = jax.Array
Dtype = Any

__all__ = [
    "Linear",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Embedding",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Dropout",
    "Sequential",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "LogSoftmax",
    "Identity",
    "flatten_chw",
]


# ----------------------------------------------------------------------------- helpers


def _tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """Expands an int to an n-tuple, checking a given tuple's length."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value}")
    return value


def _check_positive(name: str, values: tuple[int, ...]) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive, got {values}")


def _check_input(layer: str, x: Array, rank: int, layout: str, channels: int | None) -> None:
    """Raises a ValueError naming the channels-last layout expected.

    ``rank`` counts the batch axis; torch's unbatched form (rank - 1) is accepted too.
    """
    if x.ndim not in (rank, rank - 1):
        raise ValueError(
            f"{layer} expects a channels-last input of shape {layout} (or without the batch "
            f"axis); got rank {x.ndim} with shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{layer} expects a channels-last input of shape {layout} with "
            f"{channels} channels on the last axis; got shape {tuple(x.shape)}. "
            "Inputs in flax_arch are channels-last: move torch's channel axis to the end."
        )


def _bcast(v: Array, ndim: int) -> Array:
    """Reshapes a per-channel vector to broadcast against a channels-last array of rank ndim."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def _uniform(bound: float):
    """torch's ``U(-bound, bound)`` initialiser."""

    def init(key, shape, dtype):
        # drawn flat and reshaped: the same values (threefry counts the flat index), and XLA
        # compiles one random kernel per size in a fraction of the time a 4-D shape takes
        return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)

    return init


def _dtypes(x: Array, *params, dtype: Dtype | None):
    """Promotes the input and parameters to one computation dtype (``dtype`` when given)."""
    if dtype is None:
        dtype = jnp.result_type(x, *[p for p in params if p is not None])
    return [None if a is None else jnp.asarray(a, dtype) for a in (x, *params)]


_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# ----------------------------------------------------------------------------- layers


class Sequential(nnx.Module):
    """torch's ``nn.Sequential``: children named ``0``, ``1``, ... so state paths match torch."""

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
        self.num_layers = len(layers)

    def __len__(self) -> int:
        return self.num_layers

    def __getitem__(self, i: int):
        if not -self.num_layers <= i < self.num_layers:
            raise IndexError(f"index {i} out of range for Sequential of {self.num_layers}")
        return getattr(self, str(i % self.num_layers))

    def __iter__(self):
        return (getattr(self, str(i)) for i in range(self.num_layers))

    def __call__(self, x, *, rngs: nnx.Rngs | None = None):
        for layer in self:
            x = layer(x, rngs=rngs) if isinstance(layer, (Dropout, Sequential)) else layer(x)
        return x


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


def _native_conv_ops() -> bool:
    """Whether grouped and transposed convolutions are emitted as XLA's own operations, as on
    GPU and TPU, whose libraries implement them; on CPU they are rewritten (below) into the
    plain convolutions XLA:CPU differentiates ~100x faster. Both forms are the same sums and
    pass the same parity tests; which one is faster on a GPU has not been measured yet."""
    return jax.default_backend() != "cpu"


# XLA:CPU computes a grouped convolution (feature_group_count > 1) op by op and its weight
# gradient (batch_group_count) some 100x slower than a plain convolution's: on 2 cores, a
# ResNeXt 3x3 layer's backward pass took 4.4 s, against 40 ms as one plain convolution per
# group. Up to this many groups, a grouped convolution is written as per-group convolutions.
_SPLIT_GROUPS_UP_TO = 64


def _grouped_conv(x: Array, w: Array, groups: int, **kw) -> Array:
    """``lax.conv_general_dilated`` of channels-last ``x`` and HWIO ``w`` with
    ``feature_group_count=groups``, on CPU as one plain convolution per group."""
    if groups == 1 or groups > _SPLIT_GROUPS_UP_TO or _native_conv_ops():
        return lax.conv_general_dilated(x, w, feature_group_count=groups, **kw)
    cin, cout = x.shape[-1] // groups, w.shape[-1] // groups
    return jnp.concatenate(
        [lax.conv_general_dilated(x[..., i * cin:(i + 1) * cin], w[..., i * cout:(i + 1) * cout],
                                  **kw) for i in range(groups)], axis=-1)


class _ConvNd(nnx.Module):
    """Shared code of Conv1d/Conv2d (``transposed=False``) and ConvTranspose1d/2d."""

    ndim: int
    transposed: bool
    layout: str

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        output_padding=0,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
    ):
        name, n = type(self).__name__, self.ndim
        _check_positive(f"{name} channels", (in_channels, out_channels))
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: groups={groups} must be positive and divide both "
                f"in_channels={in_channels} and out_channels={out_channels}"
            )
        self.kernel_size = _tuple(kernel_size, n, "kernel_size")
        self.stride = _tuple(stride, n, "stride")
        self.dilation = _tuple(dilation, n, "dilation")
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
            padding = _tuple(padding, n, "padding")
            if any(p < 0 for p in padding):
                raise ValueError(f"{name}: padding must be non-negative, got {padding}")
        if self.transposed:
            if padding_mode != "zeros":
                raise ValueError(f"{name}: only padding_mode='zeros' is supported (as in torch)")
            self.output_padding = _tuple(output_padding, n, "output_padding")
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
            y = self._transposed(x, w, dn, out_sizes)
        else:
            pads = self._explicit_padding()
            if self.padding_mode != "zeros":
                x = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode=_PADDING_MODES[self.padding_mode])
                pads = [(0, 0)] * self.ndim
            y = _grouped_conv(x, w, self.groups, window_strides=self.stride, padding=pads,
                              rhs_dilation=self.dilation, dimension_numbers=dn)
        if b is not None:
            y = y + _bcast(b, y.ndim)
        return y[0] if unbatched else y

    def _transposed(self, x: Array, w: Array, dn, out_sizes: list[int]) -> Array:
        # out[i * stride + t * dilation - padding] += x[i] @ w[t]. Written directly (the
        # gradient of a convolution), this is a convolution over the input dilated by the
        # stride, whose weight gradient XLA:CPU computes some 100x slower than a plain one.
        # Instead, output phase r (outputs o with (o + padding) % stride == r) is a plain
        # stride-1 convolution of the undilated input with the taps t that reach it, and all
        # prod(stride) phases are one convolution: the phases are extra output channels
        # (zero taps where a phase has fewer), then interleaved ("sub-pixel" convolution).
        # Same sums, and every gradient a plain convolution's.
        g, n = self.groups, self.ndim
        k = self.kernel_size
        cin, cout = self.in_channels // g, self.out_channels // g
        w = w.reshape(*k, g, cin, cout)
        w = jnp.swapaxes(w, n, n + 1).reshape(*k, cin, self.out_channels)
        if _native_conv_ops():  # the gradient of a convolution: dilate the input by the
            # stride, convolve with the flipped kernel, pad by dilation * (k - 1) - padding
            pads = [(d * (kk - 1) - p, d * (kk - 1) - p + op) for kk, d, p, op in
                    zip(k, self.dilation, self.padding, self.output_padding)]
            return lax.conv_general_dilated(
                x, jnp.flip(w, axis=tuple(range(n))), (1,) * n, pads, lhs_dilation=self.stride,
                rhs_dilation=self.dilation, dimension_numbers=dn, feature_group_count=g)
        sizes = x.shape[1:1 + n]
        taps, pads, q_ranges = [], [(0, 0)], []
        for kk, s, d, p, size, out in zip(k, self.stride, self.dilation, self.padding, sizes,
                                          out_sizes):
            # phase r covers o + padding = q * s + r for q in [q0, q1), and there
            # out_r[q] = sum over its taps t of x[q - m_t] @ w[t], m_t = (t * d - r) / s
            q0, q1 = p // s, -(-(p + out) // s)
            m = {(t, (t * d) % s): (t * d) // s for t in range(kk)}
            lo, hi = min(m.values()), max(m.values())
            tap = np.full((hi - lo + 1, s), kk)  # [j, r]: the tap with m_t = hi - j (kk: none)
            for (t, r), mt in m.items():
                tap[hi - mt, r] = t
            taps.append(tap)
            pads.append((hi - q0, q1 - lo - size))
            q_ranges.append((q0, q1))
        pads.append((0, 0))
        # the kernel: (*J, *stride, cin, g, cout) gathered from w with a zero tap appended
        wz = jnp.pad(w, [(0, 1)] * n + [(0, 0), (0, 0)]).reshape(*(kk + 1 for kk in k), cin, g,
                                                                  cout)
        index = tuple(t.reshape((1,) * i + t.shape[:1] + (1,) * (n - 1 - i) + (1,) * i
                                + t.shape[1:] + (1,) * (n - 1 - i)) for i, t in enumerate(taps))
        wc = wz[index]  # (*J, *stride, cin, g, cout)
        js = wc.shape[:n]
        wc = jnp.moveaxis(wc, tuple(range(n, 2 * n)), tuple(range(n + 2, 2 * n + 2)))
        wc = wc.reshape(*js, cin, -1)  # output channels ordered (group, *phase, cout)
        xp = lax.pad(x, jnp.zeros((), x.dtype), [(a, b, 0) for a, b in pads])
        y = _grouped_conv(xp, wc, g, window_strides=(1,) * n, padding="VALID",
                          dimension_numbers=dn)  # (N, *Q, g * prod(stride) * cout)
        qs = y.shape[1:1 + n]
        y = y.reshape(y.shape[0], *qs, g, *self.stride, cout)
        # (N, Q_1, ..., g, s_1, ..., cout) -> (N, Q_1, s_1, Q_2, s_2, ..., g, cout)
        order = [0] + [a for i in range(n) for a in (1 + i, n + 2 + i)] + [n + 1, 2 * n + 2]
        y = y.transpose(order).reshape(y.shape[0], *(q * s for q, s in zip(qs, self.stride)),
                                       self.out_channels)
        start = [p - q0 * s for p, s, (q0, _) in zip(self.padding, self.stride, q_ranges)]
        return lax.slice(y, (0, *start, 0), (y.shape[0], *(a + b for a, b in zip(start, out_sizes)),
                                             y.shape[-1]))


class Conv1d(_ConvNd):
    """torch's ``nn.Conv1d``. x: (batch, length, in_channels) -> (batch, length', out_channels).

    ``padding`` is an int, ``'same'`` or ``'valid'``; ``padding_mode`` one of torch's four.
    """

    ndim, transposed, layout = 1, False, "(batch, length, in_channels)"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)


class Conv2d(_ConvNd):
    """torch's ``nn.Conv2d``. x: (batch, height, width, in_channels) -> (batch, h', w', out_channels)."""

    ndim, transposed, layout = 2, False, "(batch, height, width, in_channels)"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)


class ConvTranspose1d(_ConvNd):
    """torch's ``nn.ConvTranspose1d``, a learnable upsampler.

    x: (batch, length, in_channels) -> (batch, length', out_channels) with
    ``length' = (length - 1) * stride - 2 * padding + dilation * (kernel_size - 1)
    + output_padding + 1``.
    """

    ndim, transposed, layout = 1, True, "(batch, length, in_channels)"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, "zeros", output_padding, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)


class ConvTranspose2d(_ConvNd):
    """torch's ``nn.ConvTranspose2d``. x: (batch, height, width, in_channels) -> (batch, h', w', out_channels)."""

    ndim, transposed, layout = 2, True, "(batch, height, width, in_channels)"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 *, rngs: nnx.Rngs, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, "zeros", output_padding, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)


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


class Embedding(nnx.Module):
    """torch's ``nn.Embedding``: a lookup table, ``weight`` of shape (num_embeddings, embedding_dim).

    indices: (*) integers -> (*, embedding_dim). ``padding_idx``'s row starts at zero and gets
    no gradient. With ``max_norm``, every looked-up row whose ``norm_type``-norm exceeds it is
    renormalised *in the table* before the lookup, as torch does in place; the gradient flows
    to the table as if it were a plain lookup.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        *,
        rngs: nnx.Rngs,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
    ):
        _check_positive("Embedding sizes", (num_embeddings, embedding_dim))
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx={padding_idx} must be within num_embeddings="
                    f"{num_embeddings}"
                )
            padding_idx %= num_embeddings
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"Embedding: max_norm must be positive, got {max_norm}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, max_norm, norm_type
        self.dtype = dtype
        weight = jax.random.normal(rngs.params(), (num_embeddings, embedding_dim), param_dtype)
        if padding_idx is not None:
            weight = weight.at[padding_idx].set(0)
        self.weight = nnx.Param(weight)

    def __call__(self, indices: Array) -> Array:
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise TypeError(f"Embedding expects integer indices, got dtype {indices.dtype}")
        w = self.weight[...]
        if self.max_norm is not None:
            w = self._renorm(w, indices)
        if self.padding_idx is not None:  # no gradient reaches the padding row
            row = jnp.arange(self.num_embeddings)[:, None] == self.padding_idx
            w = jnp.where(row, lax.stop_gradient(w), w)
        (w,) = _dtypes(w, dtype=self.dtype)
        return jnp.take(w, indices, axis=0)

    def _renorm(self, w: Array, indices: Array) -> Array:
        # torch.embedding_renorm_: scale = max_norm / (norm + 1e-7) on rows over the limit.
        norms = jnp.sum(jnp.abs(w) ** self.norm_type, axis=1, keepdims=True) ** (1 / self.norm_type)
        looked_up = jnp.zeros((self.num_embeddings, 1), bool).at[indices.reshape(-1)].set(True)
        scale = jnp.where(looked_up & (norms > self.max_norm),
                          self.max_norm / (norms + 1e-7), jnp.ones_like(norms))
        renormed = lax.stop_gradient(w * scale)
        self.weight[...] = renormed
        return w + lax.stop_gradient(renormed - w)  # values renormed, gradient of a lookup


class Dropout(nnx.Dropout):
    """torch's ``nn.Dropout(p)``: zeroes each element with probability p, scales by 1/(1-p).

    Train mode by default, as torch; ``model.eval()`` makes it the identity. The mask comes
    from ``rngs`` (at construction or, for exact control, at call time).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout probability has to be between 0 and 1, but got {p}")
        super().__init__(p, rngs=rngs)
        self.p = p


# ----------------------------------------------------------------------------- pooling


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
    # The maximum over one strided slice per kernel offset, taken in torch's scan order and
    # kept on ties, so the gradient goes to the first maximum of each window as torch's does
    # (and a NaN propagates). XLA:CPU differentiates a reduce_window max through a
    # select-and-scatter some 7x slower than this chain of selects (ResNet's 3x3/2 pool on
    # 8x112x112x64: 112 ms against 16 ms); it also serves dilation, which JAX cannot
    # differentiate in reduce_window.
    def __call__(self, x: Array) -> Array:
        dims, strides, dil, pads = self._window(x)
        init = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        xp = jnp.pad(x, pads, constant_values=init)
        out = [(n + lo + hi - d * (k - 1) - 1) // s + 1
               for n, (lo, hi), k, s, d in zip(x.shape, pads, dims, strides, dil)]
        y = None
        for offset in np.ndindex(*dims):
            start = [o * d for o, d in zip(offset, dil)]
            stop = [a + (m - 1) * s + 1 for a, m, s in zip(start, out, strides)]
            tap = lax.slice(xp, start, stop, strides)
            if y is None:
                y = tap
            else:
                take = tap > y
                if jnp.issubdtype(x.dtype, jnp.floating):
                    take = take | jnp.isnan(tap)
                y = jnp.where(take, tap, y)
        return y


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


class Identity(nnx.Module):
    """torch's ``nn.Identity``."""

    def __call__(self, x: Array) -> Array:
        return x


def flatten_chw(x: Array) -> Array:
    """Flattens a channels-last feature map (N, *spatial, C) in torch's (C, *spatial) order.

    Keeps a following Linear layer's weights structurally identical to torch's.
    """
    return jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1)
