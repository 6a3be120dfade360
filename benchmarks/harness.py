"""Timing two models that compute the same function, fair by construction.

:func:`run_pair` times any :class:`Pair`: a Flax model and a torch model with the same
weights, given the same inputs (each in its own layout), one dtype, one device.
:func:`run_case` builds the pair of a registered model at a registry size (the torch
reference, its weights loaded into the Flax twin, both cast; the registry's example inputs,
layout-transposed) and times it. Per mode:

* ``forward``: eval mode; JAX runs one ``jit``-compiled call, torch runs under
  ``torch.inference_mode()`` (no autograd bookkeeping, as JAX's forward has none).
* ``train``: train mode; one step = loss, gradients and an Adam update. JAX compiles the whole
  step as one pure function of flat arrays (``nnx.split`` outside, ``nnx.merge`` inside, so no
  NNX Python runs per call), with the parameters, other state, optimizer state and RNG key
  donated. Torch runs ``zero_grad`` / forward / loss / ``backward`` / ``step`` with its fastest
  Adam (``fused=True``, else ``foreach=True``); torch.compile compiles the model and loss.

A model that is :class:`flax_arch.nn.Stochastic` (its call may draw randomness) is called
with ``rngs=`` from a key carried by the step; any other is called without.

JAX's compilation (``trace().lower().compile()``) and torch.compile's first call are timed
apart. Every call is synchronised (``block_until_ready``, ``torch.cuda.synchronize``). Then,
with the garbage collector off (:func:`measure`; the rules are :mod:`benchmarks.stats`):

1. Calibration: two single calls per side; the second sets the side's sample, enough
   back-to-back calls to last ``min_sample_s`` (set again after warm-up). The case's budget
   is ``budget_s``, or ``MIN_BUDGET_ROUNDS`` rounds of one sample per side where those take
   longer (at the median sample times so far, so that one slow call does not stretch it).
2. Warm-up: interleaved samples until each side's timings settle (:func:`stats.settled`),
   at most half the budget; the last settled samples are the first timed ones.
3. Timing: rounds of one sample per side, their order rotating each round, until every
   side's IQR / median is small (:func:`stats.precise`) or the budget is spent.

Each record carries the medians, IQRs, every sample, the cores other processes kept busy
meanwhile (``/proc/stat`` against this process's CPU time), and the verdict ``stable``
with its reasons (:func:`stats.verdict`).
"""

from __future__ import annotations

import datetime
import functools
import gc
import importlib
import math
import os
import pkgutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

import flax_arch
import flax_arch.models
import torch_ref
from benchmarks import flops, stats
from benchmarks.device import DeviceInfo, matmul_precision, versions
from flax_arch.nn import Stochastic, lowering

__all__ = ["Options", "Record", "Case", "Pair", "Timing", "MachineCheck", "import_families",
           "cases", "build_pair", "run_pair", "run_case", "measure", "skipped", "check_machine",
           "machine_control", "MODES"]

MODES = ("forward", "train")
LEARNING_RATE = 1e-3
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def import_families() -> list[str]:
    """Imports every model family, ``flax_arch.models.<family>`` and its twin
    ``torch_ref.<family>`` (the same public file names); returns a message per one that fails, so
    that the run names it and times the others."""
    problems = []
    for family in sorted(m.name for m in pkgutil.iter_modules(flax_arch.models.__path__)
                         if not m.name.startswith("_")):  # _checks: shared code, no family
        for module in (f"flax_arch.models.{family}", f"torch_ref.{family}"):
            try:
                importlib.import_module(module)
            except Exception as err:  # a family being written must not stop the others
                problems.append(f"cannot import {module}: {type(err).__name__}: {err}")
    return problems


@dataclass(frozen=True)
class Options:
    size: str = "bench"  # the registry configuration: 'bench', 'quick' or 'test'
    min_sample_s: float = 0.1  # each timed sample lasts at least this long
    budget_s: float = 60.0  # warm-up and timing per (case, mode), compilation apart
    torch_compile: bool = False
    precision: str = "highest"
    lowering: str = "platform"  # flax_arch.nn.lowering.forms: 'platform', 'rewrite' or 'xla'
    peak_gflops: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Case:
    model: str
    dtype: str
    batch_size: int | None  # None: the registry's


# fields renamed since earlier runs' JSON, read by --report
_RENAMED = {"jax_ms_iqr": "jax_iqr_ms", "torch_eager_ms_iqr": "torch_eager_iqr_ms",
            "torch_compile_ms_iqr": "torch_compile_iqr_ms"}


@dataclass
class Record:
    """One model, mode, dtype and batch size: the numbers and where they come from."""

    model: str
    mode: str
    dtype: str
    batch_size: int | None
    device: str
    precision: str = ""
    lowering: str = "platform"  # the backend forms traced (flax_arch.nn.lowering.forms)
    family: str = ""
    size: str = "bench"
    jax_ms: float | None = None  # medians per call
    torch_eager_ms: float | None = None
    torch_compile_ms: float | None = None
    speedup: float | None = None  # torch_eager_ms / jax_ms
    speedup_vs_compile: float | None = None  # torch_compile_ms / jax_ms
    jax_iqr_ms: float | None = None  # interquartile ranges of the samples
    torch_eager_iqr_ms: float | None = None
    torch_compile_iqr_ms: float | None = None
    stable: bool | None = None  # None: no verdict (failed, skipped, or an earlier run's)
    unstable_reasons: list[str] = field(default_factory=list)
    other_cores: float | None = None  # cores other processes kept busy during the case
    jax_compile_s: float | None = None
    torch_compile_s: float | None = None
    flops: float | None = None  # per call
    flops_source: str = ""
    flops_xla: float | None = None
    flops_jaxpr: float | None = None  # matmul/conv only, scans times their length
    gflops: float | None = None  # achieved by JAX
    torch_gflops: float | None = None  # achieved by eager torch, same FLOP count
    peak_gflops: float | None = None
    peak_source: str = ""
    roofline: float | None = None  # gflops / peak_gflops
    repeats: int = 0  # timed samples of the side with the fewest
    warmup_samples: dict[str, int] = field(default_factory=dict)
    calls_per_sample: dict[str, int] = field(default_factory=dict)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)  # per call, in order
    timing_s: float | None = None  # wall time of calibration, warm-up and samples
    optimizer: str = ""
    threads: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    load_avg: float | None = None  # 1-minute load average after the case
    machine_spread: float | None = None  # IQR / median of the fixed loop timed beside (CPU)
    error: str | None = None
    skipped: str | None = None  # why the case was not run
    torch_compile_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Record:
        """A record from JSON, earlier runs' included (renamed fields read, dropped ones
        ignored)."""
        known = {f.name for f in fields(cls)}
        items = ((_RENAMED.get(k, k), v) for k, v in record.items())
        return cls(**{k: v for k, v in items if k in known})


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
    flax_model = entry.build(opts.size, rngs=nnx.Rngs(opts.seed))
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


def _jax_forward(p: Pair, seed: int) -> _JaxStep:
    model = p.flax_model
    model.eval()
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    stochastic = p.stochastic

    def forward(leaves, inputs, key):
        m = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        return m(*inputs, rngs=nnx.Rngs(key)) if stochastic else m(*inputs)

    key = jax.random.key(seed)

    def runner(compiled):
        return lambda: jax.block_until_ready(compiled(leaves, p.flax_inputs, key))

    return _compile(forward, runner, leaves, p.flax_inputs, key)


def _jax_train(p: Pair, seed: int) -> _JaxStep:
    model = p.flax_model
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # the donated copy; the model keeps its own
    rest = jax.tree.map(jnp.copy, rest)
    tx = optax.adam(LEARNING_RATE)
    carry = [params, rest, tx.init(params), jax.random.key(seed)]
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


def _torch_forward(p: Pair, device: DeviceInfo, module: torch.nn.Module) -> Callable[[], Any]:
    p.torch_model.eval()
    sync = _torch_sync(device)

    def run():
        with torch.inference_mode():
            out = module(*p.torch_inputs)
        sync()
        return out

    return run


def _torch_train(p: Pair, device: DeviceInfo, step_module: torch.nn.Module,
                 opt: torch.optim.Optimizer) -> Callable[[], Any]:
    p.torch_model.train()
    sync = _torch_sync(device)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = step_module(*p.torch_inputs, p.torch_target)
        loss.backward()
        opt.step()
        sync()
        return loss

    return run


# ----------------------------------------------------------------------------- timing


def _time_block(run: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``calls`` back-to-back synchronised calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - t0) / calls


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the machine's cores were busy, all processes and hypervisor steal;
    CPU seconds of this process, all threads) so far, or None without ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(t) for t in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    own = os.times()
    return ((user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system)


@dataclass
class Timing:
    """What :func:`measure` found, per side (and the cores others used meanwhile)."""

    samples: dict[str, list[float]]  # seconds per call, per side, in order
    settled: dict[str, bool]
    warmup_samples: dict[str, int]
    calls_per_sample: dict[str, int]
    other_cores: float | None
    wall_s: float
    control: list[float] = field(default_factory=list)  # the fixed loop's samples, if timed


# A case's budget is at least this many rounds of one sample per side: enough for the
# calibration, a settled warm-up and stats.MIN_SAMPLES samples of a step slower than the
# budget allows, with room for a few more.
MIN_BUDGET_ROUNDS = 16


def _calls_per_sample(min_sample_s: float, per_call_s: float) -> int:
    return max(1, min(10_000, math.ceil(min_sample_s / max(per_call_s, 1e-7))))


def _rotated(names: list[str], r: int) -> list[str]:
    return names[r % len(names):] + names[:r % len(names)]


def measure(sides: dict[str, Callable[[], Any]], opts: Options,
            control: Callable[[], Any] | None = None) -> Timing:
    """Times each side, a synchronised call of no arguments: calibration, warm-up until
    settled, then interleaved samples until precise or the budget is spent (the module
    docstring gives the steps; ``opts.min_sample_s`` and ``opts.budget_s`` are read).

    ``control``, a call of fixed work (:func:`machine_control`), is timed once per timing
    round in samples as long as the sides' (twice at least): how steady the machine itself was
    meanwhile. It neither extends nor shortens the sides' sampling."""
    names = list(sides)
    gc.collect()
    gc_enabled = gc.isenabled()
    gc.disable()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    try:
        calls, seen = {}, {}  # calls per sample; every sample's time per call, per side
        for name in names:  # the first call may pay for allocations; the second calibrates
            _time_block(sides[name], 1)
            seen[name] = [_time_block(sides[name], 1)]
            calls[name] = _calls_per_sample(opts.min_sample_s, seen[name][0])

        def sample(name: str) -> float:
            seen[name].append(_time_block(sides[name], calls[name]))
            return seen[name][-1]

        def over(share: float) -> bool:  # past this share of the case's budget?
            round_s = sum(calls[n] * statistics.median(seen[n]) for n in names)
            budget = max(opts.budget_s, MIN_BUDGET_ROUNDS * round_s)
            return time.perf_counter() - t0 >= share * budget

        # a slow step's calibrating call is its first warm-up sample
        warm = {n: seen[n][:1] if calls[n] == 1 else [] for n in names}
        settled = {n: False for n in names}
        r = 0
        while not all(settled.values()) and not over(0.5):
            for name in _rotated(names, r):
                if not settled[name]:
                    warm[name].append(sample(name))
                    settled[name] = stats.settled(warm[name])
            r += 1
        # the samples that passed the settling test are the first timed ones; the samples
        # to come last min_sample_s at the warmed-up time per call
        samples = {n: warm[n][-stats.SETTLE_WINDOW:] if settled[n] else [] for n in names}
        for name in names:
            recent = warm[name][-stats.SETTLE_WINDOW:] or seen[name]
            calls[name] = _calls_per_sample(opts.min_sample_s, statistics.median(recent))
        controlled = []
        if control is not None:
            _time_block(control, 1)
            control_calls = _calls_per_sample(opts.min_sample_s, _time_block(control, 1))
        while not stats.precise(samples) and (not over(1.0) or not all(samples.values())):
            for name in _rotated(names, r):
                samples[name].append(sample(name))
            if control is not None:
                controlled.append(_time_block(control, control_calls))
            r += 1
        while control is not None and len(controlled) < 2:  # warm-up's samples sufficed
            controlled.append(_time_block(control, control_calls))
        wall = time.perf_counter() - t0
        cpu1 = _cpu_seconds()
    finally:
        if gc_enabled:
            gc.enable()
    others = None
    if cpu0 is not None and cpu1 is not None:
        others = stats.other_cores(cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], wall)
    return Timing(samples, settled, {n: len(warm[n]) for n in names}, calls, others, wall,
                  controlled)


# ----------------------------------------------------------------------------- the machine


def _fixed_work(n: int) -> int:
    """A fixed amount of single-threaded work: pure Python, no memory traffic, no library."""
    x = 0
    for i in range(n):
        x ^= i
    return x


@dataclass(frozen=True)
class MachineCheck:
    """How steady the machine itself is: a fixed single-threaded loop timed in samples as
    long as the benchmark's (``sample_s``), back to back. In a quiet second of the 2-core
    virtual machine it was built on its spread was 1-5%; there, whose cores' throughput swings
    about 2x with the neighbours' load, it reached 90%, and no ratio of two libraries'
    timings is steadier than the machine."""

    samples_ms: list[float]
    sample_s: float

    @property
    def spread(self) -> float:
        return stats.relative_spread(self.samples_ms)

    @property
    def slowest_over_fastest(self) -> float:
        return max(self.samples_ms) / min(self.samples_ms)

    def describe(self) -> str:
        return (f"a fixed single-threaded loop, {len(self.samples_ms)} samples of "
                f"{1e3 * self.sample_s:.0f} ms: spread {self.spread:.0%} (IQR / median), "
                f"slowest / fastest {self.slowest_over_fastest:.2f}")


def machine_control() -> Callable[[], int]:
    """:func:`measure`'s control: about a millisecond of :func:`_fixed_work` per call."""
    return functools.partial(_fixed_work, 20_000)


def check_machine(seconds: float = 1.5, sample_s: float = 0.025) -> MachineCheck:
    """Times :func:`machine_control` in back-to-back samples of ``sample_s`` for ``seconds``
    (at least ``stats.MIN_SAMPLES`` samples); each sample's time in ms."""
    control = machine_control()
    _time_block(control, 1)
    calls = _calls_per_sample(sample_s, _time_block(control, 1))
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < stats.MIN_SAMPLES:
        samples.append(1e3 * calls * _time_block(control, calls))
    return MachineCheck(samples, sample_s)


def _base(model: str, family: str, dtype: str, opts: Options,
          device: DeviceInfo) -> dict[str, Any]:
    """The fields every record of one model and dtype shares."""
    peak, peak_source = device.peak_gflops(dtype, opts.precision)
    if opts.peak_gflops is not None:
        peak, peak_source = opts.peak_gflops, "--peak-gflops"
    return dict(model=model, dtype=dtype, device=device.name, family=family, size=opts.size,
                lowering=opts.lowering, peak_gflops=peak, peak_source=peak_source,
                threads={"torch": device.threads_torch, "xla": device.threads_xla},
                versions=versions(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def skipped(case: Case, modes: list[str], opts: Options, device: DeviceInfo,
            reason: str) -> list[Record]:
    """Records of a case not run, saying why."""
    family = flax_arch.get_entry(case.model).family
    base = _base(case.model, family, case.dtype, opts, device)
    return [Record(mode=m, batch_size=case.batch_size, skipped=reason, **base) for m in modes]


def run_case(case: Case, modes: list[str], opts: Options, device: DeviceInfo,
             note: Callable[[str], None] = print) -> list[Record]:
    """Every mode of one registered model (:func:`build_pair`, then :func:`run_pair`); a
    failure becomes a record with its error."""
    family = flax_arch.get_entry(case.model).family
    try:
        pair = build_pair(case, opts, device)
    except Exception as err:
        note(f"{case.model}: build failed: {_short(err)}")
        base = _base(case.model, family, case.dtype, opts, device)
        return [Record(mode=m, batch_size=case.batch_size, error=_short(err),
                       load_avg=os.getloadavg()[0], **base) for m in modes]
    return run_pair(pair, modes, opts, device, model=case.model, dtype=case.dtype,
                    family=family, note=note)


def run_pair(pair: Pair, modes: list[str], opts: Options, device: DeviceInfo, *, model: str,
             dtype: str, family: str = "", note: Callable[[str], None] = print) -> list[Record]:
    """Every mode of ``pair`` (already in ``dtype`` on ``device``), one record each, named
    ``model``; a mode that fails becomes a record with its error, and the others still run."""
    base = _base(model, family, dtype, opts, device)
    records = []
    with matmul_precision(device, dtype, opts.precision) as precision, \
            lowering.forms(opts.lowering):
        for mode in modes:
            rec = Record(mode=mode, batch_size=pair.batch_size, precision=precision, **base)
            try:
                _run_mode(pair, mode, rec, opts, device, note)
            except Exception as err:
                rec.error = _short(err)
                note(f"{model} {mode}: failed: {rec.error}")
            rec.load_avg = os.getloadavg()[0]
            records.append(rec)
            gc.collect()
            if device.torch_device == "cuda":
                torch.cuda.empty_cache()  # leave the card's memory to the next case's JAX
    return records


def _run_mode(p: Pair, mode: str, rec: Record, opts: Options, device: DeviceInfo,
              note: Callable[[str], None]) -> None:
    if mode == "forward":
        jax_step = _jax_forward(p, opts.seed)
        eager = _torch_forward(p, device, p.torch_model)
    else:
        if p.loss is None or p.flax_target is None:
            raise ValueError(f"{rec.model} has no loss and target to train on")
        opt, rec.optimizer = _adam(p.torch_model.parameters())
        jax_step = _jax_train(p, opts.seed)
        eager = _torch_train(p, device, _WithLoss(p.torch_model, p.loss), opt)
    rec.jax_compile_s = jax_step.compile_s
    rec.flops_xla = jax_step.flops_xla
    sides = {"jax": jax_step.run, "torch_eager": eager}

    if opts.torch_compile:
        try:
            torch._dynamo.reset()  # fresh caches: no recompile limit carried across models
            if mode == "forward":
                compiled = _torch_forward(p, device, torch.compile(p.torch_model))
            else:
                compiled = _torch_train(
                    p, device, torch.compile(_WithLoss(p.torch_model, p.loss)), opt)
            t0 = time.perf_counter()
            compiled()
            rec.torch_compile_s = time.perf_counter() - t0
            sides["torch_compile"] = compiled
        except Exception as err:
            rec.torch_compile_error = _short(err)
            note(f"{rec.model} {mode}: torch.compile failed: {rec.torch_compile_error}")

    timing = measure(sides, opts, machine_control() if device.platform == "cpu" else None)
    ms = {n: [1e3 * s for s in xs] for n, xs in timing.samples.items()}
    q = {n: stats.quartiles(xs) for n, xs in ms.items()}
    rec.samples_ms, rec.repeats = ms, min(len(xs) for xs in ms.values())
    rec.warmup_samples, rec.calls_per_sample = timing.warmup_samples, timing.calls_per_sample
    rec.timing_s, rec.other_cores = timing.wall_s, timing.other_cores
    rec.stable, rec.unstable_reasons = stats.verdict(timing.samples, timing.settled,
                                                     timing.other_cores, control=timing.control)
    if len(timing.control) >= 2:
        rec.machine_spread = stats.relative_spread(timing.control)
    rec.jax_ms, rec.jax_iqr_ms = q["jax"][1], q["jax"][2] - q["jax"][0]
    rec.torch_eager_ms = q["torch_eager"][1]
    rec.torch_eager_iqr_ms = q["torch_eager"][2] - q["torch_eager"][0]
    rec.speedup = rec.torch_eager_ms / rec.jax_ms
    if "torch_compile" in ms:
        rec.torch_compile_ms = q["torch_compile"][1]
        rec.torch_compile_iqr_ms = q["torch_compile"][2] - q["torch_compile"][0]
        rec.speedup_vs_compile = rec.torch_compile_ms / rec.jax_ms

    rec.flops_jaxpr = jax_step.flops_jaxpr or None
    rec.flops, rec.flops_source = flops.per_call(rec.flops_xla, rec.flops_jaxpr)
    if rec.flops is not None:
        rec.gflops = rec.flops / rec.jax_ms / 1e6
        rec.torch_gflops = rec.flops / rec.torch_eager_ms / 1e6
        if rec.peak_gflops:
            rec.roofline = rec.gflops / rec.peak_gflops
