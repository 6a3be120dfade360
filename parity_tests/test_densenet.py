"""Densely connected networks: torchvision's DenseNet-BC, parity with torch_ref and torchvision.

Optimizer steps: SGD in train mode, Adam in eval mode, for the reasons given in
test_resnet.py (here: ``features.norm0.weight`` only feeds train-mode BatchNorms through a
ReLU and a max-pool, so its train-mode gradient is zero in exact arithmetic).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import flax_arch.models.densenet as F
import torch_ref
import torch_ref.densenet as T
from parity_tests.harness import (Pair, assert_builders_mirror_torchvision,
                                  assert_torchvision_keys_and_shapes, check_against_torch)

torchvision = pytest.importorskip("torchvision")

F64, F32 = np.float64, np.float32
slow = pytest.mark.slow


def test_registered_in_both_packages():
    assert flax_arch.list_models("densenet") == ["densenet121"]
    assert "densenet121" in torch_ref.list_models()


# ----------------------------------------------------------------------------- generic parity


def test_memory_efficient_gives_the_same_numbers():
    """torch checkpoints each bottleneck, Flax rematerialises it (nnx.remat)."""
    Pair("densenet121", F64, memory_efficient=True).check_forward_and_gradients()


# ----------------------------------------------------------------------------- torchvision


def _tv(name):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None)


def _flax(name):
    return lambda dtype: getattr(F, name)(rngs=nnx.Rngs(0), param_dtype=dtype)


def test_torchvision_densenet():
    """torchvision's DenseNet class at DenseNet-121's widths (growth 32, 64 initial features,
    bottleneck 4 x growth) with two layers per dense block: every kind of layer, block and
    transition of DenseNet-121, whose 58 layers repeat them (its keys and shapes: the builder
    tests below; full depth and size: -m slow), eval mode, float64."""
    torch.manual_seed(0)
    tv = torchvision.models.DenseNet(32, (2, 2, 2, 2), 64)
    check_against_torch(tv, lambda dtype: F.DenseNet(32, (2, 2, 2, 2), 64, rngs=nnx.Rngs(0),
                                                     param_dtype=dtype),
                        (1, 3, 64, 64), F64, "densenet", train=False)


@pytest.mark.parametrize("dtype,train", [
    pytest.param(F64, False, id="float64-eval"),
    pytest.param(F32, False, id="float32-eval"),
    pytest.param(F64, True, id="float64-train"),
    pytest.param(F32, True, id="float32-train"),
])
@slow
def test_torchvision_densenet121(dtype, train):
    check_against_torch(_tv("densenet121"), _flax("densenet121"), (1, 3, 64, 64), dtype,
                        "densenet", train=train)


@slow
def test_torchvision_densenet121_full_size():
    check_against_torch(_tv("densenet121"), _flax("densenet121"), (2, 3, 224, 224), F32,
                        "densenet", train=True)


BUILDERS = ["densenet121", "densenet161", "densenet169", "densenet201"]


@pytest.mark.parametrize("name", BUILDERS)
def test_builders_mirror_torchvision(name):
    assert_builders_mirror_torchvision(getattr(torchvision.models, name), getattr(F, name),
                                       getattr(T, name), "DenseNet")


@pytest.mark.parametrize("name", [n if n == "densenet121" else pytest.param(n, marks=slow)
                                  for n in BUILDERS])
def test_flax_builders_have_torchvision_keys_and_shapes(name):
    assert_torchvision_keys_and_shapes(getattr(torchvision.models, name),
                                       lambda: _flax(name)(F32))


def test_initialisation_matches_torchvision():
    """Convolutions N(0, 2 / fan_in), BatchNorm (1, 0), classifier bias 0, on both sides."""
    kwargs = dict(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                  num_classes=10)
    torch.manual_seed(0)
    ref = T.DenseNet(**kwargs).state_dict()
    ours = flax_arch.torch_state_dict(F.DenseNet(**kwargs, rngs=nnx.Rngs(0), param_dtype=F64))
    assert set(ours) == set(ref)
    for key, value in ref.items():
        value, mine = value.numpy(), ours[key]
        if value.ndim == 4:  # conv (out, in, kh, kw)
            fan_in = value[0].size
            for w in (value, mine):
                assert abs(w.std() * np.sqrt(fan_in / 2.0) - 1) < 5 / np.sqrt(w.size), key
        elif key == "classifier.weight":  # torch's Linear default, U(-1/sqrt(in), 1/sqrt(in))
            assert np.abs(mine).max() <= 1 / np.sqrt(value.shape[1]), key
        elif key.endswith(("weight", "bias")):
            np.testing.assert_array_equal(value, 0.0 if key.endswith("bias") else 1.0, key)
            np.testing.assert_array_equal(mine, value, err_msg=key)


# ----------------------------------------------------------------------------- dropout


def test_dropout_draws_its_mask_from_the_call_rngs():
    """drop_rate in train mode: each new feature is zeroed with probability drop_rate or
    scaled by 1 / (1 - drop_rate); the mask comes from the call's rngs; eval mode and
    drop_rate=0 leave the features alone."""
    # the shapes of the registered test DenseNet's first layer, already compiled
    layer = F._DenseLayer(16, growth_rate=8, bn_size=2, drop_rate=0.25, rngs=nnx.Rngs(0),
                          param_dtype=F64)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16), F64)
    y = layer(x, rngs=nnx.Rngs(dropout=2))
    np.testing.assert_array_equal(y, layer(x, rngs=nnx.Rngs(dropout=2)))
    assert not np.array_equal(y, layer(x, rngs=nnx.Rngs(dropout=3)))
    layer.dropout.deterministic = True  # BatchNorm still in train mode: the same features
    kept = layer(x)
    dropped = np.asarray(y) == 0
    assert abs(dropped.mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / y.size)
    np.testing.assert_allclose(np.asarray(y)[~dropped], np.asarray(kept)[~dropped] / 0.75,
                               rtol=1e-12)
    layer.eval()
    np.testing.assert_array_equal(layer(x, rngs=nnx.Rngs(dropout=2)),
                                  layer(x, rngs=nnx.Rngs(dropout=3)))


def test_dropout_in_eval_mode_matches_torch():
    Pair("densenet121", F64, train=False, drop_rate=0.5).check_forward_and_gradients()


# ----------------------------------------------------------------------------- bad input


def test_channels_first_input_is_rejected_with_the_layout_expected():
    model = nnx.eval_shape(lambda: F.densenet121(num_classes=10, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels=3\)"):
        model(jnp.zeros((1, 3, 32, 32)))


@pytest.mark.parametrize("kwargs,match", [
    ({"growth_rate": 0}, "must be positive"),
    ({"bn_size": 0}, "must be positive"),
    ({"block_config": ()}, "block_config"),
    ({"block_config": (6, 0, 24)}, "block_config"),
    ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\)"),
    ({"drop_rate": -0.1}, r"drop_rate must be in \[0, 1\)"),
])
def test_invalid_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.DenseNet(**kwargs)
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: F.DenseNet(**kwargs, rngs=nnx.Rngs(0)))
