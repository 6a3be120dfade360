"""SEGAN's blocks and generator: parity with the torch reference, the slides' shapes, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch.models.segan
import torch_ref.segan
from parity_tests.harness import Pair, assert_close
from parity_tests.tolerances import tolerance

MODELS = ["down_conv1d_block", "up_conv1d_block", "segan_generator"]
DTYPES = [np.float64, np.float32]


def dtype_ids(dtype) -> str:
    return np.dtype(dtype).name


def flax_output_shape(cls, input_shape, *args, **kwargs):
    """The output shape of ``cls(*args, **kwargs)`` on an input of ``input_shape``, built and
    run abstractly (jax.eval_shape): no weights drawn, nothing computed."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(*args, **kwargs, rngs=nnx.Rngs(0))))
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                          jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape


# ----------------------------------------------------------------------------- parity


# The generic forward, gradient and optimizer checks run in test_registry_parity.py.


@pytest.mark.parametrize("overrides", [{"kwidth": 8}, {"kwidth": 8, "act": False},
                                       {"act": False}], ids=["even", "even-noact", "noact"])
def test_up_block_variants(overrides):
    """An even kernel keeps every sample; without ``act`` the block is linear."""
    Pair("up_conv1d_block", np.float64, **overrides).check_forward_and_gradients()


def test_state_tree_and_act_attribute():
    pair = Pair("segan_generator", np.float32, enc_fmaps=(4, 8, 16))
    keys = set(flax_arch.torch_state_dict(pair.flax))
    assert keys == set(pair.torch.state_dict())
    assert {k for k in keys if k.startswith("dec.2.")} == {"dec.2.deconv.weight",
                                                           "dec.2.deconv.bias"}
    assert "enc.2.conv.weight" in keys
    # the last decoder has no activation: absent in torch (hasattr), None in Flax
    assert [hasattr(block, "act") for block in pair.torch.dec] == [True, True, False]
    assert [block.act is not None for block in pair.flax.dec] == [True, True, False]


def test_the_slides_padding_arithmetic():
    """``pad = max(0, (stride - kwidth) // -2)`` and the odd kernel's dropped sample give
    ``length * stride`` whenever kwidth >= stride."""
    for kwidth, stride, pad in [(31, 4, 13), (8, 4, 2), (5, 2, 1), (4, 2, 1)]:
        up = nnx.eval_shape(lambda: flax_arch.models.segan.UpConv1dBlock(  # shapes only
            1, 1, kwidth, stride, rngs=nnx.Rngs(0)))
        ref = torch_ref.segan.UpConv1dBlock(1, 1, kwidth, stride)
        assert up.deconv.padding == (pad,) == ref.deconv.padding
        assert nnx.eval_shape(lambda m: m(jnp.zeros((1, 10, 1))), up).shape == (1, 10 * stride, 1)
        assert tuple(ref(torch.zeros(1, 1, 10)).shape) == (1, 1, 10 * stride)


# ----------------------------------------------------------------------------- shapes


def test_slide_block_shapes():
    """The slides print 4000 -> 1000 and 1000 -> 4000 for the (1, 1, 31, 4) blocks."""
    rng = np.random.default_rng(0)
    for cls_name, length, out in [("DownConv1dBlock", 4000, 1000), ("UpConv1dBlock", 1000, 4000)]:
        flax_block = nnx.eval_shape(lambda: getattr(flax_arch.models.segan, cls_name)(
            1, 1, 31, 4, rngs=nnx.Rngs(0)))  # shapes only
        torch_block = getattr(torch_ref.segan, cls_name)(1, 1, 31, 4)
        x = rng.standard_normal((1, 1, length)).astype(np.float32)
        assert tuple(torch_block(torch.from_numpy(x)).shape) == (1, 1, out)
        assert nnx.eval_shape(lambda m, x: m(x), flax_block,
                              jnp.asarray(x.transpose(0, 2, 1))).shape == (1, out, 1)


def test_slide_generator_shape():
    """The slide prints 8192 -> 8192 for ``Conv1dGenerator()``."""
    assert flax_output_shape(flax_arch.models.segan.Conv1dGenerator, (1, 8192, 1)) == (1, 8192, 1)
    with torch.device("meta"):
        y = torch_ref.segan.Conv1dGenerator()(torch.empty(1, 1, 8192))
    assert tuple(y.shape) == (1, 1, 8192)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls_name", ["DownConv1dBlock", "UpConv1dBlock"])
def test_bad_hyperparameters(cls_name):
    for module in (torch_ref.segan, flax_arch.models.segan):
        cls = getattr(module, cls_name)
        kw = {} if module is torch_ref.segan else {"rngs": nnx.Rngs(0)}
        with pytest.raises(ValueError, match="stride must be > 1"):
            cls(1, 1, 31, 1, **kw)
        with pytest.raises(ValueError, match="kwidth must be >= 2"):
            cls(1, 1, 1, 4, **kw)
    with pytest.raises(ValueError, match="enc_fmaps must be positive"):
        torch_ref.segan.Conv1dGenerator(enc_fmaps=())
    with pytest.raises(ValueError, match="enc_fmaps must be positive"):
        flax_arch.models.segan.Conv1dGenerator(enc_fmaps=(4, 0), rngs=nnx.Rngs(0))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"multiple of pooling \*\* len\(enc_fmaps\) = 256, got "
                                         r"8190; the nearest valid lengths are 7936 and 8192"):
        flax_output_shape(flax_arch.models.segan.Conv1dGenerator, (1, 8190, 1))
    with torch.device("meta"), pytest.raises(ValueError, match="nearest valid lengths are 7936"):
        torch_ref.segan.Conv1dGenerator()(torch.empty(1, 1, 8190))
    with pytest.raises(ValueError, match=r"channels-last input of shape \(batch, length, 1\)"):
        flax_output_shape(flax_arch.models.segan.Conv1dGenerator, (1, 1, 8192))  # torch's layout
    with pytest.raises(ValueError, match=r"\(batch, length, ninp=2\)"):
        flax_output_shape(flax_arch.models.segan.DownConv1dBlock, (64, 2), 2, 4, 31, 4)  # no batch axis
    with pytest.raises(ValueError, match=r"\(batch, length, ninp=4\)"):
        flax_output_shape(flax_arch.models.segan.UpConv1dBlock, (16, 4), 4, 2, 31, 4)
    with pytest.raises(ValueError, match="channels-last"):
        flax_output_shape(flax_arch.models.segan.DownConv1dBlock, (1, 2, 64), 2, 4, 31, 4)


# ----------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_slide_generator_full_size_parity():
    """The slide's generator at 8192 samples, float32, against torch (weights copied)."""
    torch.manual_seed(0)
    torch_model = torch_ref.segan.Conv1dGenerator()
    flax_model = flax_arch.models.segan.Conv1dGenerator(rngs=nnx.Rngs(0))
    flax_arch.load_torch_state_dict(flax_model, torch_model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 1, 8192)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    ours = nnx.jit(lambda m, x: m(x))(flax_model, jnp.asarray(x.transpose(0, 2, 1)))
    assert ours.shape == (2, 8192, 1)
    assert_close(ours, ref.transpose(0, 2, 1), tolerance(np.float32, "segan"), "output",
                 ("segan", "float32"))
