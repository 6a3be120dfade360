"""Every registered model against its torch twin: forward, gradients, optimizer steps."""

import numpy as np
import pytest

import flax_arch
import torch_ref
from parity_tests.harness import Pair
from parity_tests.tolerances import (ADAM_EVAL_FLOAT64_ONLY, ADAM_FLOAT64_ONLY,
                                     FLOAT32_FORWARD_ONLY)

# Run op by op (eagerly), GoogLeNet's 57 convolutions cost minutes per check on 2 cores:
# its cases run with ``-m slow``; the Inception block itself runs by default.
SLOW = {"googlenet"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
          for n in flax_arch.list_models()]
DTYPES = [np.float64, np.float32]


def test_both_registries_list_the_same_models():
    assert flax_arch.list_models() == torch_ref.list_models()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_forward_and_gradients(name, dtype, train):
    pair = Pair(name, dtype, train=train)
    if name in FLOAT32_FORWARD_ONLY and np.dtype(dtype) == np.float32:
        pair.check_forward()  # ill-conditioned float32 gradients; see tolerances.py
    else:
        pair.check_forward_and_gradients()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", MODELS)
def test_optimizer_steps(name, dtype, optimizer):
    train, float32 = True, np.dtype(dtype) == np.float32
    if name in FLOAT32_FORWARD_ONLY and float32:
        pytest.skip("float32 gradients are ill-conditioned here; float64 checks the steps "
                    "(see tolerances.py)")
    if optimizer == "adam" and ADAM_EVAL_FLOAT64_ONLY & {name, flax_arch.get_entry(name).family}:
        if float32:
            pytest.skip("Adam amplifies rounding-level gradients here; see tolerances.py")
        train = False
    if optimizer == "adam" and float32 and name in ADAM_FLOAT64_ONLY:
        pytest.skip("float32 Adam is ill-conditioned here; test_float32_adam_is_as_accurate_"
                    "as_torchs checks it against float64 (see tolerances.py)")
    Pair(name, dtype, train=train).check_optimizer_steps(optimizer)


@pytest.mark.parametrize("name", sorted(ADAM_FLOAT64_ONLY))
def test_float32_adam_is_as_accurate_as_torchs(name):
    """Where two float32 Adam runs differ by more than rounding coincidence allows, each is
    measured against the float64 run (whose two sides agree to 1e-10): JAX's float32 weights
    may be no further from it than torch's float32 weights are, with 50% to spare."""
    pairs = {dtype: Pair(name, dtype) for dtype in (np.float64, np.float32)}
    for pair in pairs.values():
        pair.optimizer_steps("adam")
    pairs[np.float64].check_state("float64 adam step")
    exact = pairs[np.float64].torch.state_dict()
    ours = flax_arch.torch_state_dict(pairs[np.float32].flax)
    theirs = pairs[np.float32].torch.state_dict()
    for key, ref in exact.items():
        ref = ref.numpy()
        scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
        ours_err = float(np.abs(np.asarray(ours[key], np.float64) - ref).max(initial=0.0))
        torch_err = float(np.abs(theirs[key].numpy().astype(np.float64) - ref).max(initial=0.0))
        bound = max(1.5 * torch_err, pairs[np.float32].tol * scale)
        assert ours_err <= bound, (f"{key}: JAX float32 is {ours_err:.2e} from float64, torch "
                                   f"float32 {torch_err:.2e}")


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_is_bit_identical(name):
    pair = Pair(name, np.float32)
    back = flax_arch.torch_state_dict(pair.flax)
    ref = pair.torch.state_dict()
    assert list(back) and set(back) == set(ref)
    for key, value in ref.items():
        assert back[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
