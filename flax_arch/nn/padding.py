"""torch's padding layers, channels-last: x is (batch, *spatial, channels), or without the
batch axis, as torch's unbatched form.

``padding`` is torch's: an int for every side, or ``(left, right)`` for the last spatial axis
(width), then ``(top, bottom)`` for the one before (height), then ``(front, back)`` (depth).
A negative amount crops, as in torch: constant, reflection and replication padding pad then
crop; circular padding crops, then wraps what is left (torch's order).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from flax_arch.nn._util import Array, _NamedInit, _check_input

_LAYOUTS = {1: "(batch, length, channels)", 2: "(batch, height, width, channels)",
            3: "(batch, depth, height, width, channels)"}


class _PadNd(_NamedInit, nnx.Module):
    """torch's ``padding`` argument and its application. The constructor is the public one of
    the reflection, replication and circular pads; the constant and zero pads' private
    classes carry theirs. A public class inherits a copy of its own name (see
    ``_NamedInit``)."""

    ndim: int
    mode: str  # jnp.pad's name for it

    def __init__(self, padding):
        n, name = self.ndim, type(self).__name__
        if isinstance(padding, (int, np.integer)):
            padding = (int(padding),) * 2 * n
        padding = tuple(int(p) for p in padding)
        if len(padding) != 2 * n:
            raise ValueError(f"{name}: padding must be an int or a tuple of {2 * n} ints, got "
                             f"{padding}")
        self.padding = padding

    def _pairs(self, x: Array) -> list[tuple[int, int]]:
        """(before, after) for every axis of channels-last x, torch's pairs reversed."""
        _check_input(type(self).__name__, x, self.ndim + 2, _LAYOUTS[self.ndim], None)
        spatial = [self.padding[2 * k:2 * k + 2] for k in reversed(range(self.ndim))]
        return [(0, 0)] * (x.ndim - self.ndim - 1) + spatial + [(0, 0)]

    def _check_sizes(self, x: Array, grow) -> None:
        """torch's limits: reflection pads less than the axis, circular padding at most the
        axis (it wraps once), replication needs an element to repeat."""
        ok, rule = {"reflect": (lambda p, n: p < n, "less than the size of the axis it pads"),
                    "wrap": (lambda p, n: p <= n, "at most the size of the axis it pads"),
                    "edge": (lambda p, n: n > 0, "on non-empty axes only")}[self.mode]
        for axis, (lo, hi) in enumerate(grow):
            if max(lo, hi) and not ok(max(lo, hi), x.shape[axis]):
                raise ValueError(f"{type(self).__name__}: padding {self.padding} must be {rule}"
                                 f"; got an input of shape {tuple(x.shape)}")

    def __call__(self, x: Array) -> Array:
        pairs = self._pairs(x)
        if self.mode == "constant":
            return lax.pad(x, jnp.asarray(self.value, x.dtype),
                           [(lo, hi, 0) for lo, hi in pairs])
        grow = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
        crop = [(min(lo, 0), min(hi, 0), 0) for lo, hi in pairs]
        zero = jnp.zeros((), x.dtype)
        if self.mode == "wrap":  # crop first, then wrap what is left, as torch
            x = lax.pad(x, zero, crop)
            self._check_sizes(x, grow)
            return jnp.pad(x, grow, mode="wrap")
        self._check_sizes(x, grow)
        return lax.pad(jnp.pad(x, grow, mode=self.mode), zero, crop)


class _ConstantPadNd(_PadNd):
    mode = "constant"

    def __init__(self, padding, value: float):
        super().__init__(padding)
        self.value = value


class ConstantPad1d(_ConstantPadNd):
    """torch's ``nn.ConstantPad1d``: pads the length with ``value``.
    x: (batch, length, channels) -> (batch, left + length + right, channels)."""

    ndim = 1


class ConstantPad2d(_ConstantPadNd):
    """torch's ``nn.ConstantPad2d``. x: (batch, height, width, channels)."""

    ndim = 2


class ConstantPad3d(_ConstantPadNd):
    """torch's ``nn.ConstantPad3d``. x: (batch, depth, height, width, channels)."""

    ndim = 3


class _ZeroPadNd(_ConstantPadNd):
    """torch's zero pads: constant pads whose value is 0."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ZeroPad1d(_ZeroPadNd):
    """torch's ``nn.ZeroPad1d``. x: (batch, length, channels)."""

    ndim = 1


class ZeroPad2d(_ZeroPadNd):
    """torch's ``nn.ZeroPad2d``. x: (batch, height, width, channels)."""

    ndim = 2


class ZeroPad3d(_ZeroPadNd):
    """torch's ``nn.ZeroPad3d``. x: (batch, depth, height, width, channels)."""

    ndim = 3


class ReflectionPad1d(_PadNd):
    """torch's ``nn.ReflectionPad1d``: mirrors about the edge element (which is not
    repeated); each amount must be less than the axis. x: (batch, length, channels)."""

    ndim, mode = 1, "reflect"


class ReflectionPad2d(_PadNd):
    """torch's ``nn.ReflectionPad2d``. x: (batch, height, width, channels)."""

    ndim, mode = 2, "reflect"


class ReflectionPad3d(_PadNd):
    """torch's ``nn.ReflectionPad3d``. x: (batch, depth, height, width, channels)."""

    ndim, mode = 3, "reflect"


class ReplicationPad1d(_PadNd):
    """torch's ``nn.ReplicationPad1d``: repeats the edge element. x: (batch, length, channels)."""

    ndim, mode = 1, "edge"


class ReplicationPad2d(_PadNd):
    """torch's ``nn.ReplicationPad2d``. x: (batch, height, width, channels)."""

    ndim, mode = 2, "edge"


class ReplicationPad3d(_PadNd):
    """torch's ``nn.ReplicationPad3d``. x: (batch, depth, height, width, channels)."""

    ndim, mode = 3, "edge"


class CircularPad1d(_PadNd):
    """torch's ``nn.CircularPad1d``: wraps around (at most once: each amount is at most the
    axis). x: (batch, length, channels)."""

    ndim, mode = 1, "wrap"


class CircularPad2d(_PadNd):
    """torch's ``nn.CircularPad2d``. x: (batch, height, width, channels)."""

    ndim, mode = 2, "wrap"


class CircularPad3d(_PadNd):
    """torch's ``nn.CircularPad3d``. x: (batch, depth, height, width, channels)."""

    ndim, mode = 3, "wrap"
