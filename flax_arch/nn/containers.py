"""torch's ``nn.Sequential``, and the one rule for call-time randomness."""

from __future__ import annotations

from flax import nnx

__all__ = ["Stochastic", "Sequential", "call"]


class Stochastic(nnx.Module):
    """A module whose call may draw randomness (dropout, a VAE's sample), declared by type.

    Its ``__call__`` takes keyword-only ``rngs: nnx.Rngs | None = None``, which wins over the
    streams given at construction, for exact control (parity tests pass the same keys to
    every run). This is the one rule: containers pass ``rngs`` on to exactly the children
    that are ``Stochastic`` (:func:`call`), and the trainer and the benchmarks pass it to a
    model that is one.
    """


def call(layer: nnx.Module, x, rngs: nnx.Rngs | None):
    """``layer(x, rngs=rngs)`` for a :class:`Stochastic` layer, ``layer(x)`` otherwise."""
    return layer(x, rngs=rngs) if isinstance(layer, Stochastic) else layer(x)


class Sequential(Stochastic):
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
            x = call(layer, x, rngs)
        return x
