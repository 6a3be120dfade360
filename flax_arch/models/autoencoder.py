"""Auto-encoders of the "Auto-Encoder" and "Variational Auto-Encoder" slides, in Flax NNX.

x: (batch, num_inputs), flattened images (784 = 28 x 28 for MNIST); the same layout as torch.
The VAE loss is :func:`flax_arch.losses.vae_loss`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import Linear, ReLU, Sequential, Stochastic

__all__ = ["AE", "VAE"]


class AE(nnx.Module):
    """The slide's auto-encoder: a 400-400-20 ReLU encoder and its mirror image as decoder.

    It learns to predict its own input, without labels (Hinton & Salakhutdinov, "Reducing
    the dimensionality of data with neural networks", Science 2006).
    x: (batch, num_inputs) -> (batch, num_inputs).
    """

    def __init__(self, num_inputs: int = 784, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.encoder = Sequential(
            Linear(num_inputs, 400, **kw),
            ReLU(inplace=True),
            Linear(400, 400, **kw),
            ReLU(inplace=True),
            Linear(400, 20, **kw),
        )
        self.decoder = Sequential(
            Linear(20, 400, **kw),
            ReLU(inplace=True),
            Linear(400, 400, **kw),
            ReLU(inplace=True),
            Linear(400, num_inputs, **kw),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        # N x num_inputs -> N x 20 (the code) -> N x num_inputs
        return self.decoder(self.encoder(x))


class VAE(Stochastic):
    """The slide's variational auto-encoder (the pytorch/examples MNIST VAE).

    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014. The encoder gives the mean
    and log-variance of a 20-dimensional Gaussian code, the reparameterisation trick samples
    ``z = mu + eps * exp(0.5 * logvar)``, and the decoder maps z to Bernoulli means.
    x: (batch, 784) (or anything of 784 elements per sample, e.g. (batch, 28, 28, 1)) ->
    ``(recon, mu, logvar)`` of shapes (batch, 784), (batch, 20), (batch, 20).

    The noise is explicit: pass ``eps`` (batch, 20) for an exact, reproducible sample, or
    ``rngs`` to draw it (from the ``noise`` stream, or ``default``); the slide's
    ``torch.randn_like`` inside ``forward`` drew from a hidden global generator.
    """

    def __init__(self, *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc1 = Linear(784, 400, **kw)
        self.fc21 = Linear(400, 20, **kw)
        self.fc22 = Linear(400, 20, **kw)
        self.fc3 = Linear(20, 400, **kw)
        self.fc4 = Linear(400, 784, **kw)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(batch, 784) -> mu, logvar: (batch, 20) each."""
        h1 = jax.nn.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
        """z = mu + eps * std with std = exp(0.5 * logvar); all (batch, 20)."""
        std = jnp.exp(0.5 * logvar)
        return mu + eps * std

    def decode(self, z: jax.Array) -> jax.Array:
        """(batch, 20) -> (batch, 784) Bernoulli means."""
        h3 = jax.nn.relu(self.fc3(z))
        return jax.nn.sigmoid(self.fc4(h3))

    def __call__(self, x: jax.Array, eps: jax.Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        if x.size % 784:
            raise ValueError(
                f"VAE expects 784 values per sample, e.g. (batch, 784) or (batch, 28, 28, 1); "
                f"got shape {tuple(x.shape)}"
            )
        mu, logvar = self.encode(x.reshape(-1, 784))
        # N x 20, N x 20
        if eps is None:
            if rngs is None:
                raise ValueError("VAE needs the noise: pass eps of shape (batch, 20) or rngs")
            eps = jax.random.normal(rngs.noise(), mu.shape, mu.dtype)
        elif eps.shape != mu.shape:
            raise ValueError(f"VAE: eps must have shape {mu.shape} (batch, 20), got {eps.shape}")
        z = self.reparameterize(mu, logvar, eps)
        # N x 20
        return self.decode(z), mu, logvar
