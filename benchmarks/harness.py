"""Timing two models that compute the same function, fair by construction.

:func:`run_pair` times any :class:`~benchmarks.steps.Pair` (a Flax model and a torch model
with the same weights, the same inputs each in its own layout, one dtype, one device);
:func:`run_case` builds the pair of a registered model at a registry size
(:func:`benchmarks.steps.build_pair`) and times it. The sides are the steps of
:mod:`benchmarks.steps`, timed by a :class:`benchmarks.timing.Sampler` (each block after a
lead-in of its own side, the sides alternating) in two visits and judged by
:mod:`benchmarks.stats` (the median paired ratio with its 95% interval; a ratio that differs
between the visits is flagged). :func:`start_case` / :func:`start_pair` compile a case and
visit it once, :func:`visit_again` visits it a second time and fills its record;
:func:`run_case` and :func:`run_pair` visit the case's modes in turn, twice (forward, train,
forward, train: each mode's visits seconds apart, every block after a fresh lead-in).
``python -m benchmarks`` runs each mode of each case alone, in a process of its own
(:mod:`benchmarks.isolate`; its ``_run`` says why), so its two visits follow each other.
Each record (:class:`benchmarks.record.Record`) carries the medians, the interval, every
block, which rounds ran undisturbed, the cores other processes kept busy meanwhile, the rounds
of each visit, and the verdict ``stable`` with its reasons.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import os
import pkgutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import flax_arch
import flax_arch.models
from flax_arch.nn import lowering

from . import flops, stats, steps
from .device import DeviceInfo, matmul_precision, versions
from .record import Case, Options, Record
from .steps import Pair, build_pair
from .timing import Sampler, Timing

__all__ = ["import_families", "cases", "run_pair", "run_case", "start_case", "start_pair",
           "visit_again", "Visiting", "skipped", "fill_timing", "MODES"]

MODES = ("forward", "train")


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


def cases(models: list[str], dtypes: list[str], batch_sizes: list[int | None]) -> list[Case]:
    return [Case(m, d, b) for m in models for d in dtypes for b in batch_sizes]


def _short(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def _base(model: str, family: str, dtype: str, opts: Options,
          device: DeviceInfo) -> dict:
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


def start_case(case: Case, modes: list[str], opts: Options, device: DeviceInfo,
               note: Callable[[str], None] = print) -> list[Visiting]:
    """Every mode of one registered model (:func:`build_pair`, then :func:`start_pair`): the
    first visits; a failure to build becomes a record with its error."""
    family = flax_arch.get_entry(case.model).family
    try:
        pair = build_pair(case, opts, device)
    except Exception as err:
        note(f"{case.model}: build failed: {_short(err)}")
        base = _base(case.model, family, case.dtype, opts, device)
        return [Visiting(Record(mode=m, batch_size=case.batch_size, error=_short(err),
                                load_avg=os.getloadavg()[0], **base)) for m in modes]
    return start_pair(pair, modes, opts, device, model=case.model, dtype=case.dtype,
                      family=family, note=note)


def run_case(case: Case, modes: list[str], opts: Options, device: DeviceInfo,
             note: Callable[[str], None] = print) -> list[Record]:
    """Every mode of one registered model, visited in turn, twice."""
    return [visit_again(v, opts, device, note)
            for v in start_case(case, modes, opts, device, note)]


@dataclass
class Visiting:
    """One mode of a case between its two visits (:class:`benchmarks.timing.Sampler`): its
    record, the sampler timing its sides (None once it failed) and what fills the record from
    the sampler's timing."""

    rec: Record
    sampler: Sampler | None = None
    finish: Callable[[Timing], None] | None = None


def start_pair(pair: Pair, modes: list[str], opts: Options, device: DeviceInfo, *, model: str,
               dtype: str, family: str = "", note: Callable[[str], None] = print
               ) -> list[Visiting]:
    """Every mode of ``pair`` (already in ``dtype`` on ``device``) compiled and visited once,
    its record named ``model``; a mode that fails keeps its error, and the others still run.
    :func:`visit_again` completes each."""
    base = _base(model, family, dtype, opts, device)
    visiting = []
    with matmul_precision(device, dtype, opts.precision) as precision, \
            lowering.forms(opts.lowering):
        for mode in modes:
            v = Visiting(Record(mode=mode, batch_size=pair.batch_size, precision=precision,
                                **base))
            try:
                v.sampler, v.finish = _start_mode(pair, mode, v.rec, opts, device, note)
                v.sampler.visit(last=False)
            except Exception as err:
                v.rec.error, v.sampler = _short(err), None
                note(f"{model} {mode}: failed: {v.rec.error}")
                v.rec.load_avg = os.getloadavg()[0]
            visiting.append(v)
            _free_accelerator(device)
    return visiting


def visit_again(v: Visiting, opts: Options, device: DeviceInfo,
                note: Callable[[str], None] = print) -> Record:
    """The second and last visit of a mode :func:`start_pair` began; its record, filled."""
    if v.sampler is None:
        return v.rec
    try:
        with matmul_precision(device, v.rec.dtype, opts.precision):
            v.sampler.visit(last=True)
        v.finish(v.sampler.timing())
    except Exception as err:
        v.rec.error = _short(err)
        note(f"{v.rec.model} {v.rec.mode}: failed: {v.rec.error}")
    v.rec.load_avg = os.getloadavg()[0]
    v.sampler = v.finish = None  # the models and programs can go
    _free_accelerator(device)
    return v.rec


def run_pair(pair: Pair, modes: list[str], opts: Options, device: DeviceInfo, *, model: str,
             dtype: str, family: str = "", note: Callable[[str], None] = print) -> list[Record]:
    """Every mode of ``pair`` (already in ``dtype`` on ``device``), one record each, named
    ``model``, the modes visited in turn, twice; a mode that fails becomes a record with its
    error, and the others still run."""
    return [visit_again(v, opts, device, note)
            for v in start_pair(pair, modes, opts, device, model=model, dtype=dtype,
                                family=family, note=note)]


def _free_accelerator(device: DeviceInfo) -> None:
    if device.torch_device == "cuda":  # leave the card's memory to the next case's JAX
        gc.collect()  # (on CPU the next visit collects before it times)
        torch.cuda.empty_cache()


def fill_timing(rec: Record, timing: Timing, opts: Options) -> None:
    """The record's timing fields from ``timing``, whose sides are ``jax``, ``torch_eager``
    and perhaps ``torch_compile``: medians, interquartile ranges, the speedups (median paired
    ratio over JAX) with their intervals, every block and the verdict."""
    ms = {n: [1e3 * s for s in xs] for n, xs in timing.blocks.items()}
    rec.samples_ms, rec.cpu_per_wall, rec.kept = ms, timing.cpu_per_wall, timing.kept
    rec.rounds, rec.rounds_kept = len(timing.kept), sum(timing.kept)
    rec.lead_in_ms = 1e3 * opts.lead_in_s
    rec.warmup_blocks, rec.calls_per_block = timing.warmup_blocks, timing.calls_per_block
    rec.lead_in_calls = timing.lead_in_calls
    rec.visits = timing.visits
    rec.timing_s, rec.other_cores = timing.wall_s, timing.other_cores
    rec.stable, rec.unstable_reasons = timing.verdict()
    for side in ms:
        kept = [1e3 * b for b in timing.kept_blocks(side)] or ms[side]
        q1, median, q3 = stats.quartiles(kept)
        setattr(rec, f"{side}_ms", median)
        setattr(rec, f"{side}_iqr_ms", q3 - q1)
    for side, field in (("torch_eager", "speedup"), ("torch_compile", "speedup_vs_compile")):
        if side in ms:
            ci = timing.ci(side, "jax")
            if ci is None:  # too few undisturbed rounds for an interval: the plain median
                ratios = timing.ratios[f"{side}/jax"] or stats.paired_ratios(
                    timing.blocks[side], timing.blocks["jax"])
                setattr(rec, field, stats.quartiles(ratios)[1])
            else:
                setattr(rec, field, ci[0])
                setattr(rec, f"{field}_ci", [ci[1], ci[2]])


def _start_mode(p: Pair, mode: str, rec: Record, opts: Options, device: DeviceInfo,
                note: Callable[[str], None]) -> tuple[Sampler, Callable[[Timing], None]]:
    """The sides of one mode, compiled (the record gets the compile times), their sampler,
    and what fills the record from its timing."""
    if mode == "forward":
        jax_step = steps.jax_forward(p, opts.seed)
        eager = steps.torch_forward(p, device, p.torch_model)
    else:
        if p.loss is None or p.flax_target is None:
            raise ValueError(f"{rec.model} has no loss and target to train on")
        opt, rec.optimizer = steps.adam(p.torch_model.parameters())
        jax_step = steps.jax_train(p, opts.seed)
        eager = steps.torch_train(p, device, steps.WithLoss(p.torch_model, p.loss), opt)
    rec.jax_compile_s = jax_step.compile_s
    rec.flops_xla = jax_step.flops_xla
    sides = {"jax": jax_step.run, "torch_eager": eager}

    if opts.torch_compile:
        try:
            torch._dynamo.reset()  # fresh caches: no recompile limit carried across models
            if mode == "forward":
                compiled = steps.torch_forward(p, device, torch.compile(p.torch_model))
            else:
                compiled = steps.torch_train(
                    p, device, torch.compile(steps.WithLoss(p.torch_model, p.loss)), opt)
            t0 = time.perf_counter()
            compiled()
            rec.torch_compile_s = time.perf_counter() - t0
            sides["torch_compile"] = compiled
        except Exception as err:
            rec.torch_compile_error = _short(err)
            note(f"{rec.model} {mode}: torch.compile failed: {rec.torch_compile_error}")

    sampler = Sampler(sides, block_s=opts.block_s, budget_s=opts.budget_s,
                      lead_in_s=opts.lead_in_s)

    def finish(timing: Timing) -> None:
        fill_timing(rec, timing, opts)
        rec.flops_jaxpr = jax_step.flops_jaxpr or None
        rec.flops, rec.flops_source = flops.per_call(rec.flops_xla, rec.flops_jaxpr)
        if rec.flops is not None:
            rec.gflops = rec.flops / rec.jax_ms / 1e6
            rec.torch_gflops = rec.flops / rec.torch_eager_ms / 1e6
            if rec.peak_gflops:
                rec.roofline = rec.gflops / rec.peak_gflops

    return sampler, finish
