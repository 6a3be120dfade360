"""The training losses named by the registry, in torch's layout (class axis 1).

``task_loss(name, outputs, target)`` applies the loss to the model's first output, except
``'vae'``, which takes the VAE's whole ``(recon, mu, logvar)``.
"""

import torch
import torch.nn.functional as F

__all__ = ["vae_loss", "task_loss", "LOSSES"]


def vae_loss(recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             x: torch.Tensor) -> torch.Tensor:
    """Kingma & Welling 2014: summed binary cross-entropy plus the KL divergence to N(0, I)."""
    bce = F.binary_cross_entropy(recon, x.reshape(recon.shape), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def nll_loss_classes_last(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``F.nll_loss`` for log-probabilities whose class axis is last, (N, L, C), as a
    recurrent model's per-step outputs are; target (N, L)."""
    return F.nll_loss(log_probs.movedim(-1, 1), target)


LOSSES = {
    "nll": F.nll_loss,
    "nll_classes_last": nll_loss_classes_last,
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "bce": F.binary_cross_entropy,
}


def task_loss(name: str, outputs, target: torch.Tensor) -> torch.Tensor:
    if name == "vae":
        return vae_loss(*outputs, target)
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES) + ['vae']}")
    out = outputs[0] if isinstance(outputs, tuple) else outputs
    return LOSSES[name](out, target)
