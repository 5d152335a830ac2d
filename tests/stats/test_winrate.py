"""The win-rate interval (ties ½, Clopper–Pearson on the seeded tie-split) and accuracies."""

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
        win_rate_interval(0, 0, 0, seed=1)
    with pytest.raises(ValueError, match="non-negative"):
        win_rate_interval(-1, 0, 3, seed=1)
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(4, 3)


def test_estimate_counts_ties_half_and_the_split_is_reproducible():
    first = win_rate_interval(50, 30, 20, seed=7)
    again = win_rate_interval(50, 30, 20, seed=7)
    assert first == again
    assert first.estimate == pytest.approx(0.65)
    assert 50 <= first.split_wins <= 80
    assert first.lower < first.estimate < first.upper


def coverage(p_win: float, p_tie: float, n: int, repetitions: int, stream: int) -> int:
    """How often the interval covers p = P(win) + P(tie)/2 on simulated comparison streams."""
    truth = p_win + p_tie / 2
    covered = 0
    for repetition in range(repetitions):
        rng = np.random.default_rng([stream, repetition])
        outcomes = rng.choice(3, size=n, p=[p_win, p_tie, 1 - p_win - p_tie])
        wins, ties = int((outcomes == 0).sum()), int((outcomes == 1).sum())
        interval = win_rate_interval(wins, ties, n - wins - ties, seed=[stream, repetition, 1])
        covered += interval.lower <= truth <= interval.upper
    return covered


def test_interval_covers_a_known_win_rate_in_at_least_93_of_100_repetitions():
    # The check: winner beats baseline with P(win) = 0.55, P(tie) = 0.2 (p = 0.65),
    # 200 comparisons per evaluation, 100 seeded repetitions, 95% nominal.
    assert coverage(0.55, 0.2, 200, 100, stream=2026) >= 93


# (P(win), P(tie)) of the first policy: no ties, many ties (a reference judge where both are
# often right), a strong winner, a near coin.
CASES = [(0.7, 0.0), (0.35, 0.5), (0.85, 0.1), (0.45, 0.1)]


@pytest.mark.parametrize(("p_win", "p_tie"), CASES)
@pytest.mark.parametrize("n", [30, 200])
def test_coverage_is_not_below_95_percent(p_win, p_tie, n):
    # 1,000 repetitions per case; one-sided binomial test of coverage < 95% at the 1% level.
    covered = coverage(p_win, p_tie, n, 1000, stream=7)
    assert binomtest(covered, 1000, 0.95, alternative="less").pvalue > 0.01, covered
