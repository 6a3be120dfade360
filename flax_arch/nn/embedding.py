"""torch's ``nn.Embedding``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from flax_arch.nn._util import Array, Dtype, _assign, _check_positive, _dtypes

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
        _assign(self.weight, renormed)
        return w + lax.stop_gradient(renormed - w)  # values renormed, gradient of a lookup
