"""Auto-encoders of the "Auto-Encoder" and "Variational Auto-Encoder" slides, as PyTorch references.

x: (batch, num_inputs), flattened images (784 = 28 x 28 for MNIST).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


__all__ = ["AE", "VAE"]


class AE(nn.Module):
    """The slide's auto-encoder: a 400-400-20 ReLU encoder and its mirror image as decoder.

    It learns to predict its own input, without labels (Hinton & Salakhutdinov, "Reducing
    the dimensionality of data with neural networks", Science 2006).
    x: (batch, num_inputs) -> (batch, num_inputs).
    """

    def __init__(self, num_inputs: int = 784):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(num_inputs, 400),
            nn.ReLU(inplace=True),
            nn.Linear(400, 400),
            nn.ReLU(inplace=True),
            nn.Linear(400, 20),
        )
        self.decoder = nn.Sequential(
            nn.Linear(20, 400),
            nn.ReLU(inplace=True),
            nn.Linear(400, 400),
            nn.ReLU(inplace=True),
            nn.Linear(400, num_inputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        # N x num_inputs -> N x 20 (the code) -> N x num_inputs
        return self.decoder(self.encoder(x))


class VAE(nn.Module):
    """The slide's variational auto-encoder (the pytorch/examples MNIST VAE).

    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014. The encoder gives the mean
    and log-variance of a 20-dimensional Gaussian code, the reparameterisation trick samples
    ``z = mu + eps * exp(0.5 * logvar)``, and the decoder maps z to Bernoulli means.
    x: (batch, 784) (or anything of 784 elements per sample) -> ``(recon, mu, logvar)`` of
    shapes (batch, 784), (batch, 20), (batch, 20).

    Fixed from the slide: its ``reparameterize`` draws ``eps = torch.randn_like(std)`` from
    the global generator inside ``forward``, so the noise can be neither given nor
    reproduced. Here ``reparameterize`` takes ``eps`` explicitly, and ``forward(x, eps)``
    draws it from torch's generator only when it is not given.
    """

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, 784) -> mu, logvar: (batch, 20) each."""
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
        """z = mu + eps * std with std = exp(0.5 * logvar); all (batch, 20)."""
        std = torch.exp(0.5 * logvar)
        return mu + eps * std

    def decode(self, z: Tensor) -> Tensor:
        """(batch, 20) -> (batch, 784) Bernoulli means."""
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x.view(-1, 784))
        # N x 20, N x 20
        if eps is None:
            eps = torch.randn_like(mu)
        z = self.reparameterize(mu, logvar, eps)
        # N x 20
        return self.decode(z), mu, logvar
