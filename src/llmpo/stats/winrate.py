"""Confidence intervals for a win rate with ties counted ½, and for an accuracy.

The win rate of policy A over policy B is p = P(A wins) + ½ P(tie). Each comparison's score is 1,
½ or 0, so the number of "wins with ties counted ½", W + T/2, is not binomial and the
Clopper–Pearson interval applied to it is not exact (with many ties it is not even guaranteed to
cover at its level). The interval used here is the **Clopper–Pearson interval on the tie-split**:
every tie is turned into a win or a loss by a fair coin, drawn from a seeded generator. Each
comparison then is a win with probability exactly P(win) + ½ P(tie) = p, independently of the
others, so the split count K = W + Binomial(T, ½) is Binomial(n, p) and the Clopper–Pearson
interval on K has coverage ≥ 1 − α for every p and every n (exact in the Clopper–Pearson sense,
conservative, never anti-conservative). The coin flips are drawn from the evaluation's seed, so the
interval is reproducible. The point estimate shown is the unrandomized (W + T/2)/n.

Accuracies (right or wrong answers) are binomial: plain Clopper–Pearson.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

#: How the win-rate interval is computed, as shown in reports.
WIN_RATE_METHOD = "Clopper–Pearson on the tie-split (each tie a fair, seeded coin flip); exact"


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial proportion.

    Parameters
    ----------
    successes : int
        Successes, 0 ≤ successes ≤ n.
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
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lower, upper


@dataclass(frozen=True)
class WinRate:
    """A win rate with ties counted ½ and its confidence interval.

    Attributes
    ----------
    wins, ties, losses : int
        Counts for the first policy.
    n : int
        Comparisons.
    estimate : float
        (wins + ties / 2) / n.
    lower, upper : float
        The confidence interval (see the module docstring).
    level : float
        Its confidence level.
    split_wins : int
        Wins after the seeded tie-split (the count the interval is computed from).
    """

    wins: int
    ties: int
    losses: int
    n: int
    estimate: float
    lower: float
    upper: float
    level: float
    split_wins: int


def win_rate_interval(
    wins: int, ties: int, losses: int, seed: int | np.random.SeedSequence, level: float = 0.95
) -> WinRate:
    """Win rate (ties ½) with the Clopper–Pearson interval on the seeded tie-split.

    Parameters
    ----------
    wins, ties, losses : int
        Counts of the first policy (non-negative, at least one comparison).
    seed : int or SeedSequence
        Seed of the coin flips that split the ties.
    level : float
        Confidence level.

    Returns
    -------
    WinRate

    Raises
    ------
    ValueError
        For negative counts or no comparison.
    """
    if min(wins, ties, losses) < 0:
        raise ValueError(f"counts must be non-negative, got {wins}, {ties}, {losses}")
    n = wins + ties + losses
    if n == 0:
        raise ValueError("no comparison: a win rate needs at least one")
    rng = np.random.default_rng(seed)
    split = wins + int(rng.binomial(ties, 0.5)) if ties else wins
    lower, upper = clopper_pearson(split, n, level)
    return WinRate(wins, ties, losses, n, (wins + ties / 2) / n, lower, upper, level, split)
