"""The project's parity suite on the public tool, :func:`flax_arch.testing.assert_parity`.

:class:`Pair` holds a torch model and its Flax twin with the same weights: a registered model
built by name at its test configuration, or any two modules (leaf layers, sweeps). Its checks
call ``assert_parity`` at the suite's tolerance for the family (:mod:`parity_tests.tolerances`)
and record the largest error of each kind for the table printed at the end of the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import flax_arch
import flax_arch.testing
import torch_ref
from flax_arch.testing import ParityReport, assert_parity, relative_error
from flax_arch.testing import _torch_leaves as torch_leaves  # noqa: F401 (for tests)
from parity_tests.tolerances import tolerance

TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

# XLA:CPU options for the suite's float64 checks: XLA's elemental loop emitters instead of its
# MLIR fusion emitters, and LLVM without its expensive passes. The same HLO and fusions, their
# code generated faster: six models' float64 train checks (ResNeXt, GoogLeNet, DenseNet, LSTM,
# the DCGAN generator, QRNN) compiled in 25.5 s instead of 42.1 s (2-core AMD EPYC, one core).
# Float64 only. That code rounds differently from the default's: far below 1e-10 in float64,
# visibly in float32 (an 8-device data-parallel DCGAN step, both sides compiled so, came 8e-4
# from one device's, against 2e-5 with the defaults), and the float32 tolerances measure the
# rounding of what users run: XLA's defaults, which assert_parity itself keeps.
FLOAT64_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False,
                            "xla_llvm_disable_expensive_passes": True}

# The same with LLVM's optimisation level 0: the suite's float64 programs are small and run a
# few times, and compiling them is most of the suite's time. A float64 value-and-gradient of
# each registry model (its test configuration, eval mode; 2-core Intel Xeon, one thread)
# compiled 3-5x faster at level 0 (GoogLeNet 5.87 s -> 1.30 s, DenseNet 0.99 -> 0.21, the
# U-Net 1.19 -> 0.19, LSTM 0.45 -> 0.20), its results within 1e-13 of the default's. Its
# code is unvectorised: the float64 convolutions that XLA:CPU emits itself (it hands only
# float32 ones to its library kernels) then run 10-20x slower, so the ResNets', DCGAN's and
# AlexNet's checks, which run a model five times, lose more than they save (ResNeXt compiled
# in 0.35 s instead of 1.72 s but ran 1,815 ms instead of 132; AlexNet's float64 train check
# took 9.1 s instead of 3.5): those families keep the options above.
# Level 0 is not XLA's tested path: it miscompiles the float64 gradient of one of the port's
# compositions (test_port.py::test_xla_cpu_level_0_miscompile), so arbitrary programs (the
# port's) keep the options above, and a float64 check that fails only at level 0 is XLA's
# fault: its family then joins SLOW_AT_LEVEL_0. A miscompile cannot pass a check: torch's
# numbers are computed apart.
FAST_FLOAT64_COMPILER_OPTIONS = {**FLOAT64_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}
SLOW_AT_LEVEL_0 = {"resnet", "dcgan", "alexnet"}  # families whose float64 checks stay optimised


def float64_compiler_options(family: str | None = None) -> dict:
    """The suite's XLA options for a float64 program of ``family`` (None: a small program
    that runs once or twice)."""
    return FLOAT64_COMPILER_OPTIONS if family in SLOW_AT_LEVEL_0 else FAST_FLOAT64_COMPILER_OPTIONS

# Largest relative error seen per (family, dtype, what), reported at the end of the run.
ERRORS: dict[tuple[str, str, str], float] = {}


def _record(key: tuple[str, str, str], err: float) -> None:
    ERRORS[key] = max(ERRORS.get(key, 0.0), err)


def assert_close(actual, expected, tol: float, what: str, record: tuple[str, str] | None = None):
    """``max|actual - expected| <= tol * max(1, max|expected|)``, NaNs never equal
    (:func:`flax_arch.testing.assert_close`); with ``record`` = (family, dtype), the error
    goes to the end-of-run table under the first word of ``what``."""
    if record is not None and np.shape(actual) == np.shape(expected):
        _record((*record, what.split(" ")[0]), relative_error(actual, expected))
    return flax_arch.testing.assert_close(actual, expected, tol, what)


# The abstract builds uninitialised() has made, by the caller's key: tracing a model's
# initialisers costs ~0.1-0.3 s for a ResNet, and the suite builds each registry model in
# each dtype for several tests.
_ABSTRACT: dict = {}


def uninitialised(build: Callable[[], nnx.Module], seed: int = 0, *,
                  cache_key=None) -> nnx.Module:
    """``build()``'s model with zeros for weights and its random keys from ``seed``, built
    abstractly: for a model whose every parameter and buffer then comes from torch. Eager
    initialisation compiles an XLA program per weight shape (13 s for GoogLeNet).
    ``cache_key`` (hashable; it must determine what ``build`` builds) reuses an earlier
    build's structure; each call returns a new model with its own arrays."""
    if cache_key is None:
        return flax_arch.uninitialised(build, seed)
    if cache_key not in _ABSTRACT:
        _ABSTRACT[cache_key] = nnx.split(nnx.eval_shape(build))
    graphdef, state = _ABSTRACT[cache_key]
    return flax_arch.uninitialised(lambda: nnx.merge(graphdef, state), seed)


def registry_model(name: str, kwargs: dict, dtype, seed: int = 0) -> nnx.Module:
    """The registered Flax model ``name(**kwargs)`` in ``dtype``, :func:`uninitialised`."""
    return uninitialised(lambda: flax_arch.get_model(
        name, rngs=nnx.Rngs(seed), param_dtype=np.dtype(dtype), **kwargs), seed,
        cache_key=("registry", name, repr(sorted(kwargs.items())), np.dtype(dtype).name, seed))


class Pair:
    """A torch model and its Flax twin holding the same weights, in the same mode."""

    def __init__(self, name: str, dtype=np.float64, size: str = "test", *, seed: int = 0,
                 train: bool = True, batch_size: int | None = None, **overrides):
        entry = flax_arch.get_entry(name)
        cfg = entry.config(size)
        kwargs = {**cfg.kwargs, **overrides}
        torch.manual_seed(seed)
        torch_model = torch_ref.get_model(name, **kwargs)
        flax_model = registry_model(name, kwargs, dtype, seed)
        torch_in, _, target = entry.example_inputs(size, batch_size=batch_size, dtype=dtype,
                                                   seed=seed + 1)
        self._setup(torch_model, flax_model, torch_in, [i.layout for i in cfg.inputs],
                    entry.outputs, dtype, entry.family, train)
        self.loss, self.target = entry.loss, target
        self.target_layout = cfg.target.layout if cfg.target is not None else None

    @classmethod
    def of_modules(cls, torch_model, flax_model, torch_inputs, input_layouts, output_layouts,
                   dtype=np.float64, *, family: str = "layer", train: bool = True) -> Pair:
        """A pair of unregistered modules (leaf layers, sweeps): the torch weights are copied
        into ``flax_model``; inputs are NumPy arrays in torch's layout. Its optimizer checks
        train on assert_parity's default loss (the outputs against random cotangents)."""
        self = cls.__new__(cls)
        self._setup(torch_model, flax_model, [np.asarray(a) for a in torch_inputs],
                    input_layouts, output_layouts, dtype, family, train)
        self.loss = self.target = self.target_layout = None
        return self

    def _setup(self, torch_model, flax_model, torch_in, layouts, output_layouts, dtype, family,
               train):
        self.dtype = np.dtype(dtype)
        self.family = family
        self.tol = tolerance(self.dtype, family)
        self.record = (family, self.dtype.name)
        self.torch = torch_model.to(TORCH_DTYPES[self.dtype]).train(train)
        self.flax = flax_model
        flax_arch.load_torch_state_dict(self.flax, self.torch.state_dict())
        self.flax.train() if train else self.flax.eval()
        self.layouts, self.output_layouts = list(layouts), list(output_layouts)
        self.torch_in = tuple(a.astype(self.dtype) if np.issubdtype(a.dtype, np.floating) else a
                              for a in torch_in)

    @property
    def flax_in(self) -> tuple[np.ndarray, ...]:
        """The inputs in Flax's layout (the checks convert ``torch_in`` themselves)."""
        return tuple(flax_arch.to_channels_last(a, lay)
                     for a, lay in zip(self.torch_in, self.layouts))

    @flax_in.setter
    def flax_in(self, value) -> None:  # a test replacing the inputs sets both layouts
        for given, ours in zip(value, self.flax_in, strict=True):
            np.testing.assert_array_equal(given, ours, "flax_in must be torch_in, channels-last")

    def torch_inputs(self) -> list[torch.Tensor]:
        return [torch.from_numpy(a.copy()) for a in self.torch_in]

    def to_flax_layout(self, torch_outs) -> list[np.ndarray]:
        assert len(torch_outs) == len(self.output_layouts), "output count != output layouts"
        return [flax_arch.to_channels_last(t.detach().numpy(), lay)
                for t, lay in zip(torch_outs, self.output_layouts)]

    # ------------------------------------------------------------------ checks

    def check(self, checks=flax_arch.testing.CHECKS, *,
              rtol: float | None = None) -> ParityReport:
        """``assert_parity`` on this pair, in its current mode (the torch model's), at the
        suite's tolerance; optimizer steps train on the registry's loss (passed only where
        there are steps: it changes no other number, only what is compiled); float64 compiled
        with :func:`float64_compiler_options`. The errors go to the end-of-run table under
        (family, dtype, check and kind)."""
        rtol = self.tol if rtol is None else rtol
        with_loss = bool({"sgd", "adam"} & set(checks))
        report = assert_parity(
            self.flax, self.torch, *self.torch_in, layouts=self.layouts,
            output_layouts=self.output_layouts, dtype=self.dtype, train=self.torch.training,
            checks=checks, loss=self.loss if with_loss else None,
            target=self.target if with_loss else None, target_layout=self.target_layout,
            rtol=None if rtol == flax_arch.testing.tolerance(self.dtype) else rtol,
            compiler_options=(float64_compiler_options(self.family)
                              if self.dtype == np.float64 else None))
        if math.isfinite(rtol):
            for c in report.comparisons:
                _record((*self.record, c.check if c.kind == c.check else f"{c.check} {c.kind}"),
                        c.error)
        return report

    def check_forward(self) -> ParityReport:
        """Outputs and the state after one train- or eval-mode call, without gradients."""
        return self.check(("forward",))

    def check_forward_and_gradients(self) -> ParityReport:
        """Outputs, returned states, the state after the call, and gradients of every
        parameter and float input, through one train- or eval-mode call."""
        return self.check(("forward", "grad"))

    def check_optimizer_steps(self, optimizer: str) -> ParityReport:
        """Two training steps with SGD+momentum or Adam on the registry's loss (random output
        cotangents for unregistered modules): losses, parameters and buffers after each."""
        return self.check((optimizer,))

    def optimizer_steps(self, optimizer: str) -> None:
        """The same two steps on both sides, nothing compared: for the cases whose two float32
        trajectories are each compared with the float64 one instead (see tolerances.py)."""
        self.check((optimizer,), rtol=math.inf)

    def check_state(self, what: str = "state"):
        """Parameters and buffers, in torch names and layouts."""
        ours = flax_arch.torch_state_dict(self.flax)
        ref = self.torch.state_dict()
        assert set(ours) == set(ref), f"{what}: keys differ: {set(ours) ^ set(ref)}"
        for key, value in ref.items():
            assert_close(ours[key], value.numpy(), self.tol, f"{what} {key}", self.record)


# ----------------------------------------------------------------------------- sweeps


def case_name(kw: dict) -> str:
    """A sweep case's key, from its keyword arguments: ``"kernel_size=3,padding=1"``
    (``"."`` written ``"_"``, which a torch ``ModuleDict`` key may not hold; ``"default"``
    for none). Failures name it: ``cases.<key>.weight``, ``output ['<key>']``."""
    text = ",".join(f"{k}={v}" for k, v in kw.items()).replace(" ", "").replace(".", "_")
    return text or "default"


def _each(cases, counts: tuple[int, ...], xs) -> dict:
    """``{key: case(*its inputs)}``: ``xs`` holds each case's ``counts[i]`` inputs in turn."""
    it = iter(xs)
    out = {k: m(*(next(it) for _ in range(n))) for (k, m), n in zip(cases.items(), counts,
                                                                      strict=True)}
    assert next(it, None) is None, f"{len(xs)} inputs for {sum(counts)}"
    return out


class TorchCases(torch.nn.Module):
    """Sweep cases side by side: ``cases[key]`` applied to its own inputs (``counts[i]`` of
    them, in key order), ``{key: output}``, the keys in sorted order."""

    def __init__(self, cases: dict[str, torch.nn.Module], counts: list[int] | None = None):
        super().__init__()
        self.cases = torch.nn.ModuleDict({k: cases[k] for k in sorted(cases)})
        self.counts = tuple(counts or [1] * len(cases))

    def forward(self, *xs):
        return _each(self.cases, self.counts, xs)


class FlaxCases(nnx.Module):
    """:class:`TorchCases`' twin: the same state_dict keys (``cases.<key>.<name>``)."""

    def __init__(self, cases: dict[str, nnx.Module], counts: list[int] | None = None):
        self.cases = nnx.data({k: cases[k] for k in sorted(cases)})
        self.counts = tuple(counts or [1] * len(cases))

    def __call__(self, *xs):
        return _each(self.cases, self.counts, xs)


def sweep_pair(cases: dict[str, tuple], dtype=np.float64, *, train: bool = True,
               family: str = "layer") -> Pair:
    """One :class:`Pair` of a whole sweep: ``cases`` maps each case's key to ``(torch_layer,
    flax_layer, input in torch's layout, layout)`` or ``(..., layout, output layout)``; a
    case of several inputs or outputs gives lists of them (inputs, layouts, output
    layouts).

    Its checks compile one program for every case (one XLA compilation per sweep, dtype and
    lowering, where one per case cost ~0.3 s each, most of it fixed per program) and still
    compare each case's outputs, gradients and state, naming the case's key on a mismatch."""
    keys = sorted(cases)

    def listed(v):
        return list(v) if isinstance(v, (list, tuple)) else [v]

    inputs = [listed(cases[k][2]) for k in keys]
    layouts = [listed(cases[k][3]) for k in keys]
    outs = [listed(cases[k][4] if len(cases[k]) > 4 else cases[k][3]) for k in keys]
    assert all(len(x) == len(lay) for x, lay in zip(inputs, layouts)), "a layout per input"
    counts = [len(x) for x in inputs]
    return Pair.of_modules(TorchCases({k: cases[k][0] for k in keys}, counts),
                           FlaxCases({k: cases[k][1] for k in keys}, counts),
                           [np.asarray(x) for xs in inputs for x in xs],
                           [lay for lays in layouts for lay in lays],
                           [lay for lays in outs for lay in lays], dtype, family=family,
                           train=train)


# ----------------------------------------------------------------------------- torchvision builders


def assert_builders_mirror_torchvision(torchvision_builder: Callable[..., torch.nn.Module],
                                       flax_builder: partial, torch_builder: partial,
                                       cls: str) -> None:
    """torch_ref's builder gives the ``state_dict`` keys (in order) and shapes of
    torchvision's, and the Flax builder is the same partial of ``cls``: the same arguments
    (block classes compared by name) and keywords."""
    with torch.device("meta"):
        ref = torchvision_builder(weights=None).state_dict()
        ours = torch_builder().state_dict()
    assert list(ours) == list(ref)
    assert all(ours[k].shape == v.shape for k, v in ref.items())

    def plain(v):
        return v.__name__ if isinstance(v, type) else v

    assert [plain(a) for a in flax_builder.args] == [plain(a) for a in torch_builder.args]
    assert flax_builder.keywords == torch_builder.keywords
    assert (flax_builder.func.__name__, torch_builder.func.__name__) == (cls, cls)


def assert_torchvision_keys_and_shapes(torchvision_builder: Callable[..., torch.nn.Module],
                                       build_flax: Callable[[], nnx.Module]) -> None:
    """``build_flax()``'s model, built abstractly, has torchvision's ``state_dict`` keys, each
    with the same dimensions up to order (the torch and Flax layouts of a weight are
    permutations of each other)."""
    with torch.device("meta"):
        ref = torchvision_builder(weights=None).state_dict()
    state = nnx.state(nnx.eval_shape(build_flax), (nnx.Param, nnx.BatchStat))
    ours = {".".join(map(str, path)): tuple(sorted(v.shape))
            for path, v in nnx.to_flat_state(state)}
    assert ours == {k: tuple(sorted(v.shape)) for k, v in ref.items()}


# ----------------------------------------------------------------------------- torchvision models


def check_against_torch(torch_model, build_flax, x_shape, dtype, family, *, train,
                        gradients=False):
    """Loads ``torch_model``'s state_dict strictly into the Flax twin that ``build_flax(dtype)``
    makes, runs both once on the same input in the same mode (Flax under ``nnx.jit``), and
    compares outputs; in train mode also the running statistics, and with ``gradients`` the
    gradients of every parameter and of the input."""
    torch_model = torch_model.to(TORCH_DTYPES[np.dtype(dtype)]).train(train)
    flax_model = uninitialised(lambda: build_flax(dtype))  # every weight comes from torch
    flax_arch.load_torch_state_dict(flax_model, torch_model.state_dict())
    flax_model.train() if train else flax_model.eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    tol, record = tolerance(dtype, family), (family, np.dtype(dtype).name)

    x_t = torch.from_numpy(x).requires_grad_(gradients)
    x_f = jnp.asarray(flax_arch.to_channels_last(x, "NCHW"))
    with torch.set_grad_enabled(gradients):
        out = torch_model(x_t)
    if gradients:
        cot = rng.standard_normal(tuple(out.shape)).astype(dtype)
        (out * torch.from_numpy(cot)).sum().backward()

        def loss(model, x):
            y = model(x)
            return jnp.sum(y * cot), y

        step = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        (_, y), (p_grads, x_grad) = step(flax_model, x_f)
    else:
        y = nnx.jit(lambda model, x: model(x))(flax_model, x_f)
    assert_close(y, out.detach().numpy(), tol, "output", record)
    if train:
        state = flax_arch.torch_state_dict(flax_model)
        for key, value in torch_model.state_dict().items():
            assert_close(state[key], value.numpy(), tol, f"buffers {key}", record)
    if gradients:
        grads = flax_arch.torch_state_dict(flax_model, p_grads)
        for key, p in torch_model.named_parameters():
            assert_close(grads[key], p.grad.numpy(), tol, f"grad {key}", record)
        assert_close(x_grad, flax_arch.to_channels_last(x_t.grad.numpy(), "NCHW"), tol,
                     "grad input", record)
