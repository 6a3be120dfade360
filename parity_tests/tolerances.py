"""Every tolerance of the parity suite, with its reason.

An error is measured relative to scale: ``max|flax - torch| <= tol * max(1, max|torch|)``.
A tolerance is never raised to make a test pass: a failure means a real difference
(layout, gate order, padding convention, variance estimator, ...) to be found first.
"""

import numpy as np

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

# Families whose float32 parity uses the "deep" tolerance; the rest use "layer".
DEEP_FAMILIES = frozenset({"recurrent", "qrnn", "alexnet", "inception", "resnet", "densenet",
                           "unet", "segan", "dcgan", "autoencoder"})


def tolerance(dtype, family: str = "") -> float:
    if np.dtype(dtype) == np.float64:
        return FLOAT64
    return FLOAT32["deep" if family in DEEP_FAMILIES else "layer"]
