"""The kinds of training, one class each, chosen by the registry entry's ``task``.

``classify`` and ``classify_steps`` (integer labels; the entry's ``nll`` on log-probabilities
or ``cross_entropy`` on logits, at every step of a sequence for the second), ``reconstruct``
(an auto-encoder: mse against its own input), ``vae`` (summed binary cross-entropy plus KL),
and the GANs the registry pairs in :data:`flax_arch.registry.GANS` (the generator and the
discriminator trained by the slides' adversarial step). The other tasks (``regress``,
``segment``) have no training data here.

A model that is :class:`flax_arch.nn.Stochastic` gets fresh randomness at every call
(dropout masks, the VAE's noise), by the rule the containers follow
(:func:`flax_arch.nn.containers.call`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flax_arch.interop import to_channels_last
from flax_arch.losses import binary_cross_entropy, task_loss, vae_loss
from flax_arch.nn.containers import call
from flax_arch.registry import GANS, TASKS, ModelEntry, get_entry, list_models
from flax_arch.training.data import DataError, Spec, check_labels
from flax_arch.training.gan import adversarial_step

__all__ = ["Task", "ClassifyTask", "ClassifyStepsTask", "ReconstructTask", "VAETask", "GANTask",
           "TASK_CLASSES", "resolve", "trainable_models"]

Models = Mapping[str, nnx.Module]  # item name ('model'; 'generator', 'discriminator') -> model
Metrics = dict[str, jax.Array]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _per_example(loss: str, outputs, target: jax.Array) -> jax.Array:
    """The registry loss of each example alone: (batch,)."""
    return jax.vmap(lambda o, t: task_loss(loss, jax.tree.map(lambda a: a[None], o), t[None]))(
        outputs, target)


class Task(abc.ABC):
    """What differs between the kinds of training: models, optimizers, the step, the held-out
    metrics and the pictures.

    ``name`` is what is trained (a registry name, or a GAN's); ``entries`` maps each model's
    item (``'model'``, or a GAN's ``'generator'`` and ``'discriminator'``) to its registry
    entry and ``kwargs`` to its constructor arguments; ``spec`` is one example's input;
    ``size`` the registry configuration the arguments start from.
    """

    kind: ClassVar[str]
    data_item: ClassVar[str] = "model"  # the model that the data feeds
    labelled: ClassVar[bool] = False  # the data has integer labels y
    unit_range: ClassVar[bool] = False  # inputs must lie in [0, 1]
    eval_mode: ClassVar[bool] = True  # evaluate and draw in eval mode (running BatchNorm stats)
    default_lr: ClassVar[float] = 1e-3
    adam_b1: ClassVar[float] = 0.9
    picture_titles: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, entries: Mapping[str, ModelEntry],
                 kwargs: Mapping[str, dict[str, Any]], spec: Spec, size: str):
        self.name, self.entries, self.kwargs, self.spec, self.size = (
            name, dict(entries), dict(kwargs), spec, size)
        self.what = f"model {name!r}"

    def build(self, seed: int) -> dict[str, nnx.Module]:
        """Every model, initialised from one ``nnx.Rngs(seed)`` in item order."""
        rngs = nnx.Rngs(seed)
        return {item: e.build(rngs=rngs, **self.kwargs[item]) for item, e in self.entries.items()}

    def optimizers(self, models: Models, name: str, lr: float | None) -> dict[str, nnx.Optimizer]:
        """``'adam'`` (with this task's beta1) or ``'sgd'`` (momentum 0.9), one per model."""
        lr = self.default_lr if lr is None else lr
        make = {"adam": lambda: optax.adam(lr, b1=self.adam_b1),
                "sgd": lambda: optax.sgd(lr, momentum=0.9)}[name]
        return {item: nnx.Optimizer(m, make(), wrt=nnx.Param) for item, m in models.items()}

    @staticmethod
    def forward(model: nnx.Module, x: jax.Array, key: jax.Array):
        """The model's call, with fresh randomness from ``key`` where it is Stochastic."""
        return call(model, x, nnx.Rngs(key))

    def check(self, models: Models, x: np.ndarray, y: np.ndarray | None) -> Any:
        """Runs the models abstractly on two examples of ``x``: raises the model's error, or
        a :class:`DataError` where the data does not fit them; the output's shapes."""
        return nnx.eval_shape(
            lambda m: self.forward(m, jnp.asarray(x[:2]), jax.random.key(0)), models["model"])

    @abc.abstractmethod
    def train_step(self, models: Models, opts: Mapping[str, nnx.Optimizer], key: jax.Array,
                   batch: Mapping[str, jax.Array]) -> Metrics:
        """One optimizer step on ``batch`` (models and optimizers updated in place); the
        batch's metrics, scalars."""

    @abc.abstractmethod
    def eval_metrics(self, models: Models, key: jax.Array,
                     batch: Mapping[str, jax.Array]) -> Metrics:
        """The held-out metrics of each example of ``batch``, each (batch,)."""

    def pictures(self, models: Models, x: jax.Array, key: jax.Array) -> tuple[jax.Array, ...]:
        """The images of ``picture_titles``, each (n, *input shape) in [0, 1]."""
        return ()


def _descend(models: Models, opts: Mapping[str, nnx.Optimizer], loss_fn) -> jax.Array:
    """One step of the single model down ``loss_fn(model)``; the loss."""
    loss, grads = nnx.value_and_grad(loss_fn)(models["model"])
    opts["model"].update(models["model"], grads)
    return loss


class ClassifyTask(Task):
    """A classifier of whole examples: integer labels, the entry's loss on its scores."""

    kind, labelled = "classify", True

    @property
    def loss(self) -> str:
        return self.entries["model"].loss

    def target(self, y: jax.Array) -> jax.Array:
        """What the loss compares the scores with."""
        return y

    def prediction(self, scores: jax.Array) -> jax.Array:
        """The scores of the prediction after the whole input: (batch, classes)."""
        return scores

    def check(self, models, x, y):
        out = super().check(models, x, y)
        check_labels(y, len(y), _first(out).shape[-1], self.what)  # labels < the model's classes
        return out

    def train_step(self, models, opts, key, batch):
        def loss_fn(model):
            return task_loss(self.loss, self.forward(model, batch["x"], key),
                             self.target(batch["y"]))

        return {"loss": _descend(models, opts, loss_fn)}

    def eval_metrics(self, models, key, batch):
        out = self.forward(models["model"], batch["x"], key)
        hit = jnp.argmax(self.prediction(_first(out)), axis=-1) == batch["y"]
        return {"loss": _per_example(self.loss, out, self.target(batch["y"])),
                "accuracy": hit.astype(jnp.float32)}


class ClassifyStepsTask(ClassifyTask):
    """A sequence model that classifies at every step: the label repeated over the length;
    accuracy of the last step's prediction, after the whole input."""

    kind = "classify_steps"

    def target(self, y):
        return jnp.broadcast_to(y[:, None], (y.shape[0], self.spec.shape[0]))

    def prediction(self, scores):
        return scores[:, -1]


class ReconstructTask(Task):
    """An auto-encoder: the mean squared error against its own input."""

    kind = "reconstruct"
    picture_titles = ("held-out inputs", "reconstructions")

    def train_step(self, models, opts, key, batch):
        def loss_fn(model):
            return task_loss("mse", self.forward(model, batch["x"], key), batch["x"])

        return {"loss": _descend(models, opts, loss_fn)}

    def eval_metrics(self, models, key, batch):
        recon = self.forward(models["model"], batch["x"], key)
        return {"mse": _per_example("mse", recon, batch["x"])}

    def pictures(self, models, x, key):
        return x, self.forward(models["model"], x, key)


class VAETask(Task):
    """Kingma & Welling's VAE: the loss summed over the batch, as in the pytorch example
    (reported per example); the model's ``encode`` and ``decode`` draw the pictures."""

    kind, unit_range = "vae", True
    picture_titles = ("held-out inputs", "reconstructions (z = mu)", "samples (z ~ N(0, I))")

    def train_step(self, models, opts, key, batch):
        x = batch["x"]
        loss = _descend(models, opts, lambda model: vae_loss(*self.forward(model, x, key), x))
        return {"loss": loss / x.shape[0]}

    def eval_metrics(self, models, key, batch):
        model, x = models["model"], batch["x"]
        recon, mu, logvar = self.forward(model, x, key)
        per_loss = jax.vmap(lambda r, m, lv, xi: vae_loss(r[None], m[None], lv[None], xi[None]))(
            recon, mu, logvar, x)
        mean_recon = model.decode(model.encode(x.reshape(x.shape[0], -1))[0])  # z = mu
        return {"loss": per_loss, "mse": _per_example("mse", mean_recon, x.reshape(recon.shape))}

    def pictures(self, models, x, key):
        model = models["model"]
        mu, _ = model.encode(x.reshape(x.shape[0], -1))
        z = jax.random.normal(key, mu.shape, mu.dtype)
        return x, model.decode(mu), model.decode(z)


class GANTask(Task):
    """A GAN of :data:`flax_arch.registry.GANS` (DCGAN, Radford et al. 2016): real images
    scaled to [-1, 1], the generator's tanh range; Adam with lr 2e-4 and beta1 0.5, as in the
    paper; one step is :func:`flax_arch.training.gan.adversarial_step`.

    Evaluated as it trains, as the pytorch example draws its samples: BatchNorm normalises
    with the batch's statistics (D's running averages mix real and fake batches), and the
    statistics' updates are discarded.
    """

    kind, data_item, unit_range, eval_mode = "gan", "discriminator", True, False
    default_lr, adam_b1 = 2e-4, 0.5
    picture_titles = ("generated samples",)

    def __init__(self, name, entries, kwargs, spec, size):
        super().__init__(name, entries, kwargs, spec, size)
        z = entries["generator"].config(size).inputs[0]  # (N, nz, 1, 1)
        shape = to_channels_last(np.empty(z.shape, np.bool_), z.layout).shape[1:]
        nz = kwargs["generator"].get(GANS[name].latent_arg, shape[-1])
        self.z_shape = (*shape[:-1], nz)

    def noise(self, key: jax.Array, n: int) -> jax.Array:
        """n latent vectors z ~ N(0, I), channels-last."""
        return jax.random.normal(key, (n, *self.z_shape), jnp.float32)

    def check(self, models, x, y):
        fake = nnx.eval_shape(lambda g: g(self.noise(jax.random.key(0), 2)), models["generator"])
        if fake.shape[1:] != x.shape[1:]:
            raise DataError(f"the generator makes images of shape {tuple(fake.shape[1:])}, the "
                            f"data has {x.shape[1:]}")
        return nnx.eval_shape(lambda d: d(jnp.asarray(x[:2])), models["discriminator"])

    def train_step(self, models, opts, key, batch):
        real = batch["x"] * 2.0 - 1.0
        losses = adversarial_step(models["generator"], models["discriminator"],
                                  opts["generator"], opts["discriminator"], real,
                                  self.noise(key, real.shape[0]))
        return losses._asdict()

    def eval_metrics(self, models, key, batch):
        g, d = models["generator"], models["discriminator"]
        real = batch["x"] * 2.0 - 1.0
        p_real = d(real).reshape(-1)
        p_fake = d(g(self.noise(key, real.shape[0]))).reshape(-1)
        ones = jnp.ones_like(p_real)
        bce = jax.vmap(lambda p, t: binary_cross_entropy(p, t))
        return {"d_real": p_real, "d_fake": p_fake,
                "d_loss": bce(p_real, ones) + bce(p_fake, 0 * ones), "g_loss": bce(p_fake, ones)}

    def pictures(self, models, x, key):
        return ((models["generator"](self.noise(key, 64)) + 1.0) / 2.0,)


# The registry tasks (flax_arch.registry.TASKS) that a single model trains at.
TASK_CLASSES: dict[str, type[Task]] = {
    cls.kind: cls for cls in (ClassifyTask, ClassifyStepsTask, ReconstructTask, VAETask)}


def trainable_models() -> list[str]:
    """The names the trainer trains: the registry entries whose task it has, then the GANs."""
    return [n for n in list_models() if get_entry(n).task in TASK_CLASSES] + sorted(GANS)


def resolve(name: str) -> tuple[type[Task], dict[str, ModelEntry]]:
    """The task that trains ``name`` and the registry entry of each of its models, by item."""
    if name in GANS:
        pair = GANS[name]
        return GANTask, {"generator": get_entry(pair.generator),
                         "discriminator": get_entry(pair.discriminator)}
    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; trainable models: "
                         f"{', '.join(trainable_models())}")
    entry = get_entry(name)
    if entry.task in TASK_CLASSES:
        return TASK_CLASSES[entry.task], {"model": entry}
    pairs = [gan for gan, p in GANS.items() if name in (p.generator, p.discriminator)]
    if pairs:
        raise ValueError(f"model {name!r} has no training task of its own (task "
                         f"{entry.task!r}); it trains as part of the GAN {pairs[0]!r}")
    raise ValueError(f"model {name!r} has no training task: its registry task is "
                     f"{entry.task!r} ({TASKS[entry.task]}); the trainer trains the tasks "
                     f"{', '.join(TASK_CLASSES)} and the GANs {', '.join(GANS)}")
