"""Backend-specific lowerings: one piece of mathematics, two forms, chosen per platform.

Some of XLA's own operations are slow on one backend and fast on another. Where a rewrite
was measured faster on a platform, the layer calls a function here, which emits both forms
through :func:`jax.lax.platform_dependent`: the compiler keeps the one for the platform the
computation is lowered for (not the default backend's), and every other platform gets XLA's
own operation. Both forms are the same sums and pass the same parity tests.

=================  =========================================  ==============================
function           CPU form (measured on XLA:CPU)             elsewhere
=================  =========================================  ==============================
``conv``           on a small map (fewer positions than       the convolution
                   kernel taps): one matmul over the windows
                   ("im2col"), taps that read only padding
                   dropped: 3x3 512->512 on 8x2x2 forward
                   ~110 ms -> ~1.4 ms, input gradient alike
                   a strided one of a one-channel input: a
                   stride-1 convolution of the input folded
                   by the stride (SEGAN's kernel-31 stride-4
                   block: forward 3x, gradients 3x faster)
``grouped_conv``   one plain convolution per group (<= 64):   ``feature_group_count``
                   a ResNeXt layer's backward 4.4 s -> 40 ms
``conv_transpose`` one "sub-pixel" stride-1 convolution of    the input dilated by the stride
                   the undilated input, phases interleaved:   (the gradient of a convolution)
                   its weight gradient ~100x faster
``max_pool``       first-maximum selects over strided         ``reduce_window`` max
                   slices: gradient 7x faster (ResNet pool)   (dilated windows: the selects)
``recurrence``     a custom JVP, which JAX transposes into a  ``lax.scan`` and its
                   backward loop that carries only the        transpose, which adds the
                   state's cotangent; the hidden weights'     hidden weights' gradient up
                   gradient one matmul over all steps after   inside the loop (a rank-batch
                   it; each step's inputs read a step ahead   update of the whole matrix at
                   (100 x 16 steps, hidden 512, medians of    every step)
                   20 in two runs on 2 shared cores:
                   gradient LSTM ~190-220 -> ~153-172 ms,
                   GRU ~153-167 -> ~121-133, RNN ~58 -> ~39,
                   as fast as the custom VJP it replaced;
                   GRU forward ~51 -> ~36, one run)
=================  =========================================  ==============================

:func:`forms` pins one form for everything traced inside it, on any platform: the tests run
both forms on CPU, and a GPU benchmark can compare them.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

__all__ = ["forms", "conv", "im2col_conv", "space_to_depth_conv", "grouped_conv",
           "conv_transpose", "max_pool", "recurrence"]

_FORMS = ("platform", "rewrite", "xla")
_pinned = "platform"


@contextlib.contextmanager
def forms(which: str) -> Iterator[None]:
    """Pins the form of every lowering traced inside the block, on any platform.

    ``which``: ``'platform'`` (the default: the rewrite on CPU, XLA's operation elsewhere),
    ``'rewrite'`` or ``'xla'``. It applies at trace time: a function that ``jit`` compiled
    before keeps the form it was traced with.
    """
    global _pinned
    if which not in _FORMS:
        raise ValueError(f"forms() takes one of {_FORMS}, got {which!r}")
    previous, _pinned = _pinned, which
    try:
        yield
    finally:
        _pinned = previous


def _choose(cpu: Callable[..., Array], xla: Callable[..., Array], *args: Array) -> Array:
    if _pinned == "rewrite":
        return cpu(*args)
    if _pinned == "xla":
        return xla(*args)
    return lax.platform_dependent(*args, cpu=cpu, default=xla)


# ----------------------------------------------------------------------------- small-map conv

# XLA's algebraic simplifier swaps a convolution's operands when the kernel window has more
# taps than the input has positions (a 3x3 kernel over a 2x2 map: 9 > 4). The swapped
# convolution takes the weights as its image (batch: output channels) and the image as its
# kernel (dim_labels 01fb_o01i->f01b), a layout none of XLA:CPU's convolution kernels take,
# so it is emitted as a generic loop nest ("elemental" kernel): 8x2x2x512 -> 512 took
# ~50-110 ms against 1 ms in torch, and the input gradient (a convolution over the output's
# map) the same. The windows as one matrix and one matmul are exact and cheap at that size.
# The CPU form is chosen where XLA would swap: when the input or the output map has fewer
# positions than the kernel has taps (the forward convolution, or the input gradient's).


def conv(x: Array, w: Array, *, window_strides: Sequence[int], padding: Sequence[tuple[int, int]],
         rhs_dilation: Sequence[int], dimension_numbers, groups: int = 1) -> Array:
    """``lax.conv_general_dilated`` of channels-last ``x`` (N, *spatial, in) and
    ``(*kernel, in/groups, out)`` ``w`` with explicit ``padding``; on CPU, on a small map,
    as one matmul over the windows (:func:`im2col_conv`), and strided over a one-channel
    input, as a stride-1 convolution of the folded input (:func:`space_to_depth_conv`)."""
    n = w.ndim - 2
    geometry = dict(window_strides=tuple(window_strides), padding=tuple(map(tuple, padding)),
                    rhs_dilation=tuple(rhs_dilation))
    xla = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, **geometry, dimension_numbers=dimension_numbers, feature_group_count=groups)
    channels_last = lax.conv_dimension_numbers(
        x.shape, w.shape, ("N" + "DHW"[3 - n:] + "C", "DHW"[3 - n:] + "IO",
                           "N" + "DHW"[3 - n:] + "C"))
    if n > 3 or groups > SPLIT_GROUPS_UP_TO or dimension_numbers != channels_last:
        return xla(x, w)
    if _small_map(x.shape[1:1 + n], w.shape[:n], **geometry):
        return _choose(lambda x, w: im2col_conv(x, w, **geometry, groups=groups), xla, x, w)
    if groups == 1 and _one_channel_strided(x.shape[-1], **geometry):
        return _choose(lambda x, w: space_to_depth_conv(
            x, w, window_strides=geometry["window_strides"], padding=geometry["padding"],
            dimension_numbers=dimension_numbers), xla, x, w)
    return xla(x, w)


def _output_sizes(sizes, kernel, window_strides, padding, rhs_dilation):
    return [(size + lo + hi - d * (k - 1) - 1) // s + 1 for size, k, s, (lo, hi), d in
            zip(sizes, kernel, window_strides, padding, rhs_dilation)]


def _small_map(sizes, kernel, window_strides, padding, rhs_dilation) -> bool:
    taps = math.prod(kernel)
    outputs = math.prod(_output_sizes(sizes, kernel, window_strides, padding, rhs_dilation))
    return min(math.prod(sizes), outputs) < taps


def _one_channel_strided(in_channels, window_strides, padding, rhs_dilation) -> bool:
    return in_channels == 1 and max(window_strides) > 1 and set(rhs_dilation) == {1}


def im2col_conv(x: Array, w: Array, *, window_strides: Sequence[int],
                padding: Sequence[tuple[int, int]], rhs_dilation: Sequence[int],
                groups: int = 1) -> Array:
    """The convolution of channels-last ``x`` (N, *spatial, in) and ``w``
    (*kernel, in/groups, out) as one matmul: every window's taps side by side, a
    (N * positions, taps * in) matrix, times the kernel as a (taps * in, out) matrix. Taps
    that read only padding for every output are left out (a 3x3 kernel over a 1x1 map is its
    centre tap)."""
    n = w.ndim - 2
    kernel, sizes = w.shape[:n], x.shape[1:1 + n]
    outs = _output_sizes(sizes, kernel, window_strides, padding, rhs_dilation)
    first, last, pads = [], [], [(0, 0, 0)]
    for size, k, s, (lo, _), d, out in zip(sizes, kernel, window_strides, padding,
                                           rhs_dilation, outs):
        # tap t of output o reads x[o * s + t * d - lo]; keep the taps some output reads in x
        used = [t for t in range(k) if any(0 <= o * s + t * d - lo < size for o in range(out))]
        if not used:  # every window lies in the padding
            return jnp.zeros((x.shape[0], *outs, w.shape[-1]), jnp.result_type(x, w))
        first.append(used[0])
        last.append(used[-1])
        start, stop = used[0] * d - lo, (out - 1) * s + used[-1] * d - lo + 1
        pads.append((-start, stop - size, 0))  # negative: crop what no kept tap reads
    pads.append((0, 0, 0))
    xp = lax.pad(x, jnp.zeros((), x.dtype), pads)
    batch, cin = x.shape[0], x.shape[-1]
    cols = []
    for taps in np.ndindex(*(b - a + 1 for a, b in zip(first, last))):
        start = [t * d for t, d in zip(taps, rhs_dilation)]
        stop = [a + (o - 1) * s + 1 for a, o, s in zip(start, outs, window_strides)]
        cols.append(lax.slice(xp, (0, *start, 0), (batch, *stop, cin),
                              (1, *window_strides, 1)))
    patches = jnp.stack(cols, axis=-2)  # (N, *outs, taps, in)
    wk = w[tuple(slice(a, b + 1) for a, b in zip(first, last))]  # (*kept, in/g, out)
    ntaps, cout = len(cols), w.shape[-1]
    if groups == 1:
        y = patches.reshape(-1, ntaps * cin) @ wk.reshape(ntaps * cin, cout)
    else:
        g = groups
        y = jnp.einsum("mtgc,tcgo->mgo", patches.reshape(-1, ntaps, g, cin // g),
                       wk.reshape(ntaps, cin // g, g, cout // g))
    return y.reshape(batch, *outs, cout)


def space_to_depth_conv(x: Array, w: Array, *, window_strides: Sequence[int],
                        padding: Sequence[tuple[int, int]], dimension_numbers) -> Array:
    """A strided convolution (dilation 1) of channels-last ``x`` with ``(*kernel, in, out)``
    ``w`` as a stride-1 convolution of the input folded by the stride: position
    ``q * stride + r`` becomes position ``q``, channel ``(r, c)``; the kernel, zero-padded to
    a multiple of the stride, is folded alike (``ceil(kernel / stride)`` taps)."""
    n = w.ndim - 2
    strides, kernel, cin, cout = tuple(window_strides), w.shape[:n], x.shape[-1], w.shape[-1]
    outs = _output_sizes(x.shape[1:1 + n], kernel, strides, padding, (1,) * n)
    taps = [-(-k // s) for k, s in zip(kernel, strides)]
    # pad (or crop) each axis to (out + taps - 1) * stride: every folded window is whole
    pads = [(lo, (o + j - 1) * s - size - lo, 0) for (lo, _), o, j, s, size in
            zip(padding, outs, taps, strides, x.shape[1:1 + n])]
    xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *pads, (0, 0, 0)])
    folded = [q for o, j, s in zip(outs, taps, strides) for q in (o + j - 1, s)]
    xs = xp.reshape(x.shape[0], *folded, cin)  # (N, Q1, s1, Q2, s2, ..., in)
    xs = xs.transpose(0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1)
    xs = xs.reshape(x.shape[0], *(o + j - 1 for o, j in zip(outs, taps)), -1)
    wp = jnp.pad(w, [(0, j * s - k) for j, s, k in zip(taps, strides, kernel)] + [(0, 0)] * 2)
    ws = wp.reshape(*(q for j, s in zip(taps, strides) for q in (j, s)), cin, cout)
    ws = ws.transpose(*range(0, 2 * n, 2), *range(1, 2 * n, 2), 2 * n, 2 * n + 1)
    ws = ws.reshape(*taps, -1, cout)  # (*taps, (s1, s2, ..., in), out)
    return lax.conv_general_dilated(xs, ws, (1,) * n, [(0, 0)] * n,
                                    dimension_numbers=dimension_numbers)


# XLA:CPU runs a strided convolution of a one-channel input (SEGAN's DownConv1dBlock(1, 1,
# 31, 4) on 256 x 4000 samples) far below its FLOP rate, and its input gradient (a
# convolution of the output dilated by the stride) slower still. Folded by the stride, the
# same sums are a stride-1 convolution of 4 channels and 8 taps: the block's forward 20.7 ->
# 4.8 ms, its training step 45.9 -> 30.1 ms on 2 shared cores
# (benchmarks/results/conv_sweep_models_*).


# ----------------------------------------------------------------------------- grouped conv

# XLA:CPU computes a grouped convolution (feature_group_count > 1) op by op and its weight
# gradient (batch_group_count) some 100x slower than a plain convolution's: on 2 cores, a
# ResNeXt 3x3 layer's backward pass took 4.4 s, against 40 ms as one plain convolution per
# group. Up to this many groups, the CPU form is per-group convolutions.
SPLIT_GROUPS_UP_TO = 64


def _per_group_conv(x: Array, w: Array, groups: int, **kw) -> Array:
    cin, cout = x.shape[-1] // groups, w.shape[-1] // groups
    return jnp.concatenate(
        [lax.conv_general_dilated(x[..., i * cin:(i + 1) * cin], w[..., i * cout:(i + 1) * cout],
                                  **kw) for i in range(groups)], axis=-1)


def grouped_conv(x: Array, w: Array, groups: int, *, window_strides: Sequence[int],
                 padding: str | Sequence[tuple[int, int]], dimension_numbers,
                 rhs_dilation: Sequence[int] | None = None) -> Array:
    """``lax.conv_general_dilated(x, w, feature_group_count=groups, ...)`` of channels-last
    ``x`` and ``(*kernel, in/groups, out)`` ``w``; on CPU as one plain convolution per group,
    or on a small map as one matmul over the windows (:func:`conv`)."""
    n = w.ndim - 2
    kw = dict(window_strides=tuple(window_strides),
              padding=[(0, 0)] * n if padding == "VALID" else [tuple(p) for p in padding],
              rhs_dilation=(1,) * n if rhs_dilation is None else tuple(rhs_dilation),
              dimension_numbers=dimension_numbers)
    if groups == 1 or groups > SPLIT_GROUPS_UP_TO or _small_map(
            x.shape[1:1 + n], w.shape[:n], kw["window_strides"], kw["padding"],
            kw["rhs_dilation"]):
        return conv(x, w, **kw, groups=groups)
    return _choose(lambda x, w: _per_group_conv(x, w, groups, **kw),
                   lambda x, w: lax.conv_general_dilated(x, w, feature_group_count=groups, **kw),
                   x, w)


# ----------------------------------------------------------------------------- transposed conv


def conv_transpose(x: Array, w: Array, *, stride: Sequence[int], padding: Sequence[int],
                   dilation: Sequence[int], output_padding: Sequence[int], groups: int,
                   out_sizes: Sequence[int], dimension_numbers) -> Array:
    """torch's transposed convolution of channels-last ``x`` (N, *spatial, in).

    ``w``: ``(*kernel, in, out // groups)`` as ``ConvTransposeNd`` stores it; ``out_sizes``
    the output's spatial sizes. ``out[i * stride + t * dilation - padding] += x[i] @ w[t]``.
    """
    n = len(stride)
    k = w.shape[:n]
    cin, cout = x.shape[-1] // groups, w.shape[-1]
    # (*k, in, out/g) -> (*k, in/g, out): the layout of a grouped forward convolution
    w = w.reshape(*k, groups, cin, cout)
    w = jnp.swapaxes(w, n, n + 1).reshape(*k, cin, groups * cout)
    geometry = dict(stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                    groups=groups, dimension_numbers=dimension_numbers)
    return _choose(
        lambda x, w: _sub_pixel_conv_transpose(x, w, out_sizes=tuple(out_sizes), **geometry),
        lambda x, w: _dilated_conv_transpose(x, w, output_padding=tuple(output_padding),
                                             **geometry),
        x, w)


def _dilated_conv_transpose(x, w, *, stride, padding, dilation, output_padding, groups,
                            dimension_numbers):
    # the gradient of a convolution: dilate the input by the stride, convolve with the
    # flipped kernel, pad by dilation * (k - 1) - padding
    n = len(stride)
    pads = [(d * (kk - 1) - p, d * (kk - 1) - p + op)
            for kk, d, p, op in zip(w.shape[:n], dilation, padding, output_padding)]
    return lax.conv_general_dilated(
        x, jnp.flip(w, axis=tuple(range(n))), (1,) * n, pads, lhs_dilation=stride,
        rhs_dilation=dilation, dimension_numbers=dimension_numbers, feature_group_count=groups)


def _sub_pixel_conv_transpose(x, w, *, stride, padding, dilation, groups, out_sizes,
                              dimension_numbers):
    # Written directly (the gradient of a convolution), a transposed convolution is a
    # convolution over the input dilated by the stride, whose weight gradient XLA:CPU computes
    # some 100x slower than a plain one. Instead, output phase r (outputs o with
    # (o + padding) % stride == r) is a plain stride-1 convolution of the undilated input with
    # the taps t that reach it, and all prod(stride) phases are one convolution: the phases
    # are extra output channels (zero taps where a phase has fewer), then interleaved
    # ("sub-pixel" convolution). Same sums, and every gradient a plain convolution's.
    g, n = groups, len(stride)
    k = w.shape[:n]
    cin = w.shape[n]
    out_channels = w.shape[-1]
    cout = out_channels // g
    sizes = x.shape[1:1 + n]
    taps, pads, q_ranges = [], [(0, 0)], []
    for kk, s, d, p, size, out in zip(k, stride, dilation, padding, sizes, out_sizes):
        # phase r covers o + padding = q * s + r for q in [q0, q1), and there
        # out_r[q] = sum over its taps t of x[q - m_t] @ w[t], m_t = (t * d - r) / s
        q0, q1 = p // s, -(-(p + out) // s)
        m = {(t, (t * d) % s): (t * d) // s for t in range(kk)}
        lo, hi = min(m.values()), max(m.values())
        tap = np.full((hi - lo + 1, s), kk)  # [j, r]: the tap with m_t = hi - j (kk: none)
        for (t, r), mt in m.items():
            tap[hi - mt, r] = t
        taps.append(tap)
        pads.append((hi - q0, q1 - lo - size))
        q_ranges.append((q0, q1))
    pads.append((0, 0))
    # the kernel: (*J, *stride, cin, g, cout) gathered from w with a zero tap appended
    wz = jnp.pad(w, [(0, 1)] * n + [(0, 0), (0, 0)]).reshape(*(kk + 1 for kk in k), cin, g, cout)
    index = tuple(t.reshape((1,) * i + t.shape[:1] + (1,) * (n - 1 - i) + (1,) * i
                            + t.shape[1:] + (1,) * (n - 1 - i)) for i, t in enumerate(taps))
    wc = wz[index]  # (*J, *stride, cin, g, cout)
    js = wc.shape[:n]
    wc = jnp.moveaxis(wc, tuple(range(n, 2 * n)), tuple(range(n + 2, 2 * n + 2)))
    wc = wc.reshape(*js, cin, -1)  # output channels ordered (group, *phase, cout)
    xp = lax.pad(x, jnp.zeros((), x.dtype), [(a, b, 0) for a, b in pads])
    y = grouped_conv(xp, wc, g, window_strides=(1,) * n, padding="VALID",
                     dimension_numbers=dimension_numbers)  # (N, *Q, g * prod(stride) * cout)
    qs = y.shape[1:1 + n]
    y = y.reshape(y.shape[0], *qs, g, *stride, cout)
    # (N, Q_1, ..., g, s_1, ..., cout) -> (N, Q_1, s_1, Q_2, s_2, ..., g, cout)
    order = [0] + [a for i in range(n) for a in (1 + i, n + 2 + i)] + [n + 1, 2 * n + 2]
    y = y.transpose(order).reshape(y.shape[0], *(q * s for q, s in zip(qs, stride)),
                                   out_channels)
    start = [p - q0 * s for p, s, (q0, _) in zip(padding, stride, q_ranges)]
    return lax.slice(y, (0, *start, 0),
                     (y.shape[0], *(a + b for a, b in zip(start, out_sizes)), y.shape[-1]))


# ----------------------------------------------------------------------------- max pool


def max_pool(xp: Array, dims: Sequence[int], strides: Sequence[int],
             dilation: Sequence[int]) -> Array:
    """The maximum over each window of the already padded ``xp`` (pad value: the dtype's
    lowest), windows ``dims`` with ``strides`` and ``dilation`` per axis (1 for axes not
    pooled). The gradient goes to the first maximum of each window in torch's scan order, and
    a NaN propagates, as in torch."""
    dims, strides, dilation = tuple(dims), tuple(strides), tuple(dilation)
    chain = lambda xp: _max_pool_selects(xp, dims, strides, dilation)  # noqa: E731
    if any(d != 1 for d in dilation):  # JAX cannot differentiate a dilated reduce_window
        return chain(xp)
    init = -jnp.inf if jnp.issubdtype(xp.dtype, jnp.floating) else jnp.iinfo(xp.dtype).min
    return _choose(
        chain,
        lambda xp: lax.reduce_window(xp, np.array(init, xp.dtype), lax.max, dims, strides,
                                     "VALID"),
        xp)


def _max_pool_selects(xp, dims, strides, dilation):
    # The maximum over one strided slice per kernel offset, taken in torch's scan order and
    # kept on ties, so the gradient goes to the first maximum of each window as torch's does
    # (and a NaN propagates). XLA:CPU differentiates a reduce_window max through a
    # select-and-scatter some 7x slower than this chain of selects (ResNet's 3x3/2 pool on
    # 8x112x112x64: 112 ms against 16 ms).
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(xp.shape, dims, strides,
                                                                   dilation)]
    y = None
    for offset in np.ndindex(*dims):
        start = [o * d for o, d in zip(offset, dilation)]
        stop = [a + (m - 1) * s + 1 for a, m, s in zip(start, out, strides)]
        tap = lax.slice(xp, start, stop, strides)
        if y is None:
            y = tap
        else:
            take = tap > y
            if jnp.issubdtype(xp.dtype, jnp.floating):
                take = take | jnp.isnan(tap)
            y = jnp.where(take, tap, y)
    return y


# ----------------------------------------------------------------------------- recurrence

# JAX differentiates a scan into a scan that adds the gradient of every loop-invariant operand
# up inside the loop: for the hidden weights, at every step a (H, batch) x (batch, G) matmul
# and an add over the whole (H, G) matrix (LSTM(100, 512), batch 16, 2 cores: about half of
# the backward loop's time in a jax.profiler trace, ~78 ms of the gradient's). The CPU form is
# a custom JVP whose transpose (JAX's own) avoids it: the hidden weights' part of every step's
# tangent, h_{t-1} @ dw_hh + db_hh, is one (L * N, H) x (H, G) matmul of the saved states
# outside the tangent loop, so the backward loop carries only the state's cotangent (the
# cell's derivatives and dh = d_gh @ w_hh.T per step) and the weights' gradient is one
# (H, L * N) x (L * N, G) matmul after it (~26 ms in the same trace, taken with the hand-written
# custom VJP this replaced, which had the same backward loop). Forward-mode differentiation
# (jvp, jacfwd, hessian) works on both forms. The forward pass is the plain loop, each step's
# input projection read a step ahead (:func:`_scan_ahead`); when differentiated, it also saves
# every step's h @ w_hh + b_hh and the state before it, and the cell is linearized at all
# steps at once. The sums are the same, in another order.


def recurrence(cell: Callable, gi: Array, w_hh: Array, b_hh: Array | None, w_hr: Array | None,
               state: tuple[Array, ...]) -> tuple[tuple[Array, ...], Array]:
    """The time loop of a recurrent layer, every direction at once.

    ``gi``: (L, D, N, G) the input projection of every step (its bias included), the reverse
    direction's already in reading order; ``w_hh`` (D, H, G), ``b_hh`` (D, G) or None,
    ``w_hr`` (D, hidden, H) the LSTM's projection or None; ``state`` a tuple of (D, N, *), h
    first. A step is ``carry = cell(gi_t, h @ w_hh + b_hh, carry)`` per direction (then
    ``h = h @ w_hr``). Returns the final state and every step's h, (L, D, N, H). On CPU
    (without projection), a custom JVP: forward and reverse mode both work, and in the
    backward pass the hidden weights' gradient is one matmul over all steps after the loop
    instead of an update of the whole matrix at every step (see above).
    """
    def xla(gi, w_hh, b_hh, w_hr, state):
        return _scan_recurrence(cell, gi, w_hh, b_hh, w_hr, state)

    if w_hr is not None:
        return xla(gi, w_hh, b_hh, w_hr, state)

    def cpu(gi, w_hh, b_hh, w_hr, state):
        return _cpu_recurrence(cell, gi, w_hh, b_hh, state)

    return _choose(cpu, xla, gi, w_hh, b_hh, w_hr, state)


def _hidden(h: Array, w_hh: Array, b_hh: Array | None) -> Array:
    # one plain matrix product per direction: XLA:CPU runs a batched dot_general over the
    # direction axis ~30% slower in the backward pass, even with one direction
    gh = jnp.stack([h[d] @ w_hh[d] for d in range(w_hh.shape[0])])  # D x N x G
    return gh if b_hh is None else gh + b_hh[:, None, :]


def _scan_recurrence(cell, gi, w_hh, b_hh, w_hr, state):
    def step(carry, gi_t):  # gi_t: D x N x G
        carry = cell(gi_t, _hidden(carry[0], w_hh, b_hh), carry)
        if w_hr is not None:  # LSTM with projections: h_t = W_hr (o * tanh(c_t))
            h = jnp.stack([carry[0][d] @ w_hr[d] for d in range(w_hr.shape[0])])
            carry = (h, *carry[1:])
        return carry, carry[0]

    return lax.scan(step, state, gi)


def _scan_ahead(f, init, xs, *, reverse: bool = False):
    """``lax.scan(f, init, xs, reverse=reverse)`` with each step's slice of ``xs`` read one
    step ahead, into the carry. XLA:CPU fuses a slice of ``xs`` taken in the step (a dynamic
    slice) into the step's elementwise fusion, the cell's, and runs that fusion ~5x slower:
    the LSTM cell alone on 16 x 2048 gates ~100 us a step against ~30 read ahead
    (benchmarks/recurrent_profile.py), the GRU's forward pass (whose cell adds the input
    projection itself) ~51 -> ~36 ms. The LSTM's plain forward pass escapes it: there the
    input projection's slice is added in the hidden matmul's fusion."""
    length = jax.tree.leaves(xs)[0].shape[0]

    def at(i):
        return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), xs)

    def step(carry, i):
        carry, x = carry
        carry, y = f(carry, x)
        return (carry, at(i - 1 if reverse else i + 1)), y  # clamped past the end: unused

    (final, _), ys = lax.scan(step, (init, at(length - 1 if reverse else 0)),
                              jnp.arange(length), reverse=reverse)
    return final, ys


def _recurrence_scan(cell, gi, w_hh, b_hh, state, *, residuals: bool):
    def step(carry, gi_t):
        gh = _hidden(carry[0], w_hh, b_hh)
        new = cell(gi_t, gh, carry)
        return new, ((new[0], gh, carry) if residuals else new[0])

    return _scan_ahead(step, state, gi)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _cpu_recurrence(cell, gi, w_hh, b_hh, state):
    return _recurrence_scan(cell, gi, w_hh, b_hh, state, residuals=False)


@_cpu_recurrence.defjvp
def _recurrence_jvp(cell, primals, tangents):
    # Written so that JAX's transposition of it is the fast backward pass: the tangent of
    # gh_t = h_{t-1} @ w_hh + b_hh is dh_{t-1} @ w_hh + (h_{t-1} @ dw_hh + db_hh), and the
    # second part, every step's at once, is one matmul of the saved states outside the loop
    # (transposed: the weights' gradient as one matmul after the backward loop). The tangent
    # loop carries only the state's tangent, and the cell is linearized at every step at once
    # before it, so its transpose reads w_hh and the cell's derivatives and accumulates no
    # gradient of a loop-invariant operand.
    gi, w_hh, b_hh, state = primals
    d_gi, d_w, d_b, d_state = tangents
    final, (ys, gh, prev) = _recurrence_scan(cell, gi, w_hh, b_hh, state, residuals=True)
    seq, dirs, batch, hidden = prev[0].shape  # prev: the state before each step, L x D x N x *
    d_gh_w = jnp.stack([prev[0][:, d].reshape(seq * batch, hidden) @ d_w[d]
                        for d in range(dirs)], axis=1)  # (L * N) x D x G
    d_gh_w = jnp.swapaxes(d_gh_w.reshape(seq, batch, dirs, w_hh.shape[-1]), 1, 2)  # L x D x N x G
    if b_hh is not None:
        d_gh_w = d_gh_w + d_b[None, :, None, :]
    # the cell linearized at every step at once, outside the loop: jax.linearize's linear
    # function is a pytree (a tree_util.Partial) of its derivatives, here stacked over the steps
    cell_lin = jax.vmap(lambda *primals_t: jax.linearize(cell, *primals_t)[1])(gi, gh, prev)

    def step(d_carry, xs):
        cell_lin_t, d_gi_t, d_gh_w_t = xs
        d_new = cell_lin_t(d_gi_t, _hidden(d_carry[0], w_hh, None) + d_gh_w_t, d_carry)
        return d_new, d_new[0]

    d_final, d_ys = lax.scan(step, d_state, (cell_lin, d_gi, d_gh_w))
    return (final, ys), (d_final, d_ys)
