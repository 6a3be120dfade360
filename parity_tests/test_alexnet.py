"""AlexNet against torchvision's, the slide's shapes, dropout, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

import torch_ref.alexnet
from flax_arch.models.alexnet import AlexNet
from parity_tests.harness import Pair, uninitialised

DTYPES = [np.float64, np.float32]


# The registry's generic checks of 'alexnet' run in test_registry_parity.py; these compare
# torchvision's network itself and check what is AlexNet's own.


def torchvision_pair(dtype, size: int, hidden: int = 4096) -> Pair:
    """torchvision's randomly initialised AlexNet, its state_dict loaded strictly into ours;
    ``hidden`` < 4096 swaps its classifier's Linear layers for narrower ones (ours built
    with ``hidden_features=hidden``)."""
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None)
    if hidden != 4096:
        for i, (n_in, n_out) in {1: (9216, hidden), 4: (hidden, hidden), 6: (hidden, 1000)}.items():
            tv.classifier[i] = torch.nn.Linear(n_in, n_out)
    ours = uninitialised(lambda: AlexNet(hidden_features=hidden, rngs=nnx.Rngs(0),
                                         param_dtype=dtype))
    x = np.random.default_rng(0).standard_normal((1, 3, size, size))
    return Pair.of_modules(tv, ours, [x], ["NCHW"], ["NC"], dtype, family="alexnet", train=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_torchvision_alexnet_loads_and_matches(dtype):
    """float32 at torchvision's full width; float64 with a 256-wide classifier (the
    4096-wide one's gradients in float64 took 3.9 GB: the widths change no mathematics)."""
    hidden = 4096 if np.dtype(dtype) == np.float32 else 256
    torchvision_pair(dtype, 64, hidden).check_forward_and_gradients()


@pytest.mark.slow
def test_torchvision_alexnet_full_size():
    pair = torchvision_pair(np.float32, 224)
    assert pair.flax(jnp.asarray(pair.flax_in[0])).shape == (1, 1000)
    pair.check_forward_and_gradients()


def test_reference_is_torchvision_alexnet():
    """The slide's first version is torchvision's network: same keys, shapes and outputs."""
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None).eval()
    ref = torch_ref.alexnet.AlexNet().eval()
    state = tv.state_dict()
    assert [(k, v.shape) for k, v in ref.state_dict().items()] == [
        (k, v.shape) for k, v in state.items()]
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), tv(x), rtol=0, atol=0)


def test_slide_shape():
    """alexnet(x) for x of (1, 3, 224, 224) prints (1, 1000); channels-last here, traced
    through the network (the full-size run against torchvision is marked slow)."""
    model = nnx.eval_shape(lambda: AlexNet(rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    y = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                       jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert y.shape == (1, 1000)


@pytest.fixture(scope="module")
def small_alexnet():
    return nnx.jit(lambda: AlexNet(num_classes=10, dropout=0.3, rngs=nnx.Rngs(0)))()


def test_dropout_statistics_in_train_mode(small_alexnet):
    """Both classifier dropouts zero a fraction p of the activations and scale the rest by
    1 / (1 - p) in train mode, as torch's do; eval mode is the identity."""
    p, n = 0.3, 64 * 4096
    model = small_alexnet
    torch_model = torch_ref.alexnet.AlexNet(num_classes=10, dropout=p)
    model.train()
    for i, width in ((0, 9216), (3, 4096)):
        x = jnp.ones((64, width), jnp.float32)
        y = np.asarray(model.classifier[i](x, rngs=nnx.Rngs(dropout=i)))[:, :4096]
        t = torch_model.classifier[i](torch.ones(64, width))[:, :4096].numpy()
        for name, out in (("flax", y), ("torch", t)):
            dropped = np.mean(out == 0)
            assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n), (name, i, dropped)
            np.testing.assert_allclose(out[out != 0], 1 / (1 - p), rtol=1e-6)
    model.eval()
    x = jnp.ones((2, 9216), jnp.float32)
    np.testing.assert_array_equal(model.classifier[0](x), x)


def test_train_mode_masks_come_from_the_rngs_given(small_alexnet):
    model = small_alexnet
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    call = nnx.jit(lambda model, x, rngs=None: model(x, rngs=rngs))
    model.train()
    a = call(model, x, nnx.Rngs(dropout=1))
    b = call(model, x, nnx.Rngs(dropout=1))
    c = call(model, x, nnx.Rngs(dropout=2))
    model.eval()
    d, e = call(model, x), call(model, x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)
    np.testing.assert_array_equal(d, e)


def test_bad_inputs(small_alexnet):
    layout = r"\(batch, height, width, channels=3\)"
    with pytest.raises(ValueError, match=layout):
        small_alexnet(jnp.zeros((1, 3, 224, 224)))  # torch's NCHW
    with pytest.raises(ValueError, match=layout):
        small_alexnet(jnp.zeros((224, 224, 3)))
    with pytest.raises(ValueError, match="height and width >= 63"):
        small_alexnet(jnp.zeros((1, 62, 64, 3)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        AlexNet(dropout=1.5, rngs=nnx.Rngs(0))
