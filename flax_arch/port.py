"""Port a PyTorch module to Flax NNX: ``port(module, *example_inputs)``.

The module is traced with ``torch.fx``, once in train mode and once in eval mode (fx bakes a
forward's ``self.training`` branches in: torchvision's StochasticDepth, ``F.dropout(x, p,
self.training)``, GoogLeNet's auxiliary heads), and rebuilt as an NNX module whose children
mirror the torch submodules: every ``torch.nn`` leaf layer (dispatched on its exact type, so
that a subclass such as torchvision's ``LayerNorm2d`` is traced through) becomes the
``flax_arch`` layer of the same name, built from the torch layer's constructor arguments; every
other module becomes a :class:`TracedModule` holding its children and its own parameters and
buffers. The state tree is therefore the module's ``state_dict``, and the weights load through
the structural rules of :mod:`flax_arch.interop`. The graph runs with JAX operations, so the
port compiles under ``jit`` and differentiates like any hand-written model.

Layouts. Every tensor of the graph is held with a layout permutation ``p``: stored axis ``i``
holds torch axis ``p[i]``, so a channels-last value of torch shape (N, C, H, W) is stored
(N, H, W, C) with ``p = (0, 2, 3, 1)``. Operations that name dimensions map torch's dimension
through ``p`` (cat, reductions, softmax, chunk, slicing, pad, interpolate; permute and transpose
change only ``p``). Those whose meaning depends on the memory order (view/reshape, a flatten of
axes not stored together in order, matmul) first move the value to torch order; layers that
want channels-last (convolutions, batch norms, pools) move it back. Shape queries
(``x.size()``, ``x.shape``) answer in torch order, so the graph's shape arithmetic sees
torch's sizes. A flatten therefore flattens in torch's (C, H, W) order and a channel shuffle
comes out as torch's.

>>> import numpy as np, torch, torchvision
>>> from flax_arch import port
>>> net = torchvision.models.resnet18(weights=None).eval()
>>> flax_net = port(net, torch.zeros(1, 3, 64, 64))   # doctest: +SKIP
>>> flax_net(np.zeros((1, 64, 64, 3), np.float32)).shape   # doctest: +SKIP
(1, 1000)
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from flax_arch import nn as fnn
from flax_arch.interop import IDENTITY, _rules_for, _to_numpy, load_torch_state_dict
from flax_arch.models import recurrent
from flax_arch.nn.containers import Stochastic
from flax_arch.nn.upsampling import _resample

__all__ = ["port", "PortError", "Ported", "TracedModule", "build_torch_module"]


class PortError(ValueError):
    """What :func:`port` cannot translate: every such operation and module, with its graph
    node, found before anything is built."""


# ----------------------------------------------------------------------------- layouts


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


# ----------------------------------------------------------------------------- operations
# Each takes the graph's arguments as they are held (tensors as _T, everything else as the
# Python value) and returns the same kind of value.


def _pointwise(fn):
    """An elementwise op under torch's broadcasting: tensors of another layout or rank are
    moved to the layout of the first operand of highest rank. Without tensors it is the
    graph's shape arithmetic, on Python numbers."""

    def impl(*args, **kwargs):
        kwargs.pop("inplace", None)
        ts = [a for a in (*args, *kwargs.values()) if isinstance(a, _T)]
        if not ts:
            return fn(*args, **kwargs)
        ref = max(ts, key=lambda t: t.ndim)

        def align(a):
            if not isinstance(a, _T) or a.p == ref.p:
                return a.a if isinstance(a, _T) else a
            x = a.torch()
            return _T(x.reshape((1,) * (ref.ndim - a.ndim) + x.shape)).to(ref.p)

        out = fn(*map(align, args), **{k: align(v) for k, v in kwargs.items()})
        return _T(out, ref.p)

    return impl


def _hardsigmoid(x):
    return jnp.clip(x + 3, 0, 6) / 6


def _softplus(x, beta=1.0, threshold=20.0):
    big = x * beta > threshold  # torch's linear tail; exp stays finite for the gradient
    return jnp.where(big, x, jnp.log1p(jnp.exp(jnp.where(big, 0.0, x * beta))) / beta)


def _gelu(x, approximate="none"):
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def _div(x, y, rounding_mode=None):
    if rounding_mode == "floor":
        return jnp.floor_divide(x, y)
    return jnp.trunc(x / y) if rounding_mode == "trunc" else x / y


def _add(x, y, alpha=1):
    return x + y if alpha == 1 else x + alpha * y


def _sub(x, y, alpha=1):
    return x - y if alpha == 1 else x - alpha * y


_POINTWISE = {
    "add": _add, "sub": _sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "neg": operator.neg, "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge, "and_": operator.and_,
    "or_": operator.or_, "invert": operator.invert,
    "div": _div, "multiply": operator.mul, "subtract": _sub, "true_divide": operator.truediv,
    "floor_divide": jnp.floor_divide, "maximum": jnp.maximum, "minimum": jnp.minimum,
    "where": jnp.where, "exp": jnp.exp, "log": jnp.log, "log1p": jnp.log1p,
    "expm1": jnp.expm1, "sqrt": jnp.sqrt, "rsqrt": lax.rsqrt, "abs": jnp.abs,
    "sin": jnp.sin, "cos": jnp.cos, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
    "erf": jax.scipy.special.erf, "reciprocal": jnp.reciprocal, "square": jnp.square,
    "floor": jnp.floor, "ceil": jnp.ceil, "sign": jnp.sign,
    "clamp": lambda x, min=None, max=None: jnp.clip(x, min, max),
    "relu": jax.nn.relu, "relu6": lambda x: jnp.clip(x, 0, 6),
    "leaky_relu": lambda x, negative_slope=0.01: jnp.where(x > 0, x, x * negative_slope),
    "elu": lambda x, alpha=1.0: jnp.where(x > 0, x, alpha * jnp.expm1(x)),
    "hardtanh": lambda x, min_val=-1.0, max_val=1.0: jnp.clip(x, min_val, max_val),
    "silu": lambda x: x * jax.nn.sigmoid(x), "gelu": _gelu, "softplus": _softplus,
    "hardsigmoid": _hardsigmoid, "hardswish": lambda x: x * _hardsigmoid(x),
    "mish": lambda x: x * jnp.tanh(_softplus(x)), "logsigmoid": jax.nn.log_sigmoid,
}
_POINTWISE["clip"] = _POINTWISE["clamp"]


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


def _cat(tensors, dim=0):
    p = tensors[0].p
    return _T(jnp.concatenate([t.to(p) for t in tensors], axis=tensors[0].ax(dim)), p)


def _stack(tensors, dim=0):
    d = dim % (tensors[0].ndim + 1)  # the new axis is stored last
    p = tensors[0].p
    return _T(jnp.stack([t.to(p) for t in tensors], axis=-1), (*(q + (q >= d) for q in p), d))


def _unsqueeze(x, dim):
    return _stack([x], dim)


def _squeeze(x, dim=None):
    dims = [d for d, n in enumerate(x.shape()) if n == 1] if dim is None else \
        [d % x.ndim for d in _dims(dim) if x.shape()[d] == 1]
    return _T(jnp.squeeze(x.a, tuple(x.ax(d) for d in dims)), _drop(x.p, set(dims)))


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


def _unflatten(x, dim, sizes):
    d, i = dim % x.ndim, x.ax(dim)
    sizes = tuple(sizes)
    a = x.a.reshape(*x.a.shape[:i], *sizes, *x.a.shape[i + 1:])
    k = len(sizes) - 1
    p = []
    for q in x.p:
        p.extend(range(d, d + k + 1) if q == d else [q + k if q > d else q])
    return _T(a, p)


def _permute(x, *dims):
    dims = [d % x.ndim for d in _shape_arg(dims)]
    inv = np.argsort(dims)
    return _T(x.a, (int(inv[q]) for q in x.p))


def _transpose(x, d0, d1):
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return _permute(x, dims)


def _movedim(x, source, destination):
    return _permute(x, [int(d) for d in np.moveaxis(np.arange(x.ndim), source, destination)])


def _split_at(x, dim, sizes):
    i = x.ax(dim)
    cuts = np.cumsum(sizes)[:-1].tolist()
    return tuple(_T(a, x.p) for a in jnp.split(x.a, cuts, axis=i))


def _chunk(x, chunks, dim=0):
    n = x.shape()[dim]
    size = -(-n // chunks)
    return _split_at(x, dim, [min(size, n - s) for s in range(0, n, size)])


def _split(x, split_size_or_sections, dim=0):
    n = x.shape()[dim]
    if isinstance(split_size_or_sections, int):
        s = split_size_or_sections
        return _split_at(x, dim, [min(s, n - k) for k in range(0, n, s)])
    return _split_at(x, dim, list(split_size_or_sections))


def _unbind(x, dim=0):
    return tuple(_squeeze(t, dim) for t in _split_at(x, dim, [1] * x.shape()[dim]))


def _softmax(fn):
    def impl(x, dim=None, _stacklevel=3, dtype=None):
        if dim is None:  # torch's implicit dim (deprecated there)
            dim = 0 if x.ndim in (0, 1, 3) else 1
        a = x.a if dtype is None else x.a.astype(dtype)
        return _T(fn(a, axis=x.ax(dim)), x.p)

    return impl


def _bcast(v: _T | None, r: int):
    """A torch-order parameter of trailing shape, as an array of rank r."""
    if v is None:
        return None
    a = v.torch()
    return a.reshape((1,) * (r - a.ndim) + a.shape)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    k, r = len(tuple(normalized_shape)), x.ndim
    if x.p[r - k:] != tuple(range(r - k, r)):  # the normalised dims must be stored last
        x = _T(x.torch())
    axes = tuple(range(r - k, r))
    a = x.a
    mean = jnp.mean(a, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(a - mean), axis=axes, keepdims=True)
    y = (a - mean) * lax.rsqrt(var + eps)
    if weight is not None:
        y = y * _bcast(weight, r)
    if bias is not None:
        y = y + _bcast(bias, r)
    return _T(y, x.p)


def _linear(x, weight, bias=None):
    y = jnp.matmul(x.torch(), weight.torch().T)
    return _T(y if bias is None else y + _bcast(bias, y.ndim))


def _torch_order(fn):
    """An op whose meaning depends on torch's memory order (matmul, einsum, expand, ...)."""

    def impl(*args, **kwargs):
        return _T(fn(*_tmap(_T.torch, args), **_tmap(_T.torch, kwargs)))

    return impl


def _ntuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _conv(n: int):
    """F.conv1d / F.conv2d: channels-last input, torch-layout (O, I/g, *k) weight."""

    def impl(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        w = weight.torch()
        st, dil = _ntuple(stride, n), _ntuple(dilation, n)
        if padding == "valid":
            pads = [(0, 0)] * n
        elif padding == "same":
            tot = [d * (k - 1) for d, k in zip(dil, w.shape[2:])]
            pads = [(t // 2, t - t // 2) for t in tot]
        else:
            pads = [(q, q) for q in _ntuple(padding, n)]
        lhs = "N" + "DHW"[3 - n:] + "C"
        y = lax.conv_general_dilated(x.cl(), w, st, pads, rhs_dilation=dil,
                                     dimension_numbers=(lhs, "OI" + "DHW"[3 - n:], lhs),
                                     feature_group_count=groups)
        if bias is not None:
            y = y + bias.torch().reshape((1,) * (n + 1) + (-1,))
        return _T(y, _cl(n + 2))

    return impl


def _flax_layer(name: str):
    """A functional pool (F.max_pool2d, F.adaptive_avg_pool2d, ...) as the flax_arch layer of
    the same arguments, on a channels-last input."""

    def impl(x, *args, **kwargs):
        cls = getattr(fnn, name)
        params = _init_parameters(cls)
        kwargs = {k: v for k, v in kwargs.items() if k in params or v not in (False, None)}
        return _amap(lambda y: _T(y, _cl(y.ndim)), cls(*args, **kwargs)(x.cl()))

    return impl


def _pad(x, pad, mode="constant", value=None):
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ax(x.ndim - 1 - i)] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":  # lax.pad also crops, for negative widths, as torch does
        v = jnp.asarray(0 if value is None else value, x.a.dtype)
        return _T(lax.pad(x.a, v, [(lo, hi, 0) for lo, hi in widths]), x.p)
    modes = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    return _T(jnp.pad(x.a, widths, mode=modes[mode]), x.p)


def _interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None, antialias=False):
    """torch's F.interpolate in every mode ('nearest', 'nearest-exact', 'linear',
    'bilinear', 'bicubic', 'trilinear', 'area'; not antialias) through the resampling of
    flax_arch's ``Upsample``, which follows the rules of torch's CPU kernels, along the
    stored axes of the torch spatial dims."""
    n = x.ndim - 2
    return _T(_resample(x.a, [x.ax(d) for d in range(2, x.ndim)],
                        None if size is None else _ntuple(size, n),
                        None if scale_factor is None else _ntuple(scale_factor, n),
                        mode, align_corners, recompute_scale_factor), x.p)


_interpolate.check = lambda a: "antialias=True" if a.get("antialias") else None


def _need_rngs(rngs, what):
    if rngs is None:
        raise ValueError(f"{what} in train mode draws randomness: call the ported model with "
                         "rngs=nnx.Rngs(dropout=...)")
    return rngs.dropout()


def _dropout(x, p=0.5, training=True, inplace=False, *, rngs=None):
    if not training or p == 0:
        return x
    keep = jax.random.bernoulli(_need_rngs(rngs, "dropout"), 1 - p, x.a.shape)
    return _T(jnp.where(keep, x.a / (1 - p), 0).astype(x.a.dtype), x.p)


def _stochastic_depth(x, p, mode, training=True, *, rngs=None):
    """torchvision.ops.stochastic_depth: drops whole rows ('row') or the whole batch."""
    if not training or p == 0:
        return x
    shape = [1] * x.ndim
    if mode == "row":
        shape[x.ax(0)] = x.a.shape[x.ax(0)]
    keep = jax.random.bernoulli(_need_rngs(rngs, "stochastic_depth"), 1 - p, shape)
    noise = keep.astype(x.a.dtype) / (1 - p) if p < 1 else keep.astype(x.a.dtype)
    return _T(x.a * noise, x.p)


_dropout.random = _stochastic_depth.random = True


def _embedding(indices, weight, padding_idx=None, max_norm=None, norm_type=2.0,
               scale_grad_by_freq=False, sparse=False):
    w = weight.torch()
    if padding_idx is not None:  # torch sends no gradient to the padding row
        row = jnp.arange(w.shape[0])[:, None] == padding_idx % w.shape[0]
        w = jnp.where(row, lax.stop_gradient(w), w)
    return _T(jnp.take(w, indices.torch(), axis=0))


_embedding.check = lambda a: (
    "max_norm (renormalises the weight in place)" if a.get("max_norm") is not None
    else "scale_grad_by_freq=True" if a.get("scale_grad_by_freq") else None)


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


# functional pools, as the flax_arch layer of the same arguments
_POOLS = {f"{f}{n}d": f"{layer}{n}d" for n in (1, 2, 3) for f, layer in (
    ("max_pool", "MaxPool"), ("avg_pool", "AvgPool"), ("adaptive_avg_pool", "AdaptiveAvgPool"),
    ("adaptive_max_pool", "AdaptiveMaxPool"))}

_METHODS = {  # Tensor methods without a function of the same name below
    "size": _size, "dim": lambda x: x.ndim, "numel": lambda x: math.prod(x.shape()),
    "view": _reshape, "reshape": _reshape, "contiguous": lambda x, *a, **k: x,
    "view_as": lambda x, o: _reshape(x, o.shape()),
    "reshape_as": lambda x, o: _reshape(x, o.shape()),
    "expand": lambda x, *s: _T(jnp.broadcast_to(
        x.torch(), tuple(n if n != -1 else m for n, m in
                         zip(_shape_arg(s), (1,) * (len(_shape_arg(s)) - x.ndim) + x.shape())))),
    "expand_as": lambda x, o: _T(jnp.broadcast_to(x.torch(), o.shape())),
    "repeat": lambda x, *s: _T(jnp.tile(x.torch(), _shape_arg(s))),
    "to": _to, "type": _to, "type_as": lambda x, o: _T(x.a.astype(o.a.dtype), x.p),
    "float": _cast(jnp.float32), "double": _cast(jnp.float64), "half": _cast(jnp.float16),
    "bfloat16": _cast(jnp.bfloat16), "long": _cast(jnp.int64), "int": _cast(jnp.int32),
    "bool": _cast(jnp.bool_), "detach": lambda x: _T(lax.stop_gradient(x.a), x.p),
    "clone": lambda x, *a, **k: x, "t": lambda x: _transpose(x, 0, -1),
}

_FUNCTIONS = {  # by name: torch.X, torch.nn.functional.X, Tensor.X
    "cat": _cat, "concat": _cat, "concatenate": _cat, "stack": _stack,
    "unsqueeze": _unsqueeze, "squeeze": _squeeze, "flatten": _flatten,
    "unflatten": _unflatten, "permute": _permute, "transpose": _transpose,
    "swapaxes": _transpose, "swapdims": _transpose, "movedim": _movedim,
    "chunk": _chunk, "split": _split, "unbind": _unbind,
    "sum": _reduce(jnp.sum), "mean": _reduce(jnp.mean), "amax": _reduce(jnp.max),
    "amin": _reduce(jnp.min), "prod": _reduce(jnp.prod), "all": _reduce(jnp.all),
    "any": _reduce(jnp.any), "logsumexp": _reduce(jax.scipy.special.logsumexp),
    "var": _var(True, jnp.var), "std": _var(True, jnp.std),
    "max": _minmax(jnp.max, jnp.argmax), "min": _minmax(jnp.min, jnp.argmin),
    "argmax": _arg_reduce(jnp.argmax), "argmin": _arg_reduce(jnp.argmin),
    "softmax": _softmax(jax.nn.softmax), "log_softmax": _softmax(jax.nn.log_softmax),
    "layer_norm": _layer_norm, "linear": _linear, "conv1d": _conv(1), "conv2d": _conv(2),
    "embedding": _embedding, "pad": _pad, "interpolate": _interpolate,
    "dropout": _dropout, "stochastic_depth": _stochastic_depth,
    "matmul": _torch_order(jnp.matmul), "mm": _torch_order(jnp.matmul),
    "bmm": _torch_order(jnp.matmul), "einsum": _torch_order(jnp.einsum),
    "flip": lambda x, dims: _T(jnp.flip(x.a, tuple(x.ax(d) for d in _dims(dims))), x.p),
    "zeros": _creation(jnp.zeros), "ones": _creation(jnp.ones),
    "zeros_like": _like(jnp.zeros_like), "ones_like": _like(jnp.ones_like),
    "getitem": _getitem,
    **{f: _flax_layer(layer) for f, layer in _POOLS.items()},
    **{name: _pointwise(fn) for name, fn in _POINTWISE.items()},
}
_INPLACE_OPERATORS = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv"}


@functools.lru_cache(maxsize=1)
def _function_table():
    """fx call_function targets -> implementations, and the public name of every function
    in torch's public namespaces (error messages print ``torch.fft.rfft``, not
    ``torch._C._fft.fft_rfft``)."""
    import torch
    import torch.fx._symbolic_trace as fx_trace
    import torch.nn.functional as F

    namespaces = [("torch.nn.functional", F), ("torch.fft", torch.fft),
                  ("torch.linalg", torch.linalg), ("torch.special", torch.special),
                  ("torch", torch), ("operator", operator)]
    if "torchvision" in sys.modules:
        namespaces.insert(0, ("torchvision.ops", sys.modules["torchvision"].ops))
    public = {}
    for prefix, ns in reversed(namespaces):  # the first namespace wins
        for attr in dir(ns):
            if not attr.startswith("_"):
                public[id(getattr(ns, attr, None))] = f"{prefix}.{attr}"
    table = {getattr: _getattr, torch._assert: _assert, fx_trace._assert_is_none: _assert}
    for iname, name in _INPLACE_OPERATORS.items():
        table[getattr(operator, iname)] = _FUNCTIONS[name]
    # torch.embedding(weight, indices) is not F.embedding's order; operator.concat joins lists
    skip = {id(torch): {"embedding"}, id(operator): {"concat"}}
    for name, impl in _FUNCTIONS.items():
        if name in _POOLS and not hasattr(fnn, _POOLS[name]):
            continue  # no flax_arch layer (yet): refused by name
        for ns in (F, torch, operator, *([sys.modules["torchvision"].ops]
                                         if "torchvision" in sys.modules else [])):
            fn = getattr(ns, name, None)
            if callable(fn) and name not in skip.get(id(ns), ()):
                table.setdefault(fn, impl)
    return table, public


def _method(name: str):
    base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    return _METHODS.get(base) or _FUNCTIONS.get(base)


def _public_name(target) -> str:
    _, public = _function_table()
    if id(target) in public:
        return public[id(target)]
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
    return f"{module}.{name}" if module else name


# ----------------------------------------------------------------------------- leaf layers

_ANY, _CHANNELS_LAST, _TORCH_ORDER = "any", "channels_last", "torch_order"

# How each torch.nn leaf's flax_arch twin takes its input: elementwise layers in any layout
# (kept); convolutions, norms over the channel axis, pools, padding, resampling, and Flatten
# and Unflatten (which read torch's dims off a channels-last input) channels-last; layers on
# an input's trailing axes or a named axis (Linear, LayerNorm, Softmax(dim), GLU, Embedding,
# the recurrent layers) in torch's own order.
_LEAF_LAYOUTS = {
    **dict.fromkeys(
        ["Identity", "Dropout", "AlphaDropout", "ReLU", "ReLU6", "LeakyReLU", "Tanh",
         "Sigmoid", "SiLU", "GELU", "ELU", "CELU", "SELU", "Mish", "Hardswish", "Hardsigmoid",
         "Hardtanh", "Hardshrink", "Softshrink", "Threshold", "Softplus", "Softsign",
         "Tanhshrink", "LogSigmoid"], _ANY),
    **dict.fromkeys(
        [*(f"{kind}{n}d" for n in (1, 2, 3) for kind in (
            "Conv", "ConvTranspose", "BatchNorm", "InstanceNorm", "MaxPool", "AvgPool",
            "LPPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "ZeroPad", "ConstantPad",
            "ReflectionPad", "ReplicationPad", "CircularPad", "Dropout")),
         "GroupNorm", "LocalResponseNorm", "PReLU", "Softmax2d", "Upsample",
         "UpsamplingNearest2d", "UpsamplingBilinear2d", "PixelShuffle", "PixelUnshuffle",
         "Flatten", "Unflatten"], _CHANNELS_LAST),
    **dict.fromkeys(
        ["Linear", "Bilinear", "LayerNorm", "RMSNorm", "Softmax", "LogSoftmax", "Softmin",
         "GLU", "Embedding", "RNN", "LSTM", "GRU"], _TORCH_ORDER),
}

# Constructor arguments that torch does not keep under their own name (one rule each); every
# other argument is read from the torch layer's attribute of the same name, and a torch
# argument that the flax_arch layer does not take must be at torch's default.
_READ_ARG = {
    "bias": lambda m: m.bias if isinstance(m.bias, bool) else m.bias is not None,
}
_IGNORED_ARGS = {"device", "dtype", "inplace", "_weight", "_freeze"}


def _flax_class(name: str):
    if name in ("RNN", "LSTM", "GRU"):
        return getattr(recurrent, name)
    return getattr(fnn, name, None)


def _init_parameters(cls) -> dict[str, inspect.Parameter]:
    """A class's constructor parameters, from the first ``__init__`` in its MRO that names
    them (nn.LSTM's own is ``(*args, **kwargs)``: RNNBase names them)."""
    for c in cls.__mro__:
        params = dict(inspect.signature(c.__init__).parameters)
        params.pop("self", None)
        if any(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params.values()):
            return params
    return {}


def _leaf_spec(m):
    """``(make, why not)`` for a torch.nn leaf layer: ``make()`` builds its flax_arch layer
    (with initial values only), ``why not`` says why it cannot (None when it can)."""
    name = type(m).__name__
    cls = _flax_class(name)
    if cls is None or name not in _LEAF_LAYOUTS:
        return None, "no flax_arch layer"
    params = _init_parameters(cls)

    def read(arg):
        return _READ_ARG[arg](m) if arg in _READ_ARG else getattr(m, arg)

    kwargs = {arg: read(arg) for arg, p in params.items()
              if arg not in _IGNORED_ARGS and (arg in _READ_ARG or hasattr(m, arg))
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    refused = [f"{arg}={read(arg)!r}" for arg, p in _init_parameters(type(m)).items()
               if arg not in params and arg not in _IGNORED_ARGS and p.default is not p.empty
               and hasattr(m, arg) and not _equal(read(arg), p.default)]
    if name in ("Softmax", "LogSoftmax", "Softmin") and m.dim is None:  # flax: the last axis
        refused.append("dim=None (torch's deprecated implicit dim)")
    if refused:
        return None, f"flax_arch's {name} does not take {', '.join(refused)}"
    floats = [t.dtype for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    if "param_dtype" in params and floats:
        kwargs["param_dtype"] = jnp.dtype(str(floats[0]).removeprefix("torch."))
    if "rngs" in params and params["rngs"].default is params["rngs"].empty:
        return (lambda: cls(**kwargs, rngs=nnx.Rngs(0))), None
    return (lambda: cls(**kwargs)), None


def _equal(a, b) -> bool:
    try:
        return bool(a == b) or (isinstance(a, tuple) and len(set(a)) == 1 and a[0] == b)
    except Exception:  # noqa: BLE001 - a value without a plain ==
        return False


def _is_leaf(m) -> bool:
    """A torch.nn layer of that exact type (a subclass is traced through), not a container."""
    import torch

    t = type(m)
    return t is getattr(torch.nn, t.__name__, None) and not isinstance(
        m, (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict))


def _call_leaf(leaf, layout, args, kwargs, rngs):
    x = args[0]
    if layout == _ANY:
        move, wrap = (lambda t: t.a), (lambda y: _T(y, x.p))
    elif layout == _CHANNELS_LAST:
        move, wrap = _T.cl, (lambda y: _T(y, _cl(y.ndim)))
    else:
        move, wrap = _T.torch, _T
    args, kwargs = _tmap(move, args), _tmap(move, kwargs)
    if isinstance(leaf, Stochastic):
        kwargs["rngs"] = rngs
    return _amap(wrap, leaf(*args, **kwargs))


# ----------------------------------------------------------------------------- the program


class _Ref:
    """A reference to an earlier graph node's value."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _Step:
    """One graph node: ``op`` is placeholder, get_attr, call (a function or a method, ``fn``
    its implementation), call_module or output."""

    __slots__ = ("op", "name", "fn", "args", "kwargs", "target", "layout", "inplace")

    def __init__(self, op, name, *, fn=None, args=(), kwargs=None, target=None, layout=None,
                 inplace=False):
        self.op, self.name, self.fn, self.args = op, name, fn, args
        self.kwargs, self.target, self.layout, self.inplace = kwargs or {}, target, layout, inplace


class _Program:
    """One traced graph, translated (hashed by identity: static data of the NNX module).
    ``shapes``: the torch shapes of the inputs it was traced for where its forward read them
    (None: any shapes)."""

    def __init__(self, steps, shapes=None):
        self.steps, self.shapes = tuple(steps), shapes


def _resolve(a, env):
    if isinstance(a, _Ref):
        return env[a.name]
    if isinstance(a, (tuple, list)):
        return type(a)(_resolve(x, env) for x in a)
    if isinstance(a, dict):
        return {k: _resolve(v, env) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_resolve(a.start, env), _resolve(a.stop, env), _resolve(a.step, env))
    return a


def _static(a):
    """A node argument as the program keeps it: nodes as references, torch dtypes as NumPy
    dtypes, devices and memory formats dropped."""
    import torch
    import torch.fx as fx

    if isinstance(a, fx.Node):
        return _Ref(a.name)
    if isinstance(a, torch.dtype):
        return np.dtype(jnp.dtype(str(a).removeprefix("torch.")))
    if isinstance(a, (torch.device, torch.memory_format, torch.layout)):
        return None
    if isinstance(a, torch.Size):
        return tuple(a)
    if isinstance(a, (tuple, list)):
        return type(a)(_static(x) for x in a)
    if isinstance(a, dict):
        return {k: _static(v) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_static(a.start), _static(a.stop), _static(a.step))
    return a


def _where(node) -> str:
    stack = node.meta.get("nn_module_stack")
    return f"node '{node.name}'" + (f" in module '{next(reversed(stack))}'" if stack else "")


def _constant(module, target: str, lifted: dict):
    """The tensor that a get_attr node reads where it is no parameter or buffer: one that fx
    lifted into the graph, or a plain tensor attribute of the module or of a submodule (None
    for a parameter or buffer, which the port holds as the state_dict holds it)."""
    if target in lifted:
        return lifted[target]
    owner, _, name = target.rpartition(".")
    m = module.get_submodule(owner)
    return None if name in m._parameters or name in m._buffers else getattr(m, name)


def _translate(graph, module, lifted: dict, shapes):
    """The graph as a :class:`_Program`, what it cannot translate (``(op, node, why)``), and
    the tensors it reads that are no parameter or buffer (``lifted``: those fx made; the
    others are the module's plain tensor attributes).
    ``shapes``: the input shapes the graph was traced for, where it holds them."""
    table, _ = _function_table()
    steps, problems, constants = [], [], {}
    for node in graph.nodes:
        args, kwargs = _static(node.args), _static(node.kwargs)
        if node.op in ("placeholder", "output"):
            steps.append(_Step(node.op, node.name, args=args))
        elif node.op == "get_attr":
            constant = _constant(module, node.target, lifted)
            if constant is not None:
                constants[node.target] = constant
            steps.append(_Step("get_attr", node.name, target=node.target))
        elif node.op == "call_module":
            m = module.get_submodule(node.target)
            why = _leaf_spec(m)[1]
            if why:
                problems.append((f"torch.nn.{type(m).__name__}", _where(node), why))
            steps.append(_Step("call_module", node.name, args=args, kwargs=kwargs,
                               target=node.target, layout=_LEAF_LAYOUTS.get(type(m).__name__),
                               inplace=getattr(m, "inplace", False) is True))
        else:
            if node.op == "call_method":
                fn, public = _method(node.target), f"torch.Tensor.{node.target}"
                inplace = node.target.endswith("_") and not node.target.endswith("__")
            else:
                fn, public = table.get(node.target), _public_name(node.target)
                if fn is None and isinstance(node.target, type) and hasattr(node.target,
                                                                            "_fields"):
                    fn = node.target  # a namedtuple of outputs (torchvision's GoogLeNet)
                inplace = node.target in {getattr(operator, i) for i in _INPLACE_OPERATORS}
            why = None if fn is not None else "no JAX translation"
            if fn is not None and hasattr(fn, "check"):
                try:
                    why = fn.check(inspect.signature(fn).bind(*args, **kwargs).arguments)
                except TypeError as err:
                    why = f"arguments not understood ({err})"
            if why:
                problems.append((public, _where(node), why))
            steps.append(_Step("call", node.name, fn=fn, args=args, kwargs=kwargs,
                               inplace=inplace or kwargs.get("inplace") is True))
    return _Program(steps, shapes), problems, constants


# ----------------------------------------------------------------------------- the modules


class TracedModule(nnx.Module):
    """A torch submodule that is no torch.nn leaf: its children and its own parameters and
    buffers under their torch names (the root runs the traced graph)."""


class Ported(Stochastic):
    """A torch module rebuilt by :func:`port`. ``ported(*inputs, rngs=None)``: tensors of
    rank >= 3 channels-last in and out (torch's layout with ``channels_last=False``); the
    train-mode graph runs after ``.train()``, the eval-mode one after ``.eval()``; ``rngs``
    feeds dropout and stochastic depth in train mode."""

    def __init__(self, train_program: _Program, eval_program: _Program, channels_last: bool,
                 training: bool):
        self._train_program, self._eval_program = train_program, eval_program
        self._channels_last = channels_last
        self.deterministic = not training  # what nnx's .train() / .eval() set

    def _attr(self, path: str):
        *parent, name = path.split(".")
        owner = functools.reduce(getattr, parent, self)
        obj = getattr(owner, name)
        if isinstance(obj, nnx.Variable):  # a parameter or buffer, in torch's layout
            return _T(jnp.asarray(_rules_for(owner).get(name, IDENTITY).to_torch(obj[...])))
        return obj

    def __call__(self, *inputs, rngs: nnx.Rngs | None = None):
        program = self._eval_program if self.deterministic else self._train_program
        held = (lambda a: _T(a, _cl(a.ndim))) if self._channels_last else _T
        placeholders = [s for s in program.steps if s.op == "placeholder"]
        if len(inputs) > len(placeholders) or any(
                not s.args for s in placeholders[len(inputs):]):
            raise TypeError(f"the ported module takes {len(placeholders)} inputs (the ones "
                            f"after the example inputs keep their defaults); got {len(inputs)}")
        env = {s.name: _amap(lambda a: held(jnp.asarray(a)), x)
               for s, x in zip(placeholders, inputs)}
        if program.shapes is not None:
            got = tuple(env[s.name].shape() if isinstance(env[s.name], _T) else None
                        for s in placeholders[:len(inputs)])
            if got != program.shapes[:len(inputs)]:
                raise ValueError(
                    f"this port was traced for inputs of torch shapes {program.shapes} (its "
                    f"forward reads its inputs' shapes, so fx could only trace it at the "
                    f"example's); got {got}: port it again with examples of these shapes")
        for step in program.steps:
            if step.op == "placeholder":
                if step.name not in env:
                    env[step.name] = step.args[0]
                continue
            if step.op == "get_attr":
                env[step.name] = self._attr(step.target)
                continue
            args, kwargs = _resolve(step.args, env), _resolve(step.kwargs, env)
            if step.op == "output":
                return _tmap(_T.cl if self._channels_last else _T.torch, args[0])
            if step.op == "call_module":
                out = _call_leaf(self._attr(step.target), step.layout, args, kwargs, rngs)
            else:
                if getattr(step.fn, "random", False):
                    kwargs["rngs"] = rngs
                out = step.fn(*args, **kwargs)
            env[step.name] = out
            if step.inplace and step.args and isinstance(step.args[0], _Ref):
                env[step.args[0].name] = out  # later readers of the input see the update
        raise AssertionError("a graph without an output node")


def _fill(node: nnx.Module, m, called: set[str], path: str = "") -> nnx.Module:
    """Gives ``node`` the NNX twins of torch module ``m``'s children and its own parameters
    and buffers."""
    for name, child in m.named_children():
        setattr(node, name, _build(child, called, f"{path}{name}"))
    for name, p in m.named_parameters(recurse=False):
        setattr(node, name, nnx.Param(jnp.asarray(_to_numpy(p))))
    for name, b in m.named_buffers(recurse=False):
        kind = nnx.Variable if name in m._non_persistent_buffers_set else nnx.BatchStat
        setattr(node, name, kind(jnp.asarray(_to_numpy(b))))
    return node


def _build(m, called: set[str], path: str) -> nnx.Module:
    """A torch.nn leaf's flax_arch layer; for any other module (and a leaf the graph never
    calls and that has no flax_arch layer) a :class:`TracedModule` of the same tree."""
    if _is_leaf(m):
        make, why = _leaf_spec(m)
        if why is None:  # abstract: the torch weights give the values, no initialiser runs
            return nnx.eval_shape(make)
        assert path not in called, why  # refused before anything was built
    return _fill(TracedModule(), m, called, f"{path}.")


# ----------------------------------------------------------------------------- port


def _tracers():
    """fx's tracer with the port's leaves, and one whose shape queries answer with the
    example inputs' sizes (for a forward that checks its input's shape: torch.export
    specialises on static shapes the same way)."""
    import torch.fx as fx

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return _is_leaf(m)

    class ShapeProxy(fx.Proxy):
        def size(self, dim=None):
            value = self.node.meta["value"]
            return value.size() if dim is None else value.size(dim)

        def dim(self):
            return self.node.meta["value"].dim()

        def numel(self):
            return self.node.meta["value"].numel()

        shape = property(lambda self: self.node.meta["value"].shape)
        ndim = property(lambda self: self.node.meta["value"].ndim)

        def __len__(self):
            return len(self.node.meta["value"])

        def __iter__(self):  # a tuple-valued node (chunk, split) unpacks to its length
            value = self.node.meta["value"]
            if isinstance(value, (tuple, list)):
                return iter([self[i] for i in range(len(value))])
            return super().__iter__()

    class ShapeTracer(Tracer):
        """Runs the module on the example inputs while tracing, node by node (with fx's
        patches of Module.__call__ and __getattr__ bypassed while it does)."""

        def __init__(self, arguments):
            super().__init__()
            self.arguments, self.eager = iter(arguments), False

        def proxy(self, node):
            return ShapeProxy(node, self)

        def getattr(self, attr, attr_val, parameter_proxy_cache):
            if self.eager:
                return attr_val
            return super().getattr(attr, attr_val, parameter_proxy_cache)

        def call_module(self, m, forward, args, kwargs):
            if self.eager:
                return forward(*args, **kwargs)
            return super().call_module(m, forward, args, kwargs)

        def create_proxy(self, kind, target, args, kwargs, *rest, **kw):
            proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
            node = proxy.node
            a, k = fx.node.map_arg((node.args, node.kwargs), lambda n: n.meta["value"])
            self.eager = True
            try:
                if kind == "placeholder":
                    value = next(self.arguments)
                elif kind == "get_attr":
                    value = functools.reduce(getattr, target.split("."), self.root)
                elif kind == "call_function":
                    value = target(*a, **k)
                elif kind == "call_method":
                    value = getattr(a[0], target)(*a[1:], **k)
                elif kind == "call_module":
                    value = self.root.get_submodule(target)(*a, **k)
                else:
                    value = None
            finally:
                self.eager = False
            node.meta["value"] = value
            return proxy

    return Tracer, ShapeTracer


def _trace(module, example_inputs):
    """The module's fx graph (the forward's arguments after the example inputs at their
    defaults), the tensors fx lifted into it, and the example inputs' shapes where the graph
    holds them (None: the graph works for any shape)."""
    import copy

    import torch

    Tracer, ShapeTracer = _tracers()
    concrete = {}
    for p in list(inspect.signature(module.forward).parameters.values())[len(example_inputs):]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise PortError(f"port: {type(module).__name__}.forward needs argument "
                            f"{p.name!r}; give an example input for it")
        concrete[p.name] = p.default
    before = set(vars(module))
    shapes = None
    try:
        try:
            graph = Tracer().trace(module, concrete_args=concrete or None)
        except Exception as err:  # noqa: BLE001 - fx raises several types for control flow
            inputs = [x.detach().clone() if hasattr(x, "detach") else
                      torch.as_tensor(np.asarray(x)) if hasattr(x, "ndim") else x
                      for x in example_inputs]
            saved = copy.deepcopy(module.state_dict())
            try:
                with torch.no_grad(), torch.random.fork_rng():
                    graph = ShapeTracer([*inputs, *concrete.values()]).trace(
                        module, concrete_args=concrete or None)
            except Exception:  # noqa: BLE001 - data-dependent control flow: fx's own error
                raise PortError(f"port: torch.fx cannot trace {type(module).__name__}: "
                                f"{err}") from err
            finally:  # the eager run may have updated running statistics
                module.load_state_dict(saved)
            shapes = tuple(tuple(x.shape) if hasattr(x, "shape") else None for x in inputs)
    finally:  # fx leaves the tensor constants it lifts on the module: take them back
        added = {name: vars(module)[name] for name in set(vars(module)) - before}
        for name in added:
            delattr(module, name)
    return graph, added, shapes


def port(module, *example_inputs, channels_last: bool = True) -> nnx.Module:
    """Rebuilds the torch module ``module`` as an NNX module with the same state tree.

    ``example_inputs`` are the forward's first arguments (torch tensors or arrays, torch's
    layout); later arguments keep their defaults. The result's state is
    ``module.state_dict()`` under the same names: :func:`flax_arch.torch_state_dict` gives it
    back bit for bit, and :func:`flax_arch.load_torch_state_dict` loads into it. Call it with
    the same inputs, rank >= 3 tensors channels-last, (N, L, C) and (N, H, W, C) (torch's
    layout with ``channels_last=False``); its outputs follow the same convention. It starts
    in the module's mode; ``.train()`` and ``.eval()`` switch it as they switch torch's
    module, branches on ``self.training`` included.

    A torch.nn layer on its own ports to its flax_arch layer. Every operation and module that
    the port cannot translate is named, with its graph node, in one :class:`PortError`
    before anything is built.
    """
    if _is_leaf(module):
        return _port_leaf(module, channels_last)
    modes = {name: m.training for name, m in module.named_modules()}
    programs, problems, constants = {}, {}, {}
    try:
        for training in (True, False):
            module.train(training)
            graph, lifted, shapes = _trace(module, example_inputs)
            programs[training], found, consts = _translate(graph, module, lifted, shapes)
            for problem in found:
                problems.setdefault(problem, []).append("train" if training else "eval")
            constants.update(consts)
    finally:
        for name, m in module.named_modules():
            m.training = modes[name]
    if problems:
        lines = [f"{op} at {where} ({' and '.join(ms)} mode): {why}"
                 for (op, where, why), ms in problems.items()]
        raise PortError(f"port cannot translate {len(lines)} operation(s) of "
                        f"{type(module).__name__}; nothing was built:\n  " + "\n  ".join(lines))
    called = {s.target for p in programs.values() for s in p.steps if s.op == "call_module"}
    root = _fill(Ported(programs[True], programs[False], channels_last, module.training),
                 module, called)
    for path, tensor in constants.items():  # not in the state_dict: plain Variables
        *parent, name = path.split(".")
        setattr(functools.reduce(getattr, parent, root), name,
                nnx.Variable(jnp.asarray(_to_numpy(tensor))))
    _load(root, module)
    root.train() if module.training else root.eval()
    return root


def _load(model: nnx.Module, module) -> None:
    """The torch weights into the model, whose leaf layers are abstract (nnx.eval_shape):
    placeholders first (NumPy zeros: no JAX computation), then every torch value."""
    for path, v in nnx.to_flat_state(nnx.state(model)):
        value = v.get_value()
        if isinstance(value, jax.ShapeDtypeStruct):
            if not isinstance(v, (nnx.Param, nnx.BatchStat)):  # not in any state_dict
                raise AssertionError(f"{'.'.join(map(str, path))}: a {type(v).__name__} that "
                                     "the torch module cannot give a value")
            v.set_value(np.zeros(value.shape, value.dtype))
    load_torch_state_dict(model, module.state_dict())


def _port_leaf(module, channels_last: bool):
    name = type(module).__name__
    make, why = _leaf_spec(module)
    if why:
        raise PortError(f"port cannot translate torch.nn.{name}; nothing was built: {why}")
    if not channels_last and _LEAF_LAYOUTS[name] == _CHANNELS_LAST:
        raise PortError(f"port: torch.nn.{name} on its own ports to flax_arch's {name}, which "
                        "is channels-last; port it with channels_last=True or inside a module")
    leaf = nnx.eval_shape(make)
    _load(leaf, module)
    leaf.train() if module.training else leaf.eval()
    return leaf


def build_torch_module(spec: str, **kwargs):
    """The torch module that ``spec``, ``'package.module:callable'`` (a class or a builder,
    such as ``'torchvision.models:mobilenet_v2'``), builds with ``kwargs`` (the command-line
    tools' way to name a model that is not registered)."""
    import importlib

    import torch

    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise ValueError(f"a torch model is named 'package.module:callable', got {spec!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} (from {spec!r}): {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    module = obj(**kwargs)
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"{spec} built a {type(module).__name__}, not a torch.nn.Module")
    return module
