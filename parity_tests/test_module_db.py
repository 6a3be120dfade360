"""PyTorch's own oracle: every sample of ``torch.testing._internal.common_modules.module_db``
whose module has a ``flax_arch.nn`` twin of the same name, against torch itself (the recurrent
layers' samples run in test_recurrent.py, with the same check).

For each sample (constructor arguments, forward arguments), in each mode where the module
behaves differently in train and eval, torch's module and the twin are built from the same
arguments and hold the same weights (``load_torch_state_dict``); the inputs go channels-last
where the module has a channel axis. Compared in float64 to 1e-10 relative to the output's
scale: outputs (integer outputs such as pooling indices exactly; NaN and infinities only where
torch has them), the running statistics after the call, and the gradients of a random
cotangent with respect to every parameter and every float input.

A sample that the twin refuses is listed in ``REFUSED`` with the reason, and checked to be
refused with that message; none is skipped. The counts are asserted and printed at the end.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

pytest.importorskip("expecttest")  # module_db imports it
from torch.testing._internal.common_modules import module_db  # noqa: E402

# torch's testing utilities freeze the global backend flags on import (common_utils calls
# torch.backends.disable_global_flags()); unfreeze them, so that the rest of the suite and
# flax_arch.testing may still set TF32 off as they do
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
assert not torch.backends.flags_frozen()

import flax_arch  # noqa: E402
import flax_arch.models.recurrent as recurrent  # noqa: E402
from flax_arch import nn  # noqa: E402
from parity_tests.harness import FAST_FLOAT64_COMPILER_OPTIONS  # noqa: E402

TOL = 1e-10

# flax_arch.nn's layers; the recurrent ones are architectures of the slides, in flax_arch.models
TWINS = {name: getattr(nn, name) for name in nn.__all__}
RECURRENT = {name: getattr(recurrent, name) for name in ("RNN", "LSTM", "GRU")}

# (module, sample description, mode) -> the reason, and a regular expression for the error.
REFUSED: dict[tuple[str, str, str], tuple[str, str]] = {}


# ----------------------------------------------------------------------------- layouts


def channel_axis(name: str, ndim: int) -> int | None:
    """The axis of torch's input that holds the channels (moved last here), or None when
    the module has no channel axis (elementwise layers, layers on the trailing axes or on
    a given ``dim``, recurrent and embedding layers)."""
    if name.startswith("BatchNorm"):
        return 1  # (N, C) or (N, C, *): always batched
    if name[-2:] in ("1d", "2d", "3d") and name not in ("Softmax2d", "Dropout2d"):
        return 1 if ndim == int(name[-2]) + 2 else 0  # batched, or torch's unbatched form
    if name in ("GroupNorm", "LocalResponseNorm", "PReLU"):
        return 1 if ndim >= 2 else None
    if name in ("Flatten", "Unflatten"):  # rank 3 and more is channels-last (N, *, C)
        return 1 if ndim >= 3 else None
    if name in ("Upsample", "Dropout2d"):  # batched only (Dropout2d: (N, C, L) too)
        return 1
    if name in ("Softmax2d", "PixelShuffle", "PixelUnshuffle"):  # (*, C, H, W)
        return ndim - 3
    return None


LAYOUTS = {(1, 2): "NC", (1, 3): "NCL", (1, 4): "NCHW", (1, 5): "NCDHW",
           (0, 2): "CL", (0, 3): "CHW", (0, 4): "CDHW"}


def to_flax(a: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return a
    if (axis, a.ndim) in LAYOUTS:
        return flax_arch.to_channels_last(a, LAYOUTS[axis, a.ndim])
    return np.moveaxis(a, axis, -1)  # (*, C, H, W) with more leading axes


# ----------------------------------------------------------------------------- the check


def _is_float(a) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def build(name: str, args=(), kwargs=None):
    """torch's module (float64) and its twin from the same arguments, the same weights."""
    kwargs = kwargs or {}
    torch_m = getattr(torch.nn, name)(*args, **kwargs).to(torch.float64)
    with torch.no_grad():  # no parameter at a special value (norms start at ones and zeros)
        gen = torch.Generator().manual_seed(0)
        for p in torch_m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    cls = TWINS.get(name) or RECURRENT[name]
    params = inspect.signature(cls.__init__).parameters
    extra = {"param_dtype": jnp.float64} if "param_dtype" in params else {}

    def construct():  # rngs where initialisation needs them (not a dropout's own stream)
        needs = "rngs" in params and params["rngs"].default is inspect.Parameter.empty
        return cls(*args, **kwargs, **extra, **({"rngs": nnx.Rngs(0)} if needs else {}))

    # built abstractly, filled with placeholders, then a strict load replaces every variable
    # (the constructors' own initialisation is tested with each layer, not here)
    flax_m = nnx.eval_shape(construct)
    nnx.update(flax_m, jax.tree.map(lambda v: np.zeros(v.shape, v.dtype), nnx.state(flax_m)))
    flax_arch.load_torch_state_dict(flax_m, torch_m.state_dict())
    return torch_m, flax_m


ERRORS: dict[str, float] = {}  # the largest relative error of each kind, over all checks


def assert_close(ours, ref, what: str):
    """Floats to TOL relative to max(1, max|ref|) (NaN only where torch has NaN, infinities
    where torch has them); integers exactly."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != torch's {ref.shape}"
    if not _is_float(ref):
        assert ours.dtype.kind == ref.dtype.kind, f"{what}: dtype {ours.dtype} != {ref.dtype}"
        np.testing.assert_array_equal(ours, ref, err_msg=what)
        return
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=f"{what}: NaNs")
    np.testing.assert_array_equal(ours[np.isinf(ref)], ref[np.isinf(ref)], err_msg=f"{what}: inf")
    finite = np.isfinite(ref)
    scale = max(1.0, float(np.max(np.abs(ref[finite]), initial=0.0)))
    err = float(np.max(np.abs(ours[finite] - ref[finite]), initial=0.0))
    kind = what.split(" ")[0]
    ERRORS[kind] = max(ERRORS.get(kind, 0.0), err / scale)
    assert err <= TOL * scale, f"{what}: max|diff| = {err:.3e} > {TOL:.0e} * {scale:.3g}"


class Twin:
    """One check of :func:`check_twins`: torch's ``name(*args, **kwargs)`` run on ``inputs``
    (its outputs and gradients taken), and its twin ready to run on the same inputs."""

    def __init__(self, name: str, mode: str, args, kwargs, inputs, *, channel=channel_axis,
                 exact_input_grads=None, label: str = ""):
        self.label = label
        torch_m, flax_m = build(name, args, kwargs)
        torch_m.train(mode == "train")
        flax_m.train() if mode == "train" else flax_m.eval()
        leaves, self.tree = jax.tree.flatten(list(inputs))
        self.diff = [i for i, a in enumerate(leaves) if _is_float(a)]
        self.move = lambda a: to_flax(a, channel(name, a.ndim))

        # torch
        t_leaves = [torch.from_numpy(np.array(a)).requires_grad_(i in self.diff)
                    for i, a in enumerate(leaves)]
        t_out = jax.tree.leaves(torch_m(*jax.tree.unflatten(self.tree, t_leaves)),
                                is_leaf=lambda t: isinstance(t, torch.Tensor))
        self.float_out = [k for k, o in enumerate(t_out) if o.dtype.is_floating_point]
        rng = np.random.default_rng(1)
        cots = [rng.standard_normal(tuple(t_out[k].shape)) for k in self.float_out]
        loss = sum((t_out[k] * torch.from_numpy(g)).sum() for k, g in zip(self.float_out, cots))
        self.params = dict(torch_m.named_parameters())
        wrt = [*self.params.values(), *(t_leaves[i] for i in self.diff)]
        t_grads = (torch.autograd.grad(loss, wrt, allow_unused=True) if wrt and cots
                   else [None] * len(wrt))
        t_grads = [np.zeros(tuple(w.shape)) if g is None else g.numpy()
                   for w, g in zip(wrt, t_grads)]
        if exact_input_grads is not None:
            t_grads[len(self.params):] = exact_input_grads(leaves, cots)
        self.torch_m, self.t_out, self.t_grads = torch_m, t_out, t_grads

        # the twin, channels-last
        self.flax_m = flax_m
        self.f_leaves = [jnp.asarray(self.move(a)) for a in leaves]
        self.f_cots = [jnp.asarray(self.move(g)) for g in cots]
        self.graphdef, self.state = nnx.split(flax_m)

    def step(self, state, diff_leaves):
        """The twin's outputs, the gradients of every parameter and float input of the
        outputs against the cotangents, and its state after the call."""
        def loss_fn(model, diff_leaves):
            xs = list(self.f_leaves)
            for i, x in zip(self.diff, diff_leaves):
                xs[i] = x
            out = jax.tree.leaves(model(*jax.tree.unflatten(self.tree, xs)))
            return sum(jnp.sum(out[k] * g) for k, g in zip(self.float_out, self.f_cots)), out

        model = nnx.merge(self.graphdef, state)
        (_, out), grads = nnx.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            model, diff_leaves)
        return out, grads, nnx.state(model)

    def compare(self, f_out, p_grads, x_grads, state) -> None:
        nnx.update(self.flax_m, state)
        at = f" ({self.label})" if self.label else ""
        assert len(f_out) == len(self.t_out), (f"{len(f_out)} outputs, torch has "
                                               f"{len(self.t_out)}{at}")
        for k, (ours, ref) in enumerate(zip(f_out, self.t_out)):
            assert_close(ours, self.move(ref.detach().numpy()), f"output {k}{at}")
        ours, ref = flax_arch.torch_state_dict(self.flax_m), self.torch_m.state_dict()
        assert set(ours) == set(ref), f"state keys differ: {set(ours) ^ set(ref)}{at}"
        for key, value in ref.items():
            assert_close(ours[key], value.numpy(), f"state {key} after the call{at}")
        f_pgrads = flax_arch.torch_state_dict(self.flax_m, p_grads)
        assert set(f_pgrads) == set(self.params), (f"parameters differ: "
                                                   f"{set(f_pgrads) ^ set(self.params)}{at}")
        for key, g in zip(self.params, self.t_grads):
            assert_close(f_pgrads[key], g, f"grad {key}{at}")
        for i, g, ours in zip(self.diff, self.t_grads[len(self.params):], x_grads):
            assert_close(ours, self.move(g), f"grad input {i}{at}")


def check_twins(twins: list[Twin]) -> None:
    """Every twin's step in one compiled program, then each compared with torch: outputs,
    the state after the call, and every gradient. Compiled, the recurrent layers' scans
    included: test_recurrent's 80 samples took 111 s op by op, and one program per sample
    cost ~0.2 s of compilation each, most of it fixed per program. Float64 (every twin is),
    compiled with the suite's fast options: test_recurrent's module_db samples compiled in
    14.0 s instead of 20.6 s."""
    def steps(states, diff_leaves):
        return [t.step(s, d) for t, s, d in zip(twins, states, diff_leaves, strict=True)]

    results = jax.jit(steps, compiler_options=FAST_FLOAT64_COMPILER_OPTIONS)(
        [t.state for t in twins], [[t.f_leaves[i] for i in t.diff] for t in twins])
    for t, (f_out, (p_grads, x_grads), state) in zip(twins, results):
        t.compare(f_out, p_grads, x_grads, state)


def check_twin(name: str, mode: str, args, kwargs, inputs, *, channel=channel_axis,
               exact_input_grads=None):
    """torch's ``name(*args, **kwargs)`` and its twin on ``inputs`` (NumPy arrays, or tuples
    of them, in torch's layout), in ``mode``: outputs, the state after the call, and the
    gradients of a random cotangent with respect to every parameter and float input.

    ``channel(name, ndim)`` gives the channel axis of each torch array (moved last for the
    twin), None for none. ``exact_input_grads``, where torch's own float64 gradient is
    inexact, gives the exact input gradients to compare with instead.
    """
    check_twins([Twin(name, mode, args, kwargs, inputs, channel=channel,
                      exact_input_grads=exact_input_grads)])


# ----------------------------------------------------------------------------- the samples


def _modes(info) -> tuple[str, ...]:
    """Both modes where module_db says that they differ. The recurrent layers differ only by
    dropout, and their samples have none (asserted where they run; test_recurrent checks
    dropout in both modes): one mode covers them."""
    if info.train_and_eval_differ and info.module_cls.__name__ not in RECURRENT:
        return ("train", "eval")
    return ("train",)


def module_db_samples(names) -> list:
    """``pytest.param(name, mode, sample)`` for every module_db sample of these modules."""
    return [pytest.param(name, mode, sample, id=f"{name}-{mode}-{i}-{sample.desc}")
            for name, mode, samples in module_db_groups(names) for i, sample in samples]


def module_db_groups(names) -> list:
    """``(name, mode, [(index, sample), ...])``: every module_db sample of these modules,
    grouped by module and mode."""
    params = []
    for info in module_db:
        name = info.module_cls.__name__
        if name not in names or info.module_cls is not getattr(torch.nn, name):
            continue
        for mode in _modes(info):
            inputs = info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                             requires_grad=False, training=mode == "train")
            params.append((name, mode, list(enumerate(inputs))))
    return params


def _numpy(tree):
    return jax.tree.map(lambda t: t.detach().numpy().copy(), tree,
                        is_leaf=lambda t: isinstance(t, torch.Tensor))


def _sample_check(name: str, mode: str, sample):
    """(constructor args, kwargs, forward inputs as NumPy) of one module_db sample."""
    args = list(sample.forward_input.args)
    if "input" in sample.forward_input.kwargs:  # Linear's sample passes input=...
        args.insert(0, sample.forward_input.kwargs["input"])
    assert set(sample.forward_input.kwargs) <= {"input"}, sample.forward_input.kwargs
    ctor = sample.constructor_input
    return ctor.args, ctor.kwargs, _numpy(args)


def run_samples(name: str, mode: str, samples) -> None:
    """:func:`check_twins` on module_db samples of one module in one mode, all in one
    compiled program (a mismatch names its sample), and each sample that REFUSED lists
    checked to be refused with its message."""
    twins = []
    for i, sample in samples:
        refused = REFUSED.get((name, sample.desc, mode))
        build_twin = functools.partial(Twin, name, mode, *_sample_check(name, mode, sample),
                                       label=f"sample {i}: {sample.desc}")
        if refused is None:
            twins.append(build_twin())
            continue
        reason, match = refused
        with pytest.raises((ValueError, TypeError), match=match):
            check_twins([build_twin()])
    if twins:
        check_twins(twins)


def run_sample(name: str, mode: str, sample) -> None:
    """:func:`run_samples` on one sample."""
    run_samples(name, mode, [(0, sample)])


GROUPS = module_db_groups(TWINS)
SAMPLES = [pytest.param(name, mode, sample) for name, mode, samples in GROUPS
           for _, sample in samples]


@pytest.mark.parametrize("name,mode,samples",
                         [pytest.param(*g, id=f"{g[0]}-{g[1]}") for g in GROUPS])
def test_samples(name, mode, samples):
    """Every sample of one module in one mode (one compiled program: a mismatch names the
    sample's index and description)."""
    run_samples(name, mode, samples)


def test_counts():
    """Every module of module_db with a twin is covered and the refusals name real samples."""
    names = {p.values[0] for p in SAMPLES}
    assert names == {info.module_cls.__name__ for info in module_db} & set(TWINS)
    keys = {(p.values[0], p.values[2].desc, p.values[1]) for p in SAMPLES}
    assert set(REFUSED) <= keys, set(REFUSED) - keys
    missing = sorted(set(TWINS) - names)
    print(f"\nmodule_db: {len(SAMPLES)} samples of {len(names)} modules: "
          f"{len(SAMPLES) - len(REFUSED)} matched, {len(REFUSED)} refused. Twins without "
          f"module_db samples: {', '.join(missing)}. Largest relative errors: "
          + ", ".join(f"{k} {v:.1e}" for k, v in sorted(ERRORS.items())))
