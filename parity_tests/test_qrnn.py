"""The QRNN (Bradbury et al. 2016) against its PyTorch reference, the slide's fQRNNLayer fixed.

Through the parity harness: outputs and final states, gradients through time with respect to
every weight, the input and the initial state, optimizer steps; over the poolings (f, fo,
ifo), kwidth 1-3, num_layers 1-3, bidirectional, both Flax scan modes, sequence lengths 1
and 1030, with and without an initial state. Then the scan modes against each other,
zoneout (eval exact; train-mode statistics on both sides), dropout between layers, the
slide's shapes, the state_dict layout, and bad input.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import flax_arch.models.qrnn as fq
import torch_ref.qrnn as tq
from parity_tests.harness import Pair, case_name, sweep_pair, uninitialised

DTYPES = [np.float64, np.float32]
SCANS = list(fq.SCANS)
POOLINGS = list(fq.POOLINGS)


def _ids(v):
    return np.dtype(v).name if isinstance(v, type) else str(v)


def _case(cls: str, args: tuple, dtype=np.float64, *, batch: int = 2, seq: int = 5,
          state: bool = True, **kwargs) -> tuple:
    """Torch reference and Flax twin (``cls`` of each package, built with ``args, kwargs``),
    inputs x (batch, seq, num_inputs) and, with ``state``, a random initial state, their
    layouts and the outputs' layouts: a case of ``harness.sweep_pair``."""
    torch.manual_seed(0)
    t = getattr(tq, cls)(*args, **kwargs)
    f = uninitialised(lambda: getattr(fq, cls)(*args, **kwargs, rngs=nnx.Rngs(0),
                                               param_dtype=np.dtype(dtype)))  # torch's weights
    rng = np.random.default_rng(1)
    inputs, layouts = [rng.standard_normal((batch, seq, args[0]))], ["NLC"]
    if cls == "QRNNLayer":
        outs, state_shape = ["NLC", "NC"], (batch, args[1])
    else:
        outs = ["NLC", "DNC"]
        state_shape = (f.num_layers * f.num_directions, batch, args[1])
    if state:
        inputs.append(rng.uniform(-1, 1, state_shape))
        layouts.append(outs[1])
    return t, f, inputs, layouts, outs


def _pair(cls: str, args: tuple, dtype=np.float64, **kwargs) -> Pair:
    """:func:`_case`'s models with the same weights, as a pair."""
    return Pair.of_modules(*_case(cls, args, dtype, **kwargs), dtype, family="qrnn")


def _sweep(cases: dict[str, tuple]) -> Pair:
    """Several :func:`_case` s in one pair (one compiled program; a mismatch names its case)."""
    return sweep_pair(cases, family="qrnn")


def _both_scans(pair: Pair) -> None:
    """Forward and gradients with the sequential scan, then again with the associative one."""
    pair.check_forward_and_gradients()
    pair.flax.set_attributes(scan="associative")
    pair.check_forward_and_gradients()


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("name", ["qrnn_layer", "qrnn"])
def test_registered_models_with_the_associative_scan(name, dtype):
    """The registry's generic checks (test_registry_parity.py) run the default lax.scan in
    both modes; this runs them with lax.associative_scan: train mode's forward, gradients and
    Adam steps (eval mode computes the same without zoneout and dropout; see their tests)."""
    pair = Pair(name, dtype, train=True)
    pair.flax.set_attributes(scan="associative")
    pair.check(("forward", "grad", "adam"))


# ----------------------------------------------------------------------------- the options


def test_layer_poolings_and_widths():
    """Poolings f, fo, ifo at kwidths 1 to 3."""
    cases = [("f", 1), ("fo", 2), ("ifo", 3), ("f", 3)]
    _both_scans(_sweep({case_name(dict(pooling=p, kwidth=k)): _case("QRNNLayer", (4, 6, k, p))
                        for p, k in cases}))


STACKS = [
    dict(num_layers=1, bidirectional=False, pooling="f", kwidth=2),
    dict(num_layers=1, bidirectional=True, pooling="ifo", kwidth=1),
    dict(num_layers=2, bidirectional=False, pooling="fo", kwidth=3),
    dict(num_layers=3, bidirectional=True, pooling="fo", kwidth=2),
]


def test_stacks():
    """Each of STACKS; and a 2-layer bidirectional ifo stack without an initial state, and
    on a sequence of length 1."""
    deep = dict(num_layers=2, bidirectional=True, pooling="ifo", kwidth=3)
    cases = {case_name(o): _case("QRNN", (4, 6), **o) for o in STACKS}
    cases["without_initial_state"] = _case("QRNN", (4, 6), state=False, **deep)
    cases["sequence_length_1"] = _case("QRNN", (4, 6), seq=1, **deep)
    _both_scans(_sweep(cases))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_sequence_length_1030(dtype):
    """1030 steps through time, in both directions: outputs, final states and every gradient
    stay at parity in float64 (both scans) and within the float32 tolerance (no drift)."""
    pair = _pair("QRNN", (4, 6), dtype, seq=1030, bidirectional=True, pooling="fo")
    if dtype == np.float64:
        _both_scans(pair)
    else:
        pair.check_forward_and_gradients()


@pytest.mark.parametrize("scan", SCANS)
def test_long_sequence_is_stable(scan):
    """fo-pooling keeps c a convex combination of the z's (in [-1, 1]) and the state, even
    with forget gates near 1 (long memory) over 3000 steps; |h| = |o * c| <= 1 too."""
    layer = fq.QRNNLayer(4, 6, 2, "fo", scan=scan, rngs=nnx.Rngs(0), param_dtype=np.float64)
    bias = np.zeros(18)
    bias[6:12] = 6.0  # f = sigmoid(6 + ...) ~ 0.998
    layer.conv.bias[...] = jnp.asarray(bias)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3000, 4)) * 3)
    hts, c_T = nnx.jit(lambda m, x, c: m(x, c))(layer, x, jnp.full((2, 6), 0.9))
    assert np.all(np.isfinite(hts)) and np.all(np.isfinite(c_T))
    assert float(jnp.max(jnp.abs(hts))) <= 1.0 and float(jnp.max(jnp.abs(c_T))) <= 1.0
    assert float(jnp.max(jnp.abs(c_T))) > 0.05  # the memory did not simply vanish


# ----------------------------------------------------------------------------- scan modes


@pytest.mark.parametrize("seq", [1, 2, 7, 1030])
def test_scan_modes_agree(seq):
    """lax.scan and lax.associative_scan over c_t = a_t * c_{t-1} + b_t: the same values and
    gradients (float64, 1e-10), with forget gates near 1 where errors would accumulate."""
    rng = np.random.default_rng(seq)
    a = jnp.asarray(rng.uniform(0.9, 1.0, (2, seq, 4)))
    b = jnp.asarray(rng.uniform(-0.1, 0.1, (2, seq, 4)))
    c0 = jnp.asarray(rng.uniform(-1, 1, (2, 4)))
    g = jnp.asarray(rng.standard_normal((2, seq, 4)))

    @functools.partial(jax.jit, static_argnums=0)
    def run(pool):
        out, vjp = jax.vjp(pool, a, b, c0)
        return [out, *vjp(g)]

    for seq_leaf, assoc_leaf in zip(run(fq.pool_sequential), run(fq.pool_associative), strict=True):
        scale = max(1.0, float(jnp.max(jnp.abs(seq_leaf))))
        assert float(jnp.max(jnp.abs(seq_leaf - assoc_leaf))) <= 1e-10 * scale


# ----------------------------------------------------------------------------- zoneout


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_zoneout_eval_is_exact(dtype):
    _both_scans(Pair("qrnn", dtype, train=False, zoneout=0.4))


def _kept_fraction(hts: np.ndarray, state: np.ndarray) -> float:
    """f-pooling: a zoned-out step keeps h exactly (a = 1, b = 0); any other step moves it."""
    prev = np.concatenate([state[:, None], hts[:, :-1]], axis=1)
    return float(np.mean(hts == prev))


ZONEOUT, ROWS, SEQ = 0.3, 2000, 12


def _zoneout_input():
    rng = np.random.default_rng(3)
    x = np.repeat(rng.standard_normal((1, SEQ, 4)), ROWS, axis=0)  # one sequence, many draws
    return x, np.repeat(rng.uniform(-1, 1, (1, 6)), ROWS, axis=0)


def _check_zoneout_statistics(train_hts, eval_hts, state):
    # fraction of gates forced to 1: binomial over ROWS * SEQ * 6 draws, 5 sigma
    sigma = np.sqrt(ZONEOUT * (1 - ZONEOUT) / train_hts.size)
    assert abs(_kept_fraction(train_hts, state) - ZONEOUT) < 5 * sigma
    # eval mode is the expectation over the masks: the mean of the train-mode draws
    mean, sem = train_hts.mean(axis=0), train_hts.std(axis=0) / np.sqrt(ROWS)
    assert np.all(np.abs(mean - eval_hts[0]) < 5 * sem + 1e-12)
    # and never a no-op: the train-mode draws differ between rows
    assert np.ptp(train_hts, axis=0).max() > 0.1


def test_zoneout_train_statistics_flax():
    x, state = map(jnp.asarray, _zoneout_input())
    layer = fq.QRNNLayer(4, 6, 2, "f", ZONEOUT, rngs=nnx.Rngs(0), param_dtype=np.float64)
    train_hts, _ = layer(x, state, rngs=nnx.Rngs(dropout=1))
    again, _ = layer(x, state, rngs=nnx.Rngs(dropout=1))
    np.testing.assert_array_equal(train_hts, again)  # the mask comes from rngs only
    layer.eval()
    eval_hts, _ = layer(x[:1], state[:1])
    _check_zoneout_statistics(np.asarray(train_hts), np.asarray(eval_hts), np.asarray(state))


def test_zoneout_train_statistics_torch():
    x, state = (torch.from_numpy(a) for a in _zoneout_input())
    torch.manual_seed(0)
    layer = tq.QRNNLayer(4, 6, 2, "f", ZONEOUT).double()
    with torch.no_grad():
        train_hts, _ = layer(x, state)
        eval_hts, _ = layer.eval()(x[:1], state[:1])
    _check_zoneout_statistics(train_hts.numpy(), eval_hts.numpy(), state.numpy())


def test_zoneout_for_ifo_keeps_the_state():
    """A zoned-out ifo step keeps c too (its input gate is masked with the forget gate)."""
    x, state = map(jnp.asarray, _zoneout_input())
    layer = fq.QRNNLayer(4, 6, 2, "ifo", ZONEOUT, rngs=nnx.Rngs(0), param_dtype=np.float64)
    _, c_T = layer(x[:, :1], state, rngs=nnx.Rngs(dropout=2))
    kept = float(np.mean(np.asarray(c_T) == np.asarray(state)))
    assert abs(kept - ZONEOUT) < 5 * np.sqrt(ZONEOUT * (1 - ZONEOUT) / c_T.size)


# ----------------------------------------------------------------------------- dropout


def test_dropout_between_layers():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((3, 6, 4)))
    model = fq.QRNN(4, 6, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0), param_dtype=np.float64)
    out, h_n = model(x, rngs=nnx.Rngs(dropout=5))
    # by hand: layer 0, the same dropout draw, layer 1
    h0, s0 = model.layers[0](x)
    h1, s1 = model.layers[1](model.drop(h0, rngs=nnx.Rngs(dropout=5)))
    np.testing.assert_array_equal(out, h1)
    np.testing.assert_array_equal(h_n, jnp.stack([s0, s1]))
    assert float(jnp.max(jnp.abs(out - model.layers[1](h0)[0]))) > 1e-3  # it did drop
    # after the last layer there is none: a 1-layer stack is deterministic in train mode
    single = fq.QRNN(4, 6, dropout=0.5, rngs=nnx.Rngs(0), param_dtype=np.float64)
    np.testing.assert_array_equal(single(x)[0], single.layers[0](x)[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_dropout_eval_is_exact(dtype):
    Pair("qrnn", dtype, train=False, dropout=0.5).check_forward_and_gradients()


# ----------------------------------------------------------------------------- slide, layout


def test_slide_shapes():
    """The slide's comments: x [bsz, seq_len, num_inputs], state [bsz, num_outputs],
    hts [bsz, seq_len, num_outputs]; one conv doubling the feature maps for z and f."""
    bsz, seq_len, num_inputs, num_outputs = 5, 9, 16, 32
    torch.manual_seed(0)
    t_layer = tq.QRNNLayer(num_inputs, num_outputs)
    f_layer = fq.QRNNLayer(num_inputs, num_outputs, rngs=nnx.Rngs(0))
    assert tuple(t_layer.conv.weight.shape) == (2 * num_outputs, num_inputs, 2)
    assert f_layer.conv.weight[...].shape == (2, num_inputs, 2 * num_outputs)
    x = np.random.default_rng(0).standard_normal((bsz, seq_len, num_inputs)).astype(np.float32)
    state = np.zeros((bsz, num_outputs), np.float32)
    with torch.no_grad():
        outs = [t_layer(torch.from_numpy(x)), t_layer(torch.from_numpy(x), torch.from_numpy(state))]
    outs += [f_layer(jnp.asarray(x)), f_layer(jnp.asarray(x), jnp.asarray(state))]
    for hts, h_T in outs:
        assert tuple(hts.shape) == (bsz, seq_len, num_outputs)
        assert tuple(h_T.shape) == (bsz, num_outputs)
        np.testing.assert_array_equal(np.asarray(hts[:, -1]), np.asarray(h_T))


def test_torch_zero_state_follows_the_input():
    """The slide built its zero state in the default dtype on the CPU; ours follows x."""
    layer = tq.QRNNLayer(4, 6).double()
    hts, h_T = layer(torch.randn(2, 5, 4, dtype=torch.float64))
    assert hts.dtype == h_T.dtype == torch.float64


def test_state_dict_layout():
    """layers[l * num_directions + d], the index of its state in h_n."""
    torch.manual_seed(0)
    t = tq.QRNN(4, 6, num_layers=2, pooling="ifo", kwidth=3, bidirectional=True).double()
    f = fq.QRNN(4, 6, num_layers=2, pooling="ifo", kwidth=3, bidirectional=True,
                rngs=nnx.Rngs(0), param_dtype=np.float64)
    shapes = {f"layers.{i}.conv.{k}": s for i, c in enumerate((4, 4, 12, 12))
              for k, s in (("weight", (24, c, 3)), ("bias", (24,)))}
    assert {k: tuple(v.shape) for k, v in t.state_dict().items()} == shapes
    assert {k: v.shape for k, v in flax_arch.torch_state_dict(f).items()} == shapes
    flax_arch.load_torch_state_dict(f, t.state_dict())
    # the reverse layer of layer 0 alone, on the reversed sequence, gives h_n[1]
    x = np.random.default_rng(0).standard_normal((2, 5, 4))
    _, h_n = f(jnp.asarray(x))
    _, h_T = f.layers[1](jnp.asarray(x[:, ::-1]))
    np.testing.assert_allclose(h_n[1], h_T, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("side", ["flax", "torch"])
def test_bad_hyperparameters(side):
    def build(cls, *args, **kwargs):
        if side == "torch":
            return getattr(tq, cls)(*args, **kwargs)
        return getattr(fq, cls)(*args, **kwargs, rngs=nnx.Rngs(0))

    with pytest.raises(ValueError, match=r"pooling must be one of \['f', 'fo', 'ifo'\], got 'io'"):
        build("QRNNLayer", 3, 4, pooling="io")
    with pytest.raises(ValueError, match="kwidth must be >= 1"):
        build("QRNN", 3, 4, kwidth=0)
    for zoneout in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"zoneout must be in \[0, 1\)"):
            build("QRNNLayer", 3, 4, zoneout=zoneout)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        build("QRNN", 3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\]"):
        build("QRNN", 3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="sizes must be positive"):
        build("QRNNLayer", 0, 4)


def test_bad_scan_mode():
    with pytest.raises(ValueError, match=r"scan must be one of \('sequential', 'associative'\)"):
        fq.QRNN(3, 4, scan="parallel", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("side", ["flax", "torch"])
def test_bad_input(side):
    torch.manual_seed(0)
    if side == "torch":
        layer, stack, arr = tq.QRNNLayer(4, 6), tq.QRNN(4, 6, num_layers=2), torch.zeros
    else:
        kw = dict(rngs=nnx.Rngs(0), param_dtype=np.float64)
        layer, stack, arr = fq.QRNNLayer(4, 6, **kw), fq.QRNN(4, 6, num_layers=2, **kw), jnp.zeros
    with pytest.raises(ValueError, match=r"x of shape \(batch, seq, num_inputs=4\).*\(2, 5, 3\)"):
        layer(arr((2, 5, 3)))
    with pytest.raises(ValueError, match=r"x of shape \(batch, seq, num_inputs=4\).*\(5, 4\)"):
        layer(arr((5, 4)))  # no batch axis
    with pytest.raises(ValueError, match="seq >= 1"):
        layer(arr((2, 0, 4)))
    with pytest.raises(ValueError, match=r"state of shape \(batch=2, num_outputs=6\).*\(1, 2, 6\)"):
        layer(arr((2, 5, 4)), arr((1, 2, 6)))
    with pytest.raises(ValueError, match=r"x of shape \(batch, seq, num_inputs=4\).*\(2, 5, 6\)"):
        stack(arr((2, 5, 6)))
    with pytest.raises(ValueError, match=r"num_layers \* num_directions=2, batch=2, "
                                         r"hidden_size=6\).*\(2, 6\)"):
        stack(arr((2, 5, 4)), arr((2, 6)))


def test_train_mode_randomness_needs_rngs():
    x = jnp.zeros((2, 5, 4))
    kw = dict(rngs=nnx.Rngs(0), param_dtype=np.float64)
    with pytest.raises(ValueError, match="zoneout > 0 in train mode needs rngs"):
        fq.QRNNLayer(4, 6, zoneout=0.1, **kw)(x)
    with pytest.raises(ValueError, match="dropout in train mode needs rngs"):
        fq.QRNN(4, 6, num_layers=2, dropout=0.1, **kw)(x)
    model = fq.QRNN(4, 6, num_layers=2, dropout=0.1, zoneout=0.1, **kw)
    model.eval()
    model(x)  # eval mode needs none
