"""The model registry: every architecture with what the parity suite and the benchmarks need.

An entry names the Flax class (the torch twin is registered under the same name in
:mod:`torch_ref.registry`), a small configuration for tests and a full one for benchmarks
(constructor arguments and example inputs, given in torch's layout), the torch layout of
each output, and the training loss. Registering a model is all it takes for the parity
suite and ``python -m benchmarks`` to cover it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from flax import nnx

from flax_arch.interop import to_channels_last

__all__ = ["Input", "Config", "ModelEntry", "register", "list_models", "get_model", "get_entry"]


@dataclass(frozen=True)
class Input:
    """One example input, described in torch's layout.

    ``layout`` names the axes (``'NC'``, ``'NCL'``, ``'NCHW'``, ``'LNC'``, ``'NL'``): ``N`` is
    the batch axis, a ``C`` before spatial axes is moved last for Flax. ``kind``: ``'normal'``
    (standard normal), ``'unit'`` (uniform in [0, 1)), ``'onehot'`` (one-hot rows over the
    last axis, ``high`` classes) or ``'index'`` (integers in [0, high)).
    """

    shape: tuple[int, ...]
    layout: str
    kind: str = "normal"
    high: int = 0

    def with_batch(self, batch_size: int | None) -> Input:
        if batch_size is None or "N" not in self.layout:
            return self
        shape = list(self.shape)
        shape[self.layout.index("N")] = batch_size
        return replace(self, shape=tuple(shape))

    def sample(self, rng: np.random.Generator, dtype) -> np.ndarray:
        if self.kind == "normal":
            return rng.standard_normal(self.shape).astype(dtype)
        if self.kind == "unit":
            return rng.uniform(0.0, 1.0, self.shape).astype(dtype)
        if self.kind == "onehot":
            idx = rng.integers(0, self.high, self.shape[:-1])
            return np.eye(self.high, dtype=dtype)[idx]
        if self.kind == "index":
            return rng.integers(0, self.high, self.shape).astype(np.int64)
        raise ValueError(f"unknown input kind {self.kind!r}")

    @property
    def differentiable(self) -> bool:
        return self.kind in ("normal", "unit")


@dataclass(frozen=True)
class Config:
    """Constructor arguments and example inputs (torch layout) of one model size."""

    kwargs: dict[str, Any]
    inputs: tuple[Input, ...]
    target: Input | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture.

    ``outputs`` gives the torch layout of each output leaf in order (``jax.tree.leaves``
    order of the Flax output). ``loss`` names a loss of :mod:`flax_arch.losses` /
    :mod:`torch_ref.losses`, computed against ``Config.target``.
    """

    name: str
    family: str
    cls: Callable[..., nnx.Module]
    test: Config
    bench: Config
    outputs: tuple[str, ...]
    loss: str

    def config(self, size: str) -> Config:
        if size not in ("test", "bench"):
            raise ValueError(f"size must be 'test' or 'bench', got {size!r}")
        return self.test if size == "test" else self.bench

    def build(self, size: str = "test", *, rngs: nnx.Rngs, **overrides) -> nnx.Module:
        """The Flax model at the ``size`` configuration (``overrides`` replace arguments)."""
        return self.cls(**{**self.config(size).kwargs, **overrides}, rngs=rngs)

    def example_inputs(self, size: str = "test", *, batch_size: int | None = None,
                       dtype=np.float32, seed: int = 0):
        """``(torch_inputs, flax_inputs, target)``: NumPy arrays, the same values in each layout.

        ``target`` is in torch's layout; index targets read the same in both layouts, and
        float targets are converted by the harness with :func:`to_channels_last`.
        """
        cfg = self.config(size)
        rng = np.random.default_rng(seed)
        torch_in = tuple(i.with_batch(batch_size).sample(rng, dtype) for i in cfg.inputs)
        flax_in = tuple(to_channels_last(a, i.layout) for a, i in zip(torch_in, cfg.inputs))
        target = None
        if cfg.target is not None:
            target = cfg.target.with_batch(batch_size).sample(rng, dtype)
        return torch_in, flax_in, target


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def list_models(family: str | None = None) -> list[str]:
    """The registered model names, sorted; only ``family``'s when given."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model(name: str, *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Builds the registered model ``name`` with constructor ``kwargs`` (the class defaults
    otherwise), as ``torch_ref.get_model`` builds its twin."""
    return get_entry(name).cls(**kwargs, rngs=rngs)
