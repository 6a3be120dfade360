"""torch's ``nn.Dropout`` on NNX's dropout."""

from __future__ import annotations

from flax import nnx

from flax_arch.nn.containers import Stochastic

class Dropout(nnx.Dropout, Stochastic):
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
