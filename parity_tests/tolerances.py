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


# Adam's epsilon in the optimizer-step checks. Adam divides each step by sqrt(v) + eps, so a
# gradient component g near eps turns rounding in g into a step difference of up to
# lr * |dg| / eps. float64 (rounding ~1e-16) runs at torch's default eps=1e-8 and so checks
# the exact formula. In float32 the DCGAN generator's first layers, behind train-mode
# BatchNorm, have gradient components of ~5e-9 carrying ~4e-11 of rounding: at eps=1e-8 the
# two sides' parameters differ by ~2e-3 after two steps at lr=1e-2 -- an ill-conditioned
# check, not a difference in the mathematics (float64 shows the same 1e6 amplification at
# ~1e-13). float32 runs at eps=1e-6, where the same steps agree to ~5e-6.
#
# The same holds for gradients that are zero in exact arithmetic (a conv bias in front of
# train-mode BatchNorm, a ResNet stem's BatchNorm scale): each side computes rounding noise
# there, and Adam's first step is ~lr * sign(g). The step difference scales with lr, so the
# Adam checks run at lr=1e-3 (SGD at 1e-2): a wrong formula still shows at ~1e-3, seven orders
# above the float64 tolerance.
ADAM_EPS = {np.dtype(np.float64): 1e-8, np.dtype(np.float32): 1e-6}
ADAM_LR = 1e-3


def adam_eps(dtype) -> float:
    return ADAM_EPS[np.dtype(dtype)]


# Families whose Adam check runs in eval mode and float64 only. Train-mode BatchNorm makes some
# gradients zero in exact arithmetic (a conv bias in front of it, a ResNet stem's BatchNorm
# scale whose consumers all renormalise), and among a ResNet's millions of float32 weights some
# gradient always lies within rounding of zero: Adam's first step there is ~lr * sign(noise),
# up to 2e-4 apart after two steps at lr=1e-3 whatever eps. SGD checks these families in
# float32 and train mode, and the gradients themselves are compared in both dtypes.
ADAM_EVAL_FLOAT64_ONLY = frozenset({"resnet", "googlenet"})  # families or model names

# Models whose float32 Adam trajectory is ill-conditioned, while float64 Adam passes in train
# mode. The DCGAN generator: after one Adam step (each weight moves by ~lr whatever its
# gradient's size) the float32 and float64 weights differ by ~1e-7, which flips ReLU switches
# and moves small gradients by O(1) of themselves (one weight's second gradient: 3.06e-5 in
# float64, 6.9e-6 in torch float32, -3.5e-6 in JAX float32); Adam's normalised second step
# turns that into ~lr. After two steps torch's own float32 weights are 1.7e-3 from its float64
# ones, 17x the float32 tolerance; JAX's are 1.7e-3 from them too. The two float32 sides agree
# to 3e-7 or 3.6e-4 depending on XLA:CPU's summation order (its YNNPACK fusion flags), so
# comparing them tests rounding coincidence. float32 instead checks that JAX's trajectory is
# as close to the float64 one as torch's is (test_registry_parity.py).
ADAM_FLOAT64_ONLY = frozenset({"dcgan_generator"})

# Models whose float32 gradients are ill-conditioned, so that two correct float32
# implementations differ by more than any tolerance above: float32 compares their outputs and
# running statistics (well-conditioned, ~1e-5), and gradients and optimizer steps are checked
# in float64. GoogLeNet, through 57 BatchNorm-ReLU layers and 13 max-pools (ReLU and max-pool
# switches): torch's own float32 parameter gradients are up to 7e-2 (of the largest) from its
# float64 ones in train mode, and in float64 a 1e-7 relative change of the input moves its
# train-mode gradients by 1.7e-2. Its Inception block alone passes every float32 check.
FLOAT32_FORWARD_ONLY = frozenset({"googlenet"})
