"""Confidence intervals for a win rate with ties counted ½, and for an accuracy.

The win rate of policy A over policy B is p = P(A wins) + ½ P(tie): the mean of a comparison's
score X ∈ {0, ½, 1}. Its interval is the **Clopper–Pearson interval of the score total**
S = W + T/2 out of n, with the beta quantiles taken at a half-integer S when there are ties:

    lower = Beta⁻¹(α/2; S, n − S + 1),   upper = Beta⁻¹(1 − α/2; S + 1, n − S).

Without ties S is binomial and this *is* the exact Clopper–Pearson interval. With ties it is
conservative: among the distributions on [0, 1] with mean p the Bernoulli(p) one is the most
spread (every other is below it in convex order), so a score total is less dispersed than the
binomial count the interval is built for. The same holds for a judge's preference probabilities
y ∈ [0, 1] (docs/ties.md): y is the score, counted (2y − 1)⁺ won, (1 − 2y)⁺ lost and the rest
tied, so that S = W + T/2 = Σ y and W, T, L are real numbers summing to n.
``tests/stats/test_winrate.py`` checks the coverage by Monte Carlo (no case below the nominal
95%, with ties, without, and with preference probabilities). The interval is deterministic — the
same counts always give the same interval — and always contains the estimate S/n; a tie is never
split by a coin (that exact alternative throws information away: with many ties it moves the
interval by the luck of the coin flips).

Accuracies (right or wrong answers) are binomial: plain Clopper–Pearson.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.special import betaincinv

#: How the win-rate interval is computed, as shown in reports.
WIN_RATE_METHOD = "Clopper–Pearson on wins + ties/2 (exact without ties, conservative with them)"


def clopper_pearson(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial proportion.

    Parameters
    ----------
    successes : float
        Successes, 0 ≤ successes ≤ n (a half-integer counts ties as ½: see the module docstring).
    n : int
        Trials (≥ 1).
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    tuple of float
        (lower, upper).

    Raises
    ------
    ValueError
        For n < 1, successes outside [0, n], or a level outside (0, 1).
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = 1.0 - level
    # The beta quantiles, from scipy.special: scipy.stats costs ~0.5 s to import.
    lower = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, alpha / 2))
    upper = (
        1.0 if successes == n else float(betaincinv(successes + 1, n - successes, 1 - alpha / 2))
    )
    return lower, upper


@dataclass(frozen=True)
class WinRate:
    """A win rate with ties counted ½ and its confidence interval.

    Attributes
    ----------
    wins, ties, losses : float
        Counts for the first policy (whole for verdicts; see :func:`win_rate_interval`).
    n : int
        Comparisons.
    estimate : float
        (wins + ties / 2) / n.
    lower, upper : float
        The confidence interval (see the module docstring).
    level : float
        Its confidence level.
    """

    wins: float
    ties: float
    losses: float
    n: int
    estimate: float
    lower: float
    upper: float
    level: float


def win_rate_interval(wins: float, ties: float, losses: float, level: float = 0.95) -> WinRate:
    """Win rate (ties ½) with the Clopper–Pearson interval of wins + ties/2.

    Parameters
    ----------
    wins, ties, losses : float
        Counts of the first policy (non-negative, at least one comparison). Whole numbers for
        verdicts; with preference probabilities a comparison scored y adds (2y − 1)⁺ to wins,
        (1 − 2y)⁺ to losses and the rest to ties, so the three may be fractional but sum to the
        number of comparisons.
    level : float
        Confidence level.

    Returns
    -------
    WinRate

    Raises
    ------
    ValueError
        For negative counts, no comparison, or counts that do not sum to a whole number of
        comparisons.
    """
    if min(wins, ties, losses) < 0:
        raise ValueError(f"counts must be non-negative, got {wins}, {ties}, {losses}")
    total = wins + ties + losses
    n = round(total)
    # Fractional counts are sums of shares rounded to 1e-9 (store.records.tally).
    if abs(total - n) > 1e-6:
        raise ValueError(
            f"wins + ties + losses must be a whole number of comparisons, got {total:g}"
        )
    if n == 0:
        raise ValueError("no comparison: a win rate needs at least one")
    score = min(wins + ties / 2, n)  # the rounding of fractional counts may overshoot n
    lower, upper = clopper_pearson(score, n, level)
    return WinRate(wins, ties, losses, n, score / n, lower, upper, level)
