"""The adversarial training step of the "Adversarial Training" slide (the pytorch DCGAN
example's iteration): D on a real batch, D on a fake batch, then G through a frozen D.

Radford, Metz and Chintala, ICLR 2016. Channels-last: images (batch, 64, 64, nc), the latent
z (batch, 1, 1, nz).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flax_arch.losses import binary_cross_entropy
from flax_arch.models.dcgan import Discriminator, Generator

__all__ = ["dcgan_optimizers", "adversarial_step", "GANStepLosses"]


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


def adversarial_step(netG: Generator, netD: Discriminator, optimizerG: nnx.Optimizer,
                     optimizerD: nnx.Optimizer, real: jax.Array, noise: jax.Array) -> GANStepLosses:
    """One iteration of the pytorch DCGAN example, models in train mode; updates both
    models, their optimizers and BatchNorm statistics in place. Compile it as one program
    with ``nnx.jit(adversarial_step)``.

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
