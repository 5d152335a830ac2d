"""How many more comparisons a run needs: a range from the current certificate, smoothed.

Each rival of the leader is ruled out when its GLR statistic S (a log-likelihood ratio) reaches
its threshold β. After n comparisons that inform it, S grows about linearly, S ≈ n·r, at a rate r
fixed by the true preference, so the rival needs about β / r comparisons in all. The rate is
estimated from S itself: by Wilks' theorem the signed root √(2S) of a log-likelihood ratio is
about normal with variance 1 around its mean √(2·n·r), so
``r ∈ [(√(2S) − z)², (√(2S) + z)²] / (2n)`` with z = :data:`Z_RANGE` (an 80% range). That gives,
per rival, a range of the comparisons still needed (no upper end while √(2S) ≤ z: the data do not
yet separate the pair from a coin flip). The thresholds are taken as they are now; they grow
slowly (logarithmically) with the comparisons, so the range leans a little optimistic.

The rival ranges are combined the way comparisons inform the rivals: in an unstructured space a
comparison informs one pair, so the rivals' needs add up; in a structured space every comparison
informs every rival, so the slowest decides.

Successive estimates share almost all their data, and one estimate is noisy (1/r has heavy
tails: a statistic near 0 for a moment sends it to thousands), so what is shown is the median of
the finish points (comparisons so far + still needed; low and high ends alike) estimated over
the last half of the run: a spike moves a median by one rank, not by its size, and the window
still forgets early estimates as the run goes on. On a synthetic four-policy run
(tests/test_remaining.py) the finish point read every twentieth of the run then moves by at most
a factor 4.5 between readings, where the unsmoothed estimate jumped by factors up to 38.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

#: Normal quantile of the range's half-width: P(|Z| ≤ 1.28) ≈ 0.8.
Z_RANGE = 1.2816

#: The finish point shown is the median of those estimated over the last half of the run.
WINDOW = 0.5


@dataclass(frozen=True)
class Remaining:
    """Comparisons still needed: a point estimate and its range.

    Attributes
    ----------
    estimate : int
        Most likely number of comparisons still needed.
    low : int
        Lower end of the 80% range.
    high : int or None
        Upper end of the range; None while some rival is not yet separated from a coin flip
        (no upper bound can be given).
    """

    estimate: int
    low: int
    high: int | None


def _needed(statistic: float, threshold: float, count: float, rate: float) -> float:
    """Comparisons still needed by one rival if its statistic grows at ``rate`` per comparison."""
    if statistic > threshold:
        return 0.0
    if rate <= 0:
        return math.inf
    return max(threshold / rate - count, 0.0)


def rival_needs(
    statistics: Iterable[float],
    thresholds: Iterable[float],
    counts: Iterable[float],
    z: float = Z_RANGE,
) -> list[tuple[float, float, float]] | None:
    """Per rival, (estimate, low, high) of the comparisons still needed (``inf``: unbounded).

    ``counts`` are the comparisons that inform each rival's statistic. None while some rival
    not yet ruled out has no evidence (no comparison, or a statistic ≤ 0).
    """
    needs = []
    for statistic, threshold, count in zip(statistics, thresholds, counts, strict=True):
        if statistic > threshold:
            needs.append((0.0, 0.0, 0.0))
            continue
        if statistic <= 0 or count <= 0:
            return None
        root = math.sqrt(2 * statistic)
        rate, fast, slow = (
            (root + shift) ** 2 / (2 * count) if root + shift > 0 else 0.0 for shift in (0.0, z, -z)
        )
        needs.append(
            (
                _needed(statistic, threshold, count, rate),
                _needed(statistic, threshold, count, fast),
                _needed(statistic, threshold, count, slow),
            )
        )
    return needs


def combine(needs: list[tuple[float, float, float]], parallel: bool) -> tuple[float, ...]:
    """Total (estimate, low, high): the sum over rivals, or the largest when every comparison
    informs every rival (``parallel``)."""
    columns = list(zip(*needs, strict=True)) or [(0.0,), (0.0,), (0.0,)]
    return tuple(max(column) if parallel else sum(column) for column in columns)


class RemainingTracker:
    """Running median of the estimated finish points of one run (see the module docstring)."""

    def __init__(self) -> None:
        self._history: list[tuple[int, tuple[float, ...]]] = []  # (n, finish points)

    def update(self, n: int, totals: tuple[float, ...] | None, done: bool) -> Remaining | None:
        """The smoothed estimate after ``n`` comparisons, given the raw ``totals`` still needed
        (None: unknown); all zero once ``done``."""
        if done:
            return Remaining(0, 0, 0)
        if totals is not None:
            self._history.append((n, tuple(n + total for total in totals)))
        start = 0
        while self._history[start:] and self._history[start][0] < WINDOW * n:
            start += 1
        del self._history[:start]
        if not self._history:
            return None
        estimate, low, high = (
            max(statistics.median(column) - n, 0.0)
            for column in zip(*(finish for _, finish in self._history), strict=True)
        )
        return Remaining(
            math.ceil(estimate),
            math.ceil(min(low, estimate)),
            None if math.isinf(high) else math.ceil(max(high, estimate)),
        )
