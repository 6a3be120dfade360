"""The clock: timing sides in interleaved rounds, each block in its side's steady state.

A *side* is a synchronised call of no arguments (one JAX step, one eager torch step, ...).
:func:`measure` times the sides of one case against each other:

1. Calibration: two single calls per side; the second sets the side's block (enough
   back-to-back calls to last ``block_s``) and its lead-in (enough to last ``lead_in_s``, one
   call at least).
2. Warm-up: one side at a time, its blocks back to back (no lead-in needed: each follows
   the same side) until their times settle (:func:`stats.settled`), at most
   ``WARMUP_SHARE`` of the budget in all; discarded. A side that has not settled by then
   is still judged steady if its blocks do not drift during the rounds (:func:`stats.drift`).
3. Rounds: one block of every side, in order and then in reverse (A B, B A, A B, ...: a linear
   drift cancels within two rounds). **Each timed block follows an untimed lead-in of the same
   side**, or the same side's previous block (B A after A B). On a 2-core machine torch's
   OpenMP workers keep spinning for milliseconds after a torch call before they sleep, and
   XLA's threads lose the cores to them: a JAX block timed right after a torch block ran
   30-45% slow (the ``mlp`` forward's JAX blocks alternated 2.94, 2.05, 2.94, 2.06 ms). The
   lead-in lets the other side's threads go quiet and this side's pools and caches warm, so
   that the block is timed in the side's steady state while the sides still alternate (which
   pairs the machine's slow drifts). Neither library's threading is changed
   (``OMP_WAIT_POLICY=PASSIVE`` removes the penalty but slows torch itself). ``python -m
   benchmarks.leadin`` measures the lead-in's length.
4. After each round: the paired ratios of the undisturbed rounds (:func:`stats.steady_rounds`,
   from each block's process CPU time against its wall time) and their interval
   (:func:`stats.median_ci`); sampling stops once every compared pair is precise
   (:func:`stats.precise`) or the budget is spent.

The garbage collector is off meanwhile. The budget is ``budget_s``, or ``MIN_BUDGET_ROUNDS``
rounds where those take longer; the rounds left out as disturbed do not count against it, up
to ``MAX_BUDGET_FACTOR`` budgets in all; a case whose interval is still too wide to quote
(wider than ``stats.STABLE_WITHIN``) when its budget is spent samples on, up to
``WIDE_BUDGET_FACTOR`` budgets of undisturbed rounds: with ten rounds the 95% interval of the
median runs from the second-lowest ratio to the second-highest, and one stray block on each
side widens it; with twenty it runs from the sixth to the fifteenth.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import stats

__all__ = ["Timing", "Sampler", "MachineCheck", "measure", "alone", "check_machine",
           "machine_control", "MIN_BUDGET_ROUNDS", "MAX_BUDGET_FACTOR", "WIDE_BUDGET_FACTOR",
           "WARMUP_SHARE", "LEAD_IN_S"]

# The untimed lead-in before every block: measured by benchmarks/leadin.py (a 5 ms lead-in
# left JAX's blocks 7-22% spread; 25 ms brought them to 0-3%).
LEAD_IN_S = 0.025
# A case's budget is at least this many rounds: enough for the calibration, a settled warm-up
# and stats.MIN_ROUNDS rounds of a step slower than the budget allows, with room for more.
MIN_BUDGET_ROUNDS = 12
# Rounds a paused host disturbed do not count against the budget (sampling goes on while the
# interval is wide), up to this many budgets in all.
MAX_BUDGET_FACTOR = 3.0
# A case whose interval is still too wide to quote at the end of its budget samples on, up
# to this many budgets of undisturbed rounds (within MAX_BUDGET_FACTOR in all).
WIDE_BUDGET_FACTOR = 2.0
# The warm-up's share of the budget, at most: the rounds judge whether a side that has not
# settled by then ran steadily (stats.drift), so a noisy side's warm-up need not take more.
WARMUP_SHARE = 0.25


@dataclass
class Timing:
    """What :func:`measure` found: per side, per timed round, the block's seconds per call and
    its CPU time / wall time; which rounds ran undisturbed; the paired ratios."""

    blocks: dict[str, list[float]]
    cpu_per_wall: dict[str, list[float | None]]
    kept: list[bool]  # per round: ran undisturbed (stats.steady_rounds)
    pairs: list[tuple[str, str]]  # (numerator, denominator) sides compared
    settled: dict[str, bool]  # per side: its warm-up settled, or its kept blocks did not drift
    warmup_blocks: dict[str, int]
    calls_per_block: dict[str, int]
    lead_in_calls: dict[str, int]
    other_cores: float | None
    wall_s: float
    ratios: dict[str, list[float]] = field(default_factory=dict)  # "num/den": kept ratios
    visits: list[int] = field(default_factory=list)  # rounds timed in each visit

    def kept_blocks(self, side: str) -> list[float]:
        return [b for b, k in zip(self.blocks[side], self.kept) if k]

    def median(self, side: str) -> float:
        """The side's median seconds per call over the kept rounds (all rounds if none)."""
        return statistics.median(self.kept_blocks(side) or self.blocks[side])

    def ci(self, numerator: str, denominator: str) -> tuple[float, float, float] | None:
        """The median paired ratio and its interval (:func:`stats.median_ci`)."""
        return stats.median_ci(self.ratios[f"{numerator}/{denominator}"])

    def first_visit_kept(self) -> int | None:
        """How many of the kept rounds the first visit timed (None: one visit)."""
        if len(self.visits) < 2:
            return None
        return sum(self.kept[:self.visits[0]])

    def verdict(self) -> tuple[bool, list[str]]:
        return stats.verdict(self.ratios, self.settled, self.other_cores,
                             first_visit=self.first_visit_kept())


def _calls_for(seconds: float, per_call_s: float) -> int:
    return max(1, min(10_000, math.ceil(seconds / max(per_call_s, 1e-7))))


def _ordered(names: list[str], r: int) -> list[str]:
    """Round ``r``'s order: the sides forward, then backward (A B C, C B A, A B C, ...)."""
    return names if r % 2 == 0 else names[::-1]


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the machine's cores were busy, all processes; CPU seconds of this process,
    all threads) so far, or None without ``/proc/stat``. Hypervisor steal is not counted as
    busy: a host that pauses this machine is seen, and left out, round by round by the
    rounds' CPU time / wall time."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(t) for t in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, _steal = ticks
    own = os.times()
    return ((user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system)


def _run_calls(run: Callable[[], Any], calls: int) -> None:
    for _ in range(calls):
        run()


def _time_calls(run: Callable[[], Any], calls: int) -> tuple[float, float | None]:
    """(seconds per call, process CPU time / wall time) of ``calls`` back-to-back calls."""
    w0, c0 = time.perf_counter(), time.process_time()
    _run_calls(run, calls)
    w1, c1 = time.perf_counter(), time.process_time()
    wall = w1 - w0
    return wall / calls, ((c1 - c0) / wall if wall > 0 else None)


class Sampler:
    """Times ``sides`` in one or more *visits* (the module docstring's steps; :func:`measure`
    is one visit): the first calibrates and warms up, every visit times rounds, and the
    estimate pools them; :func:`stats.verdict` flags a ratio that differs between the visits
    (a side can run for seconds at a time at one of two speeds, and a single visit would
    quote whichever it happened to meet). Between visits the caller may run other work
    (``python -m benchmarks`` does not: each mode runs alone in a process of its own).

    ``pairs``: the ``(numerator, denominator)`` sides whose paired ratios are estimated
    (default: every other side over the first).
    """

    def __init__(self, sides: dict[str, Callable[[], Any]], *, block_s: float, budget_s: float,
                 lead_in_s: float = LEAD_IN_S, pairs: Sequence[tuple[str, str]] | None = None,
                 min_rounds: int = stats.MIN_ROUNDS):
        self.sides, self.names = sides, list(sides)
        self.pairs = list(pairs) if pairs is not None else [
            (n, self.names[0]) for n in self.names[1:]]
        unknown = {s for p in self.pairs for s in p} - set(self.names)
        if unknown or not self.pairs:
            raise ValueError(f"pairs {self.pairs} must name two of the sides {self.names}")
        self.block_s, self.budget_s, self.lead_in_s = block_s, budget_s, lead_in_s
        self.min_rounds = min_rounds
        self.calls: dict[str, int] = {}
        self.lead: dict[str, int] = {}
        self.seen: dict[str, list[float]] = {}  # seconds per call of every call or block
        self.warm: dict[str, list[float]] = {n: [] for n in self.names}  # undisturbed warm-up
        self.settled = {n: False for n in self.names}  # in warm-up
        self.blocks: dict[str, list[float]] = {n: [] for n in self.names}
        self.cpu: dict[str, list[float | None]] = {n: [] for n in self.names}
        self.kept: list[bool] = []
        self.ratios: dict[str, list[float]] = {}
        self.round_wall: list[float] = []
        self.round_others: list[tuple[float, float] | None] = []  # (others' CPU s, wall s)
        self.visits: list[int] = []  # rounds timed in each visit
        self.spent = 0.0  # seconds sampled in the visits before this one
        self._t0 = 0.0

    def _calibrate(self, per_call: dict[str, float]) -> None:
        for n in self.names:
            self.calls[n] = _calls_for(self.block_s, per_call[n])
            self.lead[n] = _calls_for(self.lead_in_s, per_call[n]) if self.lead_in_s > 0 else 0

    def _block(self, name: str, lead_in: bool = True) -> tuple[float, float | None]:
        if lead_in:
            _run_calls(self.sides[name], self.lead[name])  # untimed: this side's steady state
        per_call, cpu = _time_calls(self.sides[name], self.calls[name])
        self.seen[name].append(per_call)
        return per_call, cpu

    def _over(self, share: float, lost_s: float = 0.0) -> bool:
        """Past this share of the case's budget (all visits), not counting ``lost_s``?"""
        round_s = sum((self.calls[n] + self.lead[n]) * statistics.median(self.seen[n])
                      for n in self.names)
        spent = self.spent + time.perf_counter() - self._t0 - lost_s
        return spent >= share * max(self.budget_s, MIN_BUDGET_ROUNDS * round_s)

    def _warm_up(self) -> None:
        for name in self.names:  # the first call may pay for allocations; the second calibrates
            _run_calls(self.sides[name], 1)
            self.seen[name] = [_time_calls(self.sides[name], 1)[0]]
        self._calibrate({n: self.seen[n][0] for n in self.names})
        for i, name in enumerate(self.names):
            blocks_and_cpu: list[tuple[float, float | None]] = []
            while not self.settled[name] and not self._over(
                    WARMUP_SHARE * (i + 1) / len(self.names)):
                blocks_and_cpu.append(self._block(name, lead_in=False))
                steady = stats.steady_rounds({name: [c for _, c in blocks_and_cpu]})
                self.warm[name] = [b for (b, _), k in zip(blocks_and_cpu, steady) if k]
                self.settled[name] = stats.settled(self.warm[name])
        self._calibrate({n: statistics.median(self.warm[n][-stats.SETTLE_WINDOW:]
                                              or self.seen[n]) for n in self.names})

    def _round(self, r: int) -> None:
        start, before = time.perf_counter(), _cpu_seconds()
        for name in _ordered(self.names, r):
            per_call, share = self._block(name, lead_in=name != self._previous)
            self._previous = name
            self.blocks[name].append(per_call)
            self.cpu[name].append(share)
        self.round_wall.append(time.perf_counter() - start)
        after = _cpu_seconds()
        self.round_others.append(None if before is None or after is None else (
            (after[0] - before[0]) - (after[1] - before[1]), self.round_wall[-1]))
        self.kept = stats.steady_rounds(self.cpu)
        self.ratios = {f"{a}/{b}": stats.paired_ratios(self.blocks[a], self.blocks[b],
                                                       self.kept) for a, b in self.pairs}

    def visit(self, *, last: bool = True, rounds: int | None = None) -> None:
        """One visit: the warm-up if it is the first, then rounds. A visit before the last
        stops at half ``min_rounds`` undisturbed rounds of its own (or half the budget); the
        last stops as the module docstring says, over the rounds of every visit.
        ``rounds``: exactly this many rounds, whatever the rules say (for experiments)."""
        gc.collect()
        gc_enabled = gc.isenabled()
        gc.disable()
        self._t0 = time.perf_counter()
        self._previous: str | None = None  # the side whose block ran last in this visit
        first = len(self.round_wall)
        try:
            if not self.visits:
                self._warm_up()
            while True:
                # A B, B A, ...: within a visit each block after the first follows a lead-in
                # of its own side or its side's previous block
                self._round(len(self.round_wall) - first)
                lost = sum(s for s, k in zip(self.round_wall, self.kept) if not k)
                if rounds is not None:
                    if len(self.round_wall) - first >= rounds:
                        break
                elif not last:
                    if (sum(self.kept[first:]) >= math.ceil(self.min_rounds / 2)
                            or self._over(0.5, lost) or self._over(MAX_BUDGET_FACTOR / 2)):
                        break
                elif all(stats.precise(x, self.min_rounds) for x in self.ratios.values()):
                    break
                else:  # the budget: disturbed rounds do not count, up to MAX_BUDGET_FACTOR
                    wide = not all(stats.quotable(x) for x in self.ratios.values())
                    if (self._over(WIDE_BUDGET_FACTOR if wide else 1.0, lost)
                            or self._over(MAX_BUDGET_FACTOR)):
                        break
        finally:
            self.spent += time.perf_counter() - self._t0
            self.visits.append(len(self.round_wall) - first)
            if gc_enabled:
                gc.enable()

    def timing(self) -> Timing:
        """What the visits so far found."""
        kept = self.kept
        # a side whose warm-up did not settle within its share of the budget (a noisy side's
        # medians of three blocks can differ by 10% without a trend) still ran in its steady
        # state if its undisturbed blocks did not drift during the rounds
        steady = {n: self.settled[n] or stats.drift(
            [b for b, k in zip(self.blocks[n], kept) if k]) is None for n in self.names}
        # other processes' use of the cores during the undisturbed rounds: a competitor that
        # ran throughout lowers every round alike, which the per-round filter cannot see
        measured = [o for o, k in zip(self.round_others, kept) if k and o is not None]
        others = None
        if measured and sum(w for _, w in measured) > 0:
            others = stats.other_cores(sum(o for o, _ in measured), 0.0,
                                       sum(w for _, w in measured))
        return Timing(self.blocks, self.cpu, kept, self.pairs, steady,
                      {n: len(self.warm[n]) for n in self.names}, dict(self.calls),
                      dict(self.lead), others, self.spent, self.ratios, list(self.visits))


def measure(sides: dict[str, Callable[[], Any]], *, block_s: float, budget_s: float,
            lead_in_s: float = LEAD_IN_S, pairs: Sequence[tuple[str, str]] | None = None,
            min_rounds: int = stats.MIN_ROUNDS, rounds: int | None = None) -> Timing:
    """Times ``sides`` in one visit (:class:`Sampler`): blocks of ``block_s`` after lead-ins
    of ``lead_in_s`` (0: none), ``budget_s`` for warm-up and rounds. ``rounds``: time
    exactly this many rounds after the warm-up, whatever the stopping rule and the budget say
    (for experiments)."""
    sampler = Sampler(sides, block_s=block_s, budget_s=budget_s, lead_in_s=lead_in_s,
                      pairs=pairs, min_rounds=min_rounds)
    sampler.visit(rounds=rounds)
    return sampler.timing()


def alone(run: Callable[[], Any], *, warmup_s: float, seconds: float,
          block_s: float) -> list[float]:
    """One side alone in its steady state: ``warmup_s`` of calls, then blocks of ``block_s``
    for ``seconds`` (at least 5); each block's seconds per call. The reference that the
    interleaved rounds are checked against (``python -m benchmarks.leadin``)."""
    _run_calls(run, 1)
    calls = _calls_for(block_s, _time_calls(run, 1)[0])
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        _run_calls(run, calls)
    gc.collect()
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        blocks = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(blocks) < 5:
            blocks.append(_time_calls(run, calls)[0])
    finally:
        if gc_enabled:
            gc.enable()
    return blocks


# ----------------------------------------------------------------------------- the machine


def _fixed_work(n: int) -> int:
    """A fixed amount of single-threaded work: pure Python, no memory traffic, no library."""
    x = 0
    for i in range(n):
        x ^= i
    return x


def machine_control() -> Callable[[], int]:
    """About a millisecond of :func:`_fixed_work` per call."""
    return functools.partial(_fixed_work, 20_000)


@dataclass(frozen=True)
class MachineCheck:
    """How steady the machine itself is before a run: a fixed single-threaded loop timed in
    back-to-back blocks of ``block_s``. A quiet machine's spread is a few percent; a shared
    virtual machine whose neighbours are busy swings far more, and a run there may flag many
    cases."""

    samples_ms: list[float]
    block_s: float

    @property
    def spread(self) -> float:
        return stats.relative_spread(self.samples_ms)

    @property
    def slowest_over_fastest(self) -> float:
        return max(self.samples_ms) / min(self.samples_ms)

    def describe(self) -> str:
        return (f"a fixed single-threaded loop, {len(self.samples_ms)} blocks of "
                f"{1e3 * self.block_s:.0f} ms: spread {self.spread:.0%} (IQR / median), "
                f"slowest / fastest {self.slowest_over_fastest:.2f}")


def check_machine(seconds: float = 1.0, block_s: float = 0.025) -> MachineCheck:
    """Times :func:`machine_control` in back-to-back blocks of ``block_s`` for ``seconds``
    (at least 5 blocks); each block's time in ms."""
    control = machine_control()
    _run_calls(control, 1)
    calls = _calls_for(block_s, _time_calls(control, 1)[0])
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        samples.append(1e3 * calls * _time_calls(control, calls)[0])
    return MachineCheck(samples, block_s)
