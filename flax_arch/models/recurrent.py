"""Recurrent layers from the "Recurrent Layer", "From RNN to LSTM" and "LSTM Layer" slides,
in Flax NNX.

``RNN``, ``LSTM`` and ``GRU`` are ``torch.nn``'s modules: the same constructor, the same return
values, torch's own layout (``(seq_len, batch, features)``, or ``(batch, seq_len, features)``
with ``batch_first=True``; recurrent inputs are features-last on both sides) and torch's
``state_dict`` keys as direct parameters (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), stored
transposed, ``(in, gates * hidden)``, in torch's gate order. ``RNNClassifier`` is the slide's
batch-first RNN followed by a Linear layer and a log-softmax over features.
"""

from __future__ import annotations

import math
import numbers
import warnings

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.interop import TRANSPOSE
from flax_arch.nn import Linear, LogSoftmax, Sequential, Stochastic, lowering

__all__ = ["RNN", "LSTM", "GRU", "RNNClassifier"]

Array = jax.Array


# ----------------------------------------------------------------------------- the loop


def _tanh_cell(gi, gh, carry):
    return (jnp.tanh(gi + gh),)


def _relu_cell(gi, gh, carry):
    return (jax.nn.relu(gi + gh),)


def _lstm_cell(gi, gh, carry):
    _, c = carry
    i, f, g, o = jnp.split(gi + gh, 4, axis=-1)  # D x N x H each, torch's gate order
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _gru_cell(gi, gh, carry):
    (h,) = carry
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)  # D x N x H each, torch's gate order
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)  # the reset gate multiplies W_hn h + b_hn (torch's formula)
    return ((h - n) * z + n,)  # (1 - z) * n + z * h, in ATen's order of operations


def _layer(cell, x, state, directions, dtype):
    """One layer, both directions at once: x (L, N, H_in) -> (L, N, D * H) and final states.

    ``directions``: per direction ``(w_ih (H_in, G), w_hh (H, G), b_ih, b_hh, w_hr)``, biases
    (G,) or None, ``w_hr`` the LSTM's projection (hidden_size, H) or None; ``state``: a tuple
    of (D, N, H) (the LSTM's cell state (D, N, hidden_size)). The input projection of every
    time step is one matrix product; the scan holds only the hidden projection,
    ``cell(gi, gh, carry)`` and the projection of h.
    """

    def stack(i):
        if directions[0][i] is None:
            return None
        return jnp.stack([d[i] for d in directions]).astype(dtype)

    w_ih, w_hh, b_ih, b_hh, w_hr = map(stack, range(5))  # D x H_in x G, D x H x G, D x G, ...
    # one matrix product per direction over every (step, batch) row: an einsum over the
    # direction axis, or a product of the 3-d x, had XLA:CPU transpose and copy gi (13 MB for
    # LSTM(100, 512) on 100 x 16 steps) in the forward or the backward pass
    seq, batch, features = x.shape  # sizes spelled out: an empty batch has no -1 to infer
    gi = jnp.stack([x.reshape(seq * batch, features) @ w for w in w_ih], axis=1)  # (L*N) x D x G
    gi = jnp.swapaxes(gi.reshape(seq, batch, *w_ih.shape[::2]), 1, 2)  # L x D x N x G
    if b_ih is not None:
        gi = gi + b_ih[None, :, None, :]
    reverse = len(directions) == 2
    if reverse:  # the reverse direction reads time backwards
        gi = jnp.concatenate([gi[:, :1], jnp.flip(gi[:, 1:], axis=0)], axis=1)

    # the loop over time: gh = h @ w_hh + b_hh, then the cell (a CPU form in lowering)
    final, ys = lowering.recurrence(cell, gi, w_hh, b_hh, w_hr, state)  # L x D x N x H
    if reverse:
        ys = jnp.concatenate([ys[:, :1], jnp.flip(ys[:, 1:], axis=0)], axis=1)
    seq, d, batch, h = ys.shape
    return jnp.swapaxes(ys, 1, 2).reshape(seq, batch, d * h), final  # L x N x (D * H)


def _stacked(weights, x, hx, keys, *, cell, state_sizes, batch_first, dropout, dtype):
    """The multi-layer recurrence.

    weights: per layer, per direction, ``(w_ih, w_hh, b_ih, b_hh, w_hr)``; x: (L, N, H_in),
    or (N, L, H_in) if ``batch_first``, or unbatched (L, H_in); hx: None or a tuple of
    (layers * D, N, size) states, sizes ``state_sizes`` (unbatched (layers * D, size));
    ``dropout``: the probability in effect (0 in eval mode), with one PRNG key per gap
    between layers in ``keys``. Returns the last layer's output in x's layout and the tuple
    of final states.
    """
    batched = x.ndim == 3
    if not batched:
        x = x[:, None]  # L x 1 x H_in
        hx = None if hx is None else tuple(s[:, None] for s in hx)
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)  # L x N x H_in
    if dtype is None:
        dtype = jnp.result_type(x, *jax.tree.leaves(weights))
    dtype = jnp.dtype(dtype)
    x = x.astype(dtype)
    d = len(weights[0])
    if hx is None:
        hx = tuple(jnp.zeros((len(weights) * d, x.shape[1], size), dtype) for size in state_sizes)
    hx = tuple(s.astype(dtype) for s in hx)  # (layers * D) x N x H each
    finals = []
    for layer, directions in enumerate(weights):
        if layer > 0 and dropout > 0:  # between layers only, never after the last (as torch)
            if dropout == 1:
                x = jnp.zeros_like(x)
            else:
                keep = jax.random.bernoulli(keys[layer - 1], 1.0 - dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - dropout), jnp.zeros_like(x))
        state = tuple(s[layer * d:(layer + 1) * d] for s in hx)  # D x N x H each
        x, final = _layer(cell, x, state, directions, dtype)  # L x N x (D * H)
        finals.append(final)
    h_n = tuple(jnp.concatenate(s, axis=0) for s in zip(*finals))  # (layers * D) x N x H each
    if not batched:
        return x[:, 0], tuple(s[:, 0] for s in h_n)  # L x (D * H), (layers * D) x H
    if batch_first:
        x = jnp.swapaxes(x, 0, 1)  # N x L x (D * H)
    return x, h_n


# ----------------------------------------------------------------------------- modules


class _RNNBase(Stochastic):
    """The multi-layer, optionally bidirectional recurrence shared by RNN, LSTM and GRU.

    Per layer, the input projection of every time step is one matrix product, hoisted out of
    the time loop; the loop (``jax.lax.scan``) runs both directions together and holds only
    the hidden projection and the cell. Subclasses give the number of gate blocks, the
    number of state tensors, and ``_cell()``, the cell function of one time step.
    Train mode (the default, as torch) is ``deterministic=False``; ``model.eval()`` sets it.
    ``proj_size`` > 0 (LSTM only) projects h to that size with ``weight_hr_l{k}``.
    """

    gates: int  # gate blocks in each weight: RNN 1, LSTM 4 (i, f, g, o), GRU 3 (r, z, n)
    num_states: int  # RNN and GRU carry h; the LSTM carries (h, c)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, dropout: float, bidirectional: bool, proj_size: int = 0,
                 *, rngs: nnx.Rngs, dtype, param_dtype):
        name = type(self).__name__
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size),
                           ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name}: {arg} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name}: {arg} must be greater than zero, got {value}")
        for arg, value in (("bias", bias), ("batch_first", batch_first),
                           ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: {arg} must be a bool, got {type(value).__name__}")
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError(
                f"{name}: dropout must be a number in [0, 1], the probability of zeroing an "
                f"element between layers; got {dropout!r}"
            )
        if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 0:
            raise ValueError(f"{name}: proj_size should be a positive integer or zero to "
                             f"disable projections; got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size={proj_size} has to be smaller than "
                             f"hidden_size={hidden_size}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(  # as torch: dropout only acts between layers
                f"{name}: dropout={dropout} acts after every layer but the last, so it does "
                "nothing with num_layers=1", stacklevel=3)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout, self.proj_size = float(dropout), proj_size
        self.num_directions = 2 if bidirectional else 1
        self.dtype = dtype
        self.deterministic = False
        # torch's nn.RNNBase.reset_parameters: every weight and bias U(-1/sqrt(H), 1/sqrt(H))
        bound = 1.0 / math.sqrt(hidden_size)
        gate_size = self.gates * hidden_size
        h_size = proj_size or hidden_size  # the size of h: the output features per direction

        def uniform(*shape):
            return nnx.Param(jax.random.uniform(rngs.params(), shape, param_dtype, -bound, bound))

        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else h_size * self.num_directions
            for sfx in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{sfx}", uniform(layer_input, gate_size))
                setattr(self, f"weight_hh_l{layer}{sfx}", uniform(h_size, gate_size))
                setattr(self, f"bias_ih_l{layer}{sfx}", uniform(gate_size) if bias else None)
                setattr(self, f"bias_hh_l{layer}{sfx}", uniform(gate_size) if bias else None)
                if proj_size:
                    setattr(self, f"weight_hr_l{layer}{sfx}", uniform(hidden_size, proj_size))

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"][: self.num_directions]

    def _state_sizes(self) -> tuple[int, ...]:
        """The last axis of each state: h (proj_size with projections), then the LSTM's c."""
        return (self.proj_size or self.hidden_size,) + (self.hidden_size,) * (self.num_states - 1)

    def torch_rules(self):
        """Weights are stored (in, gates * hidden) and the projection (hidden, proj_size);
        torch stores them transposed."""
        kinds = ("ih", "hh", "hr") if self.proj_size else ("ih", "hh")
        return {f"weight_{kind}_l{layer}{sfx}": TRANSPOSE
                for layer in range(self.num_layers) for sfx in self._suffixes() for kind in kinds}

    def _weights(self):
        """Per layer, per direction: (w_ih, w_hh, b_ih, b_hh, w_hr), biases None without bias,
        w_hr None without projections."""

        def read(name):
            var = getattr(self, name, None)
            return None if var is None else var[...]

        return tuple(
            tuple(tuple(read(f"{kind}_l{layer}{sfx}")
                        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))
                  for sfx in self._suffixes())
            for layer in range(self.num_layers)
        )

    # ------------------------------------------------------------------ checks

    def _check_input(self, x: Array) -> None:
        name = type(self).__name__
        seq = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} expects an input of shape {seq} with input_size={self.input_size}, "
                f"or unbatched (seq_len, input_size); got shape {tuple(x.shape)}"
            )
        if x.shape[1 if x.ndim == 3 and self.batch_first else 0] == 0:
            raise ValueError(f"{name} expects a sequence length greater than zero; got shape "
                             f"{tuple(x.shape)}")

    def _check_state(self, hx, x: Array) -> tuple[Array, ...] | None:
        """``hx`` as a tuple of states, each checked against the shape torch expects."""
        if hx is None:
            return None
        name = type(self).__name__
        states = self._unpack(hx)
        layers = self.num_layers * self.num_directions
        lead = (layers, x.shape[0 if self.batch_first else 1]) if x.ndim == 3 else (layers,)
        batch = ", batch" if x.ndim == 3 else ""
        unbatched = "" if x.ndim == 3 else " for an unbatched input"
        for state_name, s, size in zip(("h_0", "c_0"), states, self._state_sizes()):
            size_name = "proj_size" if self.proj_size and state_name == "h_0" else "hidden_size"
            want = (*lead, size)
            what = f"(num_layers * num_directions{batch}, {size_name}){unbatched}"
            if tuple(jnp.shape(s)) != want:
                raise ValueError(f"{name} expects {state_name} of shape {what} = {want}; got "
                                 f"{tuple(jnp.shape(s))}")
        return states

    def _unpack(self, hx) -> tuple[Array, ...]:
        return (hx,)

    # ------------------------------------------------------------------ forward

    def _forward(self, x: Array, hx, rngs: nnx.Rngs | None):
        """x as the subclasses' docstrings say -> (output, tuple of final states)."""
        self._check_input(x)
        states = self._check_state(hx, x)
        p = self.dropout if self.num_layers > 1 and not self.deterministic else 0.0
        keys = None
        if 0 < p < 1:
            if rngs is None:
                raise ValueError(
                    f"{type(self).__name__} in train mode with dropout={self.dropout} needs "
                    "rngs=nnx.Rngs(dropout=...) at call time (or model.eval())"
                )
            keys = tuple(rngs.dropout() for _ in range(self.num_layers - 1))
        return _stacked(self._weights(), x, states, keys, cell=self._cell(),
                        state_sizes=self._state_sizes(), batch_first=self.batch_first,
                        dropout=p, dtype=self.dtype)


class RNN(_RNNBase):
    """torch's ``nn.RNN``: a multi-layer Elman network (Elman, "Finding Structure in Time",
    Cognitive Science 1990), ``h_t = tanh(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)`` (or ReLU).

    ``rnn(x, h_0=None, *, rngs=None) -> (output, h_n)`` with

    * x: (seq_len, batch, input_size), or (batch, seq_len, input_size) if ``batch_first``, or
      unbatched (seq_len, input_size);
    * h_0, h_n: (num_layers * num_directions, batch, hidden_size) (unbatched: without batch);
    * output: (seq_len, batch, num_directions * hidden_size) in the input's layout: the last
      layer's h_t, forward then reverse direction on the feature axis.

    ``dropout`` zeroes the outputs of every layer but the last, in train mode only, with
    masks drawn from the ``rngs`` given at call time.
    """

    gates, num_states = 1, 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; expected 'tanh' or "
                             "'relu'")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def _cell(self):
        return _tanh_cell if self.nonlinearity == "tanh" else _relu_cell

    def __call__(self, x: Array, hx: Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[Array, Array]:
        output, (h_n,) = self._forward(x, hx, rngs)
        return output, h_n


class LSTM(_RNNBase):
    """torch's ``nn.LSTM`` (Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural
    Computation 1997; with the forget gate of Gers et al. 2000), gates in torch's order
    i, f, g, o::

        i, f, o = sigmoid(...), g = tanh(...)
        c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

    ``lstm(x, (h_0, c_0)=None, *, rngs=None) -> (output, (h_n, c_n))``: shapes as :class:`RNN`,
    with the cell state c beside h (the slide: "LSTM has two states").

    ``proj_size`` > 0 is torch's LSTM with projections (Sak et al., "Long Short-Term Memory
    Based Recurrent Neural Network Architectures for Large Vocabulary Speech Recognition",
    2014): ``h_t = W_hr (o * tanh(c_t))`` with ``weight_hr_l{k}`` (torch's (proj_size,
    hidden_size)), so h, h_n and the output features are of size proj_size and c_n of
    hidden_size.
    """

    gates, num_states = 4, 2

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)

    def _unpack(self, hx):
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError("LSTM expects its initial state as a pair (h_0, c_0); got "
                             f"{type(hx).__name__}")
        return tuple(hx)

    def _cell(self):
        return _lstm_cell

    def __call__(self, x: Array, hx: tuple[Array, Array] | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[Array, tuple[Array, Array]]:
        output, (h_n, c_n) = self._forward(x, hx, rngs)
        return output, (h_n, c_n)


class GRU(_RNNBase):
    """torch's ``nn.GRU`` (Cho et al., "Learning Phrase Representations using RNN
    Encoder-Decoder for Statistical Machine Translation", EMNLP 2014), gates in torch's order
    r, z, n and torch's exact formula (the reset gate multiplies the hidden projection, its
    bias included)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h_t = (1 - z) * n + z * h_{t-1}

    ``gru(x, h_0=None, *, rngs=None) -> (output, h_n)``: shapes as :class:`RNN`.
    """

    gates, num_states = 3, 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def _cell(self):
        return _gru_cell

    def __call__(self, x: Array, hx: Array | None = None, *,
                 rngs: nnx.Rngs | None = None) -> tuple[Array, Array]:
        output, (h_n,) = self._forward(x, hx, rngs)
        return output, h_n


class RNNClassifier(nnx.Module):
    """The slide "Connecting an RNN with a FC layer": a batch-first RNN whose every h_t goes
    through ``fc = Sequential(Linear(hidden_size, num_outputs), LogSoftmax())``.

    x: (batch, seq_len, num_inputs) -> (batch, seq_len, num_outputs) log-probabilities
    (unbatched (seq_len, num_inputs) -> (seq_len, num_outputs)).
    """

    def __init__(self, num_inputs: int, hidden_size: int, num_outputs: int, num_layers: int = 1,
                 *, rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.rnn = RNN(num_inputs, hidden_size, num_layers=num_layers, batch_first=True, **kw)
        self.fc = Sequential(Linear(hidden_size, num_outputs, **kw), LogSoftmax())

    def __call__(self, x: Array) -> Array:
        ht, _ = self.rnn(x)  # N x L x hidden_size
        return self.fc(ht)  # N x L x num_outputs
