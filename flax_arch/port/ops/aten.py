"""ATen ops (torch.export's graph) whose signature is not that of the torch function of the
same name; the others (``aten.add.Tensor``, ``aten.linear.default``, ...) are translated by
that function (:func:`flax_arch.port.translate._aten`)."""

from __future__ import annotations

import jax.numpy as jnp

from ..tensor import _T
from .nn import _dropout, _embedding, _layer_norm
from .registry import FUNCTIONS, op
from .shape import _arange, _getitem, _reshape


@op("aten.embedding")
def _aten_embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return _embedding(indices, weight, None if padding_idx == -1 else padding_idx,
                      scale_grad_by_freq=scale_grad_by_freq)


@op("aten.slice")
def _aten_slice(x, dim=0, start=None, end=None, step=1):
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(start, end, step)
    return _getitem(x, tuple(idx))


@op("aten.select")
def _aten_select(x, dim, index):
    idx = [slice(None)] * x.ndim
    idx[dim] = index
    return _getitem(x, tuple(idx))


@op("aten.view", "aten.reshape", "aten._unsafe_view")
def _aten_view(x, size):
    return _reshape(x, tuple(size))


@op("aten.expand")
def _aten_expand(x, size, implicit=False):
    size = tuple(size)
    old = (1,) * (len(size) - x.ndim) + x.shape()
    return _T(jnp.broadcast_to(x.torch(), tuple(n if n != -1 else m for n, m in zip(size, old))))


@op("aten.arange")
def _aten_arange(*args, dtype=None, layout=None, device=None, pin_memory=None):
    return _arange(*args, dtype=dtype)


@op("aten._to_copy", "aten.to")
def _aten_to_copy(x, *args, dtype=None, **kwargs):
    for a in args:
        if hasattr(a, "kind"):  # a dtype given positionally (aten.to.dtype)
            dtype = a
    return x if dtype is None else _T(x.a.astype(dtype), x.p)


@op("aten.dropout", random=True)
def _aten_dropout(x, p, train, *, rngs=None):
    return _dropout(x, p, train, rngs=rngs)


@op("aten.layer_norm")
def _aten_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return _layer_norm(x, normalized_shape, weight, bias, eps)


@op("aten.lift_fresh_copy", "aten.alias")
def _aten_copy(x, *, memory_format=None):
    """A copy or an alias of a tensor (a constant lifted into the graph, GPT-Neo's masked
    bias; OPT's alias): JAX's arrays are values already."""
    return x


@op("aten.copy")
def _aten_copy_into(x, src, non_blocking=False):
    """``x.copy_(src)`` (in place: the graph's later readers of ``x`` see the result):
    ``src`` broadcast to ``x``'s shape, in ``x``'s dtype and layout."""
    a = jnp.broadcast_to(src.torch() if isinstance(src, _T) else src, x.shape())
    return _T(_T(a.astype(x.a.dtype)).to(x.p), x.p)


op("copy", method_only=True)(_aten_copy_into)  # Tensor.copy_ in an fx graph


@op("aten.sym_size")
def _aten_sym_size(x, dim):
    """A size that torch.export kept symbolic (the length a tensor of repeats gives): the
    value's own, as the port runs at the example's shapes."""
    return x.shape()[dim]


@op("aten.gather")
def _aten_gather(x, dim, index, sparse_grad=False):
    return _T(jnp.take_along_axis(x.torch(), index.torch(), axis=dim % x.ndim))


op("gather")(_aten_gather)


@op("aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_constrain_range_for_size")
def _aten_assert(*args, **kwargs):
    """torch.export's checks of the example's metadata: nothing to compute."""
    return None


@op("aten.index")
def _aten_index(x, indices):
    return _T(x.torch()[tuple(slice(None) if i is None else i.torch() for i in indices)])


@op("aten.diff")
def _aten_diff(x, n=1, dim=-1, prepend=None, append=None):
    pre = None if prepend is None else prepend.torch()
    post = None if append is None else append.torch()
    return _T(jnp.diff(x.torch(), n, axis=dim, prepend=pre, append=post))


@op("aten.addmm")
def _aten_addmm(bias, a, b, *, beta=1, alpha=1):
    return _T(beta * bias.torch() + alpha * jnp.matmul(a.torch(), b.torch()))


@op("aten.full_like")
def _aten_full_like(x, fill_value, *, dtype=None, layout=None, device=None,
                    pin_memory=None, memory_format=None):
    return _T(jnp.full(x.a.shape, fill_value, dtype=dtype or x.a.dtype), x.p)


@op("aten.full")
def _aten_full(size, fill_value, *, dtype=None, layout=None, device=None, pin_memory=None):
    return _T(jnp.full(tuple(size), fill_value, dtype=dtype or jnp.float32))


for _aten_name, _torch_name in {"__and__": "and_", "__or__": "or_", "bitwise_and": "and_",
                                "bitwise_or": "or_", "bitwise_not": "invert",
                                "logical_not": "invert"}.items():
    op(f"aten.{_aten_name}")(FUNCTIONS[_torch_name])
