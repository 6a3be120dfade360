"""DCGAN: the networks and the adversarial training step against the torch reference, the
paper's initialisation, the slides' shapes, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch.models.dcgan
import torch_ref.dcgan
from parity_tests.harness import Pair, assert_close
from parity_tests.tolerances import tolerance

MODELS = ["dcgan_generator", "dcgan_discriminator"]
DTYPES = [np.float64, np.float32]
NZ = 16  # the registry's test configuration: nz=16, ngf=ndf=8, batch 4


def dtype_ids(dtype) -> str:
    return np.dtype(dtype).name


def flax_output_shape(cls, input_shape, **kwargs):
    """The output shape of ``cls(**kwargs)`` on an input of ``input_shape``, built and run
    abstractly (jax.eval_shape): no weights drawn, nothing computed."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: cls(**kwargs, rngs=nnx.Rngs(0))))
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                          jax.ShapeDtypeStruct(input_shape, jnp.float32)).shape


# ----------------------------------------------------------------------------- parity
# The generic forward, gradient and optimizer checks of both networks run in
# test_registry_parity.py; this file adds the adversarial step.


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_adversarial_steps(dtype):
    """Two iterations of the pytorch DCGAN example from the same weights: the same losses, the
    same G and D parameters and BatchNorm statistics on both sides after each."""
    g, d = Pair("dcgan_generator", dtype), Pair("dcgan_discriminator", dtype)
    torch_opts = torch_ref.dcgan.dcgan_optimizers(g.torch, d.torch)
    flax_opts = flax_arch.dcgan_optimizers(g.flax, d.flax)
    nets = {"G": g.torch, "D": d.torch}
    start = {(n, k): v.clone() for n, net in nets.items() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(7)
    step_fn = nnx.jit(flax_arch.adversarial_step)  # one jitted function for both steps
    for step in range(1, 3):
        real = rng.uniform(-1.0, 1.0, (4, 3, 64, 64)).astype(dtype)
        noise = rng.standard_normal((4, NZ, 1, 1)).astype(dtype)
        ref = torch_ref.dcgan.adversarial_step(g.torch, d.torch, *torch_opts,
                                               torch.from_numpy(real), torch.from_numpy(noise))
        ours = step_fn(g.flax, d.flax, *flax_opts, jnp.asarray(real.transpose(0, 2, 3, 1)),
                       jnp.asarray(noise.transpose(0, 2, 3, 1)))
        for field in ours._fields:
            assert_close(getattr(ours, field), getattr(ref, field).numpy(), g.tol,
                         f"gan-step {field} after step {step}", g.record)
        g.check_state(f"gan-step G after step {step}")
        d.check_state(f"gan-step D after step {step}")
        # G ran once per step, D three times (real, detached fake, fake for G's loss)
        assert int(g.torch.main[1].num_batches_tracked) == step
        assert int(d.torch.main[3].num_batches_tracked) == 3 * step
    # the step trained both networks (parity of two untouched models would prove nothing)
    for (n, key), before in start.items():
        if key.endswith("weight"):
            assert not torch.equal(nets[n].state_dict()[key], before), f"{n} {key} did not change"


# ----------------------------------------------------------------------------- init


def test_the_papers_initialisation():
    """Convolution weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0, on both sides
    (the test configurations: 104k convolution weights, 232 BatchNorm weights)."""
    torch.manual_seed(0)
    g, d = (flax_arch.get_entry(name).test.kwargs for name in MODELS)
    models = [torch_ref.dcgan.Generator(**g), torch_ref.dcgan.Discriminator(**d),
              flax_arch.models.dcgan.Generator(**g, rngs=nnx.Rngs(0)),
              flax_arch.models.dcgan.Discriminator(**d, rngs=nnx.Rngs(1))]
    for pair in (models[:2], models[2:]):
        sd = {}
        for i, model in enumerate(pair):
            state = (model.state_dict() if isinstance(model, torch.nn.Module)
                     else flax_arch.torch_state_dict(model))
            sd.update({(i, k): np.asarray(v) for k, v in state.items()})
        conv = np.concatenate([v.ravel() for (_, k), v in sd.items()
                               if k.endswith("weight") and v.ndim == 4])
        bn_weight = np.concatenate([v for (_, k), v in sd.items()
                                    if k.endswith("weight") and v.ndim == 1])
        bn_bias = np.concatenate([v for (_, k), v in sd.items() if k.endswith("bias")])
        # standard errors: conv mean 6e-5, std 4e-5; BatchNorm mean 1.3e-3, std 9e-4
        assert abs(conv.mean()) < 4e-4 and abs(conv.std() - 0.02) < 3e-4
        assert abs(bn_weight.mean() - 1.0) < 0.006 and abs(bn_weight.std() - 0.02) < 0.005
        assert bn_bias.size == bn_weight.size == 232 and np.all(bn_bias == 0)


# ----------------------------------------------------------------------------- shapes


def test_slide_shapes():
    """The slides print z (1, 100, 1, 1) -> (1, 3, 64, 64) and (1, 3, 64, 64) -> (1, 1, 1, 1);
    channels-last here: (1, 1, 1, 100) -> (1, 64, 64, 3) -> (1, 1, 1, 1)."""
    assert flax_output_shape(flax_arch.models.dcgan.Generator, (1, 1, 1, 100)) == (1, 64, 64, 3)
    assert flax_output_shape(flax_arch.models.dcgan.Discriminator, (1, 64, 64, 3)) == (1, 1, 1, 1)
    with torch.device("meta"):
        x = torch_ref.dcgan.Generator()(torch.empty(1, 100, 1, 1))
        y = torch_ref.dcgan.Discriminator()(torch.empty(1, 3, 64, 64))
    assert tuple(x.shape) == (1, 3, 64, 64) and tuple(y.shape) == (1, 1, 1, 1)


def test_small_configurations_keep_the_image_size():
    assert flax_output_shape(flax_arch.models.dcgan.Generator, (2, 1, 1, 8), nc=1, nz=8,
                             ngf=4) == (2, 64, 64, 1)
    assert flax_output_shape(flax_arch.models.dcgan.Discriminator, (2, 64, 64, 1), nc=1,
                             ndf=4) == (2, 1, 1, 1)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"channels-last z of shape \(batch, 1, 1, nz=100\)"):
        flax_output_shape(flax_arch.models.dcgan.Generator, (1, 100, 1, 1))  # torch's layout
    with pytest.raises(ValueError, match=r"channels-last images of shape \(batch, 64, 64, nc=3\)"):
        flax_output_shape(flax_arch.models.dcgan.Discriminator, (1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"got \(1, 128, 128, 3\)"):
        flax_output_shape(flax_arch.models.dcgan.Discriminator, (1, 128, 128, 3))
    with torch.device("meta"):
        with pytest.raises(ValueError, match=r"z of shape \(batch, nz=100, 1, 1\)"):
            torch_ref.dcgan.Generator()(torch.empty(1, 1, 1, 100))
        with pytest.raises(ValueError, match=r"\(batch, nc=3, 64, 64\)"):
            torch_ref.dcgan.Discriminator()(torch.empty(1, 3, 32, 32))


# ----------------------------------------------------------------------------- full size


def full_size_output(cls_name: str, x: np.ndarray) -> np.ndarray:
    """The slide-size network's torch output on x (torch layout), checked against Flax's."""
    torch_model = getattr(torch_ref.dcgan, cls_name)()
    flax_model = getattr(flax_arch.models.dcgan, cls_name)(rngs=nnx.Rngs(0))
    flax_arch.load_torch_state_dict(flax_model, torch_model.state_dict())
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    ours = nnx.jit(lambda m, x: m(x))(flax_model, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert_close(ours, ref.transpose(0, 2, 3, 1), tolerance(np.float32, "dcgan"),
                 f"output {cls_name}", ("dcgan", "float32"))
    return ref


@pytest.mark.slow
def test_slide_networks_full_size_parity():
    """The slides' G and D (nz=100, ngf=ndf=64), float32, train mode, against torch; D judges
    G's images."""
    torch.manual_seed(0)
    z = np.random.default_rng(0).standard_normal((4, 100, 1, 1)).astype(np.float32)
    images = full_size_output("Generator", z)
    assert images.shape == (4, 3, 64, 64)
    assert full_size_output("Discriminator", images).shape == (4, 1, 1, 1)
