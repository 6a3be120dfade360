"""torch's recurrent cells (``torch.rnn_tanh_cell``, ``rnn_relu_cell``, ``lstm_cell``,
``gru_cell``: what nn.RNNCell, LSTMCell and GRUCell call), on (N, input) and (N, hidden)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..tensor import _T
from .registry import op


def _gates(x, h, w_ih, w_hh, b_ih, b_hh):
    gi = x.torch() @ w_ih.torch().T + (0 if b_ih is None else b_ih.torch())
    gh = h.torch() @ w_hh.torch().T + (0 if b_hh is None else b_hh.torch())
    return gi, gh


@op("rnn_tanh_cell")
def _rnn_tanh_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    gi, gh = _gates(x, h, w_ih, w_hh, b_ih, b_hh)
    return _T(jnp.tanh(gi + gh))


@op("rnn_relu_cell")
def _rnn_relu_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    gi, gh = _gates(x, h, w_ih, w_hh, b_ih, b_hh)
    return _T(jax.nn.relu(gi + gh))


@op("lstm_cell")
def _lstm_cell(x, hc, w_ih, w_hh, b_ih=None, b_hh=None):
    h, c = hc
    gi, gh = _gates(x, h, w_ih, w_hh, b_ih, b_hh)
    i, f, g, o = jnp.split(gi + gh, 4, axis=-1)  # torch's gate order
    c = jax.nn.sigmoid(f) * c.torch() + jax.nn.sigmoid(i) * jnp.tanh(g)
    return _T(jax.nn.sigmoid(o) * jnp.tanh(c)), _T(c)


@op("gru_cell")
def _gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    gi, gh = _gates(x, h, w_ih, w_hh, b_ih, b_hh)
    ir, iz, inn = jnp.split(gi, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
    n = jnp.tanh(inn + r * hn)
    return _T((1 - z) * n + z * h.torch())
