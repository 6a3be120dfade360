"""torch.nn.functional's layers as functions: linear, convolutions, layer norm, padding,
interpolation, pools (as the flax_arch layer of the same arguments), embedding, dropout and
stochastic depth, and the matrix products."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from flax_arch import nn as fnn
from flax_arch.nn.upsampling import _resample

from ..leaves import _init_parameters
from ..tensor import _T, _amap, _cl, _tmap
from .registry import op


def _bcast(v: _T | None, r: int):
    """A torch-order parameter of trailing shape, as an array of rank r."""
    if v is None:
        return None
    a = v.torch()
    return a.reshape((1,) * (r - a.ndim) + a.shape)


@op("layer_norm")
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


@op("linear")
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


def _batched(n: int, fn):
    """``fn`` on a batched (N, C, *spatial) input; torch's unbatched (C, *spatial) form gets
    a batch axis of one, removed after."""

    def impl(x, *args, **kwargs):
        if x.ndim == n + 1:
            return _squeeze_batch(fn(_T(x.torch()[None]), *args, **kwargs))
        return fn(x, *args, **kwargs)

    return impl


def _squeeze_batch(y: _T) -> _T:
    return _T(y.torch()[0])


def _conv(n: int):
    """F.conv1d / 2d / 3d: channels-last input, torch-layout (O, I/g, *k) weight."""

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

    return _batched(n, impl)


def _conv_transpose(n: int):
    """F.conv_transpose1d / 2d / 3d: the gradient of a convolution, as a convolution of the
    input dilated by the stride with the flipped kernel; torch-layout (I, O/g, *k) weight."""

    def impl(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
             dilation=1):
        w = weight.torch()
        cin, coutg, *k = w.shape
        w = w.reshape(groups, cin // groups, coutg, *k)
        w = jnp.swapaxes(w, 1, 2).reshape(groups * coutg, cin // groups, *k)
        w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
        st, dil = _ntuple(stride, n), _ntuple(dilation, n)
        pads = [(d * (kk - 1) - p, d * (kk - 1) - p + o) for kk, p, o, d in zip(
            k, _ntuple(padding, n), _ntuple(output_padding, n), dil)]
        lhs = "N" + "DHW"[3 - n:] + "C"
        y = lax.conv_general_dilated(x.cl(), w, (1,) * n, pads, lhs_dilation=st,
                                     rhs_dilation=dil,
                                     dimension_numbers=(lhs, "OI" + "DHW"[3 - n:], lhs),
                                     feature_group_count=groups)
        if bias is not None:
            y = y + bias.torch().reshape((1,) * (n + 1) + (-1,))
        return _T(y, _cl(n + 2))

    return _batched(n, impl)


@op("bilinear")
def _bilinear(x1, x2, weight, bias=None):
    y = jnp.einsum("...i,oij,...j->...o", x1.torch(), weight.torch(), x2.torch())
    return _T(y if bias is None else y + bias.torch())


def _flax_layer(name: str):
    """A functional pool (F.max_pool2d, F.adaptive_avg_pool2d, ...) as the flax_arch layer of
    the same arguments, on a channels-last input."""

    def impl(x, *args, **kwargs):
        cls = getattr(fnn, name)
        params = _init_parameters(cls)
        kwargs = {k: v for k, v in kwargs.items() if k in params or v not in (False, None)}
        return _amap(lambda y: _T(y, _cl(y.ndim)), cls(*args, **kwargs)(x.cl()))

    return impl


@op("pad")
def _pad(x, pad, mode="constant", value=None):
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ax(x.ndim - 1 - i)] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":  # lax.pad also crops, for negative widths, as torch does
        v = jnp.asarray(0 if value is None else value, x.a.dtype)
        return _T(lax.pad(x.a, v, [(lo, hi, 0) for lo, hi in widths]), x.p)
    modes = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    return _T(jnp.pad(x.a, widths, mode=modes[mode]), x.p)


@op("interpolate", check=lambda a: "antialias=True" if a.get("antialias") else None)
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


def _need_rngs(rngs, what):
    if rngs is None:
        raise ValueError(f"{what} in train mode draws randomness: port the model with "
                         "rngs=nnx.Rngs(...), or call it with rngs=nnx.Rngs(dropout=...)")
    return rngs.dropout()


@op("dropout", random=True)
def _dropout(x, p=0.5, training=True, inplace=False, *, rngs=None):
    if not training or p == 0:
        return x
    keep = jax.random.bernoulli(_need_rngs(rngs, "dropout"), 1 - p, x.a.shape)
    return _T(jnp.where(keep, x.a / (1 - p), 0).astype(x.a.dtype), x.p)


@op("stochastic_depth", random=True)
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


def _embedding_check(a):
    if a.get("max_norm") is not None:
        return "max_norm (renormalises the weight in place)"
    return "scale_grad_by_freq=True" if a.get("scale_grad_by_freq") else None


@op("embedding", check=_embedding_check)
def _embedding(indices, weight, padding_idx=None, max_norm=None, norm_type=2.0,
               scale_grad_by_freq=False, sparse=False):
    w = weight.torch()
    if padding_idx is not None:  # torch sends no gradient to the padding row
        row = jnp.arange(w.shape[0])[:, None] == padding_idx % w.shape[0]
        w = jnp.where(row, lax.stop_gradient(w), w)
    return _T(jnp.take(w, indices.torch(), axis=0))


for _name, _impl in {
        "conv1d": _conv(1), "conv2d": _conv(2), "conv3d": _conv(3),
        "conv_transpose1d": _conv_transpose(1), "conv_transpose2d": _conv_transpose(2),
        "conv_transpose3d": _conv_transpose(3),
        "matmul": _torch_order(jnp.matmul), "mm": _torch_order(jnp.matmul),
        "bmm": _torch_order(jnp.matmul), "einsum": _torch_order(jnp.einsum),
}.items():
    op(_name)(_impl)

# functional pools, as the flax_arch layer of the same arguments (where there is one)
for _n in (1, 2, 3):
    for _f, _layer in (("max_pool", "MaxPool"), ("avg_pool", "AvgPool"),
                       ("adaptive_avg_pool", "AdaptiveAvgPool"),
                       ("adaptive_max_pool", "AdaptiveMaxPool")):
        if hasattr(fnn, f"{_layer}{_n}d"):
            op(f"{_f}{_n}d")(_flax_layer(f"{_layer}{_n}d"))


def _channels(v, r):
    """A per-channel (C,) vector as an array that broadcasts over a torch (N, C, *) value."""
    return None if v is None else v.torch().reshape((1, -1) + (1,) * (r - 2))


@op("batch_norm", writes=True)
def _batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
                momentum=0.1, eps=1e-5):
    """F.batch_norm over every axis but the channel axis 1; in training, on the batch's
    statistics, with the running statistics updated in place as torch's (unbiased var)."""
    a, r = x.torch(), x.ndim
    axes = tuple(d for d in range(r) if d != 1)
    updates = {}
    if training or running_mean is None:
        mean = jnp.mean(a, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(a - mean), axis=axes, keepdims=True)
        if training and running_mean is not None:
            n = a.size // a.shape[1]
            m = 0.1 if momentum is None else momentum
            updates[1] = _T((1 - m) * running_mean.torch() + m * mean.reshape(-1))
            updates[2] = _T((1 - m) * running_var.torch() + m * var.reshape(-1) * n / (n - 1))
    else:
        mean, var = _channels(running_mean, r), _channels(running_var, r)
    y = (a - mean) * lax.rsqrt(var + eps)
    if weight is not None:
        y = y * _channels(weight, r)
    if bias is not None:
        y = y + _channels(bias, r)
    return _T(y), updates


@op("aten.batch_norm", writes=True)
def _torch_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
                      cudnn_enabled=True):
    """``torch.batch_norm`` (and ATen's): F.batch_norm's arguments in another order (timm's
    TF-ported EfficientNetV2 calls it)."""
    out, updates = _batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                               eps)
    return out, {{1: 3, 2: 4}[i]: value for i, value in updates.items()}


@op("group_norm")
def _group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    a, r = x.torch(), x.ndim
    g = a.reshape(a.shape[0], num_groups, -1)
    mean = jnp.mean(g, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=-1, keepdims=True)
    y = ((g - mean) * lax.rsqrt(var + eps)).reshape(a.shape)
    if weight is not None:
        y = y * _channels(weight, r)
    if bias is not None:
        y = y + _channels(bias, r)
    return _T(y)


@op("normalize")
def _normalize(x, p=2.0, dim=1, eps=1e-12, out=None):
    a, i = x.a, x.ax(dim)
    if p == 2:
        norm = jnp.sqrt(jnp.sum(jnp.square(a), axis=i, keepdims=True))
    else:
        norm = jnp.sum(jnp.abs(a) ** p, axis=i, keepdims=True) ** (1 / p)
    return _T(a / jnp.maximum(norm, eps), x.p)


@op("bernoulli", random=True)
def _bernoulli(x, p=None, *, generator=None, rngs=None):
    """torch.bernoulli(probabilities) / Tensor.bernoulli_(p): ones with probability p."""
    prob = x.a if p is None else (p.to(x.p) if isinstance(p, _T) else p)
    keep = jax.random.bernoulli(_need_rngs(rngs, "bernoulli"), prob, x.a.shape)
    return _T(keep.astype(x.a.dtype), x.p)
