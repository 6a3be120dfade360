"""torch's ``nn.Sequential``."""

from __future__ import annotations

from flax import nnx

from flax_arch.nn.dropout import Dropout

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
