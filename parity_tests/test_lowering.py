"""Each CPU rewrite of :mod:`flax_arch.nn.lowering` against XLA's own form of the same layer:
the same mathematics, in float64, ``max|rewrite - xla| <= 1e-10 * max(1, max|xla|)`` for the
output, the gradients with respect to the input and every parameter, and the parameters after
one Adam step. The two forms are pinned with :func:`lowering.forms`; each check is one jitted
program per form, compiled with the suite's fast float64 options."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.extend.core import jaxprs_in_params

from flax_arch import nn
from flax_arch.models import recurrent
from flax_arch._tolerances import ADAM_LR, FLOAT64, adam_eps
from flax_arch.nn import lowering
from parity_tests.harness import FAST_FLOAT64_COMPILER_OPTIONS
from flax_arch.testing import assert_close

F64 = np.float64


def _step(model: nnx.Module, x, cotangent):
    """The output, the gradients (parameters, input) of ``sum(output * cotangent)`` and the
    parameters after one Adam step, as one jitted program traced in the current form."""
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(ADAM_LR, eps=adam_eps(F64))

    @functools.partial(jax.jit, compiler_options=FAST_FLOAT64_COMPILER_OPTIONS)
    def run(params, x):
        def loss(params, x):
            y = nnx.merge(graphdef, params)(x)
            return jnp.sum(y * cotangent), y

        (_, y), (gp, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
        updates, _ = tx.update(gp, tx.init(params), params)
        return y, gx, gp, optax.apply_updates(params, updates)

    return run(params, x)


def assert_forms_agree(model: nnx.Module, x: np.ndarray) -> None:
    y_shape = jax.eval_shape(model, x).shape
    cotangent = np.random.default_rng(1).standard_normal(y_shape)
    results = {}
    for form in ("rewrite", "xla"):
        with lowering.forms(form):
            results[form] = _step(model, x, cotangent)
    _assert_results_agree(("output", "input gradient", "parameter gradients",
                           "parameters after Adam"), results)


def _assert_results_agree(names, results) -> None:
    """Each named result of the rewrite against XLA's form, leaf by leaf, float64 1e-10."""
    for name, got, want in zip(names, results["rewrite"], results["xla"]):
        for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(got),
                                     jax.tree_util.tree_leaves_with_path(want)):
            assert_close(np.asarray(a), np.asarray(b), FLOAT64,
                         f"{name} {jax.tree_util.keystr(path)}")


def rewritten(build, shape):
    """A float64 case's model, its input, and the equations of its rewrite form's jaxpr."""
    model = build(rngs=nnx.Rngs(0), param_dtype=F64)
    x = np.random.default_rng(0).standard_normal(shape)
    with lowering.forms("rewrite"):
        eqns = jax.make_jaxpr(lambda v: model(v))(x).eqns
    return model, x, eqns


# ----------------------------------------------------------------------------- small-map conv

# (layer, input shape): every case is a small map, where the CPU form is the matmul over the
# windows.
SMALL_MAP_CASES = {
    "3x3 on 2x2 (ResNet's last stage on small images)":
        (lambda **kw: nn.Conv2d(8, 8, 3, padding=1, **kw), (2, 2, 2, 8)),
    "3x3 on 1x1 (only the centre tap reads the input)":
        (lambda **kw: nn.Conv2d(8, 8, 3, padding=1, **kw), (2, 1, 1, 8)),
    "3x3 stride 2 on 4x4 (2x2 out: the input gradient's map)":
        (lambda **kw: nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False, **kw), (2, 4, 4, 8)),
    "3x5 dilated, uneven map":
        (lambda **kw: nn.Conv2d(8, 8, (3, 5), padding=(1, 4), dilation=(1, 2), **kw),
         (2, 2, 3, 8)),
    "grouped":
        (lambda **kw: nn.Conv2d(8, 8, 3, padding=1, groups=2, **kw), (2, 2, 2, 8)),
    "reflect padding":
        (lambda **kw: nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect", **kw), (2, 2, 2, 4)),
    "1-d, padding wider than the kernel (the map is cropped)":
        (lambda **kw: nn.Conv1d(4, 6, 5, padding=3, **kw), (2, 3, 4)),
    "1-d, every window in the padding":
        (lambda **kw: nn.Conv1d(4, 6, 2, stride=3, padding=2, dilation=4, **kw), (2, 1, 4)),
}


@pytest.mark.parametrize("case", SMALL_MAP_CASES)
def test_small_map_conv_matches_xla(case):
    model, x, eqns = rewritten(*SMALL_MAP_CASES[case])
    assert "conv_general_dilated" not in {e.primitive.name for e in eqns}
    assert_forms_agree(model, x)


def _lowered_cpu(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


def test_the_cpu_takes_the_matmul_on_small_maps_only():
    """Lowered for CPU (both forms traced, the platform's kept): a 3x3 convolution on a 2x2 map
    and its gradients are matmuls without a convolution; on an 8x8 map XLA's convolution
    stays, forward and backward."""
    layer = nn.Conv2d(8, 8, 3, padding=1, rngs=nnx.Rngs(0))
    loss = lambda x: jnp.sum(layer(x) ** 2)  # noqa: E731
    for size, convs in ((2, False), (8, True)):
        x = np.ones((2, size, size, 8), np.float32)
        for fn in (layer, jax.grad(loss)):
            hlo = _lowered_cpu(fn, x)
            assert ("stablehlo.convolution" in hlo) == convs, (size, fn)
            assert bool(re.search(r"stablehlo.dot_general", hlo)) != convs, (size, fn)


# ------------------------------------------------------------------ one-channel strided conv

# (layer, input shape): a strided convolution of a one-channel input, where the CPU form is a
# stride-1 convolution of the input folded by the stride.
ONE_CHANNEL_CASES = {
    "SEGAN's down block: kernel 31, stride 4":
        (lambda **kw: nn.Conv1d(1, 3, 31, stride=4, **kw), (2, 160, 1)),
    "kernel not a multiple of the stride, padded, length cropped":
        (lambda **kw: nn.Conv1d(1, 2, 5, stride=3, padding=1, **kw), (2, 17, 1)),
    "2-d, a stride per axis":
        (lambda **kw: nn.Conv2d(1, 4, (5, 3), stride=(2, 3), padding=(2, 1), **kw),
         (2, 9, 10, 1)),
}


@pytest.mark.parametrize("case", ONE_CHANNEL_CASES)
def test_one_channel_strided_conv_matches_xla(case):
    model, x, eqns = rewritten(*ONE_CHANNEL_CASES[case])
    convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
    assert len(convs) == 1 and set(convs[0].params["window_strides"]) == {1}
    assert_forms_agree(model, x)


# ----------------------------------------------------------------------------- recurrence


class _Flat(nnx.Module):
    """A recurrent layer's output and final states as one vector, so that the output, the
    final states and their gradients are all compared."""

    def __init__(self, layer: nnx.Module):
        self.layer = layer

    def __call__(self, x):
        out, states = self.layer(x)
        states = states if isinstance(states, tuple) else (states,)
        return jnp.concatenate([out.reshape(-1), *(s.reshape(-1) for s in states)])


# (layer, input shape): the CPU form is a custom JVP whose transpose leaves the hidden weights'
# gradient out of the backward loop, one matmul after it.
RECURRENCE_CASES = {
    "LSTM": (lambda **kw: recurrent.LSTM(4, 5, **kw), (7, 3, 4)),
    "LSTM, two layers, bidirectional":
        (lambda **kw: recurrent.LSTM(4, 5, 2, bidirectional=True, **kw), (6, 2, 4)),
    "LSTM without bias, batch first":
        (lambda **kw: recurrent.LSTM(4, 5, bias=False, batch_first=True, **kw), (2, 6, 4)),
    "GRU, bidirectional":
        (lambda **kw: recurrent.GRU(4, 5, bidirectional=True, **kw), (7, 3, 4)),
    "GRU without bias": (lambda **kw: recurrent.GRU(4, 5, bias=False, **kw), (7, 3, 4)),
    "RNN tanh, two layers": (lambda **kw: recurrent.RNN(4, 5, 2, **kw), (7, 3, 4)),
    "RNN relu, unbatched": (lambda **kw: recurrent.RNN(4, 5, nonlinearity="relu", **kw), (7, 4)),
    "one step": (lambda **kw: recurrent.LSTM(4, 5, **kw), (1, 3, 4)),
}


@pytest.mark.parametrize("case", RECURRENCE_CASES)
def test_recurrence_matches_xla(case):
    build, shape = RECURRENCE_CASES[case]
    model = _Flat(build(rngs=nnx.Rngs(0), param_dtype=F64))
    x = np.random.default_rng(0).standard_normal(shape)
    with lowering.forms("rewrite"):
        assert "custom_jvp_call" in str(jax.make_jaxpr(lambda v: model(v))(x))
    assert_forms_agree(model, x)


def test_recurrence_with_projections_keeps_the_scan():
    """The LSTM with projections has no CPU form: both forms trace the same program."""
    model = _Flat(recurrent.LSTM(4, 5, proj_size=3, rngs=nnx.Rngs(0), param_dtype=F64))
    x = np.random.default_rng(0).standard_normal((5, 2, 4))
    jaxprs = []
    for form in ("rewrite", "xla"):
        with lowering.forms(form):
            jaxprs.append(str(jax.make_jaxpr(jax.grad(lambda v: jnp.sum(model(v))))(x)))
    assert jaxprs[0] == jaxprs[1]
    assert "custom_jvp" not in jaxprs[0]


# (layer, input shape): forward-mode differentiation through the CPU form's custom JVP.
FORWARD_MODE_CASES = {
    "LSTM": (lambda **kw: recurrent.LSTM(4, 5, **kw), (6, 3, 4)),
    "LSTM, two layers, bidirectional":
        (lambda **kw: recurrent.LSTM(4, 5, 2, bidirectional=True, **kw), (6, 2, 4)),
    "GRU, bidirectional, two layers":
        (lambda **kw: recurrent.GRU(4, 5, 2, bidirectional=True, **kw), (6, 2, 4)),
    "GRU without bias": (lambda **kw: recurrent.GRU(4, 5, bias=False, **kw), (6, 3, 4)),
    "RNN tanh, two layers, bidirectional":
        (lambda **kw: recurrent.RNN(4, 5, 2, bidirectional=True, **kw), (6, 3, 4)),
    "RNN relu": (lambda **kw: recurrent.RNN(4, 5, nonlinearity="relu", **kw), (6, 3, 4)),
}


@pytest.mark.parametrize("case", FORWARD_MODE_CASES)
def test_recurrence_forward_mode_matches_xla(case):
    """jacfwd with respect to the input, a jvp with respect to the input and every parameter,
    and a Hessian-vector product (jvp of grad) agree between the CPU form and XLA's scan."""
    build, shape = FORWARD_MODE_CASES[case]
    model = _Flat(build(rngs=nnx.Rngs(0), param_dtype=F64))
    graphdef, params = nnx.split(model, nnx.Param)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    dx = rng.standard_normal(shape)
    dparams = jax.tree.map(lambda p: rng.standard_normal(p.shape), params)

    def f(params, x):
        return nnx.merge(graphdef, params)(x)

    def loss(params, x):
        return jnp.sum(jnp.sin(f(params, x)))

    def run(params, x):
        jac = jax.jacfwd(f, argnums=1)(params, x)
        out, tangent = jax.jvp(f, (params, x), (dparams, dx))
        _, hvp = jax.jvp(jax.grad(loss, argnums=(0, 1)), (params, x), (dparams, dx))
        return jac, out, tangent, hvp

    results = {}
    for form in ("rewrite", "xla"):
        with lowering.forms(form):  # a new jitted function per form: jit caches the trace
            results[form] = jax.jit(lambda p, v: run(p, v),
                                    compiler_options=FAST_FLOAT64_COMPILER_OPTIONS)(params, x)
    with lowering.forms("rewrite"):
        assert "custom_jvp_call" in str(jax.make_jaxpr(lambda p, v: f(p, v))(params, x))
    _assert_results_agree(("jacfwd", "output", "jvp", "jvp of grad"), results)


def _scan_carry_shapes(jaxpr) -> set[tuple[int, ...]]:
    shapes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            carry = eqn.invars[eqn.params["num_consts"]:][:eqn.params["num_carry"]]
            shapes |= {tuple(v.aval.shape) for v in carry}
        for sub in jaxprs_in_params(eqn.params):
            shapes |= _scan_carry_shapes(sub)
    return shapes


def test_recurrence_backward_loop_leaves_the_hidden_weights_out():
    """In the CPU form's gradient no loop carries the hidden weights' gradient (XLA's scan
    transpose adds it up in its carry at every step): it is one matmul after the loop."""
    layer = recurrent.LSTM(3, 4, rngs=nnx.Rngs(0))  # w_hh: 4 x 16 per direction
    graphdef, params = nnx.split(layer, nnx.Param)
    x = np.ones((5, 2, 3), np.float32)
    carries = {}
    for form in ("rewrite", "xla"):
        with lowering.forms(form):  # a new function per form: make_jaxpr caches the trace
            grad = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x)[0]))
            carries[form] = _scan_carry_shapes(jax.make_jaxpr(grad)(params).jaxpr)
    w_hh_shapes = {(4, 16), (1, 4, 16)}
    assert carries["xla"] & w_hh_shapes
    assert not carries["rewrite"] & w_hh_shapes
