"""The Quasi-Recurrent Neural Network of the "Quasi Recurrent Neural Network" slides, in Flax NNX.

Bradbury, Merity, Xiong & Socher 2016, "Quasi-Recurrent Neural Networks" (arXiv:1611.01576).
A QRNN layer is (1) one causal convolution over the whole sequence that predicts the
candidate ``z`` and the gates at every step in parallel, and (2) a "pooling" that mixes them
over time with an elementwise linear recurrence ``c_t = a_t * c_{t-1} + b_t``:

* ``'f'``:   ``h_t = f_t * h_{t-1} + (1 - f_t) * z_t`` (the slide's ``fQRNNLayer``);
* ``'fo'``:  ``c_t = f_t * c_{t-1} + (1 - f_t) * z_t``, ``h_t = o_t * c_t``;
* ``'ifo'``: ``c_t = f_t * c_{t-1} + i_t * z_t``,       ``h_t = o_t * c_t``.

Layouts, as on the slide, on both sides: x (batch, seq, features), the state (batch, hidden).
The recurrence runs as ``jax.lax.scan`` (``scan='sequential'``, the default) or as a parallel
prefix ``jax.lax.associative_scan`` (``scan='associative'``) composing the affine maps
``c -> a * c + b``: ``(a1, b1) then (a2, b2) = (a1 * a2, a2 * b1 + b2)``. Both compute the same
numbers; the choice is a speed trade-off, measured in ``benchmarks/qrnn_vs_lstm.py``: on an
H100 the associative scan was the faster at every size, on a CPU the sequential one trains
faster.

Zoneout (paper, section 2.1) makes a random subset of channels keep their previous pooling
state. Written on the recurrence, a zoned-out step is the identity ``(a, b) -> (1, 0)``: in
train mode, with a keep-mask ``m ~ Bernoulli(1 - zoneout)`` per gate and step,
``a' = 1 - m * (1 - a)`` and ``b' = m * b``. For f- and fo-pooling this is the paper's
``f = 1 - dropout(1 - sigmoid(W_f * X))`` without dropout's rescaling; for ifo-pooling the
input gate is masked too, so that a zoned-out channel really keeps its state. In eval mode the
gates are replaced by their expectation, ``a' = 1 - (1 - zoneout) * (1 - a)`` and
``b' = (1 - zoneout) * b``, as the authors' implementation (salesforce/pytorch-qrnn scales its
forget gate by ``1 - zoneout`` in eval); since the masks are independent of the state, the
eval output is exactly the mean of the train-mode outputs.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from flax_arch.nn import Conv1d, Dropout, Stochastic

__all__ = ["QRNNLayer", "QRNN", "qrnn_pooling", "pool_sequential", "pool_associative", "POOLINGS",
           "SCANS"]

# Number of gate chunks the convolution predicts per pooling, in the order z, f, o, i.
POOLINGS = {"f": 2, "fo": 3, "ifo": 4}
SCANS = ("sequential", "associative")


def _check_hparams(name: str, num_inputs: int, num_outputs: int, kwidth: int, pooling: str,
                   zoneout: float) -> None:
    if num_inputs <= 0 or num_outputs <= 0:
        raise ValueError(f"{name}: sizes must be positive, got num_inputs={num_inputs}, "
                         f"hidden size={num_outputs}")
    if kwidth < 1:
        raise ValueError(f"{name}: kwidth must be >= 1 (the causal convolution's width), "
                         f"got {kwidth}")
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
    if not 0.0 <= zoneout < 1.0:
        raise ValueError(f"{name}: zoneout must be in [0, 1), got {zoneout}")


def _compose(first, second):
    """The affine map ``c -> a2 * (a1 * c + b1) + b2`` of two consecutive steps."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def pool_sequential(a: jax.Array, b: jax.Array, c0: jax.Array) -> jax.Array:
    """``c_t = a_t * c_{t-1} + b_t`` step by step. a, b: (batch, seq, hidden); c0: (batch, hidden)
    -> c: (batch, seq, hidden)."""

    def step(c, ab):
        at, bt = ab  # N x H each
        c = at * c + bt  # N x H
        return c, c

    # not unrolled: on CPU, unrolling 4 to 32 steps measured slower, the loop's own overhead
    # being small beside a step's (batch, hidden) slices
    a_t, b_t = jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1)  # L x N x H
    _, cs = lax.scan(step, c0, (a_t, b_t))  # L x N x H
    return jnp.swapaxes(cs, 0, 1)  # N x L x H


def pool_associative(a: jax.Array, b: jax.Array, c0: jax.Array) -> jax.Array:
    """The same recurrence as :func:`pool_sequential`, as a parallel prefix over time."""
    b = jnp.concatenate([b[:, :1] + a[:, :1] * c0[:, None], b[:, 1:]], axis=1)  # N x L x H
    _, cs = lax.associative_scan(_compose, (a, b), axis=1)  # N x L x H
    return cs


_POOL_FNS = {"sequential": pool_sequential, "associative": pool_associative}


def qrnn_pooling(gates: jax.Array, c0: jax.Array, keep: jax.Array | None, *, pooling: str,
                 scan: str, zoneout: float) -> tuple[jax.Array, jax.Array]:
    """A QRNN layer after its convolution: gate nonlinearities, zoneout, pooling over time.

    gates: (batch, seq, k * hidden), the chunks z, f[, o][, i]; c0: (batch, hidden);
    keep: (batch, seq, hidden) booleans (train-mode zoneout: False zones a step out) or None
    (no zoneout, or its eval-mode expectation when ``zoneout > 0``)
    -> (hts (batch, seq, hidden), c_T (batch, hidden)).
    """
    zt, ft, *rest = jnp.split(gates, POOLINGS[pooling], axis=-1)  # N x L x H each
    zt, ft = jnp.tanh(zt), jax.nn.sigmoid(ft)
    # the recurrence c_t = a_t * c_{t-1} + b_t
    if pooling == "ifo":
        at, bt = ft, jax.nn.sigmoid(rest[1]) * zt
    else:
        at, bt = ft, (1 - ft) * zt
    if keep is not None:  # zoned-out steps are the identity (a, b) = (1, 0)
        at, bt = jnp.where(keep, at, jnp.ones_like(at)), jnp.where(keep, bt, jnp.zeros_like(bt))
    elif zoneout > 0:  # the expectation of the train-mode gates
        at, bt = 1 - (1 - zoneout) * (1 - at), (1 - zoneout) * bt
    cts = _POOL_FNS[scan](at, bt, c0.astype(at.dtype))  # N x L x H
    hts = cts if pooling == "f" else jax.nn.sigmoid(rest[0]) * cts  # N x L x H
    return hts, cts[:, -1]  # N x L x H, N x H


class QRNNLayer(Stochastic):
    """One QRNN layer (Bradbury et al. 2016): a causal convolution, then f-, fo- or ifo-pooling.

    ``conv`` is one causal ``Conv1d(num_inputs, k * num_outputs, kwidth)`` predicting all
    gates, split along channels in the order z, f, o, i (``k`` = 2, 3, 4 for f, fo, ifo), with
    tanh on z and sigmoid on the gates.

    x: (batch, seq, num_inputs), state: (batch, num_outputs) or None (zeros)
    -> (hts (batch, seq, num_outputs), h_T (batch, num_outputs)). For 'fo' and 'ifo' the state
    carried (given and returned) is the memory ``c``; the outputs are ``h = o * c``.

    ``scan`` (Flax only): ``'sequential'`` (``lax.scan``) or ``'associative'``
    (``lax.associative_scan``); ``model.set_attributes(scan=...)`` switches every layer of a
    built model. Zoneout (see the module docstring) needs ``rngs`` at call time in train mode
    (the ``dropout`` stream).
    """

    def __init__(self, num_inputs: int, num_outputs: int, kwidth: int = 2, pooling: str = "f",
                 zoneout: float = 0.0, *, scan: str = "sequential", rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        _check_hparams("QRNNLayer", num_inputs, num_outputs, kwidth, pooling, zoneout)
        if scan not in SCANS:
            raise ValueError(f"QRNNLayer: scan must be one of {SCANS}, got {scan!r}")
        self.num_inputs, self.num_outputs, self.kwidth = num_inputs, num_outputs, kwidth
        self.pooling, self.zoneout, self.scan = pooling, zoneout, scan
        self.deterministic = False  # train mode by default, as torch
        # all gates from one convolution: z, f[, o][, i] stacked along the channels
        self.conv = Conv1d(num_inputs, num_outputs * POOLINGS[pooling], kwidth, rngs=rngs,
                           dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array, state: jax.Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
        if x.ndim != 3 or x.shape[-1] != self.num_inputs or x.shape[1] < 1:
            raise ValueError(
                f"QRNNLayer expects x of shape (batch, seq, num_inputs={self.num_inputs}) with "
                f"seq >= 1; got shape {tuple(x.shape)}"
            )
        batch, seq, hidden = x.shape[0], x.shape[1], self.num_outputs
        if state is not None and tuple(state.shape) != (batch, hidden):
            raise ValueError(
                f"QRNNLayer expects state of shape (batch={batch}, num_outputs={hidden}); got "
                f"shape {tuple(state.shape)}"
            )
        keep = None
        if self.zoneout > 0 and not self.deterministic:
            if rngs is None:
                raise ValueError(
                    "QRNNLayer with zoneout > 0 in train mode needs rngs=nnx.Rngs(dropout=...) "
                    "at call time (or model.eval())"
                )
            keep = jax.random.bernoulli(rngs.dropout(), 1 - self.zoneout, (batch, seq, hidden))
        # ----- feed-forward part: causal convolution, all gates at once
        xp = jnp.pad(x, [(0, 0), (self.kwidth - 1, 0), (0, 0)])  # N x (L + kwidth - 1) x C_in
        gates = self.conv(xp)  # N x L x (k * H)
        # ----- sequential part: pooling over time
        c0 = jnp.zeros((batch, hidden), gates.dtype) if state is None else state
        return qrnn_pooling(gates, c0, keep, pooling=self.pooling, scan=self.scan,
                            zoneout=self.zoneout)  # N x L x H, N x H


class QRNN(Stochastic):
    """A stack of QRNN layers (Bradbury et al. 2016), with dropout between layers in train mode.

    x: (batch, seq, num_inputs), state: (num_layers * num_directions, batch, hidden_size) or
    None -> (output (batch, seq, num_directions * hidden_size),
    h_n (num_layers * num_directions, batch, hidden_size)).

    ``layers[l * num_directions + d]`` is layer ``l`` in direction ``d`` (0 forward, 1
    reverse), the same index as its state in ``h_n``, as torch's ``nn.LSTM`` orders ``h_n``;
    state_dict keys are ``layers.{l * num_directions + d}.conv.weight`` / ``.conv.bias``. A
    reverse layer runs its causal convolution and pooling over the time-reversed sequence;
    the two directions' outputs are concatenated along features (forward first). In train
    mode, zoneout and dropout draw from ``rngs`` given at call time (the ``dropout`` stream).
    """

    def __init__(self, num_inputs: int, hidden_size: int, num_layers: int = 1, kwidth: int = 2,
                 pooling: str = "f", zoneout: float = 0.0, dropout: float = 0.0,
                 bidirectional: bool = False, *, scan: str = "sequential", rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        _check_hparams("QRNN", num_inputs, hidden_size, kwidth, pooling, zoneout)
        if num_layers < 1:
            raise ValueError(f"QRNN: num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"QRNN: dropout must be in [0, 1], got {dropout}")
        self.num_inputs, self.hidden_size, self.num_layers = num_inputs, hidden_size, num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout, self.zoneout = dropout, zoneout
        kw = dict(scan=scan, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.layers = nnx.List([
            QRNNLayer(num_inputs if layer == 0 else hidden_size * self.num_directions,
                      hidden_size, kwidth, pooling, zoneout, **kw)
            for layer in range(num_layers) for _ in range(self.num_directions)
        ])
        self.drop = Dropout(dropout)

    def __call__(self, x: jax.Array, state: jax.Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
        if x.ndim != 3 or x.shape[-1] != self.num_inputs:
            raise ValueError(
                f"QRNN expects x of shape (batch, seq, num_inputs={self.num_inputs}); got shape "
                f"{tuple(x.shape)}"
            )
        dirs = self.num_directions
        want = (self.num_layers * dirs, x.shape[0], self.hidden_size)
        if state is not None and tuple(state.shape) != want:
            raise ValueError(
                f"QRNN expects state of shape (num_layers * num_directions={want[0]}, "
                f"batch={want[1]}, hidden_size={want[2]}); got shape {tuple(state.shape)}"
            )
        stochastic = self.zoneout > 0 or (self.dropout > 0 and self.num_layers > 1)
        if stochastic and not self.drop.deterministic and rngs is None:
            raise ValueError("QRNN with zoneout or dropout in train mode needs "
                             "rngs=nnx.Rngs(dropout=...) at call time (or model.eval())")
        h_n = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                i = layer * dirs + d
                s = None if state is None else state[i]  # N x H
                xd = x if d == 0 else jnp.flip(x, axis=1)  # N x L x C
                hts, h_T = self.layers[i](xd, s, rngs=rngs)  # N x L x H, N x H
                outs.append(hts if d == 0 else jnp.flip(hts, axis=1))
                h_n.append(h_T)
            x = outs[0] if dirs == 1 else jnp.concatenate(outs, axis=-1)  # N x L x (dirs * H)
            if layer < self.num_layers - 1:
                x = self.drop(x, rngs=rngs)
        return x, jnp.stack(h_n)  # N x L x (dirs * H), (layers * dirs) x N x H
