"""torch's initialisers, drawn with JAX keys.

The leaf layers draw their own weights as torch does (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``).
An architecture that re-initialises its weights (ResNet's Kaiming normal, GoogLeNet's
N(0, 0.01), DCGAN's N(0, 0.02)) calls :func:`normal_` once for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["normal_", "kaiming_normal_"]


def _uniform(bound: float):
    """torch's ``U(-bound, bound)`` initialiser."""

    def init(key, shape, dtype):
        # drawn flat and reshaped: the same values (threefry counts the flat index), and XLA
        # compiles one random kernel per size in a fraction of the time a 4-D shape takes
        return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)

    return init


def normal_(variables: Sequence[nnx.Variable], key: jax.Array,
            std: float | Sequence[float], mean: float | Sequence[float] = 0.0) -> None:
    """Fills each variable in place with ``N(mean, std**2)`` (one ``std``/``mean`` for all, or
    one per variable).

    One normal draw is cut into all of them, and the draw and cuts are one compiled program
    per set of shapes: constructing a model compiles one small kernel, not one per weight
    shape (the slide-size ResNets have 50 and more). Works under ``nnx.jit``/``nnx.eval_shape``
    of a constructor too.
    """
    variables = list(variables)
    n = len(variables)
    stds = tuple(std) if isinstance(std, Sequence) else (std,) * n
    means = tuple(mean) if isinstance(mean, Sequence) else (mean,) * n
    if not (len(stds) == len(means) == n):
        raise ValueError(f"normal_: {n} variables, {len(stds)} stds, {len(means)} means")
    shapes = tuple(tuple(v.shape) for v in variables)
    values = _normal_draws(key, shapes, stds, means, variables[0][...].dtype)
    for v, value in zip(variables, values):
        # a whole-value replace: under tracing ``v[...] = value`` inspects the tracer's
        # sharding, which costs a walk of the whole trace per weight
        v.set_value(value)


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _normal_draws(key, shapes, stds, means, dtype) -> list[jax.Array]:
    sizes = [math.prod(s) for s in shapes]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    ends = [sum(sizes[:i + 1]) for i in range(len(sizes))]
    return [flat[e - size:e].reshape(shape) * sd + m
            for e, size, shape, sd, m in zip(ends, sizes, shapes, stds, means)]


def kaiming_normal_(convs: Sequence[nnx.Module], key: jax.Array, mode: str) -> None:
    """torch's ``kaiming_normal_(nonlinearity='relu')`` on the weight of each ``Conv2d``:
    N(0, 2 / fan), ``fan`` the ``'fan_in'`` (in / groups * kh * kw) or ``'fan_out'``
    (out * kh * kw) of torch's weight."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_normal_: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fans = [(i if mode == "fan_in" else o) * kh * kw for kh, kw, i, o in
            (conv.weight.shape for conv in convs)]
    normal_([conv.weight for conv in convs], key, [math.sqrt(2.0 / f) for f in fans])
