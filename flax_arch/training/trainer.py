"""Trains a registered model on real data: the run behind ``python -m flax_arch.train``.

The task is the registry entry's (:mod:`flax_arch.training.tasks`). One optimizer step is one
compiled XLA program: the models, optimizers and RNG are split into an NNX graph definition
and a state pytree, and the step maps state to state under ``jax.jit``.

Data: scikit-learn's digits by default (see :mod:`flax_arch.training.data`), shaped for the
model. The size arguments the registry entry names follow the data (``channels_arg``: the
data's features or channels; ``classes_arg``: its classes); the other arguments come from
the registry's ``test`` configuration (or ``size='bench'``) and the run's ``kwargs``. A
seeded split holds out ``val_fraction`` of the examples.

Scale: the batch is sharded over every device of every process on a one-axis ``Mesh``
('data'), the state is replicated; under ``jit`` XLA inserts the gradient all-reduce and
computes BatchNorm statistics over the global batch. ``distributed`` first calls
``jax.distributed.initialize()`` for multi-host runs.

Outputs, in ``out``: ``metrics.jsonl`` (one JSON record per log or evaluation),
``checkpoints/`` (Orbax; a rerun with the same settings resumes from the latest step and
continues exactly as an uninterrupted run), and ``samples.png`` for the generative models.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flax_arch.interop import to_channels_last, torch_state_dict
from flax_arch.registry import Input, ModelEntry
from flax_arch.training import data as data_lib
from flax_arch.training.checkpoint import Checkpoints
from flax_arch.training.tasks import Task, resolve

__all__ = ["TrainConfig", "Plan", "plan", "Trainer", "train"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. ``steps`` counts optimizer steps (for a GAN: adversarial steps)."""

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


# ----------------------------------------------------------------------------- planning


def _params(builder: Callable[..., nnx.Module]) -> list[str]:
    """The constructor argument names of a model class or of a ``functools.partial`` over one
    (``resnet18``), bound ones left out: where the run's ``kwargs`` go."""
    if isinstance(builder, functools.partial):
        names = _params(builder.func)
        return [n for n in names[len(builder.args):] if n not in builder.keywords]
    init = builder.__init__ if isinstance(builder, type) else builder
    names = list(inspect.signature(init).parameters)
    return names[1:] if isinstance(builder, type) else names


def _arguments(entry: ModelEntry, cfg: TrainConfig, channels: int,
               num_classes: int | None) -> dict[str, Any]:
    """The model's constructor arguments: the registry configuration's, then the size
    arguments the entry names set from the data, then the run's own."""
    fitted = {entry.channels_arg: channels, entry.classes_arg: num_classes}
    fitted = {k: v for k, v in fitted.items() if k is not None and v is not None}
    params = _params(entry.cls)
    user = {k: v for k, v in cfg.kwargs.items() if k in params}
    return {**entry.config(cfg.size).kwargs, **fitted, **user}


def _digits_spec(inp: Input, entry: ModelEntry, kwargs: Mapping[str, Any]) -> data_lib.Spec:
    """The registry input's per-example shape (channels-last), its last axis set by the
    entry's ``channels_arg``; a sequence reads the 8 x 8 digit in steps of that many pixels."""
    shape = list(to_channels_last(np.empty(inp.shape, np.bool_), inp.layout).shape)
    del shape[inp.layout.index("N")]
    if entry.channels_arg is not None:
        shape[-1] = kwargs[entry.channels_arg]
    if inp.layout in ("NLC", "NCL"):
        if 64 % shape[-1]:
            raise data_lib.DataError(f"a sequence model reads the 64 pixels of a digit in "
                                     f"steps of its {entry.channels_arg} pixels, which must "
                                     f"divide 64; got {shape[-1]}")
        shape[0] = 64 // shape[-1]
    return data_lib.Spec(tuple(shape), inp.layout)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run trains: the task (its models and their arguments) and the data fitted to
    them, checked; ``source`` identifies the data."""

    task: Task
    x: np.ndarray
    y: np.ndarray | None
    source: dict[str, Any]


def plan(cfg: TrainConfig) -> Plan:
    """The run's task, arguments and data; raises, naming what was expected, before anything
    is built or written."""
    task_cls, entries = resolve(cfg.model)
    what = f"model {cfg.model!r}"
    fed = entries[task_cls.data_item]
    inp = fed.config(cfg.size).inputs[0]
    if inp.layout not in data_lib.LAYOUTS or not inp.differentiable:
        raise ValueError(f"model {cfg.model!r} takes {inp.kind} inputs in layout {inp.layout}; "
                         f"the trainer feeds float inputs in layouts {data_lib.LAYOUTS}")
    unused = set(cfg.kwargs) - {k for e in entries.values() for k in _params(e.cls)}
    if unused:
        raise ValueError(f"{what} takes no argument(s) {sorted(unused)}")
    num_classes = None
    if cfg.data is None:
        images, y = data_lib.digits()
        source = {"source": "sklearn digits", "sha256": data_lib.fingerprint(images, y)}
        channels = {"NC": 64, "NCHW": 1}.get(inp.layout, 8)  # flat, grey, or 8 pixels a step
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
        if task_cls.labelled and y is not None and np.issubdtype(y.dtype, np.integer) and y.size:
            num_classes = int(y.max()) + 1
    kwargs = {item: _arguments(e, cfg, channels, num_classes) for item, e in entries.items()}
    if cfg.data is None:
        spec = _digits_spec(inp, fed, kwargs[task_cls.data_item])
        x = data_lib.fit_images(images, spec)
    else:
        spec = data_lib.Spec(tuple(x.shape[1:]), inp.layout)
    x = data_lib.check_inputs(x, spec, unit_range=task_cls.unit_range, what=what)
    if task_cls.labelled:
        y = data_lib.check_labels(y, len(x), np.iinfo(np.int32).max, what)
    else:
        y = None
    return Plan(task_cls(cfg.model, entries, kwargs, spec, cfg.size), x, y, source)


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

        run_plan = plan(cfg)
        self.task = task = run_plan.task
        train_idx, val_idx = data_lib.split(len(run_plan.x), cfg.val_fraction, cfg.seed)
        self.train_set = {"x": run_plan.x[train_idx]}
        self.val_set = {"x": run_plan.x[val_idx]}
        if run_plan.y is not None:
            self.train_set["y"], self.val_set["y"] = run_plan.y[train_idx], run_plan.y[val_idx]
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
            "data": {**run_plan.source, "n_train": len(train_idx), "n_val": len(val_idx)},
        }
        self.out = Path(cfg.out or f"runs/{cfg.model}")
        # refuses another run's checkpoints before anything is built or written
        self.ckpt = Checkpoints(self.out / "checkpoints", self.meta, max_to_keep=cfg.keep)
        task.check(nnx.eval_shape(lambda: task.build(cfg.seed)), run_plan.x, run_plan.y)

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

    def train_step(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
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

    def save(self):
        nnx.update(self.run_state, self.state)
        self.ckpt.save(self.step, self.items)

    # ------------------------------------------------------------------ loop

    def _log(self, record: dict[str, Any]):
        if self.lead:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def run(self) -> dict[str, Any]:
        """Trains to ``config.steps``, evaluating, logging and saving on the way; the
        summary: final held-out metrics, the models' arguments and where the outputs went."""
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
                "kwargs": dict(self.meta["models"]),
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
