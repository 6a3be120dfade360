"""torch's dropout layers on NNX's dropout: elementwise, channel-wise (``Dropout1d/2d/3d``)
and ``AlphaDropout``."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from flax_arch.nn._util import Array
from flax_arch.nn.containers import Stochastic

class Dropout(nnx.Dropout, Stochastic):
    """torch's ``nn.Dropout(p)``: zeroes each element with probability p, scales by 1/(1-p).

    Train mode by default, as torch; ``model.eval()`` makes it the identity. The mask comes
    from ``rngs`` (at construction or, for exact control, at call time).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__} probability has to be between 0 and 1, "
                             f"but got {p}")
        super().__init__(p, rngs=rngs)
        self.p = p


class _DropoutNd(Dropout):
    """Channel-wise dropout: each channel of each sample is zeroed whole with probability p
    (the mask is shared over the spatial axes), the rest scaled by 1/(1-p).

    x: (batch, *spatial, channels) or torch's unbatched (*spatial, channels).
    """

    ndim: int
    batched_ranks: tuple[int, ...]
    layout: str

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        super().__init__(p, inplace, rngs=rngs)
        self.broadcast_dims = tuple(range(-2, -self.ndim - 2, -1))  # the spatial axes

    def __call__(self, x: Array, *, rngs: nnx.Rngs | None = None) -> Array:
        if x.ndim in self.batched_ranks:
            if x.ndim < self.ndim + 2:  # torch's Dropout2d on (N, C, L): one spatial axis
                return super().__call__(x[..., None, :], rngs=rngs)[..., 0, :]
            return super().__call__(x, rngs=rngs)
        if x.ndim == self.ndim + 1:
            return super().__call__(x[None], rngs=rngs)[0]
        raise ValueError(f"{type(self).__name__} expects a channels-last input of shape "
                         f"{self.layout} (or without the batch axis); got shape "
                         f"{tuple(x.shape)}")


class Dropout1d(_DropoutNd):
    """torch's ``nn.Dropout1d``. x: (batch, length, channels) or (length, channels)."""

    ndim, batched_ranks, layout = 1, (3,), "(batch, length, channels)"

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        super().__init__(p, inplace, rngs=rngs)


class Dropout2d(_DropoutNd):
    """torch's ``nn.Dropout2d``. x: (batch, height, width, channels); a 3-D input is
    (batch, length, channels), as torch reads it (not unbatched)."""

    ndim, batched_ranks, layout = 2, (3, 4), "(batch, height, width, channels)"

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        super().__init__(p, inplace, rngs=rngs)


class Dropout3d(_DropoutNd):
    """torch's ``nn.Dropout3d``. x: (batch, depth, height, width, channels), or without the
    batch axis."""

    ndim, batched_ranks, layout = 3, (5,), "(batch, depth, height, width, channels)"

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        super().__init__(p, inplace, rngs=rngs)


# SELU's negative saturation value, -scale * alpha (Klambauer et al. 2017)
_SELU_SATURATION = 1.0507009873554804934193349852946 * 1.6732632423543772848170429916717


class AlphaDropout(Dropout):
    """torch's ``nn.AlphaDropout`` (Klambauer et al., "Self-Normalizing Neural Networks",
    2017): a dropped element is set to SELU's saturation value, then everything is scaled
    and shifted to keep a zero-mean, unit-variance input so: kept ``a * x + a * alpha' * p``,
    dropped ``a * alpha' * (p - 1)``, ``a = ((1 - p) * (1 + p * alpha'**2)) ** -0.5``.
    The identity in eval mode and at p = 0; zeros at p = 1, as torch's.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        super().__init__(p, inplace, rngs=rngs)

    def __call__(self, x: Array, *, rngs: nnx.Rngs | None = None) -> Array:
        p = self.p
        if self.deterministic or p == 0 or x.size == 0:
            return x
        if p == 1:
            return jnp.zeros_like(x)
        # NNX's mask of ones: 1 / (1 - p) where kept, 0 where dropped (the same key rules)
        kept = super().__call__(jnp.ones_like(x), rngs=rngs) > 0
        alpha = _SELU_SATURATION
        a = 1.0 / ((alpha * alpha * p + 1) * (1 - p)) ** 0.5
        return jnp.where(kept, x * a + alpha * a * p, jnp.asarray(alpha * a * (p - 1), x.dtype))

