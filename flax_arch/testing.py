"""Parity between a Flax NNX model and its PyTorch twin, proven in one call.

:func:`assert_parity` copies the torch model's ``state_dict`` into the Flax model (strictly,
by key), runs both on the same inputs (given in torch's layout, moved channels-last for
Flax), and compares, in torch's names and layouts: the outputs, the state after the call
(BatchNorm statistics), the gradient of every parameter and of every float input, and two
steps each of SGD with momentum and of Adam (optax against ``torch.optim``). A difference
raises an ``AssertionError`` naming the check, the array and the error; otherwise it returns
a :class:`ParityReport` of the largest error per check.

A pair you wrote yourself, a torch module and its Flax twin with the same attribute names:

>>> import jax, numpy as np, torch
>>> from flax import nnx
>>> import flax_arch
>>> from flax_arch.testing import assert_parity
>>> jax.config.update("jax_enable_x64", True)  # float64 parity: the same mathematics
>>> class TorchNet(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
...         self.bn = torch.nn.BatchNorm2d(8)
...         self.fc = torch.nn.Linear(8, 10)
...
...     def forward(self, x):  # (batch, 3, height, width) -> (batch, 10)
...         return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))
>>> class FlaxNet(nnx.Module):
...     def __init__(self, *, rngs: nnx.Rngs):
...         self.conv = flax_arch.nn.Conv2d(3, 8, 3, padding=1, bias=False, rngs=rngs)
...         self.bn = flax_arch.nn.BatchNorm2d(8)
...         self.fc = flax_arch.nn.Linear(8, 10, rngs=rngs)
...
...     def __call__(self, x):  # (batch, height, width, 3) -> (batch, 10)
...         return self.fc(jax.nn.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))
>>> x = np.random.default_rng(0).standard_normal((4, 3, 16, 16))  # torch's layout, NCHW
>>> report = assert_parity(FlaxNet(rngs=nnx.Rngs(0)), TorchNet(), x, train=True)
>>> print(report)  # doctest: +ELLIPSIS
parity in float64, train mode, tolerance 1e-10 (the float64 default):
  forward  ...e-1...  ...
  grad     ...e-1...  grad ...
  sgd      ...e-1...  ...
  adam     ...e-1...  ...

The error of an array is ``max|flax - torch| / max(1, max|torch|)``; a check passes when no
array's error exceeds the tolerance: 1e-10 in float64, 1e-4 in float32, or ``rtol``
(:mod:`flax_arch._tolerances` gives each tolerance with its reason).

The Flax side runs compiled: its forward, value-and-gradient and optimizer updates under
``jax.jit`` (the model split into its graph and its state; one compilation serves the
gradient check and every optimizer step), at ``"highest"`` matmul precision, and torch with
TF32 off, so that a GPU checks the same mathematics. Importing this module does not import
torch; calling :func:`assert_parity` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flax_arch import _tolerances
from flax_arch.interop import (load_torch_state_dict, to_channels_first, to_channels_last,
                               torch_state_dict)

__all__ = ["assert_parity", "assert_close", "relative_error", "tolerance", "clear_caches",
           "ParityReport", "Comparison", "CHECKS", "STEPS"]

CHECKS = ("forward", "grad", "sgd", "adam")
STEPS = 2  # optimizer steps per optimizer check
tolerance = _tolerances.tolerance
_COTANGENT_SEED = 123
_SHOWN = 5  # mismatching arrays named in an AssertionError

# What the optimizer steps train on: None (the outputs' sum against fixed random cotangents,
# as the gradient check), a registry loss name (flax_arch.task_loss / torch_ref.task_loss) or
# a (flax_loss, torch_loss) pair of callables ``(outputs, target) -> scalar``.
Loss = str | tuple[Callable[..., Any], Callable[..., Any]] | None


# ----------------------------------------------------------------------------- comparisons


_CHUNK = 1 << 18  # elements compared at a time: no full-size temporaries


def relative_error(actual, expected) -> float:
    """``max|actual - expected| / max(1, max|expected|)``; ``inf`` where either holds a NaN
    or an infinity (non-finite values are never equal)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} != {expected.shape}")
    # in the arrays' own precision (at least float32): its rounding is far below any error
    # that matters; NaN and inf propagate into the maxima
    a, e = np.ascontiguousarray(actual).reshape(-1), np.ascontiguousarray(expected).reshape(-1)
    buf = np.empty(min(a.size, _CHUNK), np.result_type(a, e, np.float32))
    errs, scales = [0.0], [1.0]
    with np.errstate(invalid="ignore"):  # inf - inf
        for i in range(0, a.size, _CHUNK):
            d = buf[:min(_CHUNK, a.size - i)]
            np.subtract(a[i:i + _CHUNK], e[i:i + _CHUNK], out=d, dtype=d.dtype)
            errs.append(np.max(np.abs(d, out=d)))
            scales += [np.max(e[i:i + _CHUNK]), -float(np.min(e[i:i + _CHUNK]))]
    err, scale = float(np.max(errs)), float(np.max(np.asarray(scales, np.float64)))
    return err / scale if np.isfinite(err) and np.isfinite(scale) else float("inf")


def assert_close(actual, expected, rtol: float, what: str = "array") -> float:
    """Asserts ``relative_error(actual, expected) <= rtol``; returns the error."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != {expected.shape}")
    err = relative_error(actual, expected)
    if not err <= rtol:
        raise AssertionError(f"{what}: error {err:.3e} > tolerance {rtol:.0e} "
                             "(max|diff| / max(1, max|ref|); inf: non-finite values)")
    return err


@dataclass(frozen=True)
class Comparison:
    """One compared array: ``check`` (``'forward'``, ``'grad'``, ``'sgd'``, ``'adam'``),
    ``kind`` (``'output'``, ``'state'``, ``'grad'``, ``'loss'``), ``name`` (the output's
    path, the state_dict key, ``'input 0'``, ``'step 1'``) and its relative error."""

    check: str
    kind: str
    name: str
    error: float

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}".strip()


@dataclass
class ParityReport:
    """What :func:`assert_parity` compared: every array with its error."""

    dtype: str
    train: bool
    rtol: float
    rtol_given: bool
    comparisons: list[Comparison] = field(default_factory=list)

    def largest(self) -> dict[str, Comparison]:
        """The largest error of each check, in the order the checks ran."""
        out: dict[str, Comparison] = {}
        for c in self.comparisons:
            if c.check not in out or c.error > out[c.check].error:
                out[c.check] = c
        return out

    @property
    def tolerance(self) -> str:
        default = _tolerances.tolerance(self.dtype)
        if self.rtol_given:
            return (f"tolerance {self.rtol:.0e} (rtol given; the {self.dtype} default is "
                    f"{default:.0e})")
        return f"tolerance {self.rtol:.0e} (the {self.dtype} default)"

    @property
    def mode(self) -> str:
        return "train" if self.train else "eval"

    def __str__(self) -> str:
        lines = [f"parity in {self.dtype}, {self.mode} mode, {self.tolerance}:"]
        lines += [f"  {check:8s} {c.error:.2e}  {c.what}" for check, c in self.largest().items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        errors = ", ".join(f"{k}={c.error:.1e}" for k, c in self.largest().items())
        return f"ParityReport({self.dtype}, {self.mode}, rtol={self.rtol:.0e}: {errors})"


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` in C order. A transposed weight (torch's Linear and Conv layouts against Flax's)
    is copied by torch, whose blocked transposition is ~6x faster than NumPy's."""
    if a.flags.c_contiguous or not a.flags.writeable:  # read-only: a JAX array's own buffer
        return np.ascontiguousarray(a)
    import torch

    return torch.from_numpy(a).contiguous().numpy()


class _Checker:
    """Collects one check's comparisons; raises naming the arrays above the tolerance."""

    def __init__(self, report: ParityReport, check: str):
        self.report, self.check, self.failed = report, check, []

    def compare(self, kind: str, name: str, actual, expected) -> None:
        actual, expected = _contiguous(np.asarray(actual)), _contiguous(np.asarray(expected))
        if actual.shape != expected.shape:
            raise AssertionError(
                f"assert_parity: check {self.check!r}: {kind} {name} has shape {actual.shape} "
                f"in Flax, {expected.shape} from torch (in Flax's layout)")
        self.add(kind, name, relative_error(actual, expected))

    def add(self, kind: str, name: str, error: float) -> None:
        c = Comparison(self.check, kind, name, error)
        self.report.comparisons.append(c)
        if not c.error <= self.report.rtol:
            self.failed.append(c)

    def done(self) -> None:
        if not self.failed:
            return
        r, worst = self.report, sorted(self.failed, key=lambda c: -c.error)
        n = sum(c.check == self.check for c in r.comparisons)
        lines = [f"assert_parity: check {self.check!r} failed ({r.dtype}, {r.mode} mode): "
                 f"{len(worst)} of {n} arrays differ by more than the {r.tolerance} (error: "
                 "max|flax - torch| / max(1, max|torch|); inf: non-finite values)"]
        lines += [f"  {c.what}: error {c.error:.3e}" for c in worst[:_SHOWN]]
        if len(worst) > _SHOWN:
            lines.append(f"  ... and {len(worst) - _SHOWN} more")
        raise AssertionError("\n".join(lines))


# ----------------------------------------------------------------------------- layouts


def _default_layout(ndim: int) -> str | None:
    """Channels-first for rank 3 and 4 (``'NCL'``, ``'NCHW'``), unchanged below; none above."""
    return {0: "", 1: "N", 2: "NC", 3: "NCL", 4: "NCHW"}.get(ndim)


def _layouts(shapes: Sequence[tuple[int, ...]], layouts: Sequence[str] | None,
             what: str) -> list[str]:
    """One torch layout per array, the default where ``layouts`` is None; each checked
    against its array's rank."""
    if layouts is None:
        layouts = [_default_layout(len(s)) for s in shapes]
    elif isinstance(layouts, str) or len(layouts) != len(shapes):
        raise ValueError(f"{what} layouts: one layout string per {what} ({len(shapes)}), "
                         f"got {layouts!r}")
    for i, (shape, layout) in enumerate(zip(shapes, layouts)):
        if layout is None:
            raise ValueError(f"{what} {i} of shape {shape} has no default layout; name its "
                             f"axes in {what}_layouts")
        if len(layout) != len(shape):
            raise ValueError(f"{what} {i}: expected torch layout {layout!r} (rank "
                             f"{len(layout)}), got shape {shape}")
    return list(layouts)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _floating(a) -> bool:
    return jnp.issubdtype(a.dtype, jnp.floating)


def _torch_leaves(out) -> list:
    """A torch output tree's tensors in ``jax.tree.leaves`` order (dict keys sorted, None
    skipped)."""
    if out is None:
        return []
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _torch_leaves(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _torch_leaves(o)]
    return [out]


# ----------------------------------------------------------------------------- the JAX side


def _objective(loss: Loss, outputs, cotangents, target, weights):
    """``(objective, loss value)``. The gradient check differentiates the outputs' sum
    against the cotangents, the optimizer steps ``loss``: one function for both, weighted
    ``weights = (1, 0)`` or ``(0, 1)``, so that one compilation serves every check. (A zero
    weight makes the other term's contribution exactly zero, unless it is not finite.)"""
    leaves = [o for o in jax.tree.leaves(outputs) if _floating(o)]
    dot = sum(jnp.sum(o * g) for o, g in zip(leaves, cotangents))
    if loss is None:
        return dot, dot
    if isinstance(loss, str):
        from flax_arch.losses import task_loss

        value = task_loss(loss, outputs, target)
    else:
        value = loss[0](outputs, target)
    return weights[0] * dot + weights[1] * value, value


def _call(graphdef, params, rest, inputs):
    """One call of the model ``merge(graphdef, params, rest)`` -> (outputs, the parameters
    the call changed as {leaf index: value} (Embedding's max_norm renormalises in place),
    every other variable after the call). Unchanged parameters are not returned: no copy."""
    model = nnx.merge(graphdef, params, rest, copy=True)
    out = model(*inputs)
    params_after, rest_after = nnx.state(model, nnx.Param, ...)
    changed = {i: new for i, (new, old) in enumerate(zip(jax.tree.leaves(params_after),
                                                         jax.tree.leaves(params)))
               if new is not old}
    return out, changed, rest_after


def _with_changes(params, changed: dict[int, jax.Array]):
    leaves, treedef = jax.tree.flatten(params)
    for i, value in changed.items():
        leaves[i] = value
    return jax.tree.unflatten(treedef, leaves)


def _forward(graphdef, params, rest, inputs):
    """One call without gradients -> :func:`_call`'s (outputs, changed, rest)."""
    return _call(graphdef, params, rest, inputs)


def _value_and_grad(graphdef, loss: Loss, diff: tuple[bool, ...], params, rest, inputs,
                    cotangents, target, weights):
    """One call with gradients -> ((objective, (loss value, outputs, changed parameters,
    every other variable)), (parameter gradients, gradients of the inputs marked in
    ``diff``))."""

    def f(params, diff_inputs):
        it = iter(diff_inputs)
        xs = [next(it) if d else x for x, d in zip(inputs, diff)]
        out, changed, rest_after = _call(graphdef, params, rest, xs)
        objective, value = _objective(loss, out, cotangents, target, weights)
        return objective, (value, out, changed, rest_after)

    diff_inputs = [x for x, d in zip(inputs, diff) if d]
    return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(params, diff_inputs)


@functools.lru_cache(maxsize=None)
def _optax(optimizer: str, dtype: str) -> optax.GradientTransformation:
    """The optimizer, one object per (optimizer, dtype) so that its compiled update is reused."""
    if optimizer == "sgd":
        return optax.sgd(_tolerances.SGD_LR, momentum=_tolerances.SGD_MOMENTUM)
    return optax.adam(_tolerances.ADAM_LR, eps=_tolerances.adam_eps(dtype))


class _Flat:
    """A parameter tree as one vector, on the host, and back. SGD and Adam act elementwise,
    so optax updates the vector exactly as it would the tree: one compiled update of one
    array, where one per parameter took seconds to compile (GoogLeNet's 344)."""

    def __init__(self, params):
        leaves, self.treedef = jax.tree.flatten(params)
        self.shapes = [np.shape(x) for x in leaves]
        self.offsets = np.cumsum([int(np.prod(s)) for s in self.shapes])[:-1]

    def __call__(self, tree) -> jax.Array:
        return jax.device_put(np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)]))

    def tree(self, vector: jax.Array):
        parts = np.split(np.asarray(vector), self.offsets)
        return jax.tree.unflatten(self.treedef, [jax.device_put(p.reshape(s))
                                                 for p, s in zip(parts, self.shapes)])


def _init(tx: optax.GradientTransformation, params):
    return tx.init(params)


def _update(tx: optax.GradientTransformation, grads, opt_state, params):
    """One optimizer step; compiled with the old state and parameters donated, so that their
    buffers hold the new ones (a float64 ResNet-18's Adam check peaked ~0.1 GiB lower)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


@dataclass(frozen=True)
class _Jitted:
    """The checks' compiled functions, for one set of compiler options."""

    forward: Callable
    value_and_grad: Callable
    init: Callable
    update: Callable


_JITTED: dict[tuple, _Jitted] = {}


def _jitted(compiler_options: dict[str, Any] | None) -> _Jitted:
    key = tuple(sorted((compiler_options or {}).items()))
    if key not in _JITTED:
        jit = functools.partial(jax.jit, compiler_options=dict(key) or None)
        _JITTED[key] = _Jitted(jit(_forward, static_argnums=0),
                               jit(_value_and_grad, static_argnums=(0, 1, 2)),
                               jit(_init, static_argnums=0),
                               jit(_update, static_argnums=0, donate_argnums=(2, 3)))
    return _JITTED[key]


def clear_caches() -> None:
    """Drops the compiled checks. Each model's compilation is kept for later calls on the
    same graph and shapes (a few MB each); a long test suite calls this between tests."""
    for jitted in _JITTED.values():
        for f in (jitted.forward, jitted.value_and_grad, jitted.init, jitted.update):
            f.clear_cache()


def _cast(model: nnx.Module, dtype: np.dtype) -> None:
    """Casts every floating-point variable of ``model`` to ``dtype`` in place (on the host:
    nothing to compile; ``jax.device_put`` here and below for the same reason, where
    ``jnp.asarray`` compiles a program per shape)."""
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(
        lambda v: jax.device_put(np.asarray(v, dtype)) if _floating(v) and v.dtype != dtype else v,
        state))


# ----------------------------------------------------------------------------- the checks


_GRAD, _TRAIN = np.array([1.0, 0.0]), np.array([0.0, 1.0])  # objective weights


@dataclass
class _Run:
    """One assert_parity call: the two models, the inputs in each layout, the loss."""

    flax: nnx.Module
    torch: Any
    torch_in: list[np.ndarray]
    flax_in: list[jax.Array]
    diff: tuple[bool, ...]
    input_layouts: list[str]
    output_layouts: list[str]
    outputs: list[tuple[str, tuple[int, ...]]]  # each output leaf's path and shape (Flax)
    loss: Loss
    cotangents: tuple[list, list]  # (Flax layout, torch)
    target: tuple[Any, Any]  # (Flax layout, torch)
    device: Any
    report: ParityReport
    jit: _Jitted

    def torch_inputs(self, requires_grad: bool) -> list:
        import torch

        return [torch.from_numpy(a.copy()).to(self.device).requires_grad_(requires_grad and d)
                for a, d in zip(self.torch_in, self.diff)]

    def torch_objective(self, out, train: bool):
        """torch's loss of ``out``: the cotangent sum, or (``train``) the loss trained on."""
        if not train or self.loss is None:
            leaves = [t for t in _torch_leaves(out) if t.is_floating_point()]
            return sum((t * g).sum() for t, g in zip(leaves, self.cotangents[1]))
        if isinstance(self.loss, str):
            from torch_ref import task_loss

            return task_loss(self.loss, out, self.target[1])
        return self.loss[1](out, self.target[1])

    def jax_value_and_grad(self, graphdef, params, rest, weights):
        w = jax.device_put(weights.astype(self.report.dtype))
        return self.jit.value_and_grad(graphdef, self.loss, self.diff, params, rest,
                                       self.flax_in, self.cotangents[0], self.target[0], w)

    def torch_outputs(self, check: str, out) -> list[np.ndarray]:
        """The torch output leaves in Flax's layout, their number and shapes checked."""
        leaves = _torch_leaves(out)
        if len(leaves) != len(self.outputs):
            raise AssertionError(f"assert_parity: check {check!r}: the Flax model returns "
                                 f"{len(self.outputs)} arrays, torch {len(leaves)}")
        leaves = [to_channels_last(_numpy(t), lay) for t, lay in zip(leaves, self.output_layouts)]
        for (path, shape), t, lay in zip(self.outputs, leaves, self.output_layouts):
            if t.shape != shape:
                raise AssertionError(
                    f"assert_parity: check {check!r}: {f'output {path}'.strip()} has shape "
                    f"{shape} in Flax, {t.shape} from torch (converted from its layout {lay!r})")
        return leaves

    def compare_state(self, c: _Checker, suffix: str,
                      unresolved: dict[str, np.ndarray] | None = None) -> None:
        """Every parameter and buffer, in torch names and layouts. ``unresolved``: per
        parameter, the elementwise difference that the optimizer cannot resolve
        (:class:`_AdamResolution`); only what exceeds it counts."""
        ours, ref = torch_state_dict(self.flax), self.torch.state_dict()
        if set(ours) != set(ref):
            raise AssertionError(f"assert_parity: check {c.check!r}: state keys differ: "
                                 f"{sorted(set(ours) ^ set(ref))}")
        for key, value in ref.items():
            expected = _numpy(value)
            if unresolved and key in unresolved:
                # the excess over the unresolved difference, on torch's value's scale
                excess = np.maximum(np.abs(ours[key] - expected) - unresolved[key], 0)
                scale = max(1.0, float(np.max(np.abs(expected), initial=0)))
                error = float(np.max(excess, initial=0)) / scale
                c.add("state", f"{key}{suffix} (beyond Adam's resolution)",
                      error if np.isfinite(error) else float("inf"))
                continue
            c.compare("state", f"{key}{suffix}", ours[key], expected)

    def call(self, checks: Sequence[str]) -> None:
        """The 'forward' and 'grad' checks, through one call of each model."""
        import torch

        grad = "grad" in checks
        self.torch.zero_grad(set_to_none=True)
        t_in = self.torch_inputs(requires_grad=grad)
        with torch.set_grad_enabled(grad):
            t_out = self.torch(*t_in)
            t_leaves = self.torch_outputs("forward" if "forward" in checks else "grad", t_out)
            if grad:
                self.torch_objective(t_out, train=False).backward()
        graphdef, params, rest = nnx.split(self.flax, nnx.Param, ...)
        if grad:
            (_, (_, f_out, changed, rest)), (p_grads, x_grads) = self.jax_value_and_grad(
                graphdef, params, rest, _GRAD)
        else:
            f_out, changed, rest = self.jit.forward(graphdef, params, rest, self.flax_in)
        nnx.update(self.flax, _with_changes(params, changed), rest)

        if "forward" in checks:
            c = _Checker(self.report, "forward")
            flat, _ = jax.tree_util.tree_flatten_with_path(f_out)
            for (path, ours), ref in zip(flat, t_leaves):
                c.compare("output", jax.tree_util.keystr(path), ours, ref)
            self.compare_state(c, " after the call")
            c.done()
        if grad:
            c = _Checker(self.report, "grad")
            ours, ref = torch_state_dict(self.flax, p_grads), dict(self.torch.named_parameters())
            if set(ours) != set(ref):
                raise AssertionError(f"assert_parity: check 'grad': parameter names differ: "
                                     f"{sorted(set(ours) ^ set(ref))}")
            for key, p in ref.items():
                g = np.zeros(ours[key].shape) if p.grad is None else _numpy(p.grad)
                c.compare("grad", key, ours[key], g)
            for i, g in zip([i for i, d in enumerate(self.diff) if d], x_grads):
                ref = np.zeros(t_in[i].shape) if t_in[i].grad is None else _numpy(t_in[i].grad)
                c.compare("grad", f"input {i}", g, to_channels_last(ref, self.input_layouts[i]))
            c.done()

    def steps(self, optimizer: str) -> None:
        """``STEPS`` training steps of both models on the loss: each step's loss, then every
        parameter and buffer."""
        import torch

        dtype = self.report.dtype
        if optimizer == "sgd":
            t_opt = torch.optim.SGD(self.torch.parameters(), lr=_tolerances.SGD_LR,
                                    momentum=_tolerances.SGD_MOMENTUM)
        else:
            t_opt = torch.optim.Adam(self.torch.parameters(), lr=_tolerances.ADAM_LR,
                                     eps=_tolerances.adam_eps(dtype))
        tx = _optax(optimizer, dtype)
        def from_torch():
            """torch's weights and buffers on both sides, split for the step."""
            load_torch_state_dict(self.flax, self.torch.state_dict())
            return nnx.split(self.flax, nnx.Param, ...)

        # the check before compared the weights: its differences within tolerance would
        # otherwise reach this check's statistics
        graphdef, params, rest = from_torch()
        flat = _Flat(params)
        flat_params = flat(params)
        opt_state = self.jit.init(tx, flat_params)
        c = _Checker(self.report, optimizer)
        resolution = _AdamResolution() if optimizer == "adam" else None
        for step in range(1, STEPS + 1):
            t_opt.zero_grad(set_to_none=True)
            t_out = self.torch(*self.torch_inputs(requires_grad=False))
            self.torch_outputs(optimizer, t_out)  # the same outputs' shapes
            t_loss = self.torch_objective(t_out, train=True)
            t_loss.backward()
            t_opt.step()
            (_, (f_loss, _, changed, rest)), (grads, _) = self.jax_value_and_grad(
                graphdef, params, rest, _TRAIN)
            if resolution is not None:
                resolution.add(t_opt, self.torch, torch_state_dict(self.flax, grads))
            self.torch.zero_grad(set_to_none=True)
            flat_grads = flat(grads)
            del grads  # each tree dropped once used: a float64 ResNet's is 90 MB
            # the update applies to the parameters as the call left them: torch's optimizer
            # sees a forward's in-place changes too (Embedding's max_norm renormalisation)
            if changed:
                flat_params = flat(_with_changes(params, changed))
            del params
            flat_params, opt_state = self.jit.update(tx, flat_grads, opt_state, flat_params)
            del flat_grads
            params = flat.tree(flat_params)
            nnx.update(self.flax, params, rest)
            c.compare("loss", f"step {step}", f_loss, _numpy(t_loss))
            if step < STEPS:
                # the next step from the same weights on both sides, once compared: within
                # tolerance (or Adam's resolution: its noise) they may differ, and the next
                # forward's batch statistics would carry that into the buffers, which no bound
                # covers (train-mode BatchNorm's running means 1e-10 to 3e-9 apart after two
                # Adam steps in timm's RegNetX and EfficientNet)
                self.compare_state(c, f" after step {step}",
                                   None if resolution is None else resolution.bound)
                graphdef, params, rest = from_torch()
                flat_params = flat(params)
                if resolution is not None:
                    resolution.bound = {}
        self.compare_state(c, f" after step {STEPS}",
                           None if resolution is None else resolution.bound)
        c.done()


class _AdamResolution:
    """What Adam cannot resolve: the parameter difference that the two sides' gradient
    difference explains, elementwise, summed over the steps since the two sides' weights were
    last made equal (:meth:`_Run.steps` compares them after every step and gives the next step
    torch's weights on both sides).

    Adam's step ``lr * m / (sqrt(v) + eps)`` (bias-corrected moments) moves, to first order,
    by ``lr * (|dm| + |m| * |d sqrt(v)| / (sqrt(v) + eps)) / (sqrt(v) + eps)`` for a change of
    its moments, and ``|dm|`` and ``|d sqrt(v)|`` are at most the largest gradient difference
    so far, ``D``. Where a gradient is real, ``sqrt(v)`` is its size and the bound is ``lr``
    times the gradient's own relative error (~1e-16 in float64): nothing is loosened. Where a
    gradient is zero up to rounding (a bias that BatchNorm cancels), ``sqrt(v) ~ D << eps``
    and the step is that rounding amplified by ``lr / eps``: both sides step by noise, and
    this bound is exactly that noise.

    Both arrays are kept in float32, rounded up (a bound needs no more digits, and a float64
    ResNet-18's two would hold 180 MB)."""

    def __init__(self):
        self.bound: dict[str, np.ndarray] = {}
        self.largest: dict[str, np.ndarray] = {}

    @staticmethod
    def _up(x: np.ndarray) -> np.ndarray:
        """``x`` (>= 0) in float32, never below it."""
        return (np.asarray(x, np.float64) * (1 + 1e-6)).astype(np.float32)

    def add(self, t_opt, torch_model, flax_grads: dict[str, np.ndarray]) -> None:
        """One step, after ``t_opt.step()``, the torch gradients still held."""
        group = t_opt.param_groups[0]
        (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
        for key, p in torch_model.named_parameters():
            if p.grad is None or p not in t_opt.state:
                continue
            state = t_opt.state[p]
            t = float(state["step"])
            m = np.abs(_numpy(state["exp_avg"])) / (1 - b1 ** t)
            root = np.sqrt(_numpy(state["exp_avg_sq"]) / (1 - b2 ** t)) + eps
            diff = np.abs(np.asarray(flax_grads[key]) - _numpy(p.grad))
            d = np.maximum(self.largest.get(key, diff), diff)
            self.largest[key] = self._up(d)
            self.bound[key] = self._up(self.bound.get(key, 0.0) + lr * (d + m * d / root) / root)


class _Precision:
    """``"highest"`` matmul precision for JAX and TF32 off in torch, restored afterwards."""

    def __enter__(self):
        import torch

        self.jax = jax.default_matmul_precision("highest")
        self.jax.__enter__()
        self.tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.tf32
        return self.jax.__exit__(*exc)


# ----------------------------------------------------------------------------- the tool


def assert_parity(
    flax_model: nnx.Module,
    torch_model,
    *inputs,
    layouts: Sequence[str] | None = None,
    output_layouts: Sequence[str] | None = None,
    dtype: str | np.dtype = "float64",
    train: bool = False,
    checks: Sequence[str] = CHECKS,
    loss: Loss = None,
    target=None,
    target_layout: str | None = None,
    rtol: float | None = None,
    compiler_options: dict[str, Any] | None = None,
) -> ParityReport:
    """Proves that ``flax_model`` and ``torch_model`` compute the same function, or names
    where they do not.

    Both models are changed in place, as training them would change them: cast to ``dtype``,
    the torch weights loaded strictly into the Flax model, put in train or eval mode
    (``train``); then the checks run in this order, each continuing from the state the one
    before left (the optimizer checks from torch's, which the check before compared):

    - ``'forward'``: the outputs (any tree of arrays, compared leaf by leaf) and every
      parameter and buffer after the call (train-mode BatchNorm statistics);
    - ``'grad'``: through the same call, the gradient of every parameter and of every float
      input, of the outputs' sum against fixed random cotangents (which reaches every
      output);
    - ``'sgd'`` and ``'adam'``: ``STEPS`` = 2 steps on ``loss`` of SGD with momentum 0.9 at
      lr 1e-2, or of Adam at lr 1e-3 (optax against ``torch.optim``; Adam's eps:
      :mod:`flax_arch._tolerances`): each step's loss, then every parameter and buffer.
      Adam normalises each gradient by its size: a parameter whose gradient is zero in
      exact arithmetic (a bias in front of train-mode BatchNorm) moves by ~lr * noise /
      eps, differently on each side; its difference is judged beyond what the two sides'
      gradient difference explains (``(beyond Adam's resolution)`` in the report). Each
      optimizer check starts from torch's weights and buffers on both sides, and after each
      step but the last compares them and starts the next step from torch's again: a
      difference within tolerance would otherwise reach the buffers through the next
      forward's batch statistics, which no bound covers.

    Args:
      flax_model: an NNX module whose state paths are the torch ``state_dict`` keys.
      torch_model: its ``torch.nn.Module`` twin (on any device).
      *inputs: NumPy arrays or torch tensors in torch's layout; integer inputs (indices) are
        passed as they are and not differentiated.
      layouts: one torch layout string per input (``"NCHW"``, ``"NCL"``, ``"NC"``, ``"LNC"``,
        ``"NL"``, ...): a ``C`` before spatial axes (``"NCL"``, ``"NCHW"``, ``"CL"``,
        ``"CHW"``) is moved last for Flax, any other layout is passed as it is. Default:
        ``"NCL"`` for rank 3, ``"NCHW"`` for rank 4, unchanged for rank <= 2.
      output_layouts: the torch layout of each output leaf (in ``jax.tree.leaves`` order),
        by the same rule and default. Pass it where a rank-3 or rank-4 output is not
        channels-first: a recurrent model's ``(seq, batch, hidden)`` output is ``"LNC"``,
        its ``h_n`` ``"DNC"``.
      dtype: ``"float64"`` (needs ``jax_enable_x64``) or ``"float32"``.
      train: train mode (batch statistics; running averages updated) or eval mode.
      checks: a non-empty subset of ``CHECKS``.
      loss: what the optimizer steps train on. None: the outputs' sum against the gradient
        check's cotangents (no target needed). A registry loss name (``"mse"``,
        ``"cross_entropy"``, ``"nll"``, ``"bce"``, ``"vae"``, ...:
        :func:`flax_arch.task_loss` against ``torch_ref.task_loss``), or a pair
        ``(flax_loss, torch_loss)`` of callables ``(outputs, target) -> scalar``, each taking
        its side's outputs and target.
      target: the loss's target in torch's layout (NumPy or torch), cast to ``dtype`` if float.
      target_layout: its torch layout; default as for inputs (integer targets: unchanged).
      rtol: the tolerance to use instead of the default; the report says so.
      compiler_options: XLA compiler options for the JAX side's compilations, e.g.
        ``{"xla_cpu_use_fusion_emitters": False}`` (default: XLA's own, what users run).

    Returns:
      A :class:`ParityReport` of every compared array and its error; printed, the largest
      error of each check.

    Raises:
      flax_arch.StateDictError: the state trees do not match (every missing, unexpected or
        mis-shaped key named; the Flax model is left as it was).
      ValueError: an input whose rank does not match its layout, or that the Flax model
        refuses (the model's own error, which names the layout it expects).
      AssertionError: a check failed; the message names the check, the output path,
        state_dict key or input, the error and the tolerance (the worst few where many
        arrays differ).
    """
    import torch

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if dtype == np.float64 and jnp.zeros((), np.float64).dtype != np.float64:
        raise ValueError("float64 parity needs 64-bit JAX: call "
                         "jax.config.update('jax_enable_x64', True) first, or use float32")
    if not checks or set(checks) - set(CHECKS):
        raise ValueError(f"checks must be a non-empty subset of {CHECKS}, got {tuple(checks)}")
    if target is not None and loss is None:
        raise ValueError("a target needs a loss (the default loss takes no target)")
    if isinstance(loss, tuple) and not (len(loss) == 2 and all(map(callable, loss))):
        raise ValueError("loss must be None, a registry loss name or a (flax_loss, "
                         "torch_loss) pair of callables")
    if compiler_options is not None and not (isinstance(compiler_options, dict) and all(
            isinstance(k, str) for k in compiler_options)):
        raise ValueError("compiler_options must be None or a dict of XLA option names to "
                         f"values, got {compiler_options!r}")
    report = ParityReport(dtype.name, train, tolerance(dtype) if rtol is None else float(rtol),
                          rtol is not None)

    def cast(a: np.ndarray) -> np.ndarray:
        return a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a

    torch_in = [cast(_numpy(x)) for x in inputs]
    input_layouts = _layouts([a.shape for a in torch_in], layouts, "input")
    flax_in = [jax.device_put(np.ascontiguousarray(to_channels_last(a, lay)))
               for a, lay in zip(torch_in, input_layouts)]
    diff = tuple(bool(np.issubdtype(a.dtype, np.floating)) for a in torch_in)

    torch_model.to({np.float32: torch.float32, np.float64: torch.float64}[dtype.type])
    torch_model.train(train)
    _cast(flax_model, dtype)
    load_torch_state_dict(flax_model, torch_model.state_dict())
    flax_model.train() if train else flax_model.eval()
    device = next((p.device for p in torch_model.parameters()), torch.device("cpu"))

    # The Flax output tree, traced without computing: an input the model refuses (wrong
    # layout, rank or channels) fails here with the model's own error, before torch runs.
    graphdef, state = nnx.split(flax_model)
    try:
        outputs = jax.eval_shape(lambda s, xs: nnx.merge(graphdef, s)(*xs), state, flax_in)
    except (ValueError, TypeError) as e:
        e.add_note(f"assert_parity: the inputs were given in torch's layouts {input_layouts} "
                   f"and passed to the Flax model as shapes {[tuple(x.shape) for x in flax_in]}")
        raise
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(outputs)[0]]
    outputs = jax.tree.leaves(outputs)
    output_layouts = _layouts([o.shape for o in outputs], output_layouts, "output")

    rng = np.random.default_rng(_COTANGENT_SEED)  # cotangents drawn in Flax's layout
    flax_cot = [rng.standard_normal(o.shape).astype(dtype) for o in outputs if _floating(o)]
    float_layouts = [lay for o, lay in zip(outputs, output_layouts) if _floating(o)]
    torch_cot = [torch.from_numpy(np.ascontiguousarray(to_channels_first(g, lay))).to(device)
                 for g, lay in zip(flax_cot, float_layouts)]
    flax_target = torch_target = None
    if target is not None:
        target = cast(_numpy(target))
        if target_layout is None:
            target_layout = (_default_layout(target.ndim)
                             if np.issubdtype(target.dtype, np.floating) else "?" * target.ndim)
        _layouts([target.shape], [target_layout], "target")
        flax_target = jax.device_put(np.ascontiguousarray(to_channels_last(target, target_layout)))
        torch_target = torch.from_numpy(target.copy()).to(device)

    run = _Run(flax_model, torch_model, torch_in, flax_in, diff, input_layouts, output_layouts,
               [(p, tuple(o.shape)) for p, o in zip(paths, outputs)], loss,
               ([jax.device_put(g) for g in flax_cot], torch_cot), (flax_target, torch_target),
               device, report, _jitted(compiler_options))
    with _Precision():
        if "forward" in checks or "grad" in checks:
            run.call(checks)
        for optimizer in ("sgd", "adam"):
            if optimizer in checks:
                run.steps(optimizer)
    return report
