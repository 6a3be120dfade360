"""The values of a ported graph: an array and its layout permutation, and the port's error.

Every tensor of the graph is held with a layout permutation ``p``: stored axis ``i`` holds
torch axis ``p[i]``, so a channels-last value of torch shape (N, C, H, W) is stored
(N, H, W, C) with ``p = (0, 2, 3, 1)``. Operations that name dimensions map torch's dimension
through ``p``; those whose meaning depends on the memory order first move the value to torch
order (:meth:`_T.torch`); layers that want channels-last move it there (:meth:`_T.cl`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


class PortError(ValueError):
    """What :func:`port` cannot translate: every such operation and module, with its graph
    node, found before anything is built."""


def _ident(r: int) -> tuple[int, ...]:
    return tuple(range(r))


def _cl(r: int) -> tuple[int, ...]:
    """The channels-last permutation of a torch (N, C, *spatial) value."""
    return (0, *range(2, r), 1) if r >= 3 else _ident(r)


def _drop(p, removed) -> tuple[int, ...]:
    """``p`` without the torch dims ``removed``, renumbered."""
    return tuple(d - sum(r < d for r in removed) for d in p if d not in removed)


class _T:
    """A tensor of the graph: the stored array ``a``; stored axis i holds torch axis ``p[i]``."""

    __slots__ = ("a", "p")

    def __init__(self, a, p=None):
        self.a = a
        self.p = _ident(a.ndim) if p is None else tuple(p)

    @property
    def ndim(self) -> int:
        return len(self.p)

    def shape(self) -> tuple[int, ...]:
        return tuple(self.a.shape[self.p.index(d)] for d in range(self.ndim))

    def ax(self, d: int) -> int:
        """The stored axis of torch dim ``d``."""
        return self.p.index(d % self.ndim)

    def to(self, p) -> jax.Array:
        """The array stored in layout ``p``."""
        order = tuple(self.p.index(d) for d in p)
        return self.a if order == _ident(len(order)) else jnp.transpose(self.a, order)

    def torch(self) -> jax.Array:
        return self.to(_ident(self.ndim))

    def cl(self) -> jax.Array:
        return self.to(_cl(self.ndim))


def _tmap(fn, obj):
    """``fn`` on every :class:`_T` in nested tuples, lists and dicts."""
    if isinstance(obj, _T):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_tmap(fn, o) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_tmap(fn, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _tmap(fn, v) for k, v in obj.items()}
    return obj


def _amap(fn, obj):
    """``fn`` on every array in a leaf layer's (nested tuple) output."""
    if isinstance(obj, (tuple, list)):
        return type(obj)(_amap(fn, o) for o in obj)
    return fn(obj) if hasattr(obj, "ndim") else obj
