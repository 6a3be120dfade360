"""The parity suite's tolerances: the package's table, and the suite's exceptions to it.

Every tolerance and its reason lives in :mod:`flax_arch._tolerances`, which
:func:`flax_arch.testing.assert_parity` and this suite share: an error is measured relative
to scale, ``max|flax - torch| <= tol * max(1, max|torch|)``; float64 1e-10; float32 1e-5 for
a few layers, 1e-4 for the deep families. A tolerance is never raised to make a test pass.
Below: the registry models whose float32 (or train-mode) checks are ill-conditioned, with
the measurements that show it, and what is checked instead.
"""

import numpy as np

import flax_arch
from flax_arch import _tolerances
from flax_arch._tolerances import ADAM_EPS, ADAM_LR, DEEP_FAMILIES, FLOAT32, FLOAT64, adam_eps

__all__ = ["FLOAT64", "FLOAT32", "DEEP_FAMILIES", "ADAM_EPS", "ADAM_LR", "adam_eps", "tolerance",
           "ADAM_EVAL_FLOAT64_ONLY", "ADAM_FLOAT64_ONLY", "FLOAT32_FORWARD_ONLY", "registry_checks"]


def tolerance(dtype, family: str = "") -> float:
    """The suite's tolerance for a registry family (``""``, ``"layer"``: a leaf layer)."""
    return _tolerances.tolerance(dtype, family)


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


def registry_checks(name: str, dtype, train: bool) -> tuple[str, ...]:
    """What one model is checked for in one dtype and mode: the forward call and its
    gradients in both modes, SGD and Adam steps in train mode; the exceptions are the sets
    above, with their reasons."""
    float32 = np.dtype(dtype) == np.float32
    if name in FLOAT32_FORWARD_ONLY and float32:
        return ("forward",)  # ill-conditioned float32 gradients: float64 checks the rest
    adam_in_eval = bool(ADAM_EVAL_FLOAT64_ONLY & {name, flax_arch.get_entry(name).family})
    if not train:
        return ("forward", "grad", "adam") if adam_in_eval and not float32 else ("forward", "grad")
    if adam_in_eval or (float32 and name in ADAM_FLOAT64_ONLY):
        return ("forward", "grad", "sgd")
    return ("forward", "grad", "sgd", "adam")
