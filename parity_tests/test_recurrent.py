"""RNN, LSTM, GRU and the slide's RNN classifier against torch.nn's own recurrent modules.

Everything goes through the parity harness (outputs and final states, gradients through time
with respect to every weight, the input and the initial state, optimizer steps), over the
constructor's options, sequence lengths 1 and 1200, unbatched input, a given initial state,
torch checkpoints, dropout between layers, the slides' printed shapes and bad input.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import flax_arch
import flax_arch.models.recurrent as fr
import torch_ref.recurrent as tr
from parity_tests.harness import Pair, assert_close, torch_leaves, uninitialised
from parity_tests.test_module_db import module_db_groups, module_db_samples, run_samples
from parity_tests.tolerances import tolerance

CELLS = {"rnn": (fr.RNN, tr.RNN), "lstm": (fr.LSTM, tr.LSTM), "gru": (fr.GRU, tr.GRU)}


def _outputs(cell: str, seq: str = "LNC") -> list[str]:
    """The layouts of (output, h_n[, c_n]); the harness converts none of them (recurrent
    layouts are features-last on both sides), they document."""
    return [seq] + ["DNC"] * (2 if cell == "lstm" else 1)


def _modules(cell: str, dtype, input_size: int, hidden_size: int, seed: int = 0, **kwargs):
    flax_cls, torch_cls = CELLS[cell]
    torch.manual_seed(seed)
    # ours built abstractly: its weights come from torch (initialisation has its own test)
    return (torch_cls(input_size, hidden_size, **kwargs),
            uninitialised(lambda: flax_cls(input_size, hidden_size, **kwargs,
                                           rngs=nnx.Rngs(seed), param_dtype=np.dtype(dtype)),
                          seed))


def _pair(cell: str, dtype, shape, *, hidden_size: int = 3, train: bool = True, seed: int = 0,
          **kwargs) -> Pair:
    """torch.nn's module and ours with the same weights, on one random input of ``shape``."""
    x = np.random.default_rng(seed + 1).standard_normal(shape)
    torch_m, flax_m = _modules(cell, dtype, shape[-1], hidden_size, seed, **kwargs)
    seq = "NLC" if kwargs.get("batch_first") else "LNC"
    return Pair.of_modules(torch_m, flax_m, [x], [seq], _outputs(cell, seq), dtype,
                           family="recurrent", train=train)


# ----------------------------------------------------------------------------- registry


def test_optimizer_steps_without_bias():
    Pair("gru", np.float64, bias=False).check_optimizer_steps("adam")


# ----------------------------------------------------------------------------- the options

# Inputs are (5, 2, 4) or (2, 5, 4) with hidden_size 3 throughout, small enough to compile fast.
# The registered test configurations add 2-layer tanh RNN, bidirectional LSTM and batch-first
# GRU; the property sweep below adds random combinations.
SWEEP = [
    ("rnn", dict(num_layers=3, nonlinearity="relu", bidirectional=True, bias=False)),
    ("lstm", dict(num_layers=3, batch_first=True, bias=False)),
    ("gru", dict(num_layers=2, bidirectional=True, batch_first=True)),
]


@pytest.mark.parametrize("cell,kwargs", SWEEP, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in v.items()))
def test_options(cell, kwargs):
    """float64 in train mode, then eval mode with dropout=0.5, which must be the identity as
    torch's is."""
    shape = (2, 5, 4) if kwargs.get("batch_first") else (5, 2, 4)
    _pair(cell, np.float64, shape, **kwargs).check_forward_and_gradients()
    _pair(cell, np.float64, shape, dropout=0.5, train=False, **kwargs).check_forward_and_gradients()


@settings(max_examples=6, deadline=None, derandomize=True)
@given(cell=st.sampled_from(sorted(CELLS)), num_layers=st.integers(1, 3),
       bidirectional=st.booleans(), batch_first=st.booleans(), bias=st.booleans(),
       relu=st.booleans(), seq_len=st.sampled_from([1, 2, 5]), batch=st.sampled_from([1, 2]),
       float32=st.booleans())
def test_property_sweep(cell, num_layers, bidirectional, batch_first, bias, relu, seq_len,
                        batch, float32):
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                  bias=bias)
    if cell == "rnn":
        kwargs["nonlinearity"] = "relu" if relu else "tanh"
    shape = (batch, seq_len, 4) if batch_first else (seq_len, batch, 4)
    dtype = np.float32 if float32 else np.float64
    _pair(cell, dtype, shape, **kwargs).check_forward_and_gradients()


@pytest.mark.parametrize("cell,dtype", [("rnn", np.float32), ("lstm", np.float64),
                                        ("gru", np.float32)], ids=["rnn", "lstm", "gru"])
def test_sequence_of_length_one(cell, dtype):
    _pair(cell, dtype, (1, 2, 4), num_layers=2, bidirectional=True).check_forward_and_gradients()


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_long_sequence_float64_does_not_drift(cell):
    """1200 steps, both directions: outputs at every step (the last included) and gradients
    through the whole sequence stay within the float64 tolerance."""
    pair = _pair(cell, np.float64, (1200, 2, 3), hidden_size=3, bidirectional=True)
    pair.check_forward_and_gradients()
    out, *_ = pair.flax(jnp.asarray(pair.flax_in[0]))
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.std(out[-100:])) > 1e-3  # not dead


# ----------------------------------------------------------------------------- initial state


class TorchWithState(nn.Module):
    """torch.nn's module called with its initial state given as separate inputs."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *state):
        return self.rnn(x, state if len(state) == 2 else state[0])


class FlaxWithState(nnx.Module):
    """Ours called the same way, so that the harness differentiates the states too."""

    def __init__(self, rnn):
        self.rnn = rnn

    def __call__(self, x, *state):
        return self.rnn(x, state if len(state) == 2 else state[0])


@pytest.mark.parametrize("cell,batch_first,dtype", [
    ("rnn", False, np.float64), ("lstm", True, np.float32), ("gru", False, np.float64),
], ids=["rnn", "lstm", "gru"])
def test_given_initial_state_and_its_gradient(cell, batch_first, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 4) if batch_first else (5, 2, 4))
    seq = "NLC" if batch_first else "LNC"
    layouts = _outputs(cell, seq)  # x and the states, as the outputs
    states = [rng.standard_normal((4, 2, 3)) for _ in layouts[1:]]
    torch_m, flax_m = _modules(cell, dtype, 4, 3, num_layers=2, bidirectional=True,
                               batch_first=batch_first)
    pair = Pair.of_modules(TorchWithState(torch_m), FlaxWithState(flax_m), [x, *states],
                           layouts, layouts, dtype, family="recurrent")
    pair.check_forward_and_gradients()  # gradients with respect to h_0 (and c_0) included


def test_unbatched_input_and_state():
    """torch's unbatched form: x (seq_len, input_size), states (layers * directions, hidden)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4))
    states = [rng.standard_normal((2, 3)) for _ in range(2)]
    torch_m, flax_m = _modules("lstm", np.float64, 4, 3, bidirectional=True)
    layouts = ["LC"] + ["DC"] * len(states)
    pair = Pair.of_modules(TorchWithState(torch_m), FlaxWithState(flax_m), [x, *states],
                           layouts, layouts, family="recurrent")
    pair.check_forward_and_gradients()
    out, h_n = pair.flax(jnp.asarray(x), *map(jnp.asarray, states))[:2]
    assert out.shape == (5, 6) and jax.tree.leaves(h_n)[0].shape == (2, 3)
    # without a state: zeros, as torch's
    ours = jax.tree.leaves(pair.flax.rnn(jnp.asarray(x)))
    ref = torch_leaves(pair.torch.rnn(torch.from_numpy(x)))
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert_close(a, b.detach().numpy(), pair.tol, f"output {i}", pair.record)


# ----------------------------------------------------------------------------- checkpoints


def test_torch_lstm_state_dict_loads_strictly_and_round_trips():
    torch.manual_seed(5)
    ref = nn.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    model = fr.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True, rngs=nnx.Rngs(1))
    assert flax_arch.load_torch_state_dict(model, ref.state_dict()) == ([], [], [])
    assert model.weight_ih_l1_reverse[...].shape == (6, 12)  # (in, 4 * hidden), transposed
    back = flax_arch.torch_state_dict(model)
    assert list(back) and set(back) == set(ref.state_dict())
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
    x = np.random.default_rng(6).standard_normal((2, 5, 4)).astype(np.float32)
    out, (h, c) = ref(torch.from_numpy(x))
    ours, (h2, c2) = model(jnp.asarray(x))
    for what, a, b in (("output", ours, out), ("h_n", h2, h), ("c_n", c2, c)):
        assert_close(a, b.detach().numpy(), tolerance(np.float32, "recurrent"), what)


def test_state_dict_of_another_cell_is_refused():
    model = fr.LSTM(4, 3, rngs=nnx.Rngs(0))
    before = flax_arch.torch_state_dict(model)
    with pytest.raises(flax_arch.StateDictError, match=r"weight_ih_l0: got \(9, 4\), expected "
                       r"\(12, 4\)"):
        flax_arch.load_torch_state_dict(model, nn.GRU(4, 3).state_dict())
    with pytest.raises(flax_arch.StateDictError, match="missing keys.*bias_ih_l0"):
        flax_arch.load_torch_state_dict(model, nn.LSTM(4, 3, bias=False).state_dict())
    for key, value in flax_arch.torch_state_dict(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)  # left as it was


def test_initialisation_is_torchs_uniform():
    """Every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden)), in torch's shapes."""
    state = flax_arch.torch_state_dict(fr.GRU(4, 3, num_layers=2, bidirectional=True,
                                              rngs=nnx.Rngs(0)))
    assert state.keys() == nn.GRU(4, 3, num_layers=2, bidirectional=True).state_dict().keys()
    values = np.concatenate([v.ravel() for v in state.values()])
    bound = 1 / np.sqrt(3)
    assert np.max(np.abs(values)) <= bound and values.size == 360
    assert np.max(values) > 0.9 * bound and np.min(values) < -0.9 * bound
    assert abs(np.mean(values)) < 0.1 and len(np.unique(values)) == values.size


# ----------------------------------------------------------------------------- dropout


def test_dropout_one_zeroes_every_layer_input_but_the_first():
    """p = 1 is deterministic in train mode: exact parity with torch, layers 2+ see zeros."""
    _pair("gru", np.float64, (2, 5, 4), num_layers=2, bidirectional=True, batch_first=True,
          dropout=1.0).check_forward_and_gradients()


P, HIDDEN, INPUTS = 0.3, 64, 2


def _relu_chain(module):
    """Loads weights into a 2-layer, bias-free ReLU RNN (torch's or ours) so that layer 1
    copies layer 0's output: layer 0 is h = relu(x W0) with positive x and W0 and no
    recurrence, layer 1 the identity. The output over layer 0's output is then exactly the
    dropout mask between them, scaled."""
    sd = {
        "weight_ih_l0": np.full((HIDDEN, INPUTS), 0.5, np.float32),
        "weight_hh_l0": np.zeros((HIDDEN, HIDDEN), np.float32),
        "weight_ih_l1": np.eye(HIDDEN, dtype=np.float32),
        "weight_hh_l1": np.zeros((HIDDEN, HIDDEN), np.float32),
    }
    if isinstance(module, nn.Module):
        module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    else:
        flax_arch.load_torch_state_dict(module, sd)


def _dropout_statistics(out: np.ndarray, h_n: np.ndarray, layer0: np.ndarray):
    ratio = out / layer0
    zeroed = np.isclose(ratio, 0.0, atol=1e-6)
    assert np.allclose(ratio[~zeroed], 1 / (1 - P), rtol=1e-5)  # survivors scaled by 1/(1-p)
    # fraction zeroed ~ p: binomial sd sqrt(p(1-p)/n) ~ 0.0038 for n = 14336; 5 sd bound
    assert abs(zeroed.mean() - P) < 0.02, zeroed.mean()
    np.testing.assert_allclose(h_n[0], layer0[-1], rtol=1e-6)  # layer 0's state: undropped
    np.testing.assert_allclose(h_n[1], out[-1], rtol=1e-6)  # no dropout after the last layer


def test_dropout_mask_statistics_in_train_mode():
    x = np.random.default_rng(7).uniform(0.5, 1.5, (32, 7, INPUTS)).astype(np.float32)
    layer0 = np.maximum(x @ np.full((INPUTS, HIDDEN), 0.5, np.float32), 0)  # relu(x W0)

    model = fr.RNN(INPUTS, HIDDEN, num_layers=2, nonlinearity="relu", bias=False, dropout=P,
                   rngs=nnx.Rngs(0))
    _relu_chain(model)
    out, h_n = model(jnp.asarray(x), rngs=nnx.Rngs(dropout=1))
    _dropout_statistics(np.asarray(out), np.asarray(h_n), layer0)
    again, _ = model(jnp.asarray(x), rngs=nnx.Rngs(dropout=1))
    other, _ = model(jnp.asarray(x), rngs=nnx.Rngs(dropout=2))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(out))  # the rngs decide
    assert not np.array_equal(np.asarray(other), np.asarray(out))
    model.eval()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))[0]), layer0, rtol=1e-6)

    # torch.nn.RNN does the same (its own random mask)
    ref = nn.RNN(INPUTS, HIDDEN, num_layers=2, nonlinearity="relu", bias=False, dropout=P)
    _relu_chain(ref)
    torch.manual_seed(0)
    out, h_n = ref(torch.from_numpy(x))
    _dropout_statistics(out.detach().numpy(), h_n.detach().numpy(), layer0)


def test_dropout_in_train_mode_needs_rngs():
    model = fr.LSTM(4, 3, num_layers=2, dropout=0.2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs rngs"):
        model(jnp.ones((5, 2, 4)))


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match="num_layers=1"):
        fr.GRU(4, 3, dropout=0.5, rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------- the slides


def _shapes(fn):
    """The shapes of ``fn()``'s outputs, traced abstractly: no weights drawn, nothing computed."""
    return jax.tree.map(lambda a: a.shape, jax.eval_shape(fn))


def test_slide_shapes():
    NUM_INPUTS, HIDDEN_SIZE, SEQ_LEN, NUM_LAYERS, NUM_OUTPUTS = 100, 512, 100, 1, 10

    def rnn(**kw):
        return fr.RNN(NUM_INPUTS, HIDDEN_SIZE, num_layers=NUM_LAYERS, **kw, rngs=nnx.Rngs(0))

    # seq-first: [seq_len, bsize, hidden_size]
    x = jnp.ones((SEQ_LEN, 1, NUM_INPUTS))
    assert _shapes(lambda: rnn()(x, None)) == ((100, 1, 512), (1, 1, 512))
    # batch_first: [bsize, seq_len, hidden_size]; the state stays (layers, bsize, hidden)
    x = jnp.ones((1, SEQ_LEN, NUM_INPUTS))
    assert _shapes(lambda: rnn(batch_first=True)(x, None)) == ((1, 100, 512), (1, 1, 512))
    # "LSTM has two states": h[T] and c[T]
    lstm = fr.LSTM(NUM_INPUTS, HIDDEN_SIZE, num_layers=NUM_LAYERS, batch_first=True,
                   rngs=nnx.Rngs(0))
    assert _shapes(lambda: lstm(x, None)) == ((1, 100, 512), ((1, 1, 512), (1, 1, 512)))
    # RNN + FC: log-probabilities per time step
    assert _shapes(lambda: fr.RNNClassifier(NUM_INPUTS, HIDDEN_SIZE, NUM_OUTPUTS, NUM_LAYERS,
                                            rngs=nnx.Rngs(0))(x)) == (1, 100, 10)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(nonlinearity="sigmoid"), ValueError, "unknown nonlinearity 'sigmoid'"),
    (dict(dropout=1.5), ValueError, r"dropout must be a number in \[0, 1\]"),
    (dict(dropout=-0.1), ValueError, r"dropout must be a number in \[0, 1\]"),
    (dict(dropout=True), ValueError, r"dropout must be a number in \[0, 1\]"),
    (dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
    (dict(hidden_size=0), ValueError, "hidden_size must be greater than zero"),
    (dict(hidden_size=2.5), TypeError, "hidden_size must be an int"),
    (dict(bidirectional=1), TypeError, "bidirectional must be a bool"),
])
def test_bad_hyperparameters_fail_at_construction(kwargs, error, match):
    kwargs = {"input_size": 3, "hidden_size": 4, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            fr.RNN(**kwargs, rngs=nnx.Rngs(0))


def test_bad_inputs_and_states_are_named():
    rnn = fr.GRU(4, 3, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(seq_len, batch, input_size\) with input_size=4"):
        rnn(np.ones((5, 2, 6)))
    with pytest.raises(ValueError, match=r"got shape \(5, 2, 4, 1\)"):
        rnn(np.ones((5, 2, 4, 1)))
    with pytest.raises(ValueError, match="sequence length greater than zero"):
        rnn(np.ones((0, 2, 4)))
    with pytest.raises(ValueError, match=r"h_0 of shape .* = \(2, 2, 3\); got \(1, 2, 3\)"):
        rnn(np.ones((5, 2, 4)), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"unbatched input = \(2, 3\); got \(2, 1, 3\)"):
        rnn(np.ones((5, 4)), np.zeros((2, 1, 3)))
    bf = fr.RNN(4, 3, batch_first=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, seq_len, input_size\)"):
        bf(np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"h_0 of shape .* = \(1, 2, 3\); got \(1, 5, 3\)"):
        bf(np.ones((2, 5, 4)), np.zeros((1, 5, 3)))
    lstm = fr.LSTM(4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"pair \(h_0, c_0\)"):
        lstm(np.ones((5, 2, 4)), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"c_0 of shape .* = \(1, 2, 3\); got \(1, 2, 5\)"):
        lstm(np.ones((5, 2, 4)), (np.zeros((1, 2, 3)), np.zeros((1, 2, 5))))
    classifier = fr.RNNClassifier(4, 3, 6, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, seq_len, input_size\) with input_size=4"):
        classifier(np.ones((2, 4, 5)))  # torch's (N, C, L) is not a recurrent layout


# ----------------------------------------------------------------------------- torch's module_db

MODULE_DB = module_db_samples(CELLS_BY_NAME := {"RNN", "LSTM", "GRU"})


# Every SPREAD-th sample of each module in every run, all of them in the slow run: the 80
# samples compiled and traced in ~40 s of a 2-core machine's time. module_db lists the product
# of the options (and an initial state or none), each one of two values, so a step of 3 (odd)
# walks every value of every option (asserted below).
SPREAD = 3


MODULE_DB_GROUPS = [pytest.param(*g, id=f"{g[0]}-{g[1]}")
                    for g in module_db_groups(CELLS_BY_NAME)]


@pytest.mark.parametrize("name,mode,samples", MODULE_DB_GROUPS)
def test_module_db_samples(name, mode, samples):
    """torch's own samples (test_module_db's check, float64 to 1e-10): unbatched sequences,
    with and without initial states, over the options; the LSTM with proj_size 0 and 2.
    Each module's samples run in one compiled program; a mismatch names the sample."""
    run_samples(name, mode, samples[::SPREAD])


@pytest.mark.slow
@pytest.mark.parametrize("name,mode,samples", MODULE_DB_GROUPS)
def test_every_module_db_sample(name, mode, samples):
    run_samples(name, mode, samples)


def test_module_db_spread_takes_every_option_value():
    for name, _, samples in (p.values for p in MODULE_DB_GROUPS):
        def values(chosen):
            return {(k, repr(v)) for _, sample in chosen
                    for k, v in sample.constructor_input.kwargs.items()} | {
                ("initial state", len(sample.forward_input.args)) for _, sample in chosen}
        assert values(samples[::SPREAD]) == values(samples), name


def test_module_db_samples_need_one_mode():
    """Train and eval differ only by dropout, which none of the samples sets."""
    assert len(MODULE_DB) == 80 and {p.values[0] for p in MODULE_DB} == CELLS_BY_NAME
    assert not any(p.values[2].constructor_input.kwargs.get("dropout") for p in MODULE_DB)
    assert {p.values[2].constructor_input.kwargs.get("proj_size") for p in MODULE_DB
            if p.values[0] == "LSTM"} == {0, 2}


# ----------------------------------------------------------------------------- projections


@pytest.mark.parametrize("kwargs,shape", [
    (dict(num_layers=2, bidirectional=True), (5, 2, 4)),
    (dict(num_layers=3, batch_first=True, bias=False), (2, 5, 4)),
    (dict(), (1, 3, 4)),
], ids=str)
def test_lstm_with_projections(kwargs, shape):
    """h (and so the output and every layer's input) projected to proj_size=2, c of
    hidden_size=4; gradients through time to every weight, weight_hr_l{k} included."""
    seq = "NLC" if kwargs.get("batch_first") else "LNC"
    x = np.random.default_rng(8).standard_normal(shape)
    torch_m, flax_m = _modules("lstm", np.float64, shape[-1], 4, proj_size=2, **kwargs)
    pair = Pair.of_modules(torch_m, flax_m, [x], [seq], _outputs("lstm", seq), np.float64,
                           family="recurrent")
    pair.check_forward_and_gradients()
    out, (h, c) = flax_m(jnp.asarray(x))
    d = 2 if kwargs.get("bidirectional") else 1
    assert out.shape[-1] == d * 2 and h.shape[-1] == 2 and c.shape[-1] == 4


def test_lstm_with_projections_given_state_and_state_dict():
    """h_0 of proj_size, c_0 of hidden_size; torch's state_dict (weight_hr_l0_reverse, ...)
    loads strictly and round-trips."""
    rng = np.random.default_rng(9)
    x, h0, c0 = rng.standard_normal((5, 2, 3)), rng.standard_normal((4, 2, 2)), \
        rng.standard_normal((4, 2, 5))
    torch_m, flax_m = _modules("lstm", np.float64, 3, 5, num_layers=2, bidirectional=True,
                               proj_size=2)
    layouts = ["LNC", "DNC", "DNC"]
    pair = Pair.of_modules(TorchWithState(torch_m), FlaxWithState(flax_m), [x, h0, c0],
                           layouts, layouts, family="recurrent")
    pair.check_forward_and_gradients()
    back = flax_arch.torch_state_dict(flax_m)
    assert back["weight_hr_l1_reverse"].shape == (2, 5) and set(back) == set(torch_m.state_dict())
    for key, value in torch_m.state_dict().items():
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
    with pytest.raises(ValueError, match=r"h_0 of shape \(num_layers \* num_directions, batch, "
                                         r"proj_size\) = \(4, 2, 2\); got \(4, 2, 5\)"):
        flax_m(jnp.asarray(x), (jnp.asarray(c0), jnp.asarray(c0)))
