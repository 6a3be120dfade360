"""Timing statistics: pure functions over block times; no clock here (:mod:`benchmarks.timing`
has the clock).

A *block* is back-to-back calls of one side, long enough (25 ms and more) that the
scheduler's time slices average out within it, timed after an untimed *lead-in* of the same
side (:mod:`benchmarks.timing` says why). A *round* is one block of every side, their order
rotating; the estimate is made of rounds:

* :func:`paired_ratios`: per round, the other side's block time over the reference side's
  (torch / JAX: the speedup). Both blocks of a round ran within milliseconds of each other, so
  a slow drift of the machine divides out.
* :func:`steady_rounds`: the rounds that ran undisturbed. A host that pauses the virtual
  machine (or the process) stops the process's CPU clock while the wall clock runs on, so a
  disturbed block shows as CPU time / wall time below its side's usual ratio; a round is kept
  when each of its blocks ran at ``KEEP_CPU_SHARE`` of that side's usual ratio or more. The
  usual ratio is read near the top of the side's ratios (:func:`usual_cpu_share`): a pause only
  ever lowers a block's ratio, and a host that pauses the process in most of a case's rounds
  would pull a median or a quartile down with it.
* :func:`median_ci`: the median of the kept ratios with a distribution-free 95% confidence
  interval from the order statistics (the binomial law of how many ratios fall below the true
  median). No assumption about the ratios' distribution: two states, outliers, skew.
* :func:`quotable`: the interval lies within ``STABLE_WITHIN`` of the median (a case whose
  interval is wider when its budget is spent samples on, :mod:`benchmarks.timing`).
* :func:`precise`: sampling may stop once the interval's half-width is at most
  ``TARGET_HALF_WIDTH`` of the median, with ``MIN_ROUNDS`` kept.
* :func:`verdict`: ``stable`` when the interval lies within ``STABLE_WITHIN`` of the median,
  the two chronological halves of the kept ratios agree (their medians within
  ``STABLE_WITHIN``, or their interquartile ranges overlap: no change of state during the case;
  for a case visited twice, the two visits' ratios),
  every side ran in its steady state (settled in its warm-up, or its blocks did not
  :func:`drift` during the rounds: a noisy side may not settle within a short warm-up and
  still be steady) and other processes left the cores alone.
* :func:`settled`: warm-up ends when the median of the last ``window`` blocks is within
  ``tol`` of the median of the ``window`` before them (pyperf's halves test, on medians).

Why not pyperf or ``torch.utils.benchmark`` themselves: ``Timer.adaptive_autorange`` times one
statement to completion before the next (a change of the machine's load between the JAX and
the torch measurement biases the ratio) and pins torch's thread count for JAX too; pyperf
spreads 20 fresh processes for microbenchmarks of Python, not steps that take milliseconds
after seconds of compilation. Both judge each side's spread; here the ratio is judged.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["quartiles", "iqr", "relative_spread", "settled", "paired_ratios", "steady_rounds",
           "usual_cpu_share", "median_ci", "half_width", "quotable", "precise", "drift",
           "other_cores", "verdict", "geomean",
           "SETTLE_WINDOW", "SETTLE_TOL", "CONFIDENCE", "MIN_ROUNDS", "TARGET_HALF_WIDTH",
           "STABLE_WITHIN", "KEEP_CPU_SHARE", "MAX_OTHER_CORES"]

SETTLE_WINDOW = 3  # blocks per half of the warm-up test
SETTLE_TOL = 0.10  # the two halves' medians within 10%
CONFIDENCE = 0.95  # of the speedup's interval
MIN_ROUNDS = 8  # kept rounds, at least, before sampling may stop (6 give a 95% interval)
TARGET_HALF_WIDTH = 0.05  # sampling stops once the interval is within +-5% of the median
STABLE_WITHIN = 0.10  # a stable case's interval lies within +-10% of its median
KEEP_CPU_SHARE = 0.85  # a kept block ran at this share of its side's usual CPU / wall or more
MAX_OTHER_CORES = 0.2  # other processes' average use of the machine's cores


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile), linearly interpolated between order
    statistics (numpy's and torch's default); all three the value for one sample."""
    if not xs:
        raise ValueError("quartiles of no samples")
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def iqr(xs: Sequence[float]) -> float:
    """The interquartile range of ``xs`` (0 for one sample)."""
    q1, _, q3 = quartiles(xs)
    return q3 - q1


def relative_spread(xs: Sequence[float]) -> float:
    """IQR / median: the spread of ``xs`` relative to their size (inf for fewer than 2)."""
    if len(xs) < 2:
        return math.inf
    q1, median, q3 = quartiles(xs)
    return (q3 - q1) / median


def geomean(values: Sequence[float | None]) -> float | None:
    """The geometric mean of the positive values (None and non-positive ones left out), or
    None when there are none."""
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def settled(xs: Sequence[float], window: int = SETTLE_WINDOW, tol: float = SETTLE_TOL) -> bool:
    """Whether warm-up blocks ``xs`` (oldest first) have stopped trending: the medians of the
    last ``window`` and of the ``window`` before them differ by at most ``tol`` relatively."""
    if len(xs) < 2 * window:
        return False
    before = statistics.median(xs[-2 * window:-window])
    last = statistics.median(xs[-window:])
    return abs(before - last) <= tol * last


def drift(xs: Sequence[float], within: float = STABLE_WITHIN,
          split: int | None = None) -> tuple[float, float] | None:
    """``(first, second)``, the medians of ``xs[:split]`` and ``xs[split:]`` (default: the
    two chronological halves), when they tell of a change of state: medians more than
    ``within`` apart and interquartile ranges disjoint (noise alone leaves the ranges
    overlapping); None otherwise, and where either part has fewer than 2 values."""
    half = len(xs) // 2 if split is None else split
    if min(half, len(xs) - half) < 2:
        return None
    (q1a, first, q3a), (q1b, second, q3b) = quartiles(xs[:half]), quartiles(xs[half:])
    if abs(second / first - 1) > within and (q3a < q1b or q3b < q1a):
        return first, second
    return None


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float],
                  keep: Sequence[bool] | None = None) -> list[float]:
    """Per round, ``numerator[i] / denominator[i]`` (block times of two sides in the same
    round), for the rounds ``keep`` marks (all without it)."""
    if len(numerator) != len(denominator):
        raise ValueError(f"paired blocks: {len(numerator)} against {len(denominator)} rounds")
    keep = [True] * len(numerator) if keep is None else keep
    return [a / b for a, b, k in zip(numerator, denominator, keep) if k]


def usual_cpu_share(xs: Sequence[float]) -> float:
    """A side's undisturbed CPU time / wall time: the value that ``max(2, n / 10)`` of the
    ``n`` blocks reach (the second-highest up to 20 blocks, then the 90th percentile). A pause
    only lowers a block's ratio, so the top of the distribution is the undisturbed one even
    when most blocks were paused (the upper quartile was not: in a run under ``steal``, 13 of
    17 of a case's JAX blocks ran paused at 0.8-0.9 against 1.6 and every one was kept), and
    one stray high block does not become the reference."""
    if not xs:
        raise ValueError("the usual CPU share of no blocks")
    s = sorted(xs)
    return s[-min(len(s), max(2, math.ceil(len(s) / 10)))]


def steady_rounds(cpu_per_wall: Mapping[str, Sequence[float]],
                  share: float = KEEP_CPU_SHARE) -> list[bool]:
    """Which rounds ran undisturbed: each side's block at ``share`` of that side's usual CPU
    time / wall time (:func:`usual_cpu_share`) or more (``cpu_per_wall``: per side, per
    round; a process paused by its host keeps its wall clock and loses CPU time). An unknown
    CPU time (None, the platform has no process clock) keeps the round."""
    sides = list(cpu_per_wall.values())
    if not sides:
        return []
    n = len(sides[0])
    floors = []
    for xs in sides:
        known = [x for x in xs if x is not None]
        floors.append(share * usual_cpu_share(known) if known else None)
    return [all(floor is None or xs[i] is None or xs[i] >= floor
                for xs, floor in zip(sides, floors)) for i in range(n)]


def _order_statistic_rank(n: int, confidence: float) -> int | None:
    """The largest rank j (1-based) with P(Binomial(n, 1/2) < j) <= (1 - confidence) / 2: the
    interval [x_(j), x_(n+1-j)] then holds the median with at least ``confidence``."""
    alpha, below, j = (1 - confidence) / 2, 0.0, 0
    while j < n // 2:
        below += math.comb(n, j) / 2 ** n  # P(Binomial = j)
        if below > alpha:
            break
        j += 1
    return j or None


def median_ci(xs: Sequence[float], confidence: float = CONFIDENCE
              ) -> tuple[float, float, float] | None:
    """``(median, low, high)``: the median of ``xs`` and a distribution-free ``confidence``
    interval for it from order statistics, or None when ``xs`` are too few for one (fewer
    than 6 for 95%)."""
    n = len(xs)
    j = _order_statistic_rank(n, confidence) if n else None
    if j is None:
        return None
    s = sorted(xs)
    return statistics.median(s), s[j - 1], s[n - j]


def half_width(ci: tuple[float, float, float]) -> float:
    """The interval's half-width relative to its median."""
    median, low, high = ci
    return (high - low) / 2 / median


def quotable(ratios: Sequence[float], within: float = STABLE_WITHIN) -> bool:
    """Whether the median of ``ratios`` can be quoted: it has an interval, and the interval
    lies within ``within`` of it."""
    ci = median_ci(ratios)
    return ci is not None and _within(ci, within)


def _within(ci: tuple[float, float, float], within: float) -> bool:
    median, low, high = ci
    return (1 - within) * median <= low and high <= (1 + within) * median


def precise(ratios: Sequence[float], min_rounds: int = MIN_ROUNDS,
            target: float = TARGET_HALF_WIDTH) -> bool:
    """Whether sampling may stop: at least ``min_rounds`` ratios whose interval's half-width is
    at most ``target`` of their median."""
    ci = median_ci(ratios)
    return len(ratios) >= min_rounds and ci is not None and half_width(ci) <= target


def other_cores(busy_s: float, own_s: float, wall_s: float) -> float:
    """The cores other processes kept busy on average: the machine's busy CPU time
    (``busy_s``, all cores, hypervisor steal included) less this process's (``own_s``,
    all its threads), over ``wall_s``. Never below 0 (the two clocks tick apart)."""
    if wall_s <= 0:
        raise ValueError(f"wall time must be positive, got {wall_s}")
    return max(0.0, (busy_s - own_s) / wall_s)


def verdict(ratios: Mapping[str, Sequence[float]], settled_sides: Mapping[str, bool],
            others: float | None, *, within: float = STABLE_WITHIN,
            max_other_cores: float = MAX_OTHER_CORES,
            first_visit: int | None = None) -> tuple[bool, list[str]]:
    """``(stable, reasons)``: whether the speedups can be quoted, and why not.

    ``ratios``: per compared side, its kept paired ratios in the order timed;
    ``settled_sides``: whether each side ran in a steady state (:func:`benchmarks.timing.measure`:
    its warm-up settled, or its blocks did not :func:`drift` during the rounds);
    ``others``: :func:`other_cores` over the case (None: not known on this platform);
    ``first_visit``: how many of the ratios the case's first visit timed, where it was
    visited twice (:class:`benchmarks.timing.Sampler`): a ratio that :func:`drift` s between
    the visits is flagged.
    """
    reasons = [f"{side} did not settle (its blocks drifted in warm-up and during the rounds)"
               for side, ok in settled_sides.items() if not ok]
    for side, xs in ratios.items():
        ci = median_ci(xs)
        if ci is None:
            reasons.append(f"{side}: {len(xs)} undisturbed round(s), too few for an interval")
            continue
        median, low, high = ci
        if not _within(ci, within):
            reasons.append(f"{side}: interval [{low:.2f}, {high:.2f}] wider than "
                           f"+-{within:.0%} of {median:.2f}")
        changed = drift(xs, within, first_visit)  # one visit: its two halves
        if changed is not None:
            first, second = changed
            reasons.append(
                f"{side}: the ratio changed during the case ({first:.2f} in the first half of "
                f"the rounds, {second:.2f} in the second)" if first_visit is None else
                f"{side}: the ratio changed between the case's two visits ({first:.2f} in the "
                f"first, {second:.2f} in the second)")
    if others is not None and others > max_other_cores:
        reasons.append(f"other processes used {others:.2f} cores")
    return not reasons, reasons
