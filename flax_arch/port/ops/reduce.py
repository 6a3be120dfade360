"""Reductions over torch dims: sum, mean, var, max/min with indices, arg reductions,
softmax."""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp

from ..tensor import _T, _drop
from .pointwise import _pointwise
from .registry import op


def _dims(dim, *more):
    dims = (dim, *more) if more else dim
    return tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)


def _reduce(fn):
    """sum, mean, amax, ... over torch dims (all of them when ``dim`` is None)."""

    def impl(x, dim=None, keepdim=False, *, dtype=None):
        a = x.a if dtype is None else x.a.astype(dtype)
        if dim is None:
            return _T(fn(a, keepdims=keepdim), x.p if keepdim else ())
        axes = tuple(x.ax(d) for d in _dims(dim))
        p = x.p if keepdim else _drop(x.p, {x.p[i] for i in axes})
        return _T(fn(a, axis=axes, keepdims=keepdim), p)

    return impl


def _var(ddof_default: bool, fn):
    def impl(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
        ddof = correction if correction is not None else int(ddof_default if unbiased is None
                                                             else unbiased)
        return _reduce(functools.partial(fn, ddof=ddof))(x, dim, keepdim)

    return impl


def _minmax(fn, argfn):
    """torch.max / torch.min: of all elements, elementwise against a tensor, or (values,
    indices) along a dim, where the gradient goes to the index (the first extremum, as
    torch's), not split among ties as a reduction's."""

    def impl(x, dim=None, keepdim=False):
        if isinstance(dim, _T):
            return _pointwise(jnp.maximum if fn is jnp.max else jnp.minimum)(x, dim)
        if dim is None:
            return _T(fn(x.a), ())
        i = x.ax(dim)
        index = argfn(x.a, axis=i, keepdims=True)
        values = jnp.take_along_axis(x.a, index, axis=i)
        if not keepdim:
            values, index = jnp.squeeze(values, i), jnp.squeeze(index, i)
        p = x.p if keepdim else _drop(x.p, {x.p[i]})
        return _MinMax(_T(values, p), _T(index, p))

    return impl


class _MinMax(tuple):
    _fields = ("values", "indices")

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    values = property(operator.itemgetter(0))
    indices = property(operator.itemgetter(1))


def _arg_reduce(fn):
    def impl(x, dim=None, keepdim=False):
        if dim is None:  # the index into torch's flattened (row-major) order
            return _T(fn(x.torch().reshape(-1)))
        i = x.ax(dim)
        return _T(fn(x.a, axis=i, keepdims=keepdim), x.p if keepdim else _drop(x.p, {x.p[i]}))

    return impl



def _softmax(fn):
    def impl(x, dim=None, _stacklevel=3, dtype=None):
        if dim is None:  # torch's implicit dim (deprecated there)
            dim = 0 if x.ndim in (0, 1, 3) else 1
        a = x.a if dtype is None else x.a.astype(dtype)
        return _T(fn(a, axis=x.ax(dim)), x.p)

    return impl



for _name, _impl in {
        "sum": _reduce(jnp.sum), "mean": _reduce(jnp.mean), "amax": _reduce(jnp.max),
        "amin": _reduce(jnp.min), "prod": _reduce(jnp.prod), "all": _reduce(jnp.all),
        "any": _reduce(jnp.any), "logsumexp": _reduce(jax.scipy.special.logsumexp),
        "var": _var(True, jnp.var), "std": _var(True, jnp.std),
        "max": _minmax(jnp.max, jnp.argmax), "min": _minmax(jnp.min, jnp.argmin),
        "argmax": _arg_reduce(jnp.argmax), "argmin": _arg_reduce(jnp.argmin),
        "softmax": _softmax(jax.nn.softmax), "log_softmax": _softmax(jax.nn.log_softmax),
}.items():
    op(_name)(_impl)
