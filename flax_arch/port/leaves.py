"""torch.nn leaf layers: each becomes the flax_arch layer of the same name, built from the
torch layer's constructor arguments, and is called in the layout it takes."""

from __future__ import annotations

import functools
import inspect

import jax.numpy as jnp
from flax import nnx

from flax_arch import nn as fnn
from flax_arch.models import recurrent
from flax_arch.nn.containers import Stochastic

from .tensor import _T, _amap, _cl, _tmap


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
    needs_rngs = "rngs" in params and params["rngs"].default is params["rngs"].empty

    def make(klass=cls):  # rngs for the initialisers (the torch weights replace them)
        return klass(**kwargs, **({"rngs": nnx.Rngs(0)} if needs_rngs else {}))

    return make, None


def _equal(a, b) -> bool:
    try:
        return bool(a == b) or (isinstance(a, tuple) and len(set(a)) == 1 and a[0] == b)
    except Exception:  # noqa: BLE001 - a value without a plain ==
        return False


def _is_leaf(m) -> bool:
    """A torch.nn layer of that exact type (a subclass is traced through), not a container,
    that has a flax_arch layer taking its arguments. Any other torch.nn layer (a loss, a cell,
    attention, a layer with an argument flax_arch's does not take) is traced through, to the
    functional ops of its forward."""
    import torch

    t = type(m)
    return (t is getattr(torch.nn, t.__name__, None)
            and not isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList,
                                   torch.nn.ModuleDict))
            and _leaf_spec(m)[1] is None)


def _channel_axis(name: str, ndim: int) -> int | None:
    """The axis of a torch.nn layer's input that holds the channels (None: no channel axis)."""
    if name.startswith("BatchNorm"):
        return 1  # (N, C) or (N, C, *): always batched
    if name[-2:] in ("1d", "2d", "3d") and name not in ("Softmax2d", "Dropout2d"):
        return 1 if ndim == int(name[-2]) + 2 else 0  # batched, or torch's unbatched form
    if name in ("GroupNorm", "LocalResponseNorm", "PReLU"):
        return 1 if ndim >= 2 else None
    if name in ("Flatten", "Unflatten"):
        return 1 if ndim >= 3 else None
    if name in ("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "Dropout2d"):
        return 1
    if name in ("Softmax2d", "PixelShuffle", "PixelUnshuffle"):  # (*, C, H, W)
        return ndim - 3
    return None


@functools.cache
def _in_torch_layout(cls):
    """``cls``, a channels-last flax_arch layer, called in torch's layout: a subclass (the
    same state tree, the same weight rules) whose call moves the channel axis of its inputs
    last and of its outputs back (a lone layer ported with ``channels_last=False``)."""

    def __call__(self, x, *args, **kwargs):
        c = _channel_axis(cls.__name__, x.ndim)
        if c is None:
            return cls.__call__(self, x, *args, **kwargs)
        r = x.ndim

        def into(a):
            return jnp.moveaxis(a, c, -1) if getattr(a, "ndim", None) == r else a

        def back(a):
            if not hasattr(a, "ndim") or a.ndim < 2:
                return a
            return jnp.moveaxis(a, -1, c if a.ndim == r else 1)

        args, kwargs = _amap(into, args), {k: _amap(into, v) for k, v in kwargs.items()}
        return _amap(back, cls.__call__(self, into(jnp.asarray(x)), *args, **kwargs))

    return type(cls.__name__, (cls,), {"__call__": __call__, "__module__": __name__,
                                       "__qualname__": f"_in_torch_layout.{cls.__name__}"})


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
        if (rngs is None and isinstance(leaf, nnx.Dropout) and not leaf.deterministic
                and leaf.rate > 0 and leaf.rngs is None):
            raise ValueError(f"{type(leaf).__name__} in train mode draws randomness: port the "
                             "model with rngs=nnx.Rngs(...), or call it with "
                             "rngs=nnx.Rngs(dropout=...)")
        kwargs["rngs"] = rngs
    return _amap(wrap, leaf(*args, **kwargs))

