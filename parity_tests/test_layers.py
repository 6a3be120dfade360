"""Leaf layers against torch.nn: hyperparameter sweeps, some property-based.

A sweep's cases run side by side in one pair (``harness.sweep_pair``: one compiled program
per sweep, dtype and lowering); each case's outputs, gradients and state are still compared
on their own, and a mismatch names the case (``cases.<case>.weight``, ``output ['<case>']``)."""

import re
import jax
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flax_arch import nn
from flax_arch.nn import lowering
from parity_tests.harness import Pair, case_name, sweep_pair, uninitialised

F64, F32 = np.float64, np.float32
RNG = np.random.default_rng(0)


@pytest.fixture(params=["rewrite", "xla"])
def conv_lowering(request):
    """Both forms of grouped and transposed convolutions (and max-pools): the CPU's rewrites
    into plain convolutions, and XLA's own operations that other platforms use."""
    with lowering.forms(request.param):
        yield


def layer_pair(torch_layer, flax_layer, shape, layout, dtype=F64, train=True):
    x = RNG.standard_normal(shape)
    return Pair.of_modules(torch_layer, flax_layer, [x], [layout], [layout], dtype, train=train)


def check_sweep(make, cases, shape, layout, dtype=F64, train=True):
    """``make(kw) -> (torch layer, flax layer)`` for every ``kw`` in ``cases``, each on its
    own random input of ``shape`` in ``layout`` (or ``shape(kw)``, ``layout(kw)``): forward
    and gradients, in one pair."""
    sweep = {}
    for kw in cases:
        torch.manual_seed(0)
        t, f = make(kw)
        s = shape(kw) if callable(shape) else shape
        sweep[case_name(kw)] = (t, f, RNG.standard_normal(s),
                                layout(kw) if callable(layout) else layout)
    assert len(sweep) == len(cases), "two cases with the same name"
    sweep_pair(sweep, dtype, train=train).check_forward_and_gradients()


def twin(torch_cls, flax_cls, *args, dtype=F64, **kw):
    """torch's layer and ours from the same arguments; ours built abstractly (its weights
    come from torch), so that no initialiser compiles."""
    return torch_cls(*args, **kw), uninitialised(lambda: flax_cls(*args, **kw, rngs=nnx.Rngs(0),
                                                                  param_dtype=dtype))


# ------------------------------------------------------------------------------ Linear


@pytest.mark.parametrize("dtype", [F64, F32])
def test_linear(dtype):
    """Each of (5,), (3, 5), (2, 3, 5) inputs, with and without a bias."""
    cases = [dict(shape=s, bias=b) for s in [(3, 5), (2, 3, 5), (5,)] for b in (True, False)]
    check_sweep(lambda kw: twin(torch.nn.Linear, nn.Linear, 5, 4, bias=kw["bias"], dtype=dtype),
                cases, lambda kw: kw["shape"],
                lambda kw: {1: "C", 2: "NC", 3: "NLC"}[len(kw["shape"])],  # features last
                dtype)


def test_a_sweep_names_the_case_that_differs():
    """A sweep with one wrong twin (an average pool for torch's max-pool): the error names
    that case's output, and no other case."""
    sweep = {"right": (*twin(torch.nn.Linear, nn.Linear, 5, 4), RNG.standard_normal((3, 5)), "NC"),
             "wrong": (torch.nn.MaxPool1d(2), nn.AvgPool1d(2), RNG.standard_normal((2, 3, 8)),
                       "NCL")}
    with pytest.raises(AssertionError, match=r"output \['wrong'\]") as e:
        sweep_pair(sweep).check_forward_and_gradients()
    assert "right" not in str(e.value)


# ------------------------------------------------------------------------------ convolutions

CONV1D_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, padding=1),
    dict(kernel_size=4, stride=2, padding=1),
    dict(kernel_size=3, dilation=2, padding=2),
    dict(kernel_size=3, groups=2),
    dict(kernel_size=3, groups=4),
    dict(kernel_size=5, padding="same"),
    dict(kernel_size=4, dilation=3, padding="same"),
    dict(kernel_size=3, padding="valid", bias=False),
    dict(kernel_size=3, padding=2, padding_mode="reflect"),
    dict(kernel_size=3, padding=1, padding_mode="replicate"),
    dict(kernel_size=3, padding=2, padding_mode="circular"),
    dict(kernel_size=1),
]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_conv1d(dtype, conv_lowering):
    check_sweep(lambda kw: twin(torch.nn.Conv1d, nn.Conv1d, 4, 8, dtype=dtype, **kw),
                CONV1D_CASES, (2, 4, 11), "NCL", dtype)


CONV2D_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=(3, 5), padding=(1, 2)),
    dict(kernel_size=3, stride=(2, 1), padding=1),
    dict(kernel_size=3, dilation=(2, 1), padding="same"),
    dict(kernel_size=3, groups=2, bias=False),
    dict(kernel_size=3, groups=4, stride=2),
    dict(kernel_size=11, stride=4, padding=2),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_conv2d(dtype, conv_lowering):
    check_sweep(lambda kw: twin(torch.nn.Conv2d, nn.Conv2d, 4, 8, dtype=dtype, **kw),
                CONV2D_CASES, (2, 4, 13, 12), "NCHW", dtype)


CONVT_CASES = [
    dict(kernel_size=8, stride=4),
    dict(kernel_size=3),
    dict(kernel_size=4, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(kernel_size=3, stride=1, dilation=2, padding=1),
    dict(kernel_size=3, stride=3, dilation=2, output_padding=1),
    dict(kernel_size=4, stride=2, groups=2),
    dict(kernel_size=3, stride=2, groups=4, bias=False),
    dict(kernel_size=2, padding=3),  # padding beyond dilation * (k - 1): the output is cropped
]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_conv_transpose1d(dtype, conv_lowering):
    check_sweep(lambda kw: twin(torch.nn.ConvTranspose1d, nn.ConvTranspose1d, 4, 8, dtype=dtype,
                                **kw), CONVT_CASES, (2, 4, 9), "NCL", dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_conv_transpose2d(dtype, conv_lowering):
    cases = CONVT_CASES[:8] + [dict(kernel_size=(4, 3), stride=(2, 1), padding=(1, 0),
                                    output_padding=(1, 0))]
    check_sweep(lambda kw: twin(torch.nn.ConvTranspose2d, nn.ConvTranspose2d, 4, 8, dtype=dtype,
                                **kw), cases, (2, 4, 6, 5), "NCHW", dtype)


@pytest.mark.parametrize("cls", ["ConvTranspose1d", "Conv1d"])
def test_conv_with_an_empty_output_is_refused_as_torch_refuses_it(cls):
    kw = dict(padding=1) if cls == "ConvTranspose1d" else dict(dilation=3)
    t, f = getattr(torch.nn, cls)(1, 1, 3 if cls == "Conv1d" else 1, **kw), \
        getattr(nn, cls)(1, 1, 3 if cls == "Conv1d" else 1, **kw, rngs=nnx.Rngs(0))
    x = np.ones((2, 1, 1), np.float32)  # length 1
    with pytest.raises(RuntimeError):
        t(torch.from_numpy(x))
    with pytest.raises(ValueError, match=r"spatial size \(1,\) gives an output of size"):
        f(np.moveaxis(x, 1, -1))


def _convs(jaxpr_or_fn, x):
    eqns = jax.make_jaxpr(jaxpr_or_fn)(x).eqns
    return [e for e in eqns if e.primitive.name == "conv_general_dilated"]


@pytest.mark.parametrize("form", ["rewrite", "xla"])
def test_each_form_emits_its_convolutions(form):
    """The rewrites dilate no input and group no features: the 4 phases of a stride-2
    transposed convolution are one sub-pixel convolution, a grouped one is one convolution
    per group; XLA's form is one such convolution each."""
    x = np.ones((2, 6, 5, 4), np.float32)
    # new modules each time: make_jaxpr caches its trace per callable
    convs = {1: nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1, rngs=nnx.Rngs(0)),
             2: nn.Conv2d(4, 8, 3, groups=2, rngs=nnx.Rngs(0))}
    with lowering.forms(form):
        for rewritten, conv in convs.items():
            eqns = _convs(lambda v: conv(v), x)
            special = [e for e in eqns if max(e.params["lhs_dilation"]) > 1
                       or e.params["feature_group_count"] > 1]
            assert len(special) == (1 if form == "xla" else 0), (form, conv)
            assert len(eqns) == (1 if form == "xla" else rewritten)


def test_the_platform_chooses_the_form_when_lowered():
    """By default both forms are traced and the compiler keeps the platform's: CPU lowers the
    rewrites only (no dilated input, no feature groups, no reduce_window max)."""
    x = np.ones((2, 6, 5, 4), np.float32)
    layers = [nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1, rngs=nnx.Rngs(0)),
              nn.Conv2d(4, 8, 3, groups=2, rngs=nnx.Rngs(0)), nn.MaxPool2d(3, 2)]
    for layer in layers:
        jaxpr = str(jax.make_jaxpr(lambda v: layer(v))(x))
        assert "platform_index" in jaxpr, layer  # both forms, chosen at lowering
        grad = jax.grad(lambda v: layer(v).sum())
        hlo = jax.jit(grad).lower(x).as_text()
        dilations = re.findall(r"lhs_dilate = \[([\d, ]+)\]", hlo)
        assert all(set(d.split(", ")) == {"1"} for d in dilations), (layer, dilations)
        assert set(re.findall(r"feature_group_count = (\d+)", hlo)) <= {"1"}, layer
        assert "reduce_window" not in hlo and "select_and_scatter" not in hlo, layer


def test_unbatched_conv1d_matches_torch():
    torch.manual_seed(0)
    t = torch.nn.Conv1d(3, 5, 3).double()
    f = nn.Conv1d(3, 5, 3, rngs=nnx.Rngs(0), param_dtype=F64)
    pair = Pair.of_modules(t, f, [RNG.standard_normal((3, 9))], ["CL"], ["CL"])
    pair.check_forward_and_gradients()


@st.composite
def conv_hyperparameters(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 3))
    padding = draw(st.integers(0, 3))
    length = draw(st.integers(dilation * (k - 1) + 1, 16)) 
    transposed = draw(st.booleans())
    output_padding = draw(st.integers(0, max(stride, dilation) - 1)) if transposed else 0
    bias = draw(st.booleans())
    return dict(groups=groups, cin=cin, cout=cout, k=k, stride=stride, dilation=dilation,
                padding=padding, length=length, transposed=transposed,
                output_padding=output_padding, bias=bias)


def output_length(h) -> int:
    k, s, p, d, n = h["k"], h["stride"], h["padding"], h["dilation"], h["length"]
    if h["transposed"]:
        return (n - 1) * s - 2 * p + d * (k - 1) + h["output_padding"] + 1
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(conv_hyperparameters())
def test_conv1d_property_matches_torch(h):
    """Any valid 1-D (transposed) convolution equals torch's, float64 to 1e-10; one whose
    output would be empty is refused by both."""
    common = dict(stride=h["stride"], padding=h["padding"], dilation=h["dilation"],
                  groups=h["groups"], bias=h["bias"])
    if h["transposed"]:
        common["output_padding"] = h["output_padding"]
        t_cls, f_cls = torch.nn.ConvTranspose1d, nn.ConvTranspose1d
    else:
        t_cls, f_cls = torch.nn.Conv1d, nn.Conv1d
    torch.manual_seed(0)
    t = t_cls(h["cin"], h["cout"], h["k"], **common)
    f = uninitialised(lambda: f_cls(h["cin"], h["cout"], h["k"], **common, rngs=nnx.Rngs(0),
                                    param_dtype=F64))  # the weights come from torch
    if output_length(h) < 1:
        x = RNG.standard_normal((2, h["cin"], h["length"]))
        with pytest.raises(RuntimeError):
            t.double()(torch.from_numpy(x))
        with pytest.raises(ValueError, match="too small for kernel_size"):
            f(np.moveaxis(x, 1, -1))
        return
    layer_pair(t, f, (2, h["cin"], h["length"]), "NCL").check_forward_and_gradients()


# ------------------------------------------------------------------------------ BatchNorm


BN_CASES = [
    dict(),
    dict(momentum=0.3, eps=1e-3),
    dict(momentum=None),
    dict(affine=False),
    dict(track_running_stats=False),
]


BN_INPUTS = [(1, (6, 5), "NC"), (1, (4, 5, 7), "NCL"), (2, (3, 5, 4, 6), "NCHW")]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_batchnorm_train_steps_update_running_stats_as_torch(dtype):
    """Each of BN_CASES on each of BN_INPUTS: three train-mode calls (outputs, gradients,
    running statistics, num_batches_tracked), then an eval-mode call that uses the
    statistics."""
    sweep = {}
    for dim, shape, layout in BN_INPUTS:
        for kw in BN_CASES:
            t = getattr(torch.nn, f"BatchNorm{dim}d")(5, **kw)
            f = getattr(nn, f"BatchNorm{dim}d")(5, **kw, param_dtype=dtype)
            with torch.no_grad():  # non-trivial affine parameters
                for p in t.parameters():
                    p.add_(torch.from_numpy(RNG.standard_normal(p.shape)).to(p.dtype))
            sweep[case_name({"input": layout, **kw})] = (t, f, np.zeros(shape), layout)
    pair = sweep_pair(sweep, dtype)
    for step in range(3):
        pair.torch_in = tuple(RNG.standard_normal(x.shape).astype(dtype) * (step + 1) + step
                              for x in pair.torch_in)
        pair.check_forward_and_gradients()
    pair.torch.eval()
    pair.flax.eval()
    pair.check_forward_and_gradients()


def test_batchnorm_needs_more_than_one_value_per_channel_in_train_mode():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(np.ones((1, 3), np.float32))
    bn.eval()
    assert bn(np.ones((1, 3), np.float32)).shape == (1, 3)


# ------------------------------------------------------------------------------ pooling

POOL_CASES = [
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True),
]


def test_maxpool2d(conv_lowering):
    """Every case of POOL_CASES on inputs of 9x9, 10x7 and 8x13."""
    cases = [dict(**kw, size=size) for kw in POOL_CASES for size in [(9, 9), (10, 7), (8, 13)]]
    check_sweep(lambda kw: pool_twin("MaxPool2d", kw), cases, lambda kw: (2, 3, *kw["size"]),
                "NCHW")


def pool_twin(cls: str, kw: dict):
    """torch's parameter-free layer ``cls`` and ours, from ``kw`` less its input's size."""
    kw = {k: v for k, v in kw.items() if k != "size"}
    return getattr(torch.nn, cls)(**kw), getattr(nn, cls)(**kw)


def test_maxpool2d_gradient_goes_to_the_first_of_tied_maxima(conv_lowering):
    """Windows full of ties (ReLU zeros, repeated values): torch gives each window's gradient
    to its first maximum in scan order; an even split would differ here by 1/2 or more."""
    sweep = {}
    for kw in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, dilation=2),
               dict(kernel_size=3, stride=1)]:
        x = np.maximum(np.round(RNG.standard_normal((2, 3, 9, 8)), 0), 0.0)  # mostly 0, 1, 2
        sweep[case_name(kw)] = (*pool_twin("MaxPool2d", kw), x, "NCHW")
    sweep_pair(sweep).check_forward_and_gradients()


def test_maxpool_propagates_nan_as_torch_does(conv_lowering):
    x = RNG.standard_normal((1, 1, 4, 4))
    x[0, 0, 1, 2] = np.nan
    t = torch.nn.MaxPool2d(2)(torch.from_numpy(x)).numpy()
    f = np.asarray(nn.MaxPool2d(2)(np.moveaxis(x, 1, -1)))
    np.testing.assert_array_equal(np.isnan(np.moveaxis(f, -1, 1)), np.isnan(t))
    assert np.isnan(t).sum() == 1


def test_maxpool1d(conv_lowering):
    cases = [dict(kernel_size=3, stride=2, ceil_mode=True),
             dict(kernel_size=3, dilation=2, padding=1), dict(kernel_size=2)]
    check_sweep(lambda kw: pool_twin("MaxPool1d", kw), cases, (2, 3, 12), "NCL")


@pytest.mark.parametrize("extra", [dict(), dict(count_include_pad=False), dict(divisor_override=3)],
                         ids=str)
def test_avgpool2d(extra):
    """Every case of POOL_CASES on inputs of 9x9 and 10x7."""
    cases = [dict(**kw, **extra, size=size) for kw in POOL_CASES for size in [(9, 9), (10, 7)]]
    check_sweep(lambda kw: pool_twin("AvgPool2d", kw), cases, lambda kw: (2, 3, *kw["size"]),
                "NCHW")


def test_adaptive_avgpool2d():
    """Output sizes 1, (6, 6), (4, 3), (5, None) and 7 of inputs of 6x6, 13x10 and 7x7."""
    cases = [dict(output_size=out, size=size) for out in [1, (6, 6), (4, 3), (5, None), 7]
             for size in [(6, 6), (13, 10), (7, 7)]]
    check_sweep(lambda kw: pool_twin("AdaptiveAvgPool2d", kw), cases,
                lambda kw: (2, 3, *kw["size"]), "NCHW")


# ------------------------------------------------------------------------------ Embedding


def test_embedding():
    """Forward, gradients (none to padding_idx's row), and max_norm's in-place renormalisation
    of the table (the state is compared after the call)."""
    cases = [dict(), dict(padding_idx=3), dict(padding_idx=-1), dict(max_norm=1.0),
             dict(max_norm=1.5, norm_type=1.0), dict(max_norm=2.0, padding_idx=0)]
    sweep = {}
    for kw in cases:
        torch.manual_seed(0)
        idx = RNG.integers(0, 12, (4, 6))
        idx[0, :3] = [3, 3, 0]
        sweep[case_name(kw)] = (*twin(torch.nn.Embedding, nn.Embedding, 12, 5, **kw), idx, "NL",
                                "NLC")
    pair = sweep_pair(sweep)
    pair.check_forward_and_gradients()
    for kw in cases:
        if "padding_idx" in kw:
            row = kw["padding_idx"] % 12
            weight = pair.flax.cases[case_name(kw)].weight[...]
            np.testing.assert_array_equal(np.asarray(weight)[row], 0.0)


def test_embedding_max_norm_renormalises_the_table_inside_jit():
    f = nn.Embedding(10, 4, max_norm=0.5, rngs=nnx.Rngs(0))
    idx = np.array([[1, 2, 2]])

    @nnx.jit
    def lookup(model, i):
        return model(i)

    out = lookup(f, idx)
    norms = np.linalg.norm(np.asarray(f.weight[...]), axis=1)
    assert np.all(norms[[1, 2]] <= 0.5 + 1e-6) and np.all(norms[[0, 3]] > 0.5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=-1), 0.5, rtol=1e-5)


# ------------------------------------------------------------------------------ Dropout


def test_dropout_eval_and_p0_are_identity_and_train_mask_has_torch_statistics():
    x = np.ones((200, 500), np.float32)
    for model in (nn.Dropout(0.0), nn.Dropout(0.3)):
        model.eval() if model.p else model.train()
        np.testing.assert_array_equal(model(x), x)
    drop = nn.Dropout(0.3)
    y = np.asarray(drop(x, rngs=nnx.Rngs(dropout=1)))
    kept = y != 0
    # 100,000 Bernoulli(0.7) draws: the kept fraction's standard deviation is 0.0014
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    # the same key gives the same mask; another key another mask
    np.testing.assert_array_equal(y, drop(x, rngs=nnx.Rngs(dropout=1)))
    assert np.any(y != np.asarray(drop(x, rngs=nnx.Rngs(dropout=2))))
    # torch's own mask has the same statistics
    t = torch.nn.Dropout(0.3)(torch.ones(200, 500))
    assert abs((t != 0).float().mean().item() - 0.7) < 0.01


def test_sequential_indexing_and_state_paths():
    seq = nn.Sequential(nn.Linear(2, 3, rngs=nnx.Rngs(0)), nn.ReLU(),
                            nn.Linear(3, 1, rngs=nnx.Rngs(0)))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear)
    paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(seq, nnx.Param))}
    assert paths == {"0.weight", "0.bias", "2.weight", "2.bias"}
    with pytest.raises(IndexError):
        seq[3]
