"""Timing one registered model on both sides, fair by construction.

For each case (model, dtype, batch size) the torch reference is built, its weights are loaded
into the Flax twin, and both are cast to the dtype; both get the same inputs (the registry's
example inputs, layout-transposed). Then, per mode:

* ``forward``: eval mode; JAX runs one ``jit``-compiled call, torch runs under
  ``torch.inference_mode()`` (no autograd bookkeeping, as JAX's forward has none).
* ``train``: train mode; one step = loss, gradients and an Adam update. JAX compiles the whole
  step as one pure function of flat arrays (``nnx.split`` outside, ``nnx.merge`` inside, so no
  NNX Python runs per call), with the parameters, other state, optimizer state and RNG key
  donated. Torch runs ``zero_grad`` / forward / loss / ``backward`` / ``step`` with its fastest
  Adam (``fused=True``, else ``foreach=True``); torch.compile compiles the model and loss.

JAX's compilation (``trace().lower().compile()``) and torch.compile's first call are timed
apart. Every call is synchronised (``block_until_ready``, ``torch.cuda.synchronize``). Each
side warms up (``warmup`` calls, fewer when one call takes more than a quarter of the
budget), which also calibrates a sample: enough back-to-back calls to last ``min_block_s``.
The samples of the sides are interleaved, their order rotating each repeat, as many repeats
as fit ``budget_s`` (at most ``repeats``); the garbage collector is off while timing, and
medians and interquartile ranges are reported.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import inspect
import math
import os
import pkgutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

import flax_arch
import torch_ref
from benchmarks import flops
from benchmarks.device import DeviceInfo, matmul_precision, versions

__all__ = ["Options", "Record", "Case", "import_families", "cases", "run_case", "skipped",
           "MODES"]

MODES = ("forward", "train")
LEARNING_RATE = 1e-3
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def import_families() -> list[str]:
    """Imports every family (a module name both packages have); returns a message per one
    that fails.

    A registered model is benchmarked whether or not the package ``__init__`` imports its
    family yet; a family that does not import is named, and the others still run.
    """
    names = [{m.name for m in pkgutil.iter_modules(p.__path__)} for p in (flax_arch, torch_ref)]
    problems = []
    for family in sorted(names[0] & names[1]):
        for package in ("flax_arch", "torch_ref"):
            try:
                importlib.import_module(f"{package}.{family}")
            except Exception as err:  # a family being written must not stop the others
                problems.append(f"cannot import {package}.{family}: {type(err).__name__}: {err}")
    return problems


@dataclass(frozen=True)
class Options:
    size: str = "bench"  # the registry configuration: 'bench' or 'test'
    repeats: int = 10
    warmup: int = 2
    min_block_s: float = 0.05  # each timed sample lasts at least this long
    budget_s: float = 60.0  # warm-up and timed repeats per (case, mode) are cut to fit this
    torch_compile: bool = False
    precision: str = "highest"
    peak_gflops: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Case:
    model: str
    dtype: str
    batch_size: int | None  # None: the registry's


@dataclass
class Record:
    """One model, mode, dtype and batch size: the numbers and where they come from."""

    model: str
    mode: str
    dtype: str
    batch_size: int | None
    device: str
    precision: str = ""
    family: str = ""
    size: str = "bench"
    jax_ms: float | None = None
    torch_eager_ms: float | None = None
    torch_compile_ms: float | None = None
    speedup: float | None = None  # torch_eager_ms / jax_ms
    speedup_vs_compile: float | None = None  # torch_compile_ms / jax_ms
    jax_compile_s: float | None = None
    torch_compile_s: float | None = None
    jax_ms_iqr: float | None = None
    torch_eager_ms_iqr: float | None = None
    torch_compile_ms_iqr: float | None = None
    flops: float | None = None  # per call
    flops_source: str = ""
    flops_xla: float | None = None
    flops_jaxpr: float | None = None  # matmul/conv only, scans times their length
    gflops: float | None = None  # achieved by JAX
    torch_gflops: float | None = None  # achieved by eager torch, same FLOP count
    peak_gflops: float | None = None
    peak_source: str = ""
    roofline: float | None = None  # gflops / peak_gflops
    repeats: int = 0  # timed samples per side; 0: a step over the budget, timed once
    calls_per_sample: dict[str, int] = field(default_factory=dict)
    optimizer: str = ""
    threads: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    load_avg: float | None = None  # 1-minute load average after the case: other work on the cores
    error: str | None = None
    skipped: str | None = None  # why the case was not run
    torch_compile_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> Record:
        return cls(**fields)


def cases(models: list[str], dtypes: list[str], batch_sizes: list[int | None]) -> list[Case]:
    return [Case(m, d, b) for m in models for d in dtypes for b in batch_sizes]


# ----------------------------------------------------------------------------- building


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def _cast_flax(model: nnx.Module, dtype) -> None:
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state))


def _takes_rngs(model: nnx.Module) -> bool:
    return "rngs" in inspect.signature(type(model).__call__).parameters


class _Built:
    """Both models with the same weights and the same inputs, in one dtype, on one device."""

    def __init__(self, case: Case, opts: Options, device: DeviceInfo):
        entry = flax_arch.get_entry(case.model)
        cfg = entry.config(opts.size)
        self.entry = entry
        torch.manual_seed(opts.seed)
        torch_model = torch_ref.get_model(case.model, **cfg.kwargs)
        flax_model = entry.build(opts.size, rngs=nnx.Rngs(opts.seed))
        flax_arch.load_torch_state_dict(flax_model, torch_model.state_dict())
        t_dtype, j_dtype = _TORCH_DTYPES[case.dtype], _JAX_DTYPES[case.dtype]
        self.torch_model = torch_model.to(device=device.torch_device, dtype=t_dtype)
        _cast_flax(flax_model, j_dtype)
        self.flax_model = flax_model
        self.takes_rngs = _takes_rngs(flax_model)

        torch_in, flax_in, target = entry.example_inputs(
            opts.size, batch_size=case.batch_size, dtype=np.float32, seed=opts.seed + 1)

        def to_torch(a):
            t = torch.from_numpy(np.ascontiguousarray(a)).to(device.torch_device)
            return t.to(t_dtype) if t.is_floating_point() else t

        def to_jax(a):
            a = jnp.asarray(a)
            return a.astype(j_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

        self.torch_in = tuple(to_torch(a) for a in torch_in)
        self.flax_in = tuple(to_jax(a) for a in flax_in)
        self.torch_target = self.flax_target = None
        if target is not None:
            self.torch_target = to_torch(target)
            self.flax_target = to_jax(flax_arch.to_channels_last(target, cfg.target.layout))
        self.batch_size = next((i.with_batch(case.batch_size).shape[i.layout.index("N")]
                                for i in cfg.inputs if "N" in i.layout), None)


# ----------------------------------------------------------------------------- JAX steps


@dataclass
class _JaxStep:
    run: Callable[[], Any]  # one synchronised call
    compile_s: float
    flops_xla: float | None
    flops_jaxpr: float


def _compile(fn, runner, *args, donate_argnums=()) -> _JaxStep:
    """Traces, lowers and compiles ``fn(*args)``, timed; ``runner(compiled)`` makes the call."""
    t0 = time.perf_counter()
    traced = jax.jit(fn, donate_argnums=donate_argnums).trace(*args)
    compiled = traced.lower().compile()
    seconds = time.perf_counter() - t0
    return _JaxStep(runner(compiled), seconds, flops.xla_flops(compiled),
                    flops.jaxpr_flops(traced.jaxpr))


def _jax_forward(b: _Built, seed: int) -> _JaxStep:
    model = b.flax_model
    model.eval()
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    takes_rngs = b.takes_rngs

    def forward(leaves, inputs, key):
        m = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        return m(*inputs, rngs=nnx.Rngs(key)) if takes_rngs else m(*inputs)

    key = jax.random.key(seed)

    def runner(compiled):
        return lambda: jax.block_until_ready(compiled(leaves, b.flax_in, key))

    return _compile(forward, runner, leaves, b.flax_in, key)


def _jax_train(b: _Built, seed: int) -> _JaxStep:
    model = b.flax_model
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # the donated copy; the model keeps its own
    rest = jax.tree.map(jnp.copy, rest)
    tx = optax.adam(LEARNING_RATE)
    carry = [params, rest, tx.init(params), jax.random.key(seed)]
    leaves, treedef = jax.tree.flatten(carry)
    loss_name, takes_rngs = b.entry.loss, b.takes_rngs

    def train_step(leaves, inputs, target):
        params, rest, opt_state, key = jax.tree.unflatten(treedef, leaves)
        if takes_rngs:
            key, sub = jax.random.split(key)

        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables in this trace
            out = m(*inputs, rngs=nnx.Rngs(sub)) if takes_rngs else m(*inputs)
            _, _, new_rest = nnx.split(m, nnx.Param, ...)
            return flax_arch.task_loss(loss_name, out, target), new_rest

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return jax.tree.leaves([params, rest, opt_state, key]), loss

    def runner(compiled):
        carry = {"leaves": leaves}

        def run():
            carry["leaves"], loss = compiled(carry["leaves"], b.flax_in, b.flax_target)
            return jax.block_until_ready(loss)

        return run

    return _compile(train_step, runner, leaves, b.flax_in, b.flax_target, donate_argnums=0)


# ----------------------------------------------------------------------------- torch steps


class _WithLoss(torch.nn.Module):
    """The model and its loss as one module, so torch.compile sees the whole forward."""

    def __init__(self, model: torch.nn.Module, loss: str):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, *inputs_and_target):
        *inputs, target = inputs_and_target
        return torch_ref.task_loss(self.loss, self.model(*inputs), target)


def _adam(params) -> tuple[torch.optim.Optimizer, str]:
    """torch's fastest Adam for these parameters: fused, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=LEARNING_RATE, fused=True), "Adam(fused=True)"
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=LEARNING_RATE, foreach=True), "Adam(foreach=True)"


def _torch_sync(device: DeviceInfo) -> Callable[[], None]:
    return torch.cuda.synchronize if device.torch_device == "cuda" else (lambda: None)


def _torch_forward(b: _Built, device: DeviceInfo, module: torch.nn.Module) -> Callable[[], Any]:
    b.torch_model.eval()
    sync = _torch_sync(device)

    def run():
        with torch.inference_mode():
            out = module(*b.torch_in)
        sync()
        return out

    return run


def _torch_train(b: _Built, device: DeviceInfo, step_module: torch.nn.Module,
                 opt: torch.optim.Optimizer) -> Callable[[], Any]:
    b.torch_model.train()
    sync = _torch_sync(device)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = step_module(*b.torch_in, b.torch_target)
        loss.backward()
        opt.step()
        sync()
        return loss

    return run


# ----------------------------------------------------------------------------- timing


def _time_block(run: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - t0) / calls


def _measure(sides: dict[str, Callable[[], Any]], opts: Options):
    """Warm-up, calibration, then interleaved samples.

    Returns the median and the interquartile range in ms per side, the repeats, and the
    calls per sample of each side. Where one call of a side takes longer than the whole
    budget, the warm-up calls are the measurement (0 repeats).
    """
    per_call = {}
    for name, run in sides.items():
        spent = 0.0
        for _ in range(max(opts.warmup, 1)):  # a step slower than budget / 4 warms up once
            per_call[name] = _time_block(run, 1)
            spent += per_call[name]
            if spent > opts.budget_s / 4:
                break
    if max(per_call.values()) > opts.budget_s:  # a step longer than the whole budget: its
        ms = {n: 1e3 * t for n, t in per_call.items()}  # warm-up call is the measurement
        return ms, {n: 0.0 for n in ms}, 0, {n: 1 for n in ms}
    calls = {n: max(1, min(10_000, math.ceil(opts.min_block_s / max(t, 1e-7))))
             for n, t in per_call.items()}
    per_repeat = sum(max(calls[n] * t, 1e-7) for n, t in per_call.items())
    repeats = max(1, min(opts.repeats, int(opts.budget_s / per_repeat)))
    names = list(sides)
    samples: dict[str, list[float]] = {n: [] for n in names}
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                samples[name].append(_time_block(sides[name], calls[name]))
    finally:
        if gc_enabled:
            gc.enable()
    median = {n: 1e3 * statistics.median(s) for n, s in samples.items()}
    iqr = {}
    for n, s in samples.items():
        q = np.percentile(s, [25, 75]) if len(s) > 1 else (s[0], s[0])
        iqr[n] = 1e3 * float(q[1] - q[0])
    return median, iqr, repeats, calls


def _base(case: Case, opts: Options, device: DeviceInfo) -> dict[str, Any]:
    """The fields every record of ``case`` shares."""
    peak, peak_source = device.peak_gflops(case.dtype, opts.precision)
    if opts.peak_gflops is not None:
        peak, peak_source = opts.peak_gflops, "--peak-gflops"
    return dict(model=case.model, dtype=case.dtype, batch_size=case.batch_size,
                device=device.name, family=flax_arch.get_entry(case.model).family,
                size=opts.size, peak_gflops=peak, peak_source=peak_source,
                threads={"torch": device.threads_torch, "xla": device.threads_xla},
                versions=versions(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def skipped(case: Case, modes: list[str], opts: Options, device: DeviceInfo,
            reason: str) -> list[Record]:
    """Records of a case not run, saying why."""
    return [Record(mode=m, skipped=reason, **_base(case, opts, device)) for m in modes]


def run_case(case: Case, modes: list[str], opts: Options, device: DeviceInfo,
             note: Callable[[str], None] = print) -> list[Record]:
    """Every mode of one case; a failure becomes a record with its error."""
    base = _base(case, opts, device)
    records = []
    with matmul_precision(device, case.dtype, opts.precision) as precision:
        try:
            built = _Built(case, opts, device)
        except Exception as err:
            note(f"{case.model}: build failed: {_short(err)}")
            return [Record(mode=m, precision=precision, error=_short(err),
                           load_avg=os.getloadavg()[0], **base) for m in modes]
        base["batch_size"] = built.batch_size
        for mode in modes:
            rec = Record(mode=mode, precision=precision, **base)
            try:
                _run_mode(built, mode, rec, opts, device, note)
            except Exception as err:
                rec.error = _short(err)
                note(f"{case.model} {mode}: failed: {rec.error}")
            rec.load_avg = os.getloadavg()[0]
            records.append(rec)
            gc.collect()
            if device.torch_device == "cuda":
                torch.cuda.empty_cache()  # leave the card's memory to the next case's JAX
    return records


def _run_mode(b: _Built, mode: str, rec: Record, opts: Options, device: DeviceInfo,
              note: Callable[[str], None]) -> None:
    if mode == "forward":
        jax_step = _jax_forward(b, opts.seed)
        eager = _torch_forward(b, device, b.torch_model)
    else:
        if b.flax_target is None:
            raise ValueError(f"the registry gives {rec.model} no target: no loss to train on")
        opt, rec.optimizer = _adam(b.torch_model.parameters())
        jax_step = _jax_train(b, opts.seed)
        eager = _torch_train(b, device, _WithLoss(b.torch_model, b.entry.loss), opt)
    rec.jax_compile_s = jax_step.compile_s
    rec.flops_xla = jax_step.flops_xla
    sides = {"jax": jax_step.run, "torch_eager": eager}

    if opts.torch_compile:
        try:
            torch._dynamo.reset()  # fresh caches: no recompile limit carried across models
            if mode == "forward":
                compiled = _torch_forward(b, device, torch.compile(b.torch_model))
            else:
                compiled = _torch_train(
                    b, device, torch.compile(_WithLoss(b.torch_model, b.entry.loss)), opt)
            t0 = time.perf_counter()
            compiled()
            rec.torch_compile_s = time.perf_counter() - t0
            sides["torch_compile"] = compiled
        except Exception as err:
            rec.torch_compile_error = _short(err)
            note(f"{rec.model} {mode}: torch.compile failed: {rec.torch_compile_error}")

    median, iqr, rec.repeats, rec.calls_per_sample = _measure(sides, opts)
    rec.jax_ms, rec.jax_ms_iqr = median["jax"], iqr["jax"]
    rec.torch_eager_ms, rec.torch_eager_ms_iqr = median["torch_eager"], iqr["torch_eager"]
    rec.speedup = rec.torch_eager_ms / rec.jax_ms
    if "torch_compile" in sides:
        rec.torch_compile_ms = median["torch_compile"]
        rec.torch_compile_ms_iqr = iqr["torch_compile"]
        rec.speedup_vs_compile = rec.torch_compile_ms / rec.jax_ms

    rec.flops_jaxpr = jax_step.flops_jaxpr or None
    rec.flops, rec.flops_source = flops.per_call(rec.flops_xla, rec.flops_jaxpr)
    if rec.flops is not None:
        rec.gflops = rec.flops / rec.jax_ms / 1e6
        rec.torch_gflops = rec.flops / rec.torch_eager_ms / 1e6
        if rec.peak_gflops:
            rec.roofline = rec.gflops / rec.peak_gflops
