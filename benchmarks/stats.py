"""Timing statistics: pure functions over lists of sample times (seconds); no clock here.

A *sample* is the mean time per call of a block of back-to-back calls of one side, the block
long enough (``min_sample_s`` in the harness, 25 ms and more) that the scheduler's time
slices average out within it. The harness interleaves the sides' samples and asks:

* :func:`settled`: has a side warmed up? Warm-up ends when the median of the last
  ``window`` samples is within ``tol`` of the median of the ``window`` before them: the
  timings no longer trend (first calls pay for allocations, caches, thread-pool start-up).
* :func:`precise`: may sampling stop? Every side has ``min_samples`` samples and a relative
  spread, IQR / median (:func:`relative_spread`), at most ``TARGET_SPREAD``.
* :func:`verdict`: can the medians be trusted? Not when a side did not settle within its
  warm-up budget, has too few samples, a spread above ``MAX_SPREAD``, or when other
  processes used more than ``MAX_OTHER_CORES`` cores on average while the case ran
  (:func:`other_cores`, from the machine's and this process's CPU time).

Why not pyperf or ``torch.utils.benchmark`` themselves. torch's
``Timer.adaptive_autorange`` is the stopping rule used here (blocks of calls, more than
three of them, until IQR / median is below a threshold or a time limit is spent; its
``Measurement`` warns from IQR / median > 0.1, the ``MAX_SPREAD`` here), but it times one
statement to completion before the next, so a change in the machine's load between the JAX
and the torch measurement biases their ratio, and it pins torch's thread count to its own
``num_threads`` (1 by default) for the statement, JAX's included; here the sides' samples
alternate, with their order rotating each round, and each library keeps its own threads.
pyperf calibrates warm-up by comparing two halves of 20 values each (mean, quartiles and
MAD within 5-10%) and spreads its values over 20 fresh processes: both serve
micro-benchmarks of pure Python, not steps that take milliseconds each after seconds of
compilation; :func:`settled` is its halves test, on medians of three samples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

__all__ = ["quartiles", "iqr", "relative_spread", "settled", "precise", "other_cores",
           "verdict", "SETTLE_WINDOW", "SETTLE_TOL", "MIN_SAMPLES", "TARGET_SPREAD",
           "MAX_SPREAD", "MAX_OTHER_CORES"]

SETTLE_WINDOW = 3  # samples per half of the warm-up test
SETTLE_TOL = 0.10  # the two halves' medians within 10%
MIN_SAMPLES = 5  # timed samples per side, at least, before the spread is trusted
TARGET_SPREAD = 0.05  # sampling stops once every side's IQR / median is at most this
MAX_SPREAD = 0.10  # above this a side is unstable (torch's Measurement warns from 0.1)
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


def settled(xs: Sequence[float], window: int = SETTLE_WINDOW, tol: float = SETTLE_TOL) -> bool:
    """Whether warm-up samples ``xs`` (oldest first) have stopped trending: the medians of the
    last ``window`` and of the ``window`` before them differ by at most ``tol`` relatively."""
    if len(xs) < 2 * window:
        return False
    before = statistics.median(xs[-2 * window:-window])
    last = statistics.median(xs[-window:])
    return abs(before - last) <= tol * last


def precise(samples: Mapping[str, Sequence[float]], min_samples: int = MIN_SAMPLES,
            target: float = TARGET_SPREAD) -> bool:
    """Whether every side has ``min_samples`` samples with IQR / median at most ``target``."""
    return all(len(xs) >= min_samples and relative_spread(xs) <= target
               for xs in samples.values())


def other_cores(busy_s: float, own_s: float, wall_s: float) -> float:
    """The cores other processes kept busy on average: the machine's busy CPU time
    (``busy_s``, all cores, hypervisor steal included) less this process's (``own_s``,
    all its threads), over ``wall_s``. Never below 0 (the two clocks tick apart)."""
    if wall_s <= 0:
        raise ValueError(f"wall time must be positive, got {wall_s}")
    return max(0.0, (busy_s - own_s) / wall_s)


def verdict(samples: Mapping[str, Sequence[float]], settled_sides: Mapping[str, bool],
            others: float | None, *, control: Sequence[float] = (),
            min_samples: int = MIN_SAMPLES, max_spread: float = MAX_SPREAD,
            max_other_cores: float = MAX_OTHER_CORES) -> tuple[bool, list[str]]:
    """``(stable, reasons)``: whether the sides' medians can be trusted, and why not.

    ``samples``: each side's timed samples; ``settled_sides``: whether its warm-up settled;
    ``others``: :func:`other_cores` over the case (None: not known on this platform);
    ``control``: samples of fixed work timed beside the sides, whose spread is the machine's
    own (a shared virtual machine's cores slow down and speed up with their neighbours').
    """
    reasons = []
    for side, xs in samples.items():
        if not settled_sides.get(side, False):
            reasons.append(f"{side} did not settle in warm-up")
        if len(xs) < min_samples:
            reasons.append(f"{side}: {len(xs)} sample(s) < {min_samples}")
        elif relative_spread(xs) > max_spread:
            reasons.append(f"{side} spread {relative_spread(xs):.0%} > {max_spread:.0%}")
    if len(control) >= 2 and relative_spread(control) > max_spread:
        reasons.append(f"the machine itself varied {relative_spread(control):.0%} (a fixed "
                       "loop timed beside the sides)")
    if others is not None and others > max_other_cores:
        reasons.append(f"other processes used {others:.2f} cores")
    return not reasons, reasons
