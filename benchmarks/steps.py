"""The two sides of a case: a Flax model and its torch twin with the same weights, and the
synchronised calls that :mod:`benchmarks.timing` times. Per mode:

* ``forward``: eval mode; JAX runs one ``jit``-compiled call, torch runs under
  ``torch.inference_mode()`` (no autograd bookkeeping, as JAX's forward has none).
* ``train``: train mode; one step = loss, gradients and an Adam update. JAX compiles the whole
  step as one pure function of flat arrays (``nnx.split`` outside, ``nnx.merge`` inside, so no
  NNX Python runs per call), with the parameters, other state, optimizer state and RNG key
  donated. Torch runs ``zero_grad`` / forward / loss / ``backward`` / ``step`` with its fastest
  Adam (``fused=True``, else ``foreach=True``); torch.compile compiles the model and loss.

A model that is :class:`flax_arch.nn.Stochastic` (its call may draw randomness) is called
with ``rngs=`` from a key carried by the step; any other is called without. JAX's compilation
(``trace().lower().compile()``) is timed apart; every call is synchronised
(``block_until_ready``, ``torch.cuda.synchronize``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

import flax_arch
import torch_ref
from flax_arch.nn import Stochastic

from . import flops
from .device import DeviceInfo
from .record import Case, Options

__all__ = ["Pair", "JaxStep", "build_pair", "jax_forward", "jax_train", "WithLoss", "adam",
           "preload", "torch_forward", "torch_train", "LEARNING_RATE"]

LEARNING_RATE = 1e-3
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _cast_flax(model: nnx.Module, dtype) -> None:
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state))


@dataclass
class Pair:
    """What :func:`run_pair` times: two models with the same weights, in one dtype on one
    device, and the same inputs in each side's layout.

    ``loss`` names a loss of :func:`flax_arch.task_loss` / :func:`torch_ref.task_loss`,
    computed against the targets (each in its side's layout), for the ``train`` mode; without
    it only ``forward`` runs. ``batch_size`` is what the records report.
    """

    flax_model: nnx.Module
    torch_model: torch.nn.Module
    flax_inputs: tuple[Any, ...]
    torch_inputs: tuple[Any, ...]
    loss: str | None = None
    flax_target: Any = None
    torch_target: Any = None
    batch_size: int | None = None

    @property
    def stochastic(self) -> bool:
        """Whether the Flax model's call takes ``rngs`` (see :class:`flax_arch.nn.Stochastic`)."""
        return isinstance(self.flax_model, Stochastic)


def build_pair(case: Case, opts: Options, device: DeviceInfo) -> Pair:
    """The registered model ``case.model`` at the ``opts.size`` configuration: the torch
    reference, its weights in the Flax twin, both in ``case.dtype`` on ``device``, with the
    registry's example inputs and target (``case.batch_size`` replacing the batch)."""
    entry = flax_arch.get_entry(case.model)
    cfg = entry.config(opts.size)
    torch.manual_seed(opts.seed)
    torch_model = torch_ref.get_model(case.model, **cfg.kwargs)
    flax_model = flax_arch.uninitialised(  # every weight comes from torch next
        lambda: entry.build(opts.size, rngs=nnx.Rngs(opts.seed)), opts.seed)
    flax_arch.load_torch_state_dict(flax_model, torch_model.state_dict())
    t_dtype, j_dtype = _TORCH_DTYPES[case.dtype], _JAX_DTYPES[case.dtype]
    torch_model = torch_model.to(device=device.torch_device, dtype=t_dtype)
    _cast_flax(flax_model, j_dtype)

    torch_in, flax_in, target = entry.example_inputs(
        opts.size, batch_size=case.batch_size, dtype=np.float32, seed=opts.seed + 1)

    def to_torch(a):
        t = torch.from_numpy(np.ascontiguousarray(a)).to(device.torch_device)
        return t.to(t_dtype) if t.is_floating_point() else t

    def to_jax(a):
        a = jnp.asarray(a)
        return a.astype(j_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    pair = Pair(flax_model, torch_model, tuple(to_jax(a) for a in flax_in),
                tuple(to_torch(a) for a in torch_in), loss=entry.loss)
    if target is not None:
        pair.torch_target = to_torch(target)
        pair.flax_target = to_jax(flax_arch.to_channels_last(target, cfg.target.layout))
    pair.batch_size = next((i.with_batch(case.batch_size).shape[i.layout.index("N")]
                            for i in cfg.inputs if "N" in i.layout), None)
    return pair


# ----------------------------------------------------------------------------- JAX steps


@dataclass
class JaxStep:
    run: Callable[[], Any]  # one synchronised call
    compile_s: float
    flops_xla: float | None
    flops_jaxpr: float


def _compile(fn, runner, *args, donate_argnums=()) -> JaxStep:
    """Traces, lowers and compiles ``fn(*args)``, timed; ``runner(compiled)`` makes the call."""
    t0 = time.perf_counter()
    traced = jax.jit(fn, donate_argnums=donate_argnums).trace(*args)
    compiled = traced.lower().compile()
    seconds = time.perf_counter() - t0
    return JaxStep(runner(compiled), seconds, flops.xla_flops(compiled),
                    flops.jaxpr_flops(traced.jaxpr))


def jax_forward(p: Pair, seed: int) -> JaxStep:
    model = p.flax_model
    model.eval()
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    # on the device once: a NumPy leaf would be copied in again at every call
    leaves = jax.device_put(leaves)
    stochastic = p.stochastic

    def forward(leaves, inputs, key):
        m = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        return m(*inputs, rngs=nnx.Rngs(key)) if stochastic else m(*inputs)

    key = jax.random.key(seed)

    def runner(compiled):
        return lambda: jax.block_until_ready(compiled(leaves, p.flax_inputs, key))

    return _compile(forward, runner, leaves, p.flax_inputs, key)


def jax_train(p: Pair, seed: int) -> JaxStep:
    model = p.flax_model
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(LEARNING_RATE)

    @jax.jit  # one program, not one per leaf shape eagerly (~1 s for ResNet-18's 62 leaves)
    def start(params, rest):  # the donated copies (the model keeps its own) and Adam's state
        copy = functools.partial(jax.tree.map, jnp.copy)
        return copy(params), copy(rest), tx.init(params)

    params, rest, opt_state = start(params, rest)
    carry = [params, rest, opt_state, jax.random.key(seed)]
    leaves, treedef = jax.tree.flatten(carry)
    loss_name, stochastic = p.loss, p.stochastic

    def train_step(leaves, inputs, target):
        params, rest, opt_state, key = jax.tree.unflatten(treedef, leaves)
        if stochastic:
            key, sub = jax.random.split(key)

        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables in this trace
            out = m(*inputs, rngs=nnx.Rngs(sub)) if stochastic else m(*inputs)
            _, _, new_rest = nnx.split(m, nnx.Param, ...)
            return flax_arch.task_loss(loss_name, out, target), new_rest

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return jax.tree.leaves([params, rest, opt_state, key]), loss

    def runner(compiled):
        carry = {"leaves": leaves}

        def run():
            carry["leaves"], loss = compiled(carry["leaves"], p.flax_inputs, p.flax_target)
            return jax.block_until_ready(loss)

        return run

    return _compile(train_step, runner, leaves, p.flax_inputs, p.flax_target,
                    donate_argnums=0)


# ----------------------------------------------------------------------------- torch steps


class WithLoss(torch.nn.Module):
    """The model and its loss as one module, so torch.compile sees the whole forward."""

    def __init__(self, model: torch.nn.Module, loss: str):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, *inputs_and_target):
        *inputs, target = inputs_and_target
        return torch_ref.task_loss(self.loss, self.model(*inputs), target)


def preload() -> None:
    """Imports what the steps import on first use, starting no thread: a process that forks a
    child per case (:mod:`benchmarks.isolate`) calls it once, and no child pays it again
    (torch's first optimizer imports ``torch._dynamo``: 1.1 s)."""
    import torch._dynamo  # noqa: F401


def adam(params) -> tuple[torch.optim.Optimizer, str]:
    """torch's fastest Adam for these parameters: fused, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=LEARNING_RATE, fused=True), "Adam(fused=True)"
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=LEARNING_RATE, foreach=True), "Adam(foreach=True)"


def torch_sync(device: DeviceInfo) -> Callable[[], None]:
    return torch.cuda.synchronize if device.torch_device == "cuda" else (lambda: None)


def torch_forward(p: Pair, device: DeviceInfo, module: torch.nn.Module) -> Callable[[], Any]:
    """One eval-mode call. The forward and train steps share the torch model and a run visits
    each case twice (forward, train; then train, forward): each step puts the model in its
    mode when it finds it in the other (``train()`` walks every submodule; the check reads
    one flag). Without it the second visit timed torch's forward in train mode: DenseNet-121's
    batch-statistics BatchNorms made it 1.8x slower."""
    model = p.torch_model
    model.eval()
    sync = torch_sync(device)

    def run():
        if model.training:
            model.eval()
        with torch.inference_mode():
            out = module(*p.torch_inputs)
        sync()
        return out

    return run


def torch_train(p: Pair, device: DeviceInfo, step_module: torch.nn.Module,
                 opt: torch.optim.Optimizer) -> Callable[[], Any]:
    """One train-mode step (the mode checked at each call, as :func:`torch_forward` says)."""
    model = p.torch_model
    model.train()
    sync = torch_sync(device)

    def run():
        if not model.training:
            model.train()
        opt.zero_grad(set_to_none=True)
        loss = step_module(*p.torch_inputs, p.torch_target)
        loss.backward()
        opt.step()
        sync()
        return loss

    return run
