"""Trains any registered model on real data: ``python -m flax_arch.train MODEL [options]``.

The task follows from the registry entry: a classifier (integer targets; the registry's
``nll`` on log-probabilities or ``cross_entropy`` on logits), an auto-encoder (the
``autoencoder`` family's ``mse`` against its own input), the VAE (``vae``: summed binary
cross-entropy plus KL), and DCGAN (``dcgan``: the generator and discriminator trained by
the slides' adversarial step). One optimizer step is one compiled XLA program: the models,
optimizers and RNG are split into an NNX graph definition and a state pytree, and the step
maps state to state under ``jax.jit``.

Data: scikit-learn's digits by default (see :mod:`flax_arch.data`), shaped for the model;
the model's size arguments follow the data (``num_inputs``, ``in_channels``, ``nc``: the
data's features or channels; ``num_classes``, ``num_outputs``: its classes), the other
arguments come from the registry's ``test`` configuration (or ``--size bench``) and
``--kwargs``. A seeded split holds out ``--val-fraction`` of the examples.

Scale: the batch is sharded over every device of every process on a one-axis ``Mesh``
('data'), the state is replicated; under ``jit`` XLA inserts the gradient all-reduce and
computes BatchNorm statistics over the global batch. ``--distributed`` first calls
``jax.distributed.initialize()`` for multi-host runs.

Outputs, in ``--out``: ``metrics.jsonl`` (one JSON record per log or evaluation),
``checkpoints/`` (Orbax; a rerun with the same settings resumes from the latest step and
continues exactly as an uninterrupted run), and ``samples.png`` for the generative models.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flax_arch import data as data_lib
from flax_arch.checkpoint import Checkpoints
from flax_arch.interop import to_channels_last, torch_state_dict
from flax_arch.losses import binary_cross_entropy, task_loss, vae_loss
from flax_arch.registry import ModelEntry, get_entry, list_models

__all__ = ["TrainConfig", "Trainer", "train", "trainable_models", "main", "parse_kwargs"]

_CLASS_ARGS = ("num_classes", "num_outputs")
_INPUT_ARGS = ("num_inputs", "in_channels", "nc")
GAN = "dcgan"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. ``steps`` counts optimizer steps (for DCGAN: adversarial steps)."""

    model: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    size: str = "test"
    data: str | None = None
    steps: int = 1000
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float | None = None
    seed: int = 0
    val_fraction: float = 0.2
    eval_every: int = 200
    log_every: int = 10
    ckpt_every: int = 0
    keep: int = 3
    out: str | None = None
    progress: bool = True
    distributed: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


# ----------------------------------------------------------------------------- tasks


def _accepts_rngs(module: nnx.Module) -> bool:
    return "rngs" in inspect.signature(type(module).__call__).parameters


def _forward(model: nnx.Module, x: jax.Array, key: jax.Array):
    """The model's call, with fresh randomness where it takes some (dropout)."""
    return model(x, rngs=nnx.Rngs(key)) if _accepts_rngs(model) else model(x)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _per_example(loss: str, outputs, target: jax.Array) -> jax.Array:
    """The registry loss of each example alone: (batch,)."""
    return jax.vmap(lambda o, t: task_loss(loss, jax.tree.map(lambda a: a[None], o), t[None]))(
        outputs, target)


class _Task:
    """What differs between the kinds of training: models, step, evaluation, pictures."""

    kind: str
    labelled = False  # integer labels y
    unit_range = False  # inputs must lie in [0, 1]
    eval_mode = True  # evaluate and draw pictures in eval mode (running BatchNorm statistics)
    default_lr, adam_b1 = 1e-3, 0.9
    picture_titles: tuple[str, ...] = ()

    def __init__(self, entries: dict[str, ModelEntry], kwargs: dict[str, dict], spec,
                 size: str):
        self.entries, self.kwargs, self.spec, self.size = entries, kwargs, spec, size

    def build(self, seed: int) -> dict[str, nnx.Module]:
        rngs = nnx.Rngs(seed)
        return {item: e.cls(**self.kwargs[item], rngs=rngs) for item, e in self.entries.items()}

    def optimizers(self, models, name: str, lr: float | None) -> dict[str, nnx.Optimizer]:
        lr = self.default_lr if lr is None else lr
        make = {"adam": lambda: optax.adam(lr, b1=self.adam_b1),
                "sgd": lambda: optax.sgd(lr, momentum=0.9)}[name]
        return {item: nnx.Optimizer(m, make(), wrt=nnx.Param) for item, m in models.items()}

    def dry_run(self, models, x: np.ndarray):
        """The output of a 2-example forward pass, shapes only (raises the model's error)."""
        model = models["model"]
        return nnx.eval_shape(lambda m: _forward(m, jnp.asarray(x[:2]), jax.random.key(0)), model)

    def pictures(self, models, x: jax.Array, key) -> tuple[jax.Array, ...]:
        """The images of ``picture_titles``, each (n, *input shape) in [0, 1]."""
        return ()


class _Classify(_Task):
    kind, labelled = "classify", True

    def __init__(self, entries, kwargs, spec, size):
        super().__init__(entries, kwargs, spec, size)
        entry = entries["model"]
        self.loss = entry.loss
        self.per_step = entry.config("test").target.layout == "NL"

    def target(self, y: jax.Array) -> jax.Array:
        """Sequence models predict at every step: the label repeated over the length."""
        if self.per_step:
            return jnp.broadcast_to(y[:, None], (y.shape[0], self.spec.shape[0]))
        return y

    def train_step(self, models, opts, key, batch):
        def loss_fn(model):
            return task_loss(self.loss, _forward(model, batch["x"], key), self.target(batch["y"]))

        loss, grads = nnx.value_and_grad(loss_fn)(models["model"])
        opts["model"].update(models["model"], grads)
        return {"loss": loss}

    def eval_metrics(self, models, key, batch):
        out = _forward(models["model"], batch["x"], key)
        scores = _first(out)
        last = scores[:, -1] if self.per_step else scores  # the prediction after the whole input
        return {"loss": _per_example(self.loss, out, self.target(batch["y"])),
                "accuracy": (jnp.argmax(last, axis=-1) == batch["y"]).astype(jnp.float32)}


class _Reconstruct(_Task):
    kind = "reconstruct"

    def train_step(self, models, opts, key, batch):
        def loss_fn(model):
            return task_loss("mse", _forward(model, batch["x"], key), batch["x"])

        loss, grads = nnx.value_and_grad(loss_fn)(models["model"])
        opts["model"].update(models["model"], grads)
        return {"loss": loss}

    def eval_metrics(self, models, key, batch):
        recon = _forward(models["model"], batch["x"], key)
        return {"mse": _per_example("mse", recon, batch["x"])}

    picture_titles = ("held-out inputs", "reconstructions")

    def pictures(self, models, x, key):
        return x, models["model"](x)


class _VAE(_Task):
    """Kingma & Welling's VAE: the loss summed over the batch, as in the pytorch example."""

    kind, unit_range = "vae", True

    def train_step(self, models, opts, key, batch):
        x = batch["x"]

        def loss_fn(model):
            return vae_loss(*model(x, rngs=nnx.Rngs(key)), x)

        loss, grads = nnx.value_and_grad(loss_fn)(models["model"])
        opts["model"].update(models["model"], grads)
        return {"loss": loss / x.shape[0]}

    def eval_metrics(self, models, key, batch):
        model, x = models["model"], batch["x"]
        recon, mu, logvar = model(x, rngs=nnx.Rngs(key))
        per_loss = jax.vmap(lambda r, m, lv, xi: vae_loss(r[None], m[None], lv[None], xi[None]))(
            recon, mu, logvar, x)
        mean_recon = model.decode(model.encode(x.reshape(x.shape[0], -1))[0])  # z = mu
        return {"loss": per_loss, "mse": _per_example("mse", mean_recon, x.reshape(recon.shape))}

    picture_titles = ("held-out inputs", "reconstructions (z = mu)", "samples (z ~ N(0, I))")

    def pictures(self, models, x, key):
        model = models["model"]
        mu, _ = model.encode(x.reshape(x.shape[0], -1))
        z = jax.random.normal(key, mu.shape, mu.dtype)
        return x, model.decode(mu), model.decode(z)


class _GAN(_Task):
    """DCGAN (Radford et al. 2016): real images scaled to [-1, 1], the generator's tanh range;
    Adam with lr 2e-4 and beta1 0.5, as in the paper.

    Evaluated as it trains, as the pytorch example draws its samples: BatchNorm normalises
    with the batch's statistics (D's running averages mix real and fake batches), and the
    statistics' updates are discarded.
    """

    kind, unit_range, eval_mode = "gan", True, False
    default_lr, adam_b1 = 2e-4, 0.5

    def __init__(self, entries, kwargs, spec, size):
        super().__init__(entries, kwargs, spec, size)
        z = entries["generator"].config(size).inputs[0]  # (N, nz, 1, 1)
        shape = to_channels_last(np.empty(z.shape, np.bool_), z.layout).shape[1:]
        self.z_shape = (*shape[:-1], kwargs["generator"].get("nz", shape[-1]))

    def noise(self, key, n: int) -> jax.Array:
        return jax.random.normal(key, (n, *self.z_shape), jnp.float32)

    def train_step(self, models, opts, key, batch):
        from flax_arch.training.gan import adversarial_step

        real = batch["x"] * 2.0 - 1.0
        z = self.noise(key, real.shape[0])
        losses = adversarial_step(models["generator"], models["discriminator"],
                                  opts["generator"], opts["discriminator"], real, z)
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

    def dry_run(self, models, x):
        fake = nnx.eval_shape(lambda g: g(self.noise(jax.random.key(0), 2)), models["generator"])
        if fake.shape[1:] != x.shape[1:]:
            raise data_lib.DataError(f"the generator makes images of shape "
                                     f"{tuple(fake.shape[1:])}, the data has {x.shape[1:]}")
        return nnx.eval_shape(lambda d: d(jnp.asarray(x[:2])), models["discriminator"])

    picture_titles = ("generated samples",)

    def pictures(self, models, x, key):
        return ((models["generator"](self.noise(key, 64)) + 1.0) / 2.0,)


def _task_kind(name: str, entry: ModelEntry) -> str:
    if entry.loss == "vae":
        return "vae"
    cfg = entry.config("test")
    target, first = cfg.target, cfg.inputs[0]
    if target is not None and target.kind == "index" and target.layout in ("N", "NL"):
        return "classify"
    if entry.family == "autoencoder" and entry.loss == "mse" and target == first:
        return "reconstruct"
    raise ValueError(
        f"model {name!r} has no training task on image data: the trainer trains classifiers "
        "(integer targets per example or per step), the auto-encoders (mse against the "
        f"input), the VAE and {GAN!r}; {name!r} ({entry.family}) has loss {entry.loss!r} and "
        f"target {target}")


_TASKS = {"classify": _Classify, "reconstruct": _Reconstruct, "vae": _VAE, "gan": _GAN}


def _entries(name: str) -> dict[str, ModelEntry]:
    if name == GAN:
        return {"generator": get_entry("dcgan_generator"),
                "discriminator": get_entry("dcgan_discriminator")}
    try:
        return {"model": get_entry(name)}
    except KeyError:
        raise ValueError(f"unknown model {name!r}; trainable models: "
                         f"{', '.join(trainable_models())}") from None


def trainable_models() -> list[str]:
    """The registry names the trainer has a task for (``dcgan`` for the generator and
    discriminator pair)."""
    names = []
    for name in list_models():
        if name.startswith("dcgan_"):
            continue
        try:
            _task_kind(name, get_entry(name))
        except ValueError:
            continue
        names.append(name)
    return names + ([GAN] if "dcgan_generator" in list_models() else [])


# ----------------------------------------------------------------------------- planning


def _data_input(entries: dict[str, ModelEntry], size: str):
    """The registry Input that the data feeds (the discriminator's, for DCGAN)."""
    entry = entries.get("model", entries.get("discriminator"))
    return entry.config(size).inputs[0]


def _params(builder) -> list[str]:
    """The constructor argument names of a model class or of a ``functools.partial`` over one
    (``resnet18``), bound ones left out."""
    if isinstance(builder, functools.partial):
        names = _params(builder.func)
        return [n for n in names[len(builder.args):] if n not in builder.keywords]
    init = builder.__init__ if isinstance(builder, type) else builder
    names = list(inspect.signature(init).parameters)
    return names[1:] if isinstance(builder, type) else names


def _size_kwargs(entry: ModelEntry, channels: int, num_classes: int | None) -> dict[str, Any]:
    """The model's size arguments set from the data: features/channels and class count."""
    params = _params(entry.cls)
    out = {p: channels for p in _INPUT_ARGS if p in params}
    if num_classes is not None:
        out.update({p: num_classes for p in _CLASS_ARGS if p in params})
    return out


def _spec_for_digits(inp, kwargs: Mapping[str, Any]) -> data_lib.Spec:
    """The registry input's per-example shape (channels-last), with the channel axis set by
    the model's size argument; a sequence reads the 8 x 8 digit in steps of that many pixels."""
    shape = list(to_channels_last(np.empty(inp.shape, np.bool_), inp.layout).shape)
    del shape[inp.layout.index("N")]
    for p in _INPUT_ARGS:
        if p in kwargs:
            shape[-1] = kwargs[p]
    if inp.layout in ("NLC", "NCL"):
        if 64 % shape[-1]:
            raise data_lib.DataError(f"a sequence model reads the 64 pixels of a digit in "
                                     f"steps of its num_inputs pixels, which must divide 64; "
                                     f"got {shape[-1]}")
        shape[0] = 64 // shape[-1]
    return data_lib.Spec(tuple(shape), inp.layout)


@dataclasses.dataclass
class _Plan:
    task: _Task
    x: np.ndarray
    y: np.ndarray | None
    source: dict[str, Any]


def _plan(cfg: TrainConfig) -> _Plan:
    entries = _entries(cfg.model)
    kind = "gan" if cfg.model == GAN else _task_kind(cfg.model, entries["model"])
    cls = _TASKS[kind]
    inp = _data_input(entries, cfg.size)
    layouts = ("NC", "NCHW", "NCL", "NLC")
    if inp.layout not in layouts or not inp.differentiable:
        raise ValueError(f"model {cfg.model!r} takes {inp.kind} inputs in layout {inp.layout}; "
                         f"the trainer feeds float inputs in layouts {layouts}")
    what = f"model {cfg.model!r}"
    unused = set(cfg.kwargs) - {k for e in entries.values() for k in _params(e.cls)}
    if unused:
        raise ValueError(f"{what} takes no argument(s) {sorted(unused)}")
    num_classes = None
    if cfg.data is None:
        images, labels = data_lib.digits()
        source = {"source": "sklearn digits", "sha256": data_lib.fingerprint(images, labels)}
        channels = {"NC": 64, "NCHW": 1}.get(inp.layout, 8)
        y = labels if cls.labelled else None
        num_classes = 10
    else:
        x, y = data_lib.read_arrays(cfg.data)
        source = {"source": Path(cfg.data).name,
                  "sha256": data_lib.fingerprint(*(a for a in (x, y) if a is not None))}
        rank = {"NC": 1, "NCHW": 3}.get(inp.layout, 2)
        if x.ndim != rank + 1:
            raise data_lib.DataError(f"x has shape {tuple(x.shape)}; {what} expects x of rank "
                                     f"{rank + 1}: {data_lib.axes(inp.layout)}, channels-last")
        channels = int(x.shape[-1])
        if not cls.labelled:
            y = None
        elif y is not None and np.issubdtype(y.dtype, np.integer) and y.size:
            num_classes = int(y.max()) + 1
    kwargs = {}
    for item, entry in entries.items():
        fitted = _size_kwargs(entry, channels, num_classes)
        params = _params(entry.cls)
        user = {k: v for k, v in cfg.kwargs.items() if k in params}
        kwargs[item] = {**entry.config(cfg.size).kwargs, **fitted, **user}
    main_kwargs = kwargs.get("model", kwargs.get("discriminator"))
    if cfg.data is None:
        spec = _spec_for_digits(inp, main_kwargs)
        x = data_lib.fit_images(images, spec)
    else:
        spec = data_lib.Spec(tuple(x.shape[1:]), inp.layout)
    x = data_lib.check_inputs(x, spec, unit_range=cls.unit_range, what=what)
    task = cls(entries, kwargs, spec, cfg.size)
    if cls.labelled:
        y = data_lib.check_labels(y, len(x), np.iinfo(np.int32).max, what)
    return _Plan(task, x, y, source)


# ----------------------------------------------------------------------------- training


class _Run(nnx.Module):
    """Everything a step changes: the models, their optimizers and the training RNG."""

    def __init__(self, models: dict, opts: dict, rngs: nnx.Rngs):
        self.models = nnx.Dict(models)
        self.opts = nnx.Dict(opts)
        self.rngs = rngs


def _host(x: jax.Array) -> float:
    """A replicated scalar's value, read from this process's first device (a multi-host
    array is not fully addressable by one process)."""
    return float(x.addressable_data(0))


def _put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """The global batch, sharded on its first axis; every process holds all of it on the host
    and hands each of its devices its rows."""
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
            for k, v in batch.items()}


def _save_pictures(path: Path, sections: list[tuple[str, np.ndarray]], spec: data_lib.Spec):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if spec.layout == "NC":  # a square image where the features make one, else a strip
        side = math.isqrt(spec.shape[0])
        shape = (side, side, 1) if side * side == spec.shape[0] else (1, spec.shape[0], 1)
    elif spec.layout == "NCHW":
        shape = spec.shape
    else:  # a sequence: steps down, features across
        shape = (*spec.shape, 1)
    cols = 16
    rows = sum(math.ceil(len(imgs) / cols) for _, imgs in sections)
    fig = plt.figure(figsize=(cols * 0.6, rows * 0.6 + 0.3 * len(sections)))
    grid = fig.add_gridspec(len(sections), 1, height_ratios=[
        math.ceil(len(imgs) / cols) for _, imgs in sections])
    for i, (title, imgs) in enumerate(sections):
        imgs = np.clip(np.asarray(imgs, np.float32).reshape(len(imgs), *shape), 0.0, 1.0)
        n_rows = math.ceil(len(imgs) / cols)
        sub = grid[i].subgridspec(n_rows, cols, wspace=0.05, hspace=0.05)
        for j in range(n_rows * cols):
            ax = fig.add_subplot(sub[j // cols, j % cols])
            ax.axis("off")
            if j < len(imgs):
                img = imgs[j]  # RGB, or the first channel in grey
                ax.imshow(img if img.shape[-1] == 3 else img[..., 0], cmap="gray", vmin=0,
                          vmax=1)
            if j == 0:
                ax.set_title(title, loc="left", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


class Trainer:
    """One run of ``config``: data, models, optimizers, mesh, checkpoints and logs.

    ``Trainer(config).run()`` trains to ``config.steps``, resuming from the latest checkpoint
    in ``out/checkpoints`` when one exists, and returns the final held-out metrics.
    """

    def __init__(self, config: TrainConfig):
        cfg = self.config = config
        if cfg.size not in ("test", "bench"):
            raise ValueError(f"size must be 'test' or 'bench', got {cfg.size!r}")
        if cfg.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")
        for name in ("steps", "batch_size", "eval_every", "log_every", "keep"):
            if getattr(cfg, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
        if cfg.distributed:
            jax.distributed.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id)
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P("data"))
        n_dev = self.mesh.size
        if cfg.batch_size % n_dev:
            raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the "
                             f"{n_dev} devices it is sharded over")
        self.lead = jax.process_index() == 0

        plan = _plan(cfg)
        self.task = task = plan.task
        train_idx, val_idx = data_lib.split(len(plan.x), cfg.val_fraction, cfg.seed)
        self.train_set = {"x": plan.x[train_idx]}
        self.val_set = {"x": plan.x[val_idx]}
        if plan.y is not None:
            self.train_set["y"], self.val_set["y"] = plan.y[train_idx], plan.y[val_idx]
        self.steps_per_epoch = len(train_idx) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(train_idx)} "
                             "training examples")

        self.meta = {
            "task": task.kind,
            "models": {item: {"name": e.name, "kwargs": task.kwargs[item]}
                       for item, e in task.entries.items()},
            "optimizer": {"name": cfg.optimizer, "lr": cfg.lr or task.default_lr},
            "batch_size": cfg.batch_size, "seed": cfg.seed, "val_fraction": cfg.val_fraction,
            "data": {**plan.source, "n_train": len(train_idx), "n_val": len(val_idx)},
        }
        self.out = Path(cfg.out or f"runs/{cfg.model}")
        # refuses another run's checkpoints before anything is built or written
        self.ckpt = Checkpoints(self.out / "checkpoints", self.meta, max_to_keep=cfg.keep)

        abstract = nnx.eval_shape(lambda: task.build(cfg.seed))
        out = task.dry_run(abstract, self.val_set["x"])
        if task.labelled:
            classes = _first(out).shape[-1]
            data_lib.check_labels(plan.y, len(plan.y), classes, f"model {cfg.model!r}")

        def create():  # one compiled program, rather than an XLA compile per eager op
            models = task.build(cfg.seed)
            opts = task.optimizers(models, cfg.optimizer, cfg.lr)
            return _Run(models, opts, nnx.Rngs(cfg.seed + 1))

        # the state is created replicated over the mesh, on every process's devices
        self.run_state = nnx.jit(create, out_shardings=self.replicated)()
        self.items = {**self.run_state.models,
                      "train": nnx.Dict(opts=self.run_state.opts, rngs=self.run_state.rngs)}
        self.step = 0
        if self.ckpt.latest_step is not None:
            self.step = self.ckpt.latest_step
            self.ckpt.restore(self.step, self.items)
        self._compile()

    # ------------------------------------------------------------------ compiled steps

    def _compile(self):
        task, run = self.task, self.run_state
        run.train()
        self.train_def, state = nnx.split(run)
        self.eval_def = self.train_def
        if task.eval_mode:
            run.eval()
            self.eval_def = nnx.graphdef(run)
            run.train()
        self.state = state
        eval_key = jax.random.key(self.config.seed + 2)

        def train_step(state, batch):
            run = nnx.merge(self.train_def, state)
            metrics = task.train_step(run.models, run.opts, run.rngs(), batch)
            return nnx.state(run), metrics

        def eval_step(state, batch, mask):
            run = nnx.merge(self.eval_def, state)
            metrics = task.eval_metrics(run.models, eval_key, batch)
            return {k: jnp.sum(v * mask) for k, v in metrics.items()}

        repl, data = self.replicated, self.sharded
        self._train_step = jax.jit(train_step, in_shardings=(repl, data),
                                   out_shardings=(repl, repl), donate_argnums=0)
        self._eval_step = jax.jit(eval_step, in_shardings=(repl, data, data),
                                  out_shardings=repl)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The global batch of ``step``: a function of (seed, step) alone."""
        epoch, i = divmod(step, self.steps_per_epoch)
        order = data_lib.epoch_order(len(self.train_set["x"]), self.config.seed, epoch)
        idx = order[i * self.config.batch_size:(i + 1) * self.config.batch_size]
        return {k: v[idx] for k, v in self.train_set.items()}

    def train_step(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One compiled optimizer step on a global batch; returns its metrics."""
        self.state, metrics = self._train_step(self.state, _put_batch(batch, self.sharded))
        self.step += 1
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Mean metrics over the held-out split (eval mode, padded to whole sharded batches)."""
        n = len(self.val_set["x"])
        size = self.config.batch_size
        sums: dict[str, float] = {}
        for lo in range(0, n, size):
            idx = np.arange(lo, lo + size)
            mask = (idx < n).astype(np.float32)
            idx = np.minimum(idx, n - 1)
            batch = {k: v[idx] for k, v in self.val_set.items()}
            got = self._eval_step(self.state, _put_batch(batch, self.sharded),
                                  _put_batch({"m": mask}, self.sharded)["m"])
            for k, v in got.items():
                sums[k] = sums.get(k, 0.0) + _host(v)
        return {k: v / n for k, v in sums.items()}

    def local_models(self, graphdef=None) -> nnx.Dict:
        """The models on this process's first device (train mode unless ``graphdef``);
        what is done to them does not reach the training state."""
        local = jax.tree.map(lambda a: a.addressable_data(0), self.state)
        return nnx.merge(graphdef or self.train_def, local).models

    def params(self) -> dict[str, np.ndarray]:
        """The models' parameters and buffers, keyed ``item/torch state_dict key``."""
        return {f"{item}/{key}": value for item, model in self.local_models().items()
                for key, value in torch_state_dict(model).items()}

    def _sync(self):
        nnx.update(self.run_state, self.state)

    def save(self):
        self._sync()
        self.ckpt.save(self.step, self.items)

    # ------------------------------------------------------------------ loop

    def _log(self, record: dict[str, Any]):
        if self.lead:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.config
        start, t0 = self.step, time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and self.lead),
                   desc=cfg.model, dynamic_ncols=True)
        window: list[dict[str, jax.Array]] = []
        shown: dict[str, str] = {}
        while self.step < cfg.steps:
            window.append(self.train_step(self.batch(self.step)))
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                means = {k: float(np.mean([_host(m[k]) for m in window])) for k in window[0]}
                window = []
                self._log({"step": self.step, "split": "train", **means})
                shown.update({k: f"{v:.4g}" for k, v in means.items()})
                bar.set_postfix(shown)
            if self.step % cfg.eval_every == 0 and self.step != cfg.steps:
                val = self.evaluate()
                self._log({"step": self.step, "split": "val", **val})
                shown.update({f"val_{k}": f"{v:.4g}" for k, v in val.items()})
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                self.save()
        bar.close()
        val = self.evaluate()
        self._log({"step": self.step, "split": "val", **val})
        if self.ckpt.latest_step != self.step:
            self.save()
        pictures = None
        if self.lead and self.task.picture_titles:
            images = nnx.jit(self.task.pictures)(self.local_models(self.eval_def),
                                                 jnp.asarray(self.val_set["x"][:16]),
                                                 jax.random.key(cfg.seed + 3))
            pictures = self.out / "samples.png"
            _save_pictures(pictures, list(zip(self.task.picture_titles, map(np.asarray, images))),
                           self.task.spec)
        return {"model": cfg.model, "task": self.task.kind, "step": self.step,
                "devices": self.mesh.size, "resumed_from": start or None,
                "seconds": round(time.perf_counter() - t0, 1), "val": val,
                "kwargs": {k: v for k, v in self.meta["models"].items()},
                "out": str(self.out), "samples": str(pictures) if pictures else None}

    def close(self):
        self.ckpt.close()


def train(config: TrainConfig) -> dict[str, Any]:
    """Runs ``config`` to the end (resuming where its checkpoints left off); the final
    held-out metrics and where the outputs went."""
    trainer = Trainer(config)
    try:
        return trainer.run()
    finally:
        trainer.close()


# ----------------------------------------------------------------------------- CLI


def parse_kwargs(tokens: Sequence[str]) -> dict[str, Any]:
    """``['{"num_classes": 10}']`` (one JSON object) or ``['num_classes=10', 'nc=1']`` (each
    value read as JSON, else kept as a string) -> a dict of constructor arguments."""
    if not tokens:
        return {}
    if len(tokens) == 1 and tokens[0].lstrip().startswith("{"):
        try:
            value = json.loads(tokens[0])
        except json.JSONDecodeError as err:
            raise ValueError(f"--kwargs is not valid JSON: {err}") from err
        if not isinstance(value, dict):
            raise ValueError("--kwargs JSON must be an object")
        return value
    out = {}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key:
            raise ValueError(f"--kwargs items are KEY=VALUE, got {token!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig("")
    p = argparse.ArgumentParser(prog="python -m flax_arch.train",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model", help=f"a registered model, or {GAN!r} for the generator and "
                                 "discriminator pair")
    p.add_argument("--kwargs", nargs="+", default=[], metavar="ARG",
                   help="constructor arguments: one JSON object or KEY=VALUE items")
    p.add_argument("--size", choices=("test", "bench"), default=d.size,
                   help="the registry configuration the other arguments come from "
                        f"(default {d.size})")
    p.add_argument("--data", help=".npy (x) or .npz (x, y) arrays, channels-last "
                                  "(default: scikit-learn's digits)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"default {d.steps}")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"the global batch (default {d.batch_size})")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer,
                   help="Adam, or SGD with momentum 0.9 (default adam)")
    p.add_argument("--lr", type=float, help="default 1e-3 (DCGAN: 2e-4)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"held out (default {d.val_fraction})")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help=f"steps (default {d.eval_every})")
    p.add_argument("--log-every", type=int, default=d.log_every,
                   help=f"steps (default {d.log_every})")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                   help="steps (default: at the end only)")
    p.add_argument("--keep", type=int, default=d.keep,
                   help=f"checkpoints kept (default {d.keep})")
    p.add_argument("--out", help="output directory (default runs/MODEL)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (multi-host)")
    p.add_argument("--coordinator", help="with --distributed: the coordinator's host:port "
                                         "(else detected from the cluster)")
    p.add_argument("--num-processes", type=int, help="with --distributed")
    p.add_argument("--process-id", type=int, help="with --distributed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in vars(args).items() if k in fields}
        values["kwargs"] = parse_kwargs(args.kwargs)
        summary = train(TrainConfig(**values))
    except (ValueError, KeyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
