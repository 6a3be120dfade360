"""Discrete inputs, from the "Embedding layer" slides, in Flax NNX.

``OneHotLinear`` is the slide's ``nn.Linear(VOCAB_SIZE, HIDDEN_SIZE)`` over one-hot rows;
``Embedding`` (from :mod:`flax_arch.layers`) is the lookup that selects the same rows
without the matrix product.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import Embedding, Linear

__all__ = ["OneHotLinear", "Embedding"]


class OneHotLinear(Linear):
    """A Linear layer over one-hot rows. x: (batch, vocab_size) -> (batch, hidden_size).

    With ``bias=False`` it equals ``Embedding(vocab_size, hidden_size)`` whose ``weight`` is
    this layer's ``weight`` (stored (vocab_size, hidden_size) here, as the table is).
    """

    def __init__(self, vocab_size: int, hidden_size: int, bias: bool = True, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        super().__init__(vocab_size, hidden_size, bias, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"OneHotLinear expects one-hot rows of shape (*, vocab_size={self.in_features}); "
                f"got {tuple(x.shape)}"
            )
        return super().__call__(x)
