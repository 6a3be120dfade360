"""Discrete inputs, from the "Embedding layer" slides, in Flax NNX.

``OneHotLinear`` is the slide's ``nn.Linear(VOCAB_SIZE, HIDDEN_SIZE)`` over one-hot rows;
``Embedding`` (from :mod:`flax_arch.layers`) is the lookup that selects the same rows
without the matrix product.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.layers import Embedding, Linear
from flax_arch.registry import Config, Input, ModelEntry, register

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


register(ModelEntry(
    "one_hot_linear", "embedding", OneHotLinear,
    test=Config({"vocab_size": 50, "hidden_size": 8}, (Input((6, 50), "NC", "onehot", 50),),
                Input((6, 8), "NC")),
    bench=Config({"vocab_size": 10000, "hidden_size": 100},
                 (Input((256, 10000), "NC", "onehot", 10000),), Input((256, 100), "NC")),
    outputs=("NC",), loss="mse",
))
register(ModelEntry(
    "embedding", "embedding", Embedding,
    test=Config({"num_embeddings": 50, "embedding_dim": 8, "padding_idx": 0},
                (Input((6, 7), "NL", "index", 50),), Input((6, 7, 8), "NLC")),
    bench=Config({"num_embeddings": 10000, "embedding_dim": 100},
                 (Input((256, 32), "NL", "index", 10000),), Input((256, 32, 100), "NLC")),
    outputs=("NLC",), loss="mse",
))
