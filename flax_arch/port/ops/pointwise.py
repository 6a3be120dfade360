"""Elementwise ops (arithmetic, comparisons, activations) under torch's broadcasting."""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
from jax import lax

from ..tensor import _T
from .registry import op


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


def _rsqrt(x):
    """torch's rsqrt on CPU: ``1 / sqrt(x)``, two correctly rounded steps (its vector kernel
    divides by ``sqrt``), where XLA's rsqrt rounds otherwise in a third of float32 (and
    float64) values. The barrier keeps XLA from fusing the two back into its rsqrt under
    jit. Transformers' RMSNorm takes it in float32 inside a float64 model, where one ulp of
    float32 is 1e-7 of the output."""
    return 1 / lax.optimization_barrier(jnp.sqrt(x))


def _rsub(x, y, alpha=1):
    """``torch.rsub``: ``y - alpha * x`` (``1 - x`` in an export graph)."""
    return y - x if alpha == 1 else y - alpha * x


def _add(x, y, alpha=1):
    return x + y if alpha == 1 else x + alpha * y


def _sub(x, y, alpha=1):
    return x - y if alpha == 1 else x - alpha * y


_POINTWISE = {
    "add": _add, "sub": _sub, "rsub": _rsub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "neg": operator.neg, "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge, "and_": operator.and_,
    "or_": operator.or_, "invert": operator.invert,
    "div": _div, "multiply": operator.mul, "subtract": _sub, "true_divide": operator.truediv,
    "floor_divide": jnp.floor_divide, "maximum": jnp.maximum, "minimum": jnp.minimum,
    "where": jnp.where, "exp": jnp.exp, "log": jnp.log, "log1p": jnp.log1p,
    "expm1": jnp.expm1, "sqrt": jnp.sqrt, "rsqrt": _rsqrt, "abs": jnp.abs,
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
_POINTWISE["addcmul"] = lambda x, t1, t2, value=1: x + value * t1 * t2
_POINTWISE["addcdiv"] = lambda x, t1, t2, value=1: x + value * t1 / t2
_POINTWISE["masked_fill"] = lambda x, mask, value: jnp.where(mask, value, x).astype(x.dtype)

for _name, _fn in _POINTWISE.items():
    op(_name)(_pointwise(_fn))

