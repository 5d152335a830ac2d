"""The win-rate interval (ties ½, Clopper–Pearson on wins + ties/2) and accuracies."""

import numpy as np
import pytest
from scipy.stats import binomtest

from llmpo.stats.winrate import clopper_pearson, win_rate_interval


def test_clopper_pearson_matches_scipy_exact():
    for k, n in [(0, 10), (3, 10), (10, 10), (57, 200), (1, 1)]:
        expected = binomtest(k, n).proportion_ci(0.95, "exact")
        lower, upper = clopper_pearson(k, n)
        assert lower == pytest.approx(expected.low, abs=1e-12)
        assert upper == pytest.approx(expected.high, abs=1e-12)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        win_rate_interval(0, 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        win_rate_interval(-1, 0, 3)
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(4, 3)


def test_estimate_counts_ties_half_and_the_interval_brackets_it():
    rate = win_rate_interval(50, 30, 20)
    assert rate.estimate == pytest.approx(0.65)
    assert rate.lower < rate.estimate < rate.upper
    # Without ties it is the exact Clopper–Pearson interval of the wins.
    plain = win_rate_interval(57, 0, 143)
    assert (plain.lower, plain.upper) == clopper_pearson(57, 200)


def test_the_interval_is_deterministic_and_never_leaves_the_estimate():
    # 56 wins, 131 ties, 13 losses (a reference judge where both answers are often right): the
    # interval sits around 0.6075 and clears ½, as the 56-to-13 split of the decisive ones says.
    rate = win_rate_interval(56, 131, 13)
    assert rate.lower > 0.5 and rate.lower < rate.estimate < rate.upper
    # All ties: the estimate is ½ and the interval contains it.
    even = win_rate_interval(0, 40, 0)
    assert even.lower < 0.5 < even.upper


def coverage(p_win: float, p_tie: float, n: int, repetitions: int, stream: int) -> int:
    """How often the interval covers p = P(win) + P(tie)/2 on simulated comparison streams."""
    truth = p_win + p_tie / 2
    covered = 0
    for repetition in range(repetitions):
        rng = np.random.default_rng([stream, repetition])
        outcomes = rng.choice(3, size=n, p=[p_win, p_tie, 1 - p_win - p_tie])
        wins, ties = int((outcomes == 0).sum()), int((outcomes == 1).sum())
        interval = win_rate_interval(wins, ties, n - wins - ties)
        covered += interval.lower <= truth <= interval.upper
    return covered


def test_interval_covers_a_known_win_rate_in_at_least_93_of_100_repetitions():
    # The check: winner beats baseline with P(win) = 0.55, P(tie) = 0.2 (p = 0.65),
    # 200 comparisons per evaluation, 100 seeded repetitions, 95% nominal.
    assert coverage(0.55, 0.2, 200, 100, stream=2026) >= 93


# (P(win), P(tie)) of the first policy: no ties, many ties (a reference judge where both are
# often right), a strong winner, a near coin.
# Then mostly ties, where the score total is least binomial.
CASES = [(0.7, 0.0), (0.35, 0.5), (0.85, 0.1), (0.45, 0.1), (0.05, 0.9), (0.02, 0.2)]


@pytest.mark.parametrize(("p_win", "p_tie"), CASES)
@pytest.mark.parametrize("n", [30, 200])
def test_coverage_is_not_below_95_percent(p_win, p_tie, n):
    # 1,000 repetitions per case; one-sided binomial test of coverage < 95% at the 1% level.
    covered = coverage(p_win, p_tie, n, 1000, stream=7)
    assert binomtest(covered, 1000, 0.95, alternative="less").pvalue > 0.01, covered


def test_fractional_counts_are_a_score_total_over_whole_comparisons():
    # Two comparisons scored 0.8 and 0.3: (2y − 1)⁺ won, (1 − 2y)⁺ lost, the rest tied.
    rate = win_rate_interval(0.6, 1.0, 0.4)
    assert rate.n == 2
    assert rate.estimate == pytest.approx(0.55)
    assert (rate.lower, rate.upper) == clopper_pearson(1.1, 2)
    # Shares rounded to 1e-9 (the store's tally) still make whole comparisons.
    assert win_rate_interval(0.6 + 1e-9, 1.0, 0.4).n == 2
    with pytest.raises(ValueError, match="whole number of comparisons"):
        win_rate_interval(0.6, 1.0, 0.3)


def fractional_coverage(a: float, b: float, n: int, repetitions: int, stream: int) -> int:
    """Coverage of E[y] when a judge returns preference probabilities y ~ Beta(a, b)."""
    truth = a / (a + b)
    covered = 0
    for repetition in range(repetitions):
        y = np.random.default_rng([stream, repetition]).beta(a, b, size=n)
        wins = float(np.maximum(2 * y - 1, 0).sum())
        losses = float(np.maximum(1 - 2 * y, 0).sum())
        interval = win_rate_interval(wins, n - wins - losses, losses)
        covered += interval.lower <= truth <= interval.upper
    return covered


# Beta laws of y: U-shaped near a coin (closest to Bernoulli, the hardest case), a clear winner,
# a clear loser, and one concentrated near ½.
@pytest.mark.parametrize(("a", "b"), [(0.3, 0.3), (0.3, 0.15), (2.0, 1.0), (1.0, 4.0), (8.0, 6.0)])
@pytest.mark.parametrize("n", [30, 200])
def test_coverage_with_preference_probabilities_is_not_below_95_percent(a, b, n):
    # 1,000 repetitions per case; one-sided binomial test of coverage < 95% at the 1% level.
    covered = fractional_coverage(a, b, n, 1000, stream=11)
    assert binomtest(covered, 1000, 0.95, alternative="less").pvalue > 0.01, covered
