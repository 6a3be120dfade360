"""Every tolerance of the parity checks, with its reason (shared by
:func:`flax_arch.testing.assert_parity` and the project's parity suite).

An error is measured relative to scale: ``max|flax - torch| <= tol * max(1, max|torch|)``.
A tolerance is never raised to make a check pass: a failure means a real difference
(layout, gate order, padding convention, variance estimator, ...) to be found first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FLOAT64", "FLOAT32", "DEEP_FAMILIES", "SGD_LR", "SGD_MOMENTUM", "ADAM_LR",
           "ADAM_EPS", "tolerance", "adam_eps"]

# float64: the same mathematics in a different summation order; rounding is ~1e-16 per
# operation, so 1e-10 leaves six orders of magnitude and still catches any real difference.
FLOAT64 = 1e-10

# float32 on CPU. Rounding is ~6e-8 per operation and grows with the depth of the graph
# and the length of each reduction (XLA and ATen sum in different orders and block sizes).
FLOAT32 = {
    # a few layers, reductions of at most a few thousand terms
    "layer": 1e-5,
    # deep networks (tens of layers, BatchNorm renormalising tiny differences, long time loops)
    "deep": 1e-4,
}

# Registry families whose float32 parity uses the "deep" tolerance; the rest use "layer".
DEEP_FAMILIES = frozenset({"recurrent", "qrnn", "alexnet", "inception", "resnet", "densenet",
                           "unet", "segan", "dcgan", "autoencoder"})


def tolerance(dtype, family: str | None = None) -> float:
    """The relative tolerance for ``dtype``: float64 ``FLOAT64``; float32 ``FLOAT32["deep"]``
    for any model (``family=None``) or a deep registry family, ``FLOAT32["layer"]`` for the
    other families (``"layer"``, ``"dense"``, ``"conv"``, ...)."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return FLOAT64
    if dtype != np.float32:
        raise ValueError(f"parity is checked in float32 or float64, got {dtype}")
    return FLOAT32["deep" if family is None or family in DEEP_FAMILIES else "layer"]


# The optimizer checks: SGD with momentum at lr=1e-2; Adam at lr=1e-3 and a dtype's epsilon.
#
# Adam divides each step by sqrt(v) + eps, so a gradient component g near eps turns rounding
# in g into a step difference of up to lr * |dg| / eps. float64 (rounding ~1e-16) runs at
# torch's default eps=1e-8 and so checks the exact formula. In float32 the DCGAN generator's
# first layers, behind train-mode BatchNorm, have gradient components of ~5e-9 carrying ~4e-11
# of rounding: at eps=1e-8 the two sides' parameters differ by ~2e-3 after two steps at
# lr=1e-2 -- an ill-conditioned check, not a difference in the mathematics (float64 shows the
# same 1e6 amplification at ~1e-13). float32 runs at eps=1e-6, where the same steps agree to
# ~5e-6.
#
# The same holds for gradients that are zero in exact arithmetic (a conv bias in front of
# train-mode BatchNorm, a ResNet stem's BatchNorm scale): each side computes rounding noise
# there, and Adam's first step is ~lr * sign(g). The step difference scales with lr, so the
# Adam checks run at lr=1e-3 (SGD at 1e-2): a wrong formula still shows at ~1e-3, seven orders
# above the float64 tolerance.
SGD_LR, SGD_MOMENTUM = 1e-2, 0.9
ADAM_LR = 1e-3
ADAM_EPS = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-6}


def adam_eps(dtype) -> float:
    return ADAM_EPS[np.dtype(dtype)]
