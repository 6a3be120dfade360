"""Residual networks: the slide's ResLayer, torchvision's ResNet / ResNeXt / Wide ResNet.

Parity with torch_ref through the generic recipe, and with torchvision itself: a randomly
initialised torchvision model's ``state_dict()`` loads strictly into the Flax twin and
gives the same outputs, gradients and running statistics.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import flax_arch.models.resnet as F
import torch_ref
import torch_ref.resnet as T
from flax_arch.interop import to_channels_last
from parity_tests.harness import (Pair, assert_builders_mirror_torchvision, assert_close,
                                  assert_torchvision_keys_and_shapes, check_against_torch)

torchvision = pytest.importorskip("torchvision")

NAMES = ["res_layer", "resnet18", "resnet_bottleneck", "resnext"]
F64, F32 = np.float64, np.float32
slow = pytest.mark.slow


def test_registered_in_both_packages():
    assert flax_arch.list_models("resnet") == sorted(NAMES)
    assert set(NAMES) <= set(torch_ref.list_models())


# ----------------------------------------------------------------------------- generic parity


# The generic forward, gradient and optimizer checks run in test_registry_parity.py.


def test_slide_reslayer_keeps_its_shape():
    """The slide: ResLayer(64) on a (1, 64, 100, 100) batch prints the same size; channels-last
    here, and the same values as the torch reference."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 64, 100, 100))
    pair = Pair.of_modules(T.ResLayer(64), F.ResLayer(64, rngs=nnx.Rngs(0), param_dtype=F64),
                           [x], ["NCHW"], ["NCHW"], F64, family="resnet")
    y = pair.flax(jnp.asarray(pair.flax_in[0]))
    assert y.shape == (1, 100, 100, 64)
    with torch.no_grad():
        ref = pair.torch(*pair.torch_inputs())
    assert tuple(ref.shape) == (1, 64, 100, 100)
    assert_close(y, to_channels_last(ref.numpy(), "NCHW"), pair.tol, "output", pair.record)


# ----------------------------------------------------------------------------- torchvision


def _input(train: bool) -> tuple[int, ...]:
    """64 x 64 images; two in train mode, so that the last stage's BatchNorm normalises 8
    values per channel (with 4, float32 rounding grew past the tolerance: resnet18's
    gradients, ResNeXt-50's outputs)."""
    return (2 if train else 1, 3, 64, 64)


def _tv(name, **kwargs):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def _flax(name, **kwargs):
    return lambda dtype: getattr(F, name)(**kwargs, rngs=nnx.Rngs(0), param_dtype=dtype)


@pytest.mark.parametrize("dtype,train,gradients", [
    pytest.param(F32, False, False, id="float32-eval"),
    pytest.param(F64, False, False, id="float64-eval", marks=slow),
    pytest.param(F64, True, True, id="float64-train-gradients"),
    pytest.param(F32, True, True, id="float32-train-gradients", marks=slow),
])
def test_torchvision_resnet18(dtype, train, gradients):
    check_against_torch(_tv("resnet18"), _flax("resnet18"), _input(train), dtype, "resnet",
                        train=train, gradients=gradients)


@pytest.mark.parametrize("name,dtype,train", [
    pytest.param("resnet50", F32, False, id="resnet50-float32-eval"),
    pytest.param("resnet50", F64, True, id="resnet50-float64-train", marks=slow),
    pytest.param("resnext50_32x4d", F32, True, id="resnext50_32x4d-float32-train", marks=slow),
    pytest.param("wide_resnet50_2", F32, False, id="wide_resnet50_2-float32-eval", marks=slow),
    pytest.param("wide_resnet50_2", F64, True, id="wide_resnet50_2-float64-train", marks=slow),
    pytest.param("resnet34", F64, True, id="resnet34-float64-train", marks=slow),
    pytest.param("resnet101", F32, False, id="resnet101-float32-eval", marks=slow),
    pytest.param("resnet152", F32, False, id="resnet152-float32-eval", marks=slow),
])
def test_torchvision_resnets(name, dtype, train):
    check_against_torch(_tv(name), _flax(name), _input(train), dtype, "resnet", train=train)


def test_torchvision_resnext_with_dilation():
    """A ResNeXt whose last two stages keep stride 8 with dilated grouped 3x3 convolutions.
    Two blocks in each of those stages, so that every dilation case occurs: a stage's first
    block at the previous stage's dilation (1, then 2), the blocks after it at their own (2,
    then 4); ResNeXt-50 32x4d's 16 blocks repeat them (its keys: the builder tests). 8
    groups: the grouped form is the same for any count up to 64, and 32 took 1.6x as long."""
    kwargs = dict(groups=8, width_per_group=4, replace_stride_with_dilation=[False, True, True])
    torch.manual_seed(0)
    tv = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 2, 2], **kwargs)
    check_against_torch(tv, lambda dtype: F.ResNet(F.Bottleneck, [1, 1, 2, 2], **kwargs,
                                                   rngs=nnx.Rngs(0), param_dtype=dtype),
                        (1, 3, 64, 64), F64, "resnet", train=False)


@slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_full_size(name):
    check_against_torch(_tv(name), _flax(name), (2, 3, 224, 224), F32, "resnet", train=True)


BUILDERS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "wide_resnet50_2"]


@pytest.mark.parametrize("name", BUILDERS)
def test_builders_mirror_torchvision(name):
    assert_builders_mirror_torchvision(getattr(torchvision.models, name), getattr(F, name),
                                       getattr(T, name), "ResNet")


@pytest.mark.parametrize("name", [n if n == "resnet50" else pytest.param(n, marks=slow)
                                  for n in BUILDERS])
def test_flax_builders_have_torchvision_keys_and_shapes(name):
    assert_torchvision_keys_and_shapes(getattr(torchvision.models, name),
                                       lambda: _flax(name)(F32))


# ----------------------------------------------------------------------------- initialisation


@pytest.mark.parametrize("block", ["BasicBlock", "Bottleneck"])
def test_initialisation_matches_torchvision(block):
    """Convolutions N(0, 2 / fan_out), BatchNorm (1, 0), the last BatchNorm of each residual
    branch zero with zero_init_residual; the same on both sides."""
    last_bn = {"BasicBlock": "bn2", "Bottleneck": "bn3"}[block]
    torch.manual_seed(0)
    ref = T.ResNet(getattr(T, block), [2, 1, 1, 1], zero_init_residual=True).state_dict()
    flax_model = nnx.jit(lambda: F.ResNet(getattr(F, block), [2, 1, 1, 1],
                                          zero_init_residual=True, rngs=nnx.Rngs(0)))()
    ours = flax_arch.torch_state_dict(flax_model)
    assert set(ours) == set(ref)
    for key, value in ref.items():
        value, mine = value.numpy(), ours[key]
        if value.ndim == 4:  # conv (out, in/g, kh, kw)
            fan_out = value.shape[0] * value.shape[2] * value.shape[3]
            for w in (value, mine):
                assert abs(w.std() * np.sqrt(fan_out / 2.0) - 1) < 5 / np.sqrt(w.size), key
                assert abs(w.mean()) < 5 * np.sqrt(2.0 / fan_out / w.size), key
        elif key.endswith(("weight", "bias")) and not key.startswith("fc"):
            zero = key.endswith("bias") or (f".{last_bn}." in key and "layer" in key)
            np.testing.assert_array_equal(value, 0.0 if zero else 1.0, err_msg=key)
            np.testing.assert_array_equal(mine, value, err_msg=key)
        elif key.startswith("fc"):  # torch's Linear default, U(-1/sqrt(in), 1/sqrt(in))
            bound = 1 / np.sqrt(flax_model.fc.in_features)
            assert np.abs(mine).max() <= bound and np.abs(mine).max() > 0.9 * bound, key


# ----------------------------------------------------------------------------- bad input


def test_channels_first_input_is_rejected_with_the_layout_expected():
    model = nnx.eval_shape(lambda: F.resnet18(num_classes=10, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels=3\)"):
        model(jnp.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels=3\)"):
        model(jnp.zeros((32, 32, 3)))
    layer = nnx.eval_shape(lambda: F.ResLayer(8, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, in_channels\)"):
        layer(jnp.zeros((1, 8, 12, 12)))


@pytest.mark.parametrize("args,kwargs,error,match", [
    (("BasicBlock", [2, 2, 2, 2]), {"groups": 2}, ValueError, "only supports groups=1"),
    (("BasicBlock", [2, 2, 2, 2]), {"width_per_group": 32}, ValueError, "base_width=64"),
    (("BasicBlock", [2, 2, 2, 2]), {"replace_stride_with_dilation": [False, False, True]},
     NotImplementedError, "Dilation > 1 not supported in BasicBlock"),
    (("Bottleneck", [3, 4, 6, 3]), {"replace_stride_with_dilation": [True, True]}, ValueError,
     "3-element tuple"),
    (("Bottleneck", [3, 4, 6]), {}, ValueError, "4 positive block counts"),
    (("Bottleneck", [3, 0, 6, 3]), {}, ValueError, "4 positive block counts"),
    ((None, [2, 2, 2, 2]), {}, ValueError, "BasicBlock or Bottleneck"),
])
def test_invalid_constructor_arguments(args, kwargs, error, match):
    block, layers = args
    with pytest.raises(error, match=match):
        T.ResNet(getattr(T, block) if block else None, layers, **kwargs)
    with pytest.raises(error, match=match):
        nnx.eval_shape(lambda: F.ResNet(getattr(F, block) if block else None, layers, **kwargs,
                                        rngs=nnx.Rngs(0)))
    if block and len(layers) == 4 and min(layers) > 0:  # the same error as torchvision
        with pytest.raises(error, match=match):
            torchvision.models.ResNet(getattr(torchvision.models.resnet, block), layers, **kwargs)
