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


def decisive_crossings(
    values: np.ndarray,
    probs: np.ndarray,
    delta: float,
    horizon: int,
    reps: int,
    rng: np.random.Generator,
    count: str = "decisive",
) -> int:
    """Runs in which the decisive statistic n·d(α/n, ½)·1[α/n > ½] of outcomes drawn from the law
    (values, probs) on [0, 1] ever exceeds the KT threshold paid on n (n ≤ horizon comparisons).

    α = Σ(2y − 1)⁺, β = Σ(1 − 2y)⁺ and n = α + β, as in llmpo.models.unstructured. Two deliberately
    wrong variants show the test's power: ``count="comparisons"`` pays the statistic with all
    comparisons (n = N), ``count="verdicts-only"`` ignores fractional outcomes.
    """
    kt = KTThreshold()
    crossed = 0
    for _ in range(reps // 200):
        y = rng.choice(values, size=(200, horizon), p=probs)
        win, loss = np.maximum(2 * y - 1, 0), np.maximum(1 - 2 * y, 0)
        if count == "verdicts-only":
            verdict = np.isin(y, (0.0, 1.0))
            win, loss = win * verdict, loss * verdict
        alpha, n = np.cumsum(win, axis=1), np.cumsum(win + loss, axis=1)
        p_hat = np.where(n > 0, alpha / np.maximum(n, 1e-300), 0.5)
        paid = np.arange(1, horizon + 1) if count == "comparisons" else n
        statistic = np.where(p_hat > 0.5, paid * kl_bernoulli(p_hat, 0.5), 0.0)
        beta = kt.common(0, delta, 0.0) + kt.local(n)
        crossed += int(np.any(statistic > beta, axis=1).sum())
    return crossed


NULL_LAWS = {
    # Verdicts with P(win) = P(loss): 60% and 85% ties.
    "ties-60": ([0.0, 0.5, 1.0], [0.2, 0.6, 0.2]),
    "ties-85": ([0.0, 0.5, 1.0], [0.075, 0.85, 0.075]),
    # Preference probabilities with mean ½ whose exact verdicts are all wins: E(2y − 1)⁺ = 0.25 =
    # E(1 − 2y)⁺, so p* = ½ although every decisive verdict is a win.
    "fractional-skewed": ([1.0, 1 / 3], [0.25, 0.75]),
    "fractional-grid": (np.linspace(0, 1, 11), np.full(11, 1 / 11)),
}


@pytest.mark.parametrize("law", NULL_LAWS)
def test_decisive_statistic_crossing_probability_is_below_delta(law):
    """On the boundary of the null (E y = ½), the decisive statistic with the KT threshold on the
    decisive count crosses with probability ≤ δ (2,000 runs of 3,000 comparisons, δ = 0.1,
    one-sided binomial test at 1%)."""
    values, probs = NULL_LAWS[law]
    rng = np.random.default_rng(14)
    reps = 2000
    crossed = decisive_crossings(np.array(values), np.array(probs), 0.1, 3000, reps, rng)
    assert binomtest(crossed, reps, 0.1, alternative="greater").pvalue > 0.01


@pytest.mark.parametrize(
    ("law", "count"), [("ties-85", "comparisons"), ("fractional-skewed", "verdicts-only")]
)
def test_decisive_crossing_test_has_power_against_wrong_counts(law, count):
    """The same Monte Carlo flags the decisive p̂ paid with all comparisons, and a statistic that
    drops fractional outcomes, as invalid."""
    values, probs = NULL_LAWS[law]
    rng = np.random.default_rng(15)
    crossed = decisive_crossings(np.array(values), np.array(probs), 0.1, 3000, 1000, rng, count)
    assert binomtest(crossed, 1000, 0.1, alternative="greater").pvalue < 0.01
