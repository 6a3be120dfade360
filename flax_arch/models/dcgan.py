"""DCGAN, from the "DCGAN" and "Adversarial Training" slides, in Flax NNX.

Radford, Metz and Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016. The networks are the slides' (from the pytorch
DCGAN example); the adversarial training step of the slides is
:func:`flax_arch.training.gan.adversarial_step`.
Channels-last: images (batch, 64, 64, nc), the latent z (batch, 1, 1, nz).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    LeakyReLU,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from flax_arch.nn.init import normal_

__all__ = ["Generator", "Discriminator", "init_dcgan_weights"]


def init_dcgan_weights(model: nnx.Module, *, rngs: nnx.Rngs) -> None:
    """The DCGAN paper's initialisation: convolution weights N(0, 0.02), BatchNorm weights
    N(1, 0.02) and biases 0 (the convolutions have no bias)."""
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, (Conv2d, ConvTranspose2d))]
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm2d)]
    normal_([m.weight for m in convs + norms], rngs.params(), std=0.02,
            mean=[0.0] * len(convs) + [1.0] * len(norms))
    for m in norms:
        m.bias.set_value(jnp.zeros_like(m.bias[...]))


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
