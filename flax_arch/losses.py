"""The training losses named by the registry, channels-last (class axis last).

``task_loss(name, outputs, target)`` applies the loss to the model's first output, except
``'vae'``, which takes the VAE's whole ``(recon, mu, logvar)``. Each matches the torch loss
of the same name in :mod:`torch_ref.losses` with its default ``reduction='mean'``.
"""

import jax
import jax.numpy as jnp

__all__ = ["nll_loss", "cross_entropy", "mse_loss", "binary_cross_entropy", "vae_loss",
           "task_loss", "LOSSES"]


def nll_loss(log_probs: jax.Array, target: jax.Array) -> jax.Array:
    """Mean negative log-likelihood; log_probs (*, classes), integer target (*)."""
    picked = jnp.take_along_axis(log_probs, target[..., None].astype(jnp.int32), axis=-1)
    return -jnp.mean(picked)


def cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    """nll_loss of log_softmax(logits) over the last axis."""
    return nll_loss(jax.nn.log_softmax(logits, axis=-1), target)


def mse_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(pred - target))


def binary_cross_entropy(probs: jax.Array, target: jax.Array, reduction: str = "mean") -> jax.Array:
    """torch's binary cross-entropy, whose log terms are clamped at -100.

    A probability of exactly 0 or 1 (a saturated sigmoid, e.g. a confident GAN
    discriminator) gives the clamped term a zero gradient rather than NaN (0 * inf): the
    logs only see guarded arguments.
    """
    above, below = probs > 0, probs < 1
    log_p = jnp.where(above, jnp.maximum(jnp.log(jnp.where(above, probs, 1.0)), -100.0), -100.0)
    log_1mp = jnp.where(below, jnp.maximum(jnp.log1p(-jnp.where(below, probs, 0.0)), -100.0),
                        -100.0)
    loss = -(target * log_p + (1 - target) * log_1mp)
    return jnp.sum(loss) if reduction == "sum" else jnp.mean(loss)


def vae_loss(recon: jax.Array, mu: jax.Array, logvar: jax.Array, x: jax.Array) -> jax.Array:
    """Kingma & Welling 2014: summed binary cross-entropy plus the KL divergence to N(0, I)."""
    bce = binary_cross_entropy(recon, x.reshape(recon.shape), reduction="sum")
    kld = -0.5 * jnp.sum(1 + logvar - jnp.square(mu) - jnp.exp(logvar))
    return bce + kld


LOSSES = {
    "nll": nll_loss,
    "nll_classes_last": nll_loss,  # classes are always last here; torch's differs
    "cross_entropy": cross_entropy,
    "mse": mse_loss,
    "bce": binary_cross_entropy,
}


def task_loss(name: str, outputs, target: jax.Array) -> jax.Array:
    if name == "vae":
        return vae_loss(*outputs, target)
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES) + ['vae']}")
    out = outputs[0] if isinstance(outputs, tuple) else outputs
    return LOSSES[name](out, target)
