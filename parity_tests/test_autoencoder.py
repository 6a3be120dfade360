"""AE and VAE: the slides' shapes, the VAE loss against torch, explicit noise, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import torch_ref.autoencoder
from flax_arch.models.autoencoder import AE, VAE
from parity_tests.harness import assert_close
from parity_tests.tolerances import tolerance

DTYPES = [np.float64, np.float32]

# The registry's generic checks (forward, gradients, optimizer steps, state round trip) of
# 'ae' and 'vae' run in test_registry_parity.py; these are the auto-encoders' own.


def test_slide_shapes():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((10, 784)), jnp.float32)
    assert AE(784, rngs=nnx.Rngs(0))(x).shape == (10, 784)
    y, mu, logvar = VAE(rngs=nnx.Rngs(0))(x, rngs=nnx.Rngs(1))
    assert (y.shape, mu.shape, logvar.shape) == ((10, 784), (10, 20), (10, 20))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_vae_loss_matches_torch(dtype):
    """Summed BCE + KL, value and gradients with respect to every argument."""
    rng = np.random.default_rng(0)
    recon = rng.uniform(0.01, 0.99, (6, 784)).astype(dtype)
    mu, logvar = rng.standard_normal((2, 6, 20)).astype(dtype)
    x = rng.uniform(0, 1, (6, 784)).astype(dtype)
    t_args = [torch.from_numpy(a).requires_grad_() for a in (recon, mu, logvar)]
    t_loss = torch_ref.vae_loss(*t_args, torch.from_numpy(x))
    t_loss.backward()
    f_loss, f_grads = jax.value_and_grad(flax_arch.vae_loss, argnums=(0, 1, 2))(
        jnp.asarray(recon), jnp.asarray(mu), jnp.asarray(logvar), jnp.asarray(x))
    tol = tolerance(dtype, "autoencoder")
    assert_close(f_loss, t_loss.detach().numpy(), tol, "loss")
    for what, ours, ref in zip(("recon", "mu", "logvar"), f_grads, t_args):
        assert_close(ours, ref.grad.numpy(), tol, f"grad {what}")


def test_vae_noise_comes_from_the_rngs_given():
    model = VAE(rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (3, 784)), jnp.float32)
    y1, mu, logvar = model(x, rngs=nnx.Rngs(noise=7))
    y2, _, _ = model(x, rngs=nnx.Rngs(noise=7))
    y3, _, _ = model(x, rngs=nnx.Rngs(noise=8))
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(y1, y3)
    # the draw is standard normal noise from the `noise` stream, through reparameterize
    eps = jax.random.normal(nnx.Rngs(noise=7).noise(), (3, 20), jnp.float32)
    np.testing.assert_array_equal(y1, model(x, eps)[0])
    np.testing.assert_array_equal(y1, model.decode(model.reparameterize(mu, logvar, eps)))


def test_torch_vae_draws_from_torch_generator_only_without_eps():
    model = torch_ref.autoencoder.VAE()
    x = torch.rand(3, 784)
    torch.manual_seed(5)
    y_drawn = model(x)[0]
    torch.manual_seed(5)
    eps = torch.randn(3, 20)
    torch.testing.assert_close(y_drawn, model(x, eps)[0], rtol=0, atol=0)
    state = torch.get_rng_state()
    model(x, eps)
    assert torch.equal(state, torch.get_rng_state())


def test_vae_reads_28x28_images_channels_last():
    model = VAE(rngs=nnx.Rngs(0))
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 28, 28, 1)), jnp.float32)
    eps = jnp.zeros((2, 20), jnp.float32)
    np.testing.assert_array_equal(model(images, eps)[0], model(images.reshape(2, 784), eps)[0])


def test_bad_inputs():
    vae = VAE(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="784 values per sample"):
        vae(jnp.zeros((2, 783)), jnp.zeros((2, 20)))
    with pytest.raises(ValueError, match=r"eps must have shape \(2, 20\)"):
        vae(jnp.zeros((2, 784)), jnp.zeros((2, 10)))
    with pytest.raises(ValueError, match="pass eps .* or rngs"):
        vae(jnp.zeros((2, 784)))
    with pytest.raises(ValueError, match="in_features=784"):
        AE(784, rngs=nnx.Rngs(0))(jnp.zeros((2, 28, 28)))
