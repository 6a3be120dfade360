"""DCGAN, from the "DCGAN" and "Adversarial Training" slides, in Flax NNX.

Radford, Metz and Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016. The networks are the slides' (from the pytorch
DCGAN example); :func:`adversarial_step` is that example's training iteration, one
jit-compiled function: D on a real batch, D on a fake batch, then G through a frozen D.
Channels-last: images (batch, 64, 64, nc), the latent z (batch, 1, 1, nz).
"""

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flax_arch.layers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    LeakyReLU,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from flax_arch.losses import binary_cross_entropy
from flax_arch.registry import Config, Input, ModelEntry, register

__all__ = ["Generator", "Discriminator", "init_dcgan_weights", "dcgan_optimizers",
           "adversarial_step", "GANStepLosses"]


@nnx.jit
def init_dcgan_weights(model: nnx.Module, *, rngs: nnx.Rngs) -> None:
    """The DCGAN paper's initialisation: convolution weights N(0, 0.02), BatchNorm weights
    N(1, 0.02) and biases 0 (the convolutions have no bias).

    Compiled, with one normal draw cut into every layer's weights: a single random-number
    kernel for XLA to compile, however many layers.
    """
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, (Conv2d, ConvTranspose2d))]
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm2d)]
    weights = [m.weight for m in convs + norms]
    sizes = [w[...].size for w in weights]
    noise = 0.02 * jax.random.normal(rngs.params(), (sum(sizes),), weights[0][...].dtype)
    chunks = jnp.split(noise, list(itertools.accumulate(sizes))[:-1])
    for w, chunk in zip(weights, chunks):
        w[...] = chunk.reshape(w[...].shape)
    for m in norms:
        m.weight[...] = 1.0 + m.weight[...]
        m.bias[...] = jnp.zeros_like(m.bias[...])


class Generator(nnx.Module):
    """DCGAN's generator: z (batch, 1, 1, nz) -> images (batch, 64, 64, nc) in [-1, 1].

    ``nz`` and ``ngf`` are the slide's locals, as keyword arguments with its values.
    """

    def __init__(self, nc: int = 3, nz: int = 100, ngf: int = 64, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.nz = nz
        self.main = Sequential(
            # input is Z, going into a convolution
            ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False, **kw),
            BatchNorm2d(ngf * 8, **kw),
            ReLU(True),
            # state size. 4 x 4 x (ngf*8)
            ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False, **kw),
            BatchNorm2d(ngf * 4, **kw),
            ReLU(True),
            # state size. 8 x 8 x (ngf*4)
            ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False, **kw),
            BatchNorm2d(ngf * 2, **kw),
            ReLU(True),
            # state size. 16 x 16 x (ngf*2)
            ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False, **kw),
            BatchNorm2d(ngf, **kw),
            ReLU(True),
            # state size. 32 x 32 x (ngf)
            ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False, **kw),
            Tanh(),
            # state size. 64 x 64 x (nc)
        )
        init_dcgan_weights(self, rngs=rngs)

    def __call__(self, input: jax.Array) -> jax.Array:
        if input.ndim != 4 or tuple(input.shape[1:]) != (1, 1, self.nz):
            raise ValueError(f"Generator expects a channels-last z of shape (batch, 1, 1, "
                             f"nz={self.nz}); got {tuple(input.shape)}")
        return self.main(input)


class Discriminator(nnx.Module):
    """DCGAN's discriminator: images (batch, 64, 64, nc) -> P(real) (batch, 1, 1, 1).

    ``ndf`` is the slide's local, as a keyword argument with its value.
    """

    def __init__(self, nc: int = 3, ndf: int = 64, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.nc = nc
        self.main = Sequential(
            # input is 64 x 64 x (nc)
            Conv2d(nc, ndf, 4, 2, 1, bias=False, **kw),
            LeakyReLU(0.2, inplace=True),
            # state size. 32 x 32 x (ndf)
            Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False, **kw),
            BatchNorm2d(ndf * 2, **kw),
            LeakyReLU(0.2, inplace=True),
            # state size. 16 x 16 x (ndf*2)
            Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False, **kw),
            BatchNorm2d(ndf * 4, **kw),
            LeakyReLU(0.2, inplace=True),
            # state size. 8 x 8 x (ndf*4)
            Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False, **kw),
            BatchNorm2d(ndf * 8, **kw),
            LeakyReLU(0.2, inplace=True),
            # state size. 4 x 4 x (ndf*8)
            Conv2d(ndf * 8, 1, 4, 1, 0, bias=False, **kw),
            Sigmoid(),
        )
        init_dcgan_weights(self, rngs=rngs)

    def __call__(self, input: jax.Array) -> jax.Array:
        if input.ndim != 4 or tuple(input.shape[1:]) != (64, 64, self.nc):
            raise ValueError(f"Discriminator expects channels-last images of shape (batch, 64, "
                             f"64, nc={self.nc}); got {tuple(input.shape)}")
        return self.main(input)


def dcgan_optimizers(netG: Generator, netD: Discriminator, lr: float = 2e-4,
                     beta1: float = 0.5) -> tuple[nnx.Optimizer, nnx.Optimizer]:
    """The example's ``(optimizerG, optimizerD)``: Adam(lr, betas=(beta1, 0.999)) each."""
    return (nnx.Optimizer(netG, optax.adam(lr, b1=beta1, b2=0.999), wrt=nnx.Param),
            nnx.Optimizer(netD, optax.adam(lr, b1=beta1, b2=0.999), wrt=nnx.Param))


class GANStepLosses(NamedTuple):
    """What the example prints after a step: the losses and D's mean outputs."""

    errD: jax.Array  # BCE of D on the real batch (target 1) plus on the fake batch (target 0)
    errG: jax.Array  # BCE of D on the fake batch, target 1, after D's update
    D_x: jax.Array  # mean D(x)
    D_G_z1: jax.Array  # mean D(G(z)) before D's update
    D_G_z2: jax.Array  # mean D(G(z)) after D's update


@nnx.jit
def adversarial_step(netG: Generator, netD: Discriminator, optimizerG: nnx.Optimizer,
                     optimizerD: nnx.Optimizer, real: jax.Array, noise: jax.Array) -> GANStepLosses:
    """One iteration of the pytorch DCGAN example, models in train mode, compiled as one
    function; updates both models, their optimizers and BatchNorm statistics in place.

    real: (batch, 64, 64, nc), noise: (batch, 1, 1, nz). The generator runs once (its
    backward pass is kept as a VJP until D has been updated); D runs three times (real,
    fake, fake again after its update), so its BatchNorm statistics update three times.
    """
    real_label = jnp.ones((real.shape[0],), real.dtype)
    fake_label = jnp.zeros((real.shape[0],), real.dtype)

    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    fake, generator_vjp = nnx.vjp(lambda netG: netG(noise), netG, graph=False)  # N x 64 x 64 x nc

    def discriminator_loss(netD):
        output = netD(real).reshape(-1)  # train with real
        errD_real = binary_cross_entropy(output, real_label)
        D_x = jnp.mean(output)
        output = netD(jax.lax.stop_gradient(fake)).reshape(-1)  # train with fake
        errD_fake = binary_cross_entropy(output, fake_label)
        return errD_real + errD_fake, (D_x, jnp.mean(output))

    (errD, (D_x, D_G_z1)), grads = nnx.value_and_grad(discriminator_loss, has_aux=True)(netD)
    optimizerD.update(netD, grads)

    # (2) Update G network: maximize log(D(G(z))), through D (frozen: grads w.r.t. fake only)
    def generator_loss(netD, fake):
        output = netD(fake).reshape(-1)
        return binary_cross_entropy(output, real_label), jnp.mean(output)

    (errG, D_G_z2), dfake = nnx.value_and_grad(generator_loss, argnums=1, has_aux=True)(netD, fake)
    (grads,) = generator_vjp(dfake)
    optimizerG.update(netG, nnx.state(grads, nnx.Param))
    return GANStepLosses(errD, errG, D_x, D_G_z1, D_G_z2)


register(ModelEntry(
    "dcgan_generator", "dcgan", Generator,
    test=Config({"nc": 3, "nz": 16, "ngf": 8}, (Input((4, 16, 1, 1), "NCHW"),),
                Input((4, 3, 64, 64), "NCHW")),
    # the slide's generator at the example's batch size
    bench=Config({}, (Input((64, 100, 1, 1), "NCHW"),), Input((64, 3, 64, 64), "NCHW")),
    outputs=("NCHW",), loss="mse",
))
register(ModelEntry(
    "dcgan_discriminator", "dcgan", Discriminator,
    test=Config({"nc": 3, "ndf": 8}, (Input((4, 3, 64, 64), "NCHW"),),
                Input((4, 1, 1, 1), "NCHW", "unit")),
    bench=Config({}, (Input((64, 3, 64, 64), "NCHW"),), Input((64, 1, 1, 1), "NCHW", "unit")),
    outputs=("NCHW",), loss="bce",
))
