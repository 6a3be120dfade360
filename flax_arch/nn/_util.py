"""Argument checks, dtype rules and the constructor naming shared by the leaf layers."""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any


class _NamedInit:
    """Gives each public subclass that inherits the constructor its own copy, named after it.

    A family of layers (``BatchNorm1d/2d/3d``, ``MaxPool1d/2d/3d``, ...) shares torch's
    public signature, written once, with torch's defaults, on the private class that
    implements it. Inherited as it is, a bad call would name that class
    (``_NormBase.__init__() got an unexpected keyword argument``): Python's message names the
    function's code object (its ``co_qualname``), not the class called. So each public
    subclass without an ``__init__`` of its own gets a copy of the inherited one whose code
    object is named ``BatchNorm2d.__init__``: the same code, defaults and annotations
    (``inspect.signature(BatchNorm2d.__init__)`` is torch's signature), and an error names
    the class the user called. A variant whose arguments differ (``AvgPool1d`` has no
    ``divisor_override``) writes its own ``__init__``, which is left as it is.
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and "__init__" not in vars(cls):
            cls.__init__ = _renamed(cls.__init__, f"{cls.__qualname__}.__init__")


def _renamed(f: types.FunctionType, qualname: str) -> types.FunctionType:
    """A copy of f, its code object (which error messages name) and itself named ``qualname``."""
    named = types.FunctionType(f.__code__.replace(co_qualname=qualname), f.__globals__,
                               f.__name__, f.__defaults__, f.__closure__)
    named.__kwdefaults__, named.__annotations__ = f.__kwdefaults__, dict(f.__annotations__)
    named.__doc__, named.__qualname__ = f.__doc__, qualname
    return named


def _assign(variable, value) -> None:
    """``variable[...] = value`` for a value of the variable's shape. A JAX value (a tracer
    inside ``jit``) replaces the variable's, cast to its dtype, without the indexed store's
    comparison of shardings: asking a tracer for its sharding builds an error message that
    walks the whole trace so far, once per store (quadratic in the model's size: half of
    GoogLeNet's trace time). A NumPy value (a model called eagerly on NumPy state) is
    stored in place, as the indexed store does."""
    current = variable.get_value()
    if isinstance(current, jax.Array):
        variable.set_value(jnp.asarray(value).astype(current.dtype))
    else:
        variable[...] = value


def _tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """Expands an int to an n-tuple, checking a given tuple's length."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value}")
    return value


def _check_positive(name: str, values: tuple[int, ...]) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive, got {values}")


def _check_input(layer: str, x: Array, rank: int, layout: str, channels: int | None) -> None:
    """Raises a ValueError naming the channels-last layout expected.

    ``rank`` counts the batch axis; torch's unbatched form (rank - 1) is accepted too.
    """
    if x.ndim not in (rank, rank - 1):
        raise ValueError(
            f"{layer} expects a channels-last input of shape {layout} (or without the batch "
            f"axis); got rank {x.ndim} with shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{layer} expects a channels-last input of shape {layout} with "
            f"{channels} channels on the last axis; got shape {tuple(x.shape)}. "
            "Inputs in flax_arch are channels-last: move torch's channel axis to the end."
        )


def _bcast(v: Array, ndim: int) -> Array:
    """Reshapes a per-channel vector to broadcast against a channels-last array of rank ndim."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def _dtypes(x: Array, *params, dtype: Dtype | None):
    """Promotes the input and parameters to one computation dtype (``dtype`` when given)."""
    if dtype is None:
        dtype = jnp.result_type(x, *[p for p in params if p is not None])
    return [None if a is None else jnp.asarray(a, dtype) for a in (x, *params)]


_PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
