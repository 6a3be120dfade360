"""DCGAN, from the "DCGAN" and "Adversarial Training" slides, as a PyTorch reference.

Radford, Metz and Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016. The networks are the slides' (from
https://github.com/pytorch/examples/blob/master/dcgan/main.py); ``adversarial_step`` is that
example's training iteration: D on a real batch, D on a fake batch, then G through D.
Images: (batch, nc, 64, 64), torch's layout; the latent z: (batch, nz, 1, 1).

Changed from the slides: ``nz``, ``ngf`` and ``ndf`` are keyword arguments after ``nc``
(the slide's values as defaults) instead of locals, so tests can build small networks; the
weight initialisation of the paper, which the example applies with ``netG.apply(weights_init)``
dispatching on ``classname.find('Conv')``, is :func:`init_dcgan_weights`, called by the
constructors and dispatching on the layer types.
"""

from typing import NamedTuple

import torch
from torch import Tensor, nn


__all__ = ["Generator", "Discriminator", "init_dcgan_weights", "dcgan_optimizers",
           "adversarial_step", "GANStepLosses"]


def init_dcgan_weights(model: nn.Module) -> None:
    """The DCGAN paper's initialisation: convolution weights N(0, 0.02), BatchNorm weights
    N(1, 0.02) and biases 0 (the convolutions have no bias)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """DCGAN's generator: z (batch, nz, 1, 1) -> images (batch, nc, 64, 64) in [-1, 1]."""

    def __init__(self, nc: int = 3, nz: int = 100, ngf: int = 64):
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh()
            # state size. (nc) x 64 x 64
        )
        init_dcgan_weights(self)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim != 4 or tuple(input.shape[1:]) != (self.nz, 1, 1):
            raise ValueError(f"Generator expects z of shape (batch, nz={self.nz}, 1, 1); got "
                             f"{tuple(input.shape)}")
        return self.main(input)


class Discriminator(nn.Module):
    """DCGAN's discriminator: images (batch, nc, 64, 64) -> P(real) (batch, 1, 1, 1)."""

    def __init__(self, nc: int = 3, ndf: int = 64):
        super(Discriminator, self).__init__()
        self.nc = nc
        self.main = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid()
        )
        init_dcgan_weights(self)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim != 4 or tuple(input.shape[1:]) != (self.nc, 64, 64):
            raise ValueError(f"Discriminator expects images of shape (batch, nc={self.nc}, 64, "
                             f"64); got {tuple(input.shape)}")
        return self.main(input)


def dcgan_optimizers(netG: Generator, netD: Discriminator, lr: float = 2e-4,
                     beta1: float = 0.5) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """The example's ``(optimizerG, optimizerD)``: Adam(lr, betas=(beta1, 0.999)) each."""
    return (torch.optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999)),
            torch.optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999)))


class GANStepLosses(NamedTuple):
    """What the example prints after a step: the losses and D's mean outputs."""

    errD: Tensor  # BCE of D on the real batch (target 1) plus on the fake batch (target 0)
    errG: Tensor  # BCE of D on the fake batch, target 1, after D's update
    D_x: Tensor  # mean D(x)
    D_G_z1: Tensor  # mean D(G(z)) before D's update
    D_G_z2: Tensor  # mean D(G(z)) after D's update


def adversarial_step(netG: Generator, netD: Discriminator, optimizerG: torch.optim.Optimizer,
                     optimizerD: torch.optim.Optimizer, real: Tensor,
                     noise: Tensor) -> GANStepLosses:
    """One iteration of the pytorch DCGAN example, models in train mode.

    real: (batch, nc, 64, 64), noise: (batch, nz, 1, 1). The generator runs once; D runs
    three times (real, detached fake, fake), so its BatchNorm statistics update three times.
    """
    criterion = nn.BCELoss()
    real_label, fake_label = 1.0, 0.0
    b_size = real.size(0)

    ############################
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    ###########################
    # train with real
    netD.zero_grad()
    label = torch.full((b_size,), real_label, dtype=real.dtype, device=real.device)
    output = netD(real).view(-1)  # N
    errD_real = criterion(output, label)
    errD_real.backward()
    D_x = output.mean()

    # train with fake
    fake = netG(noise)  # N x nc x 64 x 64
    label.fill_(fake_label)
    output = netD(fake.detach()).view(-1)
    errD_fake = criterion(output, label)
    errD_fake.backward()
    D_G_z1 = output.mean()
    errD = errD_real + errD_fake
    optimizerD.step()

    ############################
    # (2) Update G network: maximize log(D(G(z)))
    ###########################
    netG.zero_grad()
    label.fill_(real_label)  # fake labels are real for generator cost
    output = netD(fake).view(-1)
    errG = criterion(output, label)
    errG.backward()
    D_G_z2 = output.mean()
    optimizerG.step()
    return GANStepLosses(*(t.detach() for t in (errD, errG, D_x, D_G_z1, D_G_z2)))
