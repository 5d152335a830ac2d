"""Statistics of the unstructured policy space (docs/statistics.md): no model of the win
probabilities.

A preference matrix ``win_prob`` is K×K with ``win_prob[i, j] = P(i ≻ j)``, ``win_prob[i, j] +
win_prob[j, i] = 1`` and ½ on the diagonal. The optimal policy is the Condorcet winner i*.

Proportions over pairs are returned as a symmetric K×K matrix ``W``: ``W[a, b] = W[b, a]`` is the
share of comparisons spent on the pair {a, b}, so the shares over a < b sum to 1.

Ties (docs/ties.md). With a tie probability ``tie_prob[i, j]`` = t, P(i ≻ j) = p counts a tie as ½,
so P(i wins) = p − t/2 and P(j wins) = 1 − p − t/2, and p > ½ ⟺ P(i wins) > P(j wins). The
*decisive* statistics (``ties="decisive"``, the default) test this on the decisive comparisons,
whose win probability is p_d = (p − t/2)/(1 − t). Information per comparison is then
(1 − t)·d(p_d, ½ − ε) instead of d(p, ½ − ε) (``ties="half"``, ties counted ½): ε lives on the
decisive scale, and a pair with 80% ties needs 5× the comparisons of a pair without ties for the
same information. (1 − t)·d(p_d, ½) is also the exact information of the three-outcome model:
inf over laws (p'_w, t', p'_l) with p'_w ≤ p'_l of their KL from (p − t/2, t, 1 − p − t/2) splits
into the KL of the tie indicator (0 at t' = t) plus (1 − t) times the KL of the decisive
conditionals (minimal at ½), so the closed forms below are the lower bound T* of that model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from llmpo.errors import ConfigError, DataError
from llmpo.stats.bernoulli import kl_bernoulli, kl_confidence

HALF = 0.5
#: How a statistic treats ties: on the decisive outcomes (default) or counted as half a win.
TIES_MODES = ("decisive", "half")


def check_ties_mode(ties: str) -> str:
    """``ties`` itself when it is a known mode; otherwise a ValueError naming the choices."""
    if ties not in TIES_MODES:
        raise ConfigError(f"ties: unknown {ties!r}; choose 'decisive' (default) or 'half'")
    return ties


def pair_information(
    win_prob: ArrayLike, tie_prob: ArrayLike, level: float, ties: str = "decisive"
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-comparison information of pairs and the win probability their statistic estimates.

    Parameters
    ----------
    win_prob, tie_prob : array_like
        P(i ≻ j) with ties counted ½, and the tie probability (same shape).
    level : float
        c = ½ − ε, on the scale of the statistic (decisive or half).
    ties : {"decisive", "half"}
        Which statistic.

    Returns
    -------
    information : ndarray
        Rate × d(p_s, c), where p_s is the statistic's win probability and the rate its share of
        comparisons that count (1 − t for ``decisive``, 1 for ``half``); 0 where p_s ≤ c.
    p_stat : ndarray
        p_s: the decisive win probability (p − t/2)/(1 − t) (½ when every comparison is a tie), or
        p itself for ``half``.
    """
    p = np.asarray(win_prob, dtype=float)
    t = np.broadcast_to(np.asarray(tie_prob, dtype=float), p.shape)
    if check_ties_mode(ties) == "half":
        rate, p_stat = np.ones_like(p), p
    else:
        rate = 1.0 - t
        with np.errstate(divide="ignore", invalid="ignore"):
            p_stat = np.where(rate > 0, (p - t / 2.0) / np.where(rate > 0, rate, 1.0), HALF)
    information = np.where(p_stat > level, rate * np.asarray(kl_bernoulli(p_stat, level)), 0.0)
    return information, p_stat


@dataclass(frozen=True)
class Allocation:
    """Optimal proportions and characteristic time of one instance.

    Attributes
    ----------
    best : int
        The optimal policy i* (Condorcet winner).
    t_star : float
        Characteristic time T*: E[τ] ≥ T* · kl(δ, 1 − δ) for every δ-correct procedure.
    proportions : ndarray
        Symmetric K×K matrix of optimal shares per pair (shares over a < b sum to 1).
    """

    best: int
    t_star: float
    proportions: NDArray[np.float64]

    def lower_bound(self, delta: float) -> float:
        """T* · kl(δ, 1 − δ): the fewest expected comparisons of any δ-correct procedure."""
        return self.t_star * kl_confidence(delta)


def condorcet_winner(win_prob: ArrayLike) -> int | None:
    """The policy that beats every other with probability > ½, or None if there is none.

    Parameters
    ----------
    win_prob : array_like
        K×K preference matrix.

    Returns
    -------
    int or None
        Index of the Condorcet winner.
    """
    matrix = np.asarray(win_prob, dtype=float)
    beats = matrix > HALF
    np.fill_diagonal(beats, True)
    winners = np.flatnonzero(beats.all(axis=1))
    return int(winners[0]) if winners.size else None


def _require_winner(matrix: NDArray[np.float64]) -> int:
    best = condorcet_winner(matrix)
    if best is None:
        raise DataError(
            "win_prob has no Condorcet winner: no policy beats every other with p > 1/2"
        )
    return best


def best_witnesses(win_prob: ArrayLike) -> NDArray[np.intp]:
    """b(j) = argmax_{k≠j} P(k ≻ j): each policy's strongest opponent (class B)."""
    matrix = np.array(win_prob, dtype=float)
    np.fill_diagonal(matrix, -np.inf)
    return np.argmax(matrix, axis=0)


def optimal_allocation(
    win_prob: ArrayLike,
    assume_condorcet: bool = False,
    epsilon: float = 0.0,
    tie_prob: ArrayLike | None = None,
    ties: str = "decisive",
) -> Allocation:
    """Closed-form optimal proportions w* and characteristic time T* (docs/statistics.md).

    Class A (default): only the pairs (i*, k) get weight, w*_{i*k} ∝ 1/I_{i*k} with I the
    per-comparison information of :func:`pair_information`, and T* = Σ_k 1/I_{i*k}. Without ties
    I = d(p_{i*k}, ½ − ε). Class B (``assume_condorcet=True``): each rival j is ruled out by the
    opponent b(j) that carries most information against it (its strongest opponent when there are
    no ties); w* ∝ 1/I_{b(j)j} on the pairs (b(j), j).

    Parameters
    ----------
    win_prob : array_like
        K×K preference matrix (ties counted ½) with a Condorcet winner.
    assume_condorcet : bool
        Class B: only valid when a Condorcet winner is known to exist.
    epsilon : float
        Indifference margin (class A only), on the scale of the statistic: certify a policy whose
        every rival has p_s > ½ − ε (decisive: P(win | not a tie) > ½ − ε).
    tie_prob : array_like, optional
        K×K symmetric tie probabilities; none by default.
    ties : {"decisive", "half"}
        The statistic whose characteristic time is wanted (module docstring).

    Returns
    -------
    Allocation
        The optimal policy, T* and the proportions (shares of all comparisons, ties included).
    """
    matrix = np.asarray(win_prob, dtype=float)
    best = _require_winner(matrix)
    n_policies = matrix.shape[0]
    tie_matrix = np.zeros_like(matrix) if tie_prob is None else np.asarray(tie_prob, dtype=float)
    if assume_condorcet:
        if epsilon:
            raise ConfigError("epsilon > 0 is only supported with assume_condorcet=False")
        rivals = np.array([j for j in range(n_policies) if j != best])
        all_information, _ = pair_information(matrix, tie_matrix, HALF, ties)
        np.fill_diagonal(all_information, -np.inf)
        witnesses = np.argmax(all_information, axis=0)[rivals]
        information = all_information[witnesses, rivals]
        rows, cols = witnesses, rivals
    else:
        rivals = np.array([k for k in range(n_policies) if k != best])
        information, _ = pair_information(
            matrix[best, rivals], tie_matrix[best, rivals], HALF - epsilon, ties
        )
        rows, cols = np.full(rivals.shape, best), rivals
    if np.any(information <= 0):
        raise DataError(
            "the best policy does not beat every rival by more than the margin on this scale "
            "(a pair where every comparison is a tie carries no information)"
        )
    inverse_information = 1.0 / information
    t_star = float(inverse_information.sum())
    proportions = np.zeros((n_policies, n_policies))
    proportions[rows, cols] = inverse_information / t_star
    proportions[cols, rows] = inverse_information / t_star
    return Allocation(best=best, t_star=t_star, proportions=proportions)


def empirical_leader(win_prob_hat: NDArray[np.float64]) -> int:
    """Leader î: argmax_i min_{k≠i} p̂_ik (the empirical Condorcet winner when there is one).

    Unsampled pairs count as ½. Ties go to the largest row sum (a Borda score), then to the
    smallest index.
    """
    masked = win_prob_hat.copy()
    np.fill_diagonal(masked, np.inf)
    row_min = masked.min(axis=1)
    return leader_from_row_min(row_min, win_prob_hat)


def leader_from_row_min(row_min: NDArray[np.float64], win_prob_hat: NDArray[np.float64]) -> int:
    """Tie-breaking rule of :func:`empirical_leader`, given the row minima."""
    top = np.flatnonzero(row_min == row_min.max())
    if top.size == 1:
        return int(top[0])
    return int(top[np.argmax(win_prob_hat[top].sum(axis=1))])


def glr_class_a(
    counts: NDArray[np.float64], win_prob_hat: NDArray[np.float64], leader: int, level: float = HALF
) -> NDArray[np.float64]:
    """Per-rival GLR statistic of class A: n_{îk} · d(p̂_{îk}, c) if p̂_{îk} > c, else 0.

    Parameters
    ----------
    counts : ndarray
        K×K symmetric comparison counts.
    win_prob_hat : ndarray
        K×K empirical win probabilities (½ where unsampled).
    leader : int
        The policy being certified.
    level : float
        c = ½ − ε.

    Returns
    -------
    ndarray
        Length-K array; the leader's own entry is +inf.
    """
    row = win_prob_hat[leader]
    statistic = counts[leader] * np.asarray(kl_bernoulli(row, level))
    statistic = np.where(row > level, statistic, 0.0)
    statistic[leader] = np.inf
    return statistic


def glr_class_b(
    counts: NDArray[np.float64], win_prob_hat: NDArray[np.float64], leader: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-rival GLR statistic of class B and the witness sets.

    For each j ≠ î, Z_j = Σ_{k: p̂_kj > ½} n_jk · d(p̂_kj, ½): the evidence that j is not a
    Condorcet winner.

    Returns
    -------
    statistic : ndarray
        Length-K array; the leader's own entry is +inf.
    witnesses : ndarray of bool
        ``witnesses[k, j]`` is True when k enters the sum of rival j.
    """
    witnesses = win_prob_hat > HALF
    per_pair = np.where(witnesses, counts * np.asarray(kl_bernoulli(win_prob_hat, HALF)), 0.0)
    statistic = per_pair.sum(axis=0)
    statistic[leader] = np.inf
    return statistic, witnesses
