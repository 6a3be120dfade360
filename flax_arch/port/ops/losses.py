"""torch.nn.functional's losses (what torch's loss modules call), in torch order, with
torch's reductions and its formulas (clamps and epsilons included)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ..tensor import _T
from .registry import FUNCTIONS, op


def _reduction(size_average, reduce, reduction):
    """torch's legacy ``size_average`` / ``reduce`` arguments over ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    return jnp.sum(loss) if reduction == "sum" else jnp.mean(loss)


def loss(*names):
    """A loss ``fn(*arrays in torch order, **options) -> elementwise loss``, reduced as
    ``reduction`` says (``fn`` may reduce itself and return ``(value, True)``)."""

    def register(fn):
        def impl(*args, size_average=None, reduce=None, reduction="mean", **kwargs):
            args = [a.torch() if isinstance(a, _T) else a for a in args]
            kwargs = {k: v.torch() if isinstance(v, _T) else v for k, v in kwargs.items()}
            mode = _reduction(size_average, reduce, reduction)
            out = fn(*args, reduction=mode, **kwargs)
            if isinstance(out, tuple):
                return _T(out[0])
            return _T(_reduce(out, mode))

        return op(*names)(impl)

    return register


@loss("mse_loss")
def _mse(x, y, *, reduction, weight=None):
    out = jnp.square(x - y)
    return out if weight is None else out * weight


@loss("l1_loss")
def _l1(x, y, *, reduction, weight=None):
    out = jnp.abs(x - y)
    return out if weight is None else out * weight


@loss("smooth_l1_loss")
def _smooth_l1(x, y, *, reduction, beta=1.0):
    z = jnp.abs(x - y)
    return z if beta == 0 else jnp.where(z < beta, 0.5 * z * z / beta, z - 0.5 * beta)


@loss("huber_loss")
def _huber(x, y, *, reduction, delta=1.0, weight=None):
    z = jnp.abs(x - y)
    out = jnp.where(z < delta, 0.5 * z * z, delta * (z - 0.5 * delta))
    return out if weight is None else out * weight


@loss("soft_margin_loss")
def _soft_margin(x, y, *, reduction):
    return jnp.log1p(jnp.exp(-y * x))


@loss("margin_ranking_loss")
def _margin_ranking(x1, x2, y, margin=0.0, *, reduction):
    return jnp.maximum(-y * (x1 - x2) + margin, 0)


@loss("hinge_embedding_loss")
def _hinge_embedding(x, y, margin=1.0, *, reduction):
    return (jnp.where(y != 1, jnp.maximum(margin - x, 0), 0)
            + jnp.where(y != -1, x, 0))


@loss("cosine_embedding_loss")
def _cosine_embedding(x1, x2, y, margin=0.0, *, reduction):
    eps = 1e-12
    prod = jnp.sum(x1 * x2, axis=-1)
    cos = prod / jnp.sqrt((jnp.sum(x1 * x1, axis=-1) + eps) * (jnp.sum(x2 * x2, axis=-1) + eps))
    return jnp.where(y == 1, 1 - cos, 0) + jnp.where(y == -1, jnp.maximum(cos - margin, 0), 0)


@loss("kl_div")
def _kl_div(x, t, *, reduction, log_target=False):
    out = jnp.exp(t) * (t - x) if log_target else jax.scipy.special.xlogy(t, t) - t * x
    if reduction == "batchmean":
        return jnp.sum(out) / (x.shape[0] if x.ndim else 1), True
    return out


@loss("binary_cross_entropy")
def _bce(x, t, weight=None, *, reduction):
    out = -(t * jnp.maximum(jnp.log(x), -100) + (1 - t) * jnp.maximum(jnp.log1p(-x), -100))
    return out if weight is None else out * weight


@loss("binary_cross_entropy_with_logits")
def _bce_logits(x, t, weight=None, *, reduction, pos_weight=None):
    softplus = jnp.log1p(jnp.exp(-jnp.abs(x))) + jnp.maximum(-x, 0)  # log(1 + exp(-x))
    scale = 1 if pos_weight is None else (pos_weight - 1) * t + 1
    out = (1 - t) * x + scale * softplus
    return out if weight is None else out * weight


@loss("poisson_nll_loss")
def _poisson_nll(x, t, log_input=True, full=False, *, reduction, eps=1e-8):
    out = jnp.exp(x) - t * x if log_input else x - t * jnp.log(x + eps)
    if full:
        safe = jnp.where(t > 1, t, 2.0)
        stirling = safe * jnp.log(safe) - safe + 0.5 * jnp.log(2 * math.pi * safe)
        out = out + jnp.where(t > 1, stirling, 0)
    return out


@loss("gaussian_nll_loss")
def _gaussian_nll(x, t, var, full=False, eps=1e-6, *, reduction):
    if var.shape != x.shape:
        if x.shape[:-1] == var.shape:
            var = var[..., None]  # one variance per sample, homoscedastic
    var = var + lax.stop_gradient(jnp.maximum(var, eps) - var)  # torch clamps without grad
    out = 0.5 * (jnp.log(var) + jnp.square(x - t) / var)
    return out + 0.5 * math.log(2 * math.pi) if full else out


@loss("multilabel_soft_margin_loss")
def _multilabel_soft_margin(x, y, weight=None, *, reduction):
    out = -(y * jax.nn.log_sigmoid(x) + (1 - y) * jax.nn.log_sigmoid(-x))
    if weight is not None:
        out = out * weight
    return jnp.sum(out, axis=-1) / x.shape[-1]


@loss("multi_margin_loss")
def _multi_margin(x, y, p=1, margin=1.0, weight=None, *, reduction):
    batched = x.ndim == 2
    x2, y2 = (x, y) if batched else (x[None], jnp.reshape(y, (1,)))
    xy = jnp.take_along_axis(x2, y2[:, None], axis=1)
    z = jnp.maximum(margin - xy + x2, 0)
    h = z if p == 1 else z * z
    if weight is not None:
        h = h * weight[y2][:, None]
    others = jnp.arange(x2.shape[1])[None] != y2[:, None]
    out = jnp.sum(jnp.where(others, h, 0), axis=1) / x2.shape[1]
    return out if batched else out[0]


@loss("multilabel_margin_loss")
def _multilabel_margin(x, y, *, reduction):
    batched = x.ndim == 2
    x2, y2 = (x, y) if batched else (x[None], y[None])
    valid = jnp.cumprod(y2 != -1, axis=1).astype(bool)  # the targets before the first -1
    classes = jnp.arange(x2.shape[1])
    is_target = jnp.any(valid[:, :, None] & (y2[:, :, None] == classes), axis=1)
    xt = jnp.take_along_axis(x2, jnp.where(valid, y2, 0), axis=1)  # (N, k)
    z = jnp.maximum(1 - xt[:, :, None] + x2[:, None, :], 0)  # (N, k, C)
    mask = valid[:, :, None] & ~is_target[:, None, :]
    out = jnp.sum(jnp.where(mask, z, 0), axis=(1, 2)) / x2.shape[1]
    return out if batched else out[0]


def _nll(logp, target, weight, ignore_index, reduction):
    """nll over class axis 1 (or 0 for an unbatched input): the loss and its weights."""
    axis = 1 if logp.ndim >= 2 else 0
    w = jnp.ones(logp.shape[axis], logp.dtype) if weight is None else weight
    keep = target != ignore_index
    safe = jnp.where(keep, target, 0)
    picked = jnp.squeeze(jnp.take_along_axis(logp, jnp.expand_dims(safe, axis), axis=axis),
                         axis)
    wt = jnp.where(keep, w[safe], 0)
    return -picked * wt, wt


@loss("nll_loss")
def _nll_loss(x, target, weight=None, *, reduction, ignore_index=-100):
    out, wt = _nll(x, target, weight, ignore_index, reduction)
    if reduction == "mean":
        return jnp.sum(out) / jnp.sum(wt), True
    return out


@loss("cross_entropy")
def _cross_entropy(x, target, weight=None, *, reduction, ignore_index=-100,
                   label_smoothing=0.0):
    axis = 1 if x.ndim >= 2 else 0
    logp = jax.nn.log_softmax(x, axis=axis)
    n_classes = x.shape[axis]
    wshape = [1] * x.ndim
    wshape[axis] = n_classes
    if jnp.issubdtype(target.dtype, jnp.floating):  # class probabilities
        w = 1 if weight is None else weight.reshape(wshape)
        t = target * (1 - label_smoothing) + label_smoothing / n_classes
        out = -jnp.sum(logp * t * w, axis=axis)
        if reduction == "mean":
            return jnp.sum(out) / (x.size // n_classes), True
        return out
    out, wt = _nll(logp, target, weight, ignore_index, reduction)
    if label_smoothing > 0:
        w = 1 if weight is None else weight.reshape(wshape)
        smooth = jnp.where(target != ignore_index, -jnp.sum(logp * w, axis=axis), 0)
        if reduction == "mean":
            total = (1 - label_smoothing) * jnp.sum(out) + label_smoothing / n_classes * jnp.sum(
                smooth)
            return total / jnp.sum(wt), True
        out = (1 - label_smoothing) * out + label_smoothing / n_classes * smooth
    if reduction == "mean":
        return jnp.sum(out) / jnp.sum(wt), True
    return out


def _options_check(a):
    options = a.get("options")
    dtype = getattr(options, "acc_dtype", None)
    return None if dtype is None else f"options.acc_dtype={dtype} (accumulation in another dtype)"


@op("linear_cross_entropy", check=_options_check)
def _linear_cross_entropy(x, linear_weight, target, *, linear_bias=None, weight=None,
                          reduction="mean", ignore_index=None, label_smoothing=0.0,
                          options=None):
    """cross_entropy(linear(x, linear_weight, linear_bias), target): torch computes it in
    batch chunks (``options``), the same mathematics unless it accumulates in another dtype."""
    a, w = x.torch(), linear_weight.torch()  # w: (classes, *out_features, in_features)
    logits = jnp.matmul(a, w.reshape(-1, w.shape[-1]).T)
    if linear_bias is not None:
        logits = logits + linear_bias.torch().reshape(-1)
    logits = logits.reshape(*a.shape[:-1], *w.shape[:-1])
    return FUNCTIONS["cross_entropy"](
        _T(logits), target, weight, reduction=reduction,
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=label_smoothing)
