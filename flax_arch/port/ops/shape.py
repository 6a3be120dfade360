"""Shape and layout ops (cat, stack, view, permute, split, indexing, ...), dtype casts,
tensor creation, and the graph's shape queries (``x.size()``, ``x.shape``), which answer in
torch order so that the graph's shape arithmetic sees torch's sizes."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..tensor import _T, _drop
from .reduce import _dims
from .registry import op


@op("cat", "concat", "concatenate")
def _cat(tensors, dim=0):
    p = tensors[0].p
    return _T(jnp.concatenate([t.to(p) for t in tensors], axis=tensors[0].ax(dim)), p)


@op("stack")
def _stack(tensors, dim=0):
    d = dim % (tensors[0].ndim + 1)  # the new axis is stored last
    p = tensors[0].p
    return _T(jnp.stack([t.to(p) for t in tensors], axis=-1), (*(q + (q >= d) for q in p), d))


@op("unsqueeze")
def _unsqueeze(x, dim):
    return _stack([x], dim)


@op("squeeze")
def _squeeze(x, dim=None):
    dims = [d for d, n in enumerate(x.shape()) if n == 1] if dim is None else \
        [d % x.ndim for d in _dims(dim) if x.shape()[d] == 1]
    return _T(jnp.squeeze(x.a, tuple(x.ax(d) for d in dims)), _drop(x.p, set(dims)))


@op("flatten")
def _flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return _T(x.a.reshape(1))
    s, e = start_dim % x.ndim, end_dim % x.ndim
    axes = [x.ax(d) for d in range(s, e + 1)]
    if axes != list(range(axes[0], axes[0] + len(axes))):  # not stored together: torch order
        x = _T(x.torch())
        axes = list(range(s, e + 1))
    shape = x.a.shape
    a = x.a.reshape(*shape[:axes[0]], -1, *shape[axes[-1] + 1:])
    p = [q if q <= s else q - (e - s) for q in x.p if not s < q <= e]
    return _T(a, p)


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _reshape(x, *shape):
    return _T(x.torch().reshape(_shape_arg(shape)))


@op("unflatten")
def _unflatten(x, dim, sizes):
    d, i = dim % x.ndim, x.ax(dim)
    sizes = tuple(sizes)
    a = x.a.reshape(*x.a.shape[:i], *sizes, *x.a.shape[i + 1:])
    k = len(sizes) - 1
    p = []
    for q in x.p:
        p.extend(range(d, d + k + 1) if q == d else [q + k if q > d else q])
    return _T(a, p)


@op("permute")
def _permute(x, *dims):
    dims = [d % x.ndim for d in _shape_arg(dims)]
    inv = np.argsort(dims)
    return _T(x.a, (int(inv[q]) for q in x.p))


@op("transpose", "swapaxes", "swapdims")
def _transpose(x, d0, d1):
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return _permute(x, dims)


@op("movedim")
def _movedim(x, source, destination):
    return _permute(x, [int(d) for d in np.moveaxis(np.arange(x.ndim), source, destination)])


def _split_at(x, dim, sizes):
    i = x.ax(dim)
    cuts = np.cumsum(sizes)[:-1].tolist()
    return tuple(_T(a, x.p) for a in jnp.split(x.a, cuts, axis=i))


@op("chunk")
def _chunk(x, chunks, dim=0):
    n = x.shape()[dim]
    size = -(-n // chunks)
    return _split_at(x, dim, [min(size, n - s) for s in range(0, n, size)])


@op("split")
def _split(x, split_size_or_sections, dim=0):
    n = x.shape()[dim]
    if isinstance(split_size_or_sections, int):
        s = split_size_or_sections
        return _split_at(x, dim, [min(s, n - k) for k in range(0, n, s)])
    return _split_at(x, dim, list(split_size_or_sections))


@op("unbind")
def _unbind(x, dim=0):
    return tuple(_squeeze(t, dim) for t in _split_at(x, dim, [1] * x.shape()[dim]))



@op("getitem")
def _getitem(x, idx):
    if not isinstance(x, _T):
        return x[idx]  # the graph's tuples and shapes
    idx = idx if isinstance(idx, tuple) else (idx,)
    simple = all(isinstance(i, (int, slice)) or i is Ellipsis for i in idx)
    if simple and idx.count(Ellipsis) <= 1:
        if Ellipsis in idx:
            k = idx.index(Ellipsis)
            idx = idx[:k] + (slice(None),) * (x.ndim - len(idx) + 1) + idx[k + 1:]
        idx = idx + (slice(None),) * (x.ndim - len(idx))
        dropped = {d for d, i in enumerate(idx) if isinstance(i, int)}
        return _T(x.a[tuple(idx[d] for d in x.p)], _drop(x.p, dropped))
    return _T(x.torch()[tuple(i.torch() if isinstance(i, _T) else i for i in idx)])


def _getattr(x, name):
    if not isinstance(x, _T):
        return getattr(x, name)
    attrs = {"shape": x.shape, "ndim": lambda: x.ndim, "dtype": lambda: x.a.dtype,
             "device": lambda: None, "data": lambda: x, "is_cuda": lambda: False,
             "T": lambda: _permute(x, list(range(x.ndim))[::-1]),
             "mT": lambda: _transpose(x, -2, -1),
             "real": lambda: _T(jnp.real(x.a), x.p), "imag": lambda: _T(jnp.imag(x.a), x.p)}
    return attrs[name]()


def _size(x, dim=None):
    return x.shape() if dim is None else x.shape()[dim]


def _cast(dtype):
    return lambda x, *a, **k: _T(x.a.astype(dtype), x.p)


def _to(x, *args, **kwargs):
    """Tensor.to / .type: only a dtype (or another tensor's) counts; devices do not."""
    for a in (*args, kwargs.get("dtype"), kwargs.get("other")):
        if isinstance(a, _T):
            return _T(x.a.astype(a.a.dtype), x.p)
        if isinstance(a, np.dtype):
            return _T(x.a.astype(a), x.p)
    return x


def _creation(fn):
    def impl(*size, dtype=None, device=None, layout=None, requires_grad=False,
             pin_memory=False, **kwargs):
        return _T(fn(_shape_arg(size), dtype=dtype or jnp.float32, **kwargs))

    return impl


def _like(fn):
    def impl(x, *args, dtype=None, **kwargs):
        return _T(fn(x.a, *args, dtype=dtype or x.a.dtype), x.p)

    return impl


def _assert(cond, message=None):
    """torch._assert on the graph's shape arithmetic (a Python bool here)."""
    if cond is False:
        raise AssertionError(message)


@op("expand", method_only=True)
def _expand(x, *size):
    size = _shape_arg(size)
    old = (1,) * (len(size) - x.ndim) + x.shape()
    return _T(jnp.broadcast_to(x.torch(), tuple(n if n != -1 else m for n, m in zip(size, old))))


@op("flip")
def _flip(x, dims):
    return _T(jnp.flip(x.a, tuple(x.ax(d) for d in _dims(dims))), x.p)


for _name, _impl in {
        "size": _size, "dim": lambda x: x.ndim, "numel": lambda x: math.prod(x.shape()),
        "view": _reshape, "reshape": _reshape, "contiguous": lambda x, *a, **k: x,
        "view_as": lambda x, o: _reshape(x, o.shape()),
        "reshape_as": lambda x, o: _reshape(x, o.shape()),
        "expand_as": lambda x, o: _T(jnp.broadcast_to(x.torch(), o.shape())),
        "repeat": lambda x, *s: _T(jnp.tile(x.torch(), _shape_arg(s))),
        "to": _to, "type": _to, "type_as": lambda x, o: _T(x.a.astype(o.a.dtype), x.p),
        "float": _cast(jnp.float32), "double": _cast(jnp.float64), "half": _cast(jnp.float16),
        "bfloat16": _cast(jnp.bfloat16), "long": _cast(jnp.int64), "int": _cast(jnp.int32),
        "bool": _cast(jnp.bool_), "detach": lambda x: _T(lax.stop_gradient(x.a), x.p),
        "clone": lambda x, *a, **k: x, "t": lambda x: _transpose(x, 0, -1),
}.items():
    op(_name, method_only=True)(_impl)

for _name, _impl in {
        "zeros": _creation(jnp.zeros), "ones": _creation(jnp.ones),
        "zeros_like": _like(jnp.zeros_like), "ones_like": _like(jnp.ones_like),
}.items():
    op(_name)(_impl)


@op("repeat_interleave")
def _repeat_interleave(x, repeats, dim=None, *, output_size=None):
    """A tensor's elements repeated along ``dim`` (of the flattened tensor without one):
    ``repeats`` a number or a tensor of counts, which must then be concrete."""
    a = x.torch()
    counts = repeats.torch() if isinstance(repeats, _T) else repeats
    if dim is None:
        return _T(jnp.repeat(a.reshape(-1), counts, total_repeat_length=output_size))
    return _T(jnp.repeat(a, counts, axis=dim % a.ndim, total_repeat_length=output_size))


@op("roll")
def _roll(x, shifts, dims=None):
    a = x.torch()
    if dims is None:
        return _T(jnp.roll(a.reshape(-1), shifts).reshape(a.shape))
    return _T(jnp.roll(a, shifts, dims))


@op("cumsum")
def _cumsum(x, dim, *, dtype=None):
    a = x.a if dtype is None else x.a.astype(dtype)
    return _T(jnp.cumsum(a, axis=x.ax(dim)), x.p)


@op("arange")
def _arange(start, end=None, step=1, *, dtype=None, device=None, layout=None,
            requires_grad=False, pin_memory=False, out=None):
    if end is None:
        start, end = 0, start
    if dtype is None:  # torch: int64 for integers, its default float dtype otherwise
        floats = any(isinstance(v, float) for v in (start, end, step))
        dtype = jnp.float32 if floats else jnp.int64
    return _T(jnp.arange(start, end, step, dtype=dtype))


def _new(fill):
    def impl(x, *size, dtype=None, device=None, layout=None, requires_grad=False,
             pin_memory=False, **kwargs):
        shape = _shape_arg(size)
        return _T(jnp.full(shape, fill(**kwargs), dtype=dtype or x.a.dtype))

    return impl


for _name, _impl in {
        "new_zeros": _new(lambda: 0), "new_ones": _new(lambda: 1),
        # torch leaves new_empty's values unspecified: zeros here
        "new_empty": _new(lambda: 0),
}.items():
    op(_name, method_only=True)(_impl)


@op("new_full", method_only=True)
def _new_full(x, size, fill_value, *, dtype=None, device=None, layout=None,
              requires_grad=False, pin_memory=False):
    return _T(jnp.full(tuple(size), fill_value, dtype=dtype or x.a.dtype))
