"""Attention: ``F.scaled_dot_product_attention`` and ``F.multi_head_attention_forward``
(what nn.MultiheadAttention and the Transformer layers call), step by step as torch's
reference implementation, masks, ``need_weights``, ``is_causal``, ``bias_k`` / ``bias_v``,
``add_zero_attn`` and dropout included, in torch order."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..tensor import _T
from .nn import _need_rngs
from .registry import op


def _arr(v):
    return v.torch() if isinstance(v, _T) else v


def _float_mask(mask, dtype):
    """torch's _canonical_mask: a boolean mask (True: masked) as -inf where True."""
    if mask is None or jnp.issubdtype(mask.dtype, jnp.floating):
        return mask
    return jnp.where(mask, -jnp.inf, 0.0).astype(dtype)


def _dropout(a, p, rngs, what):
    if p == 0:
        return a
    keep = jax.random.bernoulli(_need_rngs(rngs, what), 1 - p, a.shape)
    return jnp.where(keep, a / (1 - p), 0).astype(a.dtype)


def _safe_softmax(s):
    """softmax over the last axis; a row masked everywhere gives zeros, as torch's
    scaled_dot_product_attention (its _safe_softmax), not NaN."""
    out = jax.nn.softmax(s, axis=-1)
    return jnp.where(jnp.all(s == -jnp.inf, axis=-1, keepdims=True), 0.0, out)


def _sdpa(q, k, v, mask, dropout_p, is_causal, scale, rngs):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = jnp.matmul(q * math.sqrt(scale), jnp.swapaxes(k, -1, -2) * math.sqrt(scale))
    if is_causal:
        causal = jnp.tril(jnp.ones((q.shape[-2], k.shape[-2]), bool))
        s = jnp.where(causal, s, -jnp.inf)
    if mask is not None:
        s = jnp.where(mask, s, -jnp.inf) if mask.dtype == jnp.bool_ else s + mask
    weights = _dropout(_safe_softmax(s), dropout_p, rngs, "scaled_dot_product_attention")
    return jnp.matmul(weights, v)


@op("scaled_dot_product_attention", random=True)
def _scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                  is_causal=False, scale=None, enable_gqa=False, *,
                                  rngs=None):
    q, k, v = query.torch(), key.torch(), value.torch()
    if enable_gqa and k.shape[-3] != q.shape[-3]:  # grouped-query: repeat the kv heads
        k = jnp.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
        v = jnp.repeat(v, q.shape[-3] // v.shape[-3], axis=-3)
    return _T(_sdpa(q, k, v, _arr(attn_mask), dropout_p, is_causal, scale, rngs))


@op("multi_head_attention_forward", random=True)
def _multi_head_attention_forward(
        query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
        bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
        training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
        use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
        v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
        is_causal=False, *, rngs=None):
    q, k, v = query.torch(), key.torch(), value.torch()
    kpm, mask = _arr(key_padding_mask), _arr(attn_mask)
    batched = q.ndim == 3
    if not batched:  # (L, E) -> (L, 1, E)
        q, k, v = q[:, None], k[:, None], v[:, None]
        kpm = None if kpm is None else kpm[None]
    tgt_len, bsz, embed_dim = q.shape
    head_dim = embed_dim // num_heads
    kpm = _float_mask(kpm, q.dtype)
    if is_causal and kpm is None and not need_weights:
        mask = None  # the causal mask itself, below
    else:
        mask = _float_mask(mask, q.dtype)
        if kpm is not None:
            is_causal = False

    def linear(x, w, b):
        y = x @ w.T
        return y if b is None else y + b

    b = _arr(in_proj_bias)
    bq, bk, bv = (None, None, None) if b is None else jnp.split(b, 3)
    if not use_separate_proj_weight:
        wq, wk, wv = jnp.split(_arr(in_proj_weight), 3)
    else:
        wq, wk, wv = _arr(q_proj_weight), _arr(k_proj_weight), _arr(v_proj_weight)
    q, k, v = linear(q, wq, bq), linear(k, wk, bk), linear(v, wv, bv)

    if mask is not None and mask.ndim == 2:
        mask = mask[None]
    if bias_k is not None:  # one more key and value, attended by every query
        k = jnp.concatenate([k, jnp.broadcast_to(_arr(bias_k), (1, bsz, embed_dim))])
        v = jnp.concatenate([v, jnp.broadcast_to(_arr(bias_v), (1, bsz, embed_dim))])
        mask = None if mask is None else jnp.pad(mask, [(0, 0), (0, 0), (0, 1)])
        kpm = None if kpm is None else jnp.pad(kpm, [(0, 0), (0, 1)])

    q = jnp.swapaxes(q.reshape(tgt_len, bsz * num_heads, head_dim), 0, 1)
    k = (_arr(static_k) if static_k is not None
         else jnp.swapaxes(k.reshape(k.shape[0], bsz * num_heads, head_dim), 0, 1))
    v = (_arr(static_v) if static_v is not None
         else jnp.swapaxes(v.reshape(v.shape[0], bsz * num_heads, head_dim), 0, 1))
    if add_zero_attn:
        k = jnp.concatenate([k, jnp.zeros((bsz * num_heads, 1, head_dim), k.dtype)], axis=1)
        v = jnp.concatenate([v, jnp.zeros((bsz * num_heads, 1, head_dim), v.dtype)], axis=1)
        mask = None if mask is None else jnp.pad(mask, [(0, 0), (0, 0), (0, 1)])
        kpm = None if kpm is None else jnp.pad(kpm, [(0, 0), (0, 1)])
    src_len = k.shape[1]
    if kpm is not None:
        kpm = jnp.broadcast_to(kpm[:, None, None, :], (bsz, num_heads, 1, src_len))
        kpm = kpm.reshape(bsz * num_heads, 1, src_len)
        mask = kpm if mask is None else mask + kpm
    if not training:
        dropout_p = 0.0

    if need_weights:
        s = jnp.matmul(q * math.sqrt(1.0 / head_dim), jnp.swapaxes(k, -2, -1))
        if mask is not None:
            s = s + mask
        weights = jax.nn.softmax(s, axis=-1)
        dropped = _dropout(weights, dropout_p, rngs, "multi_head_attention_forward")
        out = jnp.matmul(dropped, v)  # (B * heads, L, head_dim)
        out = jnp.swapaxes(out, 0, 1).reshape(tgt_len * bsz, embed_dim)
        out = linear(out, _arr(out_proj_weight), _arr(out_proj_bias))
        out = out.reshape(tgt_len, bsz, -1)
        weights = weights.reshape(bsz, num_heads, tgt_len, src_len)
        if average_attn_weights:
            weights = jnp.mean(weights, axis=1)
        if not batched:
            out, weights = out[:, 0], weights[0]
        return _T(out), _T(weights)

    if mask is not None:
        mask = mask[None] if mask.shape[0] == 1 else mask.reshape(bsz, num_heads, -1, src_len)
    q = q.reshape(bsz, num_heads, tgt_len, head_dim)
    k = k.reshape(bsz, num_heads, src_len, head_dim)
    v = v.reshape(bsz, num_heads, src_len, head_dim)
    out = _sdpa(q, k, v, mask, dropout_p, is_causal, None, rngs)
    out = jnp.transpose(out, (2, 0, 1, 3)).reshape(bsz * tgt_len, embed_dim)
    out = linear(out, _arr(out_proj_weight), _arr(out_proj_bias)).reshape(tgt_len, bsz, -1)
    if not batched:
        out = out[:, 0]
    return _T(out), None
