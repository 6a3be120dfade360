"""U-Net: parity with the torch reference, the paper's sizes, and the input-size checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch.models.unet
import torch_ref.unet
from parity_tests.harness import Pair, assert_close
from parity_tests.tolerances import tolerance

DTYPES = [np.float64, np.float32]


def dtype_ids(dtype) -> str:
    return np.dtype(dtype).name


def flax_output_shape(cls, input_shape, **kwargs):
    """The output shape of ``cls(**kwargs)`` on an input of ``input_shape``, without
    computing: the model is built and run abstractly (jax.eval_shape)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(**kwargs, rngs=nnx.Rngs(0))))
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                          jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape


def torch_output_shape(cls, input_shape, **kwargs):
    """The same for a torch model, on the meta device (shapes only)."""
    with torch.device("meta"):
        return tuple(cls(**kwargs)(torch.empty(input_shape)).shape)


# ----------------------------------------------------------------------------- parity


# The generic forward, gradient and optimizer checks run in test_registry_parity.py.


def test_padded_variant_forward_and_gradients():
    # 44 x 52 is a multiple of 2**depth = 2: the "same" network keeps it
    pair = Pair("unet", np.float64, padding=True, depth=1)
    assert pair.flax(jnp.asarray(pair.flax_in[0])).shape == (2, 44, 52, 3)
    pair.check_forward_and_gradients()


def test_state_tree_names():
    pair = Pair("unet", np.float32)
    keys = set(flax_arch.torch_state_dict(pair.flax))
    assert keys == set(pair.torch.state_dict())
    for key in ("down.0.0.weight", "down.1.2.bias", "bottleneck.0.weight", "up.0.upconv.weight",
                "up.1.conv.2.weight", "head.weight"):
        assert key in keys, key


# ----------------------------------------------------------------------------- shapes


def test_paper_shapes():
    """572 x 572 -> 388 x 388 (unpadded), on both sides; the padded net keeps the size."""
    assert flax_output_shape(flax_arch.models.unet.UNet, (1, 572, 572, 1)) == (1, 388, 388, 2)
    assert torch_output_shape(torch_ref.unet.UNet, (1, 1, 572, 572)) == (1, 2, 388, 388)
    assert flax_output_shape(flax_arch.models.unet.UNet, (1, 576, 512, 1),
                             padding=True) == (1, 576, 512, 2)
    assert torch_output_shape(torch_ref.unet.UNet, (1, 1, 576, 512),
                              padding=True) == (1, 2, 576, 512)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_valid_sizes_follow_the_paper_rule(depth):
    """Unpadded, the valid sizes are 2**depth * k + 4 * (2**depth - 1): every max-pooling sees
    an even size, and the output is 2**depth * (k - 8) + 4."""
    period, offset = 2**depth, 4 * (2**depth - 1)
    valid = [s for s in range(1, 600) if flax_arch.models.unet.unet_output_size(s, depth, False)]
    assert valid and all((s - offset) % period == 0 for s in valid)
    assert valid == list(range(valid[0], 600, period))  # every size of the rule after the first
    assert valid[0] == period * (7 if depth == 1 else 8) + offset  # k >= 8 for depth >= 2
    for s in range(1, 600):
        assert torch_ref.unet.unet_output_size(s, depth, False) == \
            flax_arch.models.unet.unet_output_size(s, depth, False)
    for s in valid:
        k = (s - offset) // period
        assert flax_arch.models.unet.unet_output_size(s, depth, False) == period * (k - 8) + 4
    assert flax_arch.models.unet.unet_output_size(572, 4, False) == 388


@pytest.mark.parametrize("size", [188, 204, 444])
def test_model_output_matches_the_size_rule(size):
    out = flax_arch.models.unet.unet_output_size(size, 4, False)
    assert flax_output_shape(flax_arch.models.unet.UNet, (1, size, size, 1),
                             base_channels=2) == (1, out, out, 2)


# ----------------------------------------------------------------------------- bad input


def test_invalid_sizes_name_the_nearest_valid_ones():
    small = dict(base_channels=2, depth=2)  # valid sizes 4k + 12 from 44 on
    with pytest.raises(ValueError, match=r"height 46: .* nearest valid heights are 44 and 48"):
        flax_output_shape(flax_arch.models.unet.UNet, (1, 46, 44, 1), **small)
    with pytest.raises(ValueError, match=r"width 46: .* nearest valid widths are 44 and 48"):
        torch_output_shape(torch_ref.unet.UNet, (1, 1, 44, 46), **small)
    with pytest.raises(ValueError, match=r"height 20: .* at least 44; the nearest valid "
                                         r"heights are 44\b(?! and)"):
        flax_output_shape(flax_arch.models.unet.UNet, (1, 20, 44, 1), **small)
    with pytest.raises(ValueError, match=r"height 570: .*16 \* k \+ 60.* are 556 and 572"):
        torch_output_shape(torch_ref.unet.UNet, (1, 1, 570, 572))
    with pytest.raises(ValueError, match=r"height 570: .*multiple of 2\*\*depth = 16.* are 560 "
                                         r"and 576"):
        flax_output_shape(flax_arch.models.unet.UNet, (1, 570, 576, 1), padding=True)


def test_wrong_layout_and_hyperparameters():
    small = dict(in_channels=3, base_channels=2, depth=1)
    with pytest.raises(ValueError,
                       match=r"channels-last .*\(batch, height, width, in_channels=3\)"):
        flax_output_shape(flax_arch.models.unet.UNet, (1, 3, 28, 28), **small)  # torch's layout
    with pytest.raises(ValueError, match="channels-last"):
        flax_output_shape(flax_arch.models.unet.UNet, (28, 28, 3), **small)  # no batch axis
    with pytest.raises(ValueError, match=r"\(batch, in_channels=3, height, width\)"):
        torch_output_shape(torch_ref.unet.UNet, (1, 28, 28, 3), **small)
    for bad in ({"depth": 0}, {"base_channels": 0}, {"num_classes": 0}):
        with pytest.raises(ValueError, match="must be positive"):
            flax_arch.models.unet.UNet(**bad, rngs=nnx.Rngs(0))
        with pytest.raises(ValueError, match="must be positive"):
            torch_ref.unet.UNet(**bad)


# ----------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_paper_network_full_size_parity():
    """The paper's network at 572 x 572, float32, against torch (weights copied)."""
    torch.manual_seed(0)
    torch_model = torch_ref.unet.UNet().eval()
    flax_model = flax_arch.models.unet.UNet(rngs=nnx.Rngs(0))
    flax_arch.load_torch_state_dict(flax_model, torch_model.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 1, 572, 572)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    ours = nnx.jit(lambda m, x: m(x))(flax_model, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert ours.shape == (1, 388, 388, 2)
    assert_close(ours, ref.transpose(0, 2, 3, 1), tolerance(np.float32, "unet"), "output",
                 ("unet", "float32"))
