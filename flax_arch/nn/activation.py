"""torch's activation layers.

Elementwise layers take any shape, as torch's do. A layer that takes ``dim`` (``Softmax``,
``Softmin``, ``LogSoftmax``, ``GLU``) reads it as an axis of *its* input in this layout;
torch's implicit ``dim=None`` (its channel axis: 0 for a 0-, 1- or 3-D input, else 1) is the
channel axis here too, which channels-last puts last. Piecewise layers keep torch's boundary
conventions: a value at a kink gets the gradient torch gives it, and a NaN propagates.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from flax_arch.nn._util import Array, Dtype, _NamedInit, _dtypes


class _InplaceOnly(_NamedInit, nnx.Module):
    """A layer whose torch constructor takes only ``inplace``, which is accepted and means
    nothing in JAX (arrays are immutable). Each public subclass gets this constructor under
    its own name (see ``_NamedInit``)."""

    def __init__(self, inplace: bool = False):
        del inplace


class ReLU(_InplaceOnly):
    """torch's ``nn.ReLU`` (``inplace`` is accepted and means nothing in JAX)."""

    def __call__(self, x: Array) -> Array:
        return jax.nn.relu(x)


def _clamp(x: Array, lo: float, hi: float) -> Array:
    """torch's hardtanh: gradient 1 strictly inside (lo, hi), 0 at and beyond its ends."""
    inside = (x > lo) & (x < hi)
    return jnp.where(inside, x, lax.stop_gradient(jnp.clip(x, lo, hi)))


class Hardtanh(nnx.Module):
    """torch's ``nn.Hardtanh``: ``clamp(x, min_val, max_val)``.

    ``min_value`` / ``max_value`` are torch's deprecated spellings of the same bounds.
    """

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False,
                 min_value: float | None = None, max_value: float | None = None):
        del inplace
        if min_value is not None:
            warnings.warn("Hardtanh: keyword argument min_value is deprecated, use min_val",
                          FutureWarning, stacklevel=2)
            min_val = min_value
        if max_value is not None:
            warnings.warn("Hardtanh: keyword argument max_value is deprecated, use max_val",
                          FutureWarning, stacklevel=2)
            max_val = max_value
        if not max_val > min_val:
            raise ValueError(f"Hardtanh: max_val ({max_val}) must be greater than min_val "
                             f"({min_val})")
        self.min_val, self.max_val = min_val, max_val

    def __call__(self, x: Array) -> Array:
        return _clamp(x, self.min_val, self.max_val)


class ReLU6(_InplaceOnly):
    """torch's ``nn.ReLU6``: ``min(max(0, x), 6)`` (torch's ``Hardtanh(0, 6)``)."""

    def __call__(self, x: Array) -> Array:
        return _clamp(x, 0.0, 6.0)


class LeakyReLU(nnx.Module):
    """torch's ``nn.LeakyReLU``."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        del inplace
        self.negative_slope = negative_slope

    def __call__(self, x: Array) -> Array:
        return jnp.where(x > 0, x, x * self.negative_slope)


class PReLU(nnx.Module):
    """torch's ``nn.PReLU``: ``x if x > 0 else weight * x``, ``weight`` learnt.

    ``weight``: (num_parameters,), all ``init``. With one parameter it applies to every
    element; with ``num_parameters`` > 1 there is one per channel, on the channel axis,
    which channels-last puts last: x: (batch, *, channels) or (channels,).
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *,
                 rngs: nnx.Rngs | None = None, dtype: Dtype | None = None,
                 param_dtype: Dtype = jnp.float32):
        del rngs  # a constant initialisation, as torch's
        if num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be positive, got {num_parameters}")
        self.num_parameters, self.dtype = num_parameters, dtype
        self.weight = nnx.Param(jnp.full((num_parameters,), init, param_dtype))

    def __call__(self, x: Array) -> Array:
        if self.num_parameters > 1 and (x.ndim < 1 or x.shape[-1] != self.num_parameters):
            raise ValueError(
                f"PReLU with num_parameters={self.num_parameters} expects a channels-last "
                f"input (*, {self.num_parameters}) with the channels on the last axis; got "
                f"shape {tuple(x.shape)}"
            )
        x, w = _dtypes(x, self.weight[...], dtype=self.dtype)
        w = w.reshape((1,) * (x.ndim - 1) + (-1,)) if x.ndim else w[0]
        return jnp.where(x > 0, x, w * x)


def _nonpositive(x: Array) -> Array:
    """x where x <= 0, else 0: keeps exp() of the branch not taken (and its gradient) finite."""
    return jnp.where(x > 0, 0, x)


class ELU(nnx.Module):
    """torch's ``nn.ELU`` (Clevert et al. 2015): ``x if x > 0 else alpha * (exp(x) - 1)``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        del inplace
        self.alpha = alpha

    def __call__(self, x: Array) -> Array:
        return jnp.where(x > 0, x, self.alpha * jnp.expm1(_nonpositive(x)))


class CELU(nnx.Module):
    """torch's ``nn.CELU`` (Barron 2017): ``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        del inplace
        if alpha == 0:
            raise ValueError("CELU: alpha must not be zero")
        self.alpha = alpha

    def __call__(self, x: Array) -> Array:
        return jnp.where(x > 0, x, self.alpha * jnp.expm1(_nonpositive(x) / self.alpha))


class SELU(_InplaceOnly):
    """torch's ``nn.SELU`` (Klambauer et al., "Self-Normalizing Neural Networks", 2017)."""

    def __call__(self, x: Array) -> Array:
        return jax.nn.selu(x)


class GELU(nnx.Module):
    """torch's ``nn.GELU`` (Hendrycks & Gimpel 2016): ``x * Phi(x)``, or its tanh
    approximation with ``approximate='tanh'``."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def __call__(self, x: Array) -> Array:
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")


class SiLU(_InplaceOnly):
    """torch's ``nn.SiLU`` (swish): ``x * sigmoid(x)``."""

    def __call__(self, x: Array) -> Array:
        return jax.nn.silu(x)


def _softplus(x: Array, beta: float, threshold: float) -> Array:
    """torch's softplus: ``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold``."""
    z = x * beta
    linear = z > threshold
    z = jnp.where(linear, 0, z)  # no overflow in the branch not taken, nor in its gradient
    return jnp.where(linear, x, jnp.log1p(jnp.exp(z)) / beta)


class Softplus(nnx.Module):
    """torch's ``nn.Softplus``: ``log(1 + exp(beta * x)) / beta``, and ``x`` where
    ``beta * x > threshold``."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        self.beta, self.threshold = beta, threshold

    def __call__(self, x: Array) -> Array:
        return _softplus(x, self.beta, self.threshold)


class Mish(_InplaceOnly):
    """torch's ``nn.Mish`` (Misra 2019): ``x * tanh(softplus(x))``."""

    def __call__(self, x: Array) -> Array:
        return x * jnp.tanh(_softplus(x, 1.0, 20.0))


class Hardsigmoid(_InplaceOnly):
    """torch's ``nn.Hardsigmoid``: ``relu6(x + 3) / 6``.

    Its gradient is the exact 1/6 inside (-3, 3); torch's float64 backward multiplies by 1/6
    rounded to float32 (3e-8 relative), which is not copied.
    """

    def __call__(self, x: Array) -> Array:
        return _clamp(x + 3, 0.0, 6.0) / 6


class Hardswish(_InplaceOnly):
    """torch's ``nn.Hardswish`` (Howard et al., "Searching for MobileNetV3", 2019):
    ``x * relu6(x + 3) / 6``; gradient 0 up to -3, 1 from 3 on, as torch's."""

    def __call__(self, x: Array) -> Array:
        # x * 0 below -3: -inf gives NaN, as torch's x * relu6(x + 3) / 6
        return jnp.where(x <= -3, x * 0, jnp.where(x < 3, x * (x + 3) / 6, x))


class Hardshrink(nnx.Module):
    """torch's ``nn.Hardshrink``: ``x if |x| > lambd else 0``."""

    def __init__(self, lambd: float = 0.5):
        self.lambd = lambd

    def __call__(self, x: Array) -> Array:
        return jnp.where(jnp.abs(x) > self.lambd, x, lax.stop_gradient(x * 0))


class Softshrink(nnx.Module):
    """torch's ``nn.Softshrink``: ``x - sign(x) * lambd if |x| > lambd else 0``."""

    def __init__(self, lambd: float = 0.5):
        if lambd < 0:
            raise ValueError(f"Softshrink: lambd must be non-negative, got {lambd}")
        self.lambd = lambd

    def __call__(self, x: Array) -> Array:
        return jnp.where(jnp.abs(x) > self.lambd, x - jnp.sign(x) * self.lambd,
                         lax.stop_gradient(x * 0))


class Tanhshrink(nnx.Module):
    """torch's ``nn.Tanhshrink``: ``x - tanh(x)``."""

    def __call__(self, x: Array) -> Array:
        return x - jnp.tanh(x)


class Threshold(nnx.Module):
    """torch's ``nn.Threshold``: ``x if x > threshold else value``."""

    def __init__(self, threshold: float, value: float, inplace: bool = False):
        del inplace
        self.threshold, self.value = threshold, value

    def __call__(self, x: Array) -> Array:
        return jnp.where(x <= self.threshold, jnp.asarray(self.value, x.dtype), x)


class Tanh(nnx.Module):
    """torch's ``nn.Tanh``."""

    def __call__(self, x: Array) -> Array:
        return jnp.tanh(x)


class Sigmoid(nnx.Module):
    """torch's ``nn.Sigmoid``."""

    def __call__(self, x: Array) -> Array:
        return jax.nn.sigmoid(x)


class LogSigmoid(nnx.Module):
    """torch's ``nn.LogSigmoid``: ``log(sigmoid(x))``, computed stably."""

    def __call__(self, x: Array) -> Array:
        return jax.nn.log_sigmoid(x)


class Softsign(nnx.Module):
    """torch's ``nn.Softsign``: ``x / (1 + |x|)``."""

    def __call__(self, x: Array) -> Array:
        return x / (1 + jnp.abs(x))


def _axis(layer: str, dim: int | None, x: Array) -> int:
    """``dim`` as an axis of x; None is the channel axis, the last (a scalar's only one)."""
    if dim is None:
        return -1 if x.ndim else 0
    if not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
        raise ValueError(f"{layer}: dim={dim} is out of range for an input of shape "
                         f"{tuple(x.shape)}")
    return dim


class Softmax(nnx.Module):
    """torch's ``nn.Softmax`` over axis ``dim`` of this layout (None: the channels, last)."""

    def __init__(self, dim: int | None = None):
        self.dim = dim

    def __call__(self, x: Array) -> Array:
        axis = _axis("Softmax", self.dim, x)
        return jax.nn.softmax(x, axis=axis) if x.ndim else jnp.ones_like(x)


class Softmin(nnx.Module):
    """torch's ``nn.Softmin``, ``softmax(-x)``, over axis ``dim`` of this layout (None: the
    channels, last)."""

    def __init__(self, dim: int | None = None):
        self.dim = dim

    def __call__(self, x: Array) -> Array:
        axis = _axis("Softmin", self.dim, x)
        return jax.nn.softmax(-x, axis=axis) if x.ndim else jnp.ones_like(x)


class LogSoftmax(nnx.Module):
    """torch's ``nn.LogSoftmax`` over axis ``dim`` of this layout.

    ``dim`` is the axis in *this* layout; torch's ``dim=1`` on (N, C, ...) is ``dim=-1``
    here, as is the default ``None`` (the channels, which channels-last puts last).
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim

    def __call__(self, x: Array) -> Array:
        axis = _axis("LogSoftmax", self.dim, x)
        return jax.nn.log_softmax(x, axis=axis) if x.ndim else jnp.zeros_like(x)


class Softmax2d(nnx.Module):
    """torch's ``nn.Softmax2d``: a softmax over the channels at every position.

    x: (batch, height, width, channels) or (height, width, channels).
    """

    def __call__(self, x: Array) -> Array:
        if x.ndim not in (3, 4):
            raise ValueError(
                "Softmax2d expects a channels-last input of shape (batch, height, width, "
                f"channels) or (height, width, channels); got shape {tuple(x.shape)}"
            )
        return jax.nn.softmax(x, axis=-1)


class GLU(nnx.Module):
    """torch's ``nn.GLU`` (Dauphin et al., "Language Modeling with Gated Convolutional
    Networks", 2017): ``a * sigmoid(b)`` for the halves a, b of axis ``dim`` of this layout.
    """

    def __init__(self, dim: int = -1):
        self.dim = dim

    def __call__(self, x: Array) -> Array:
        axis = _axis("GLU", self.dim, x)
        if x.ndim == 0 or x.shape[axis] % 2:
            raise ValueError(f"GLU: the halved axis {self.dim} must have an even size; got "
                             f"shape {tuple(x.shape)}")
        a, b = jnp.split(x, 2, axis=axis)
        return a * jax.nn.sigmoid(b)
