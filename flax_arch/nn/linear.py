"""torch's ``nn.Linear`` and ``nn.Identity``, and the (C, H, W)-order flatten."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from flax_arch.nn._util import Array, Dtype, _bcast, _check_positive, _dtypes
from flax_arch.nn.init import _uniform

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


class Identity(nnx.Module):
    """torch's ``nn.Identity``."""

    def __call__(self, x: Array) -> Array:
        return x


def flatten_chw(x: Array) -> Array:
    """Flattens a channels-last feature map (N, *spatial, C) in torch's (C, *spatial) order.

    Keeps a following Linear layer's weights structurally identical to torch's.
    """
    return jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1)
