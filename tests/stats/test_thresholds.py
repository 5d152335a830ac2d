"""Validity of the stopping thresholds: the KT regret bound and Monte Carlo crossing rates."""

import math

import numpy as np
import pytest
from scipy.special import betaln, xlogy
from scipy.stats import binomtest

from llmpo.stats.bernoulli import kl_bernoulli
from llmpo.stats.thresholds import (
    GK16HeuristicThreshold,
    KTThreshold,
    make_threshold,
)


def kt_regret(successes: np.ndarray, n: int) -> np.ndarray:
    """log(max_q L(q) / KT mixture) for `successes` (possibly fractional) out of n."""
    failures = n - successes
    log_max = xlogy(successes, successes / n) + xlogy(failures, failures / n)
    log_kt = betaln(successes + 0.5, failures + 0.5) - betaln(0.5, 0.5)
    return log_max - log_kt


@pytest.mark.parametrize("n", [1, 2, 3, 10, 57, 100, 1_000, 10_000, 100_000])
def test_kt_regret_bound_holds_for_integer_and_fractional_counts(n):
    # Ties make the sum of outcomes a multiple of ½; check a fine grid of real values too.
    successes = np.unique(np.concatenate([np.arange(n + 1), np.linspace(0, n, 2001)]))
    assert np.max(kt_regret(successes, n)) <= 0.5 * math.log(n) + math.log(2) + 1e-12


def first_crossings(
    p: float,
    threshold: KTThreshold | GK16HeuristicThreshold,
    delta: float,
    horizon: int,
    reps: int,
    rng: np.random.Generator,
    tie_prob: float = 0.0,
) -> int:
    """Number of runs in which n·d(p̂, ½)·1[p̂ > ½] ever exceeds β(n) for n ≤ horizon."""
    crossed = 0
    n = np.arange(1, horizon + 1)
    beta = threshold.pair(n.astype(float), n, delta, 0.0)
    for _ in range(reps // 200):
        draws = rng.random((200, horizon))
        outcomes = np.where(
            draws < p - tie_prob / 2, 1.0, np.where(draws < p + tie_prob / 2, 0.5, 0.0)
        )
        means = np.cumsum(outcomes, axis=1) / n
        statistic = np.where(means > 0.5, n * kl_bernoulli(means, 0.5), 0.0)
        crossed += int(np.any(statistic > beta, axis=1).sum())
    return crossed


@pytest.mark.parametrize(("gap", "tie_prob"), [(0.0, 0.0), (0.01, 0.0), (0.01, 0.3)])
def test_kt_threshold_crossing_probability_is_below_delta(gap, tie_prob):
    """Under p = ½ − gap, the per-pair statistic crosses β with probability ≤ δ.

    2,000 runs of 5,000 comparisons at δ = 0.1; one-sided binomial test at 1% that the crossing
    rate is not above δ. (The true rate is far below δ: the bound is conservative.)
    """
    rng = np.random.default_rng(7)
    delta, reps = 0.1, 2000
    crossed = first_crossings(0.5 - gap, KTThreshold(), delta, 5000, reps, rng, tie_prob)
    assert binomtest(crossed, reps, delta, alternative="greater").pvalue > 0.01
    assert crossed / reps < delta


def test_crossing_test_has_power_against_a_naive_threshold():
    """The same Monte Carlo flags β = log(1/δ) (no price for optional stopping) as invalid."""

    class Naive(GK16HeuristicThreshold):
        def common(self, t, delta, log_multiplicity):
            return math.log(1 / delta)

    rng = np.random.default_rng(8)
    crossed = first_crossings(0.5, Naive(), 0.1, 5000, 1000, rng)
    assert binomtest(crossed, 1000, 0.1, alternative="greater").pvalue < 0.01


def test_threshold_parts_and_names():
    kt = KTThreshold()
    counts = np.array([1.0, 10.0, 100.0])
    expected = math.log(4 / 0.05) + 0.5 * np.log(counts) + math.log(2)
    np.testing.assert_allclose(kt.pair(counts, 500, 0.05, math.log(4)), expected)
    assert kt.pair_set(counts, 500, 0.05, 0.0) == pytest.approx(
        math.log(20) + float(np.sum(0.5 * np.log(counts) + math.log(2)))
    )
    assert kt.local_scalar(10.0) == pytest.approx(float(kt.local(np.array([10.0]))[0]))
    heuristic = make_threshold("gk16-heuristic")
    assert heuristic.heuristic and not kt.heuristic
    assert heuristic.pair(counts, 100, 0.1, 5.0)[0] == pytest.approx(
        math.log((1 + math.log(100)) / 0.1)
    )
    with pytest.raises(ValueError, match="unknown threshold 'nope'"):
        make_threshold("nope")
