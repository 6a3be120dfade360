"""Orbax checkpoints of flax_arch models and training runs.

A checkpoint directory is an Orbax ``CheckpointManager`` directory with one sub-directory per
step. Orbax writes each step into a temporary directory and renames it when complete, so a
process killed while saving never leaves a half-written step as the latest one: the next
reader sees the previous complete step, and the next writer removes the leftover.

Each step holds one item per model (its NNX state: parameters, batch statistics, RNG
state), ``train`` when a training run wrote it (optimizer states, the training RNG), and
``meta``: JSON naming each model's registry name and constructor arguments, and the run's
settings. A checkpoint is only ever resumed by the same run (same models, arguments, data,
optimizer, batch size and seed); anything else is refused before a file is touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from flax_arch.registry import get_model

__all__ = ["FORMAT", "CheckpointError", "latest", "Checkpoints", "save_model", "load_model"]

FORMAT = "flax_arch/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or written for another model or run."""


@contextlib.contextmanager
def _quiet():
    """Silences Orbax's informational warnings (e.g. on read-only managers)."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _normalise(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` as it reads back from JSON (tuples become lists)."""
    try:
        return json.loads(json.dumps(meta))
    except TypeError as err:
        raise CheckpointError(f"checkpoint metadata must be JSON values: {err}") from err


def _flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in meta.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """One line per setting where ``found`` differs from ``expected`` (``step`` ignored)."""
    a, b = _flatten(_normalise(expected)), _flatten(_normalise(found))
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        if key == "step":
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            lines.append(f"{key}: expected {show(va)}, the checkpoint has {show(vb)}")
    return lines


def latest(directory: str | os.PathLike) -> tuple[int, dict[str, Any]] | None:
    """``(step, meta)`` of the latest complete checkpoint in ``directory``, or None when it
    holds none. Reads only: nothing in ``directory`` is created, changed or removed."""
    path = Path(directory).absolute()
    if not path.is_dir():
        return None
    with _quiet():
        mgr = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = mgr.latest_step()
        if step is None:
            return None
        try:
            meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # a step without our metadata: not a flax_arch checkpoint
            raise CheckpointError(f"{path}/{step} is not a flax_arch checkpoint (no readable "
                                  f"'meta' item): {err}") from err
    finally:
        mgr.close()
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}/{step} is not a {FORMAT} checkpoint (meta: {meta!r})")
    return step, meta


def _save_args(items: Mapping[str, Any], meta: Mapping[str, Any]) -> ocp.args.Composite:
    args = {name: ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(obj)))
            for name, obj in items.items()}
    return ocp.args.Composite(**args, meta=ocp.args.JsonSave(_normalise(meta)))


def _target(leaf) -> jax.ShapeDtypeStruct:
    """Where a restored array goes: where ``leaf`` lives, or (for an abstract leaf) this
    process's first device, whatever devices wrote the checkpoint."""
    target = ocp.utils.to_shape_dtype_struct(leaf)
    if target.sharding is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.ShapeDtypeStruct(target.shape, target.dtype, sharding=device)
    return target


def _restore_into(mgr: ocp.CheckpointManager, step: int, items: Mapping[str, Any],
                  where: str) -> None:
    """Restores ``items`` (NNX objects, updated in place) from ``step``; their arrays, or
    abstract shapes, say where the restored arrays go."""
    states = {name: nnx.state(obj) for name, obj in items.items()}
    abstract = {name: jax.tree.map(_target, nnx.to_pure_dict(state))
                for name, state in states.items()}
    args = ocp.args.Composite(**{n: ocp.args.StandardRestore(a) for n, a in abstract.items()})
    try:
        restored = mgr.restore(step, args=args)
    except Exception as err:
        raise CheckpointError(f"cannot restore {sorted(items)} from {where}: {err}") from err
    for name, obj in items.items():
        nnx.replace_by_pure_dict(states[name], restored[name])
        nnx.update(obj, states[name])


class Checkpoints:
    """The checkpoints of one training run in ``directory``, described by ``meta``.

    Opening checks the directory first and raises :class:`CheckpointError`, touching
    nothing, when it holds files that are not checkpoints or checkpoints whose ``meta``
    differs from this run's (each differing setting is named).
    """

    def __init__(self, directory: str | os.PathLike, meta: Mapping[str, Any], *,
                 max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.meta = {**_normalise(meta), "format": FORMAT}
        found = latest(self.directory)
        if found is None and self.directory.is_dir() and any(self.directory.iterdir()):
            raise CheckpointError(
                f"{self.directory} holds files but no flax_arch checkpoint; choose a new or "
                "empty directory (nothing was changed)")
        self.latest_step = None
        if found is not None:
            step, old = found
            diffs = _differences(self.meta, old)
            if diffs:
                raise CheckpointError(
                    f"{self.directory} holds checkpoints of another run (latest step {step}); "
                    "expected this run's settings:\n  " + "\n  ".join(diffs)
                    + "\nNothing was changed; choose another directory.")
            self.latest_step = step
        self.max_to_keep = max_to_keep
        self._manager: ocp.CheckpointManager | None = None

    @property
    def _mgr(self) -> ocp.CheckpointManager:
        """The writing manager, opened at the first save or restore (it creates the
        directory and removes temporary directories that interrupted saves left)."""
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep, enable_async_checkpointing=False,
                cleanup_tmp_directories=True)
            with _quiet():
                self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def save(self, step: int, items: Mapping[str, Any]) -> None:
        """Saves the NNX objects ``items`` (name -> module, optimizer, ``nnx.Rngs``...)."""
        self._mgr.save(step, args=_save_args(items, {**self.meta, "step": step}))
        self.latest_step = step

    def restore(self, step: int, items: Mapping[str, Any]) -> None:
        """Restores ``items`` in place from ``step``; they must have the saved structure."""
        _restore_into(self._mgr, step, items, f"{self.directory}/{step}")

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


def save_model(path: str | os.PathLike, name: str, kwargs: Mapping[str, Any],
               model: nnx.Module, **info: Any) -> Path:
    """Writes ``model`` (registry ``name`` built with ``kwargs``) as a new checkpoint at ``path``.

    The checkpoint is written to a temporary directory beside ``path`` and renamed when
    complete: on any error no ``path`` appears. An existing ``path`` is never overwritten.
    ``info`` is recorded in the metadata (e.g. the file it was converted from).
    """
    path = Path(path).absolute()
    if path.exists():
        raise CheckpointError(f"{path} already exists; not overwriting it")
    meta = {"format": FORMAT, "models": {"model": {"name": name, "kwargs": dict(kwargs)}},
            **info}
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with _quiet():
            mgr = ocp.CheckpointManager(
                tmp, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
            mgr.save(0, args=_save_args({"model": model}, meta))
            mgr.close()
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model(path: str | os.PathLike, name: str | None = None
               ) -> tuple[nnx.Module, dict[str, Any]]:
    """``(model, model_meta)`` from the latest step of the checkpoint at ``path``.

    ``path`` may hold a converted model (:func:`save_model`) or a training run; ``name``
    picks the model by registry name (required when the checkpoint holds several, as a
    DCGAN run does). ``model_meta`` is ``{'name', 'kwargs'}``. A checkpoint of another model
    raises :class:`CheckpointError` naming the models it holds.
    """
    path = Path(path).absolute()
    found = latest(path)
    if found is None:
        raise CheckpointError(f"{path} holds no flax_arch checkpoint")
    step, meta = found
    models = meta["models"]
    names = {item: m["name"] for item, m in models.items()}
    if name is None:
        if len(models) != 1:
            raise CheckpointError(f"{path} holds several models {sorted(names.values())}; "
                                  "name the one to load")
        (item,) = models
    else:
        matches = [item for item, n in names.items() if n == name]
        if not matches:
            raise CheckpointError(f"{path} holds model(s) {sorted(names.values())}, not "
                                  f"{name!r}")
        (item,) = matches
    held, kwargs = models[item]["name"], models[item]["kwargs"]
    model = nnx.eval_shape(lambda: get_model(held, rngs=nnx.Rngs(0), **kwargs))  # restore fills it
    with _quiet():
        mgr = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        _restore_into(mgr, step, {item: model}, f"{path}/{step}")
    finally:
        mgr.close()
    return model, models[item]
