"""Statistics of the unstructured policy space (docs/statistics.md): no model of the win
probabilities.

A preference matrix ``win_prob`` is K×K with ``win_prob[i, j] = P(i ≻ j)``, ``win_prob[i, j] +
win_prob[j, i] = 1`` and ½ on the diagonal. The optimal policy is the Condorcet winner i*.

Proportions over pairs are returned as a symmetric K×K matrix ``W``: ``W[a, b] = W[b, a]`` is the
share of comparisons spent on the pair {a, b}, so the shares over a < b sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from llmpo.stats.bernoulli import kl_bernoulli, kl_confidence

HALF = 0.5


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
        raise ValueError(
            "win_prob has no Condorcet winner: no policy beats every other with p > 1/2"
        )
    return best


def best_witnesses(win_prob: ArrayLike) -> NDArray[np.intp]:
    """b(j) = argmax_{k≠j} P(k ≻ j): each policy's strongest opponent (class B)."""
    matrix = np.array(win_prob, dtype=float)
    np.fill_diagonal(matrix, -np.inf)
    return np.argmax(matrix, axis=0)


def optimal_allocation(
    win_prob: ArrayLike, assume_condorcet: bool = False, epsilon: float = 0.0
) -> Allocation:
    """Closed-form optimal proportions w* and characteristic time T* (docs/statistics.md).

    Class A (default): only the pairs (i*, k) get weight, w*_{i*k} ∝ 1/d(p_{i*k}, ½ − ε), and
    T* = Σ_k 1/d(p_{i*k}, ½ − ε). Class B (``assume_condorcet=True``): each rival j is ruled out by
    its strongest opponent b(j); w* ∝ 1/d(p_{b(j)j}, ½) on the pairs (b(j), j).

    Parameters
    ----------
    win_prob : array_like
        K×K preference matrix with a Condorcet winner.
    assume_condorcet : bool
        Class B: only valid when a Condorcet winner is known to exist.
    epsilon : float
        Indifference margin (class A only): certify a policy whose every rival has p > ½ − ε.

    Returns
    -------
    Allocation
        The optimal policy, T* and the proportions.
    """
    matrix = np.asarray(win_prob, dtype=float)
    best = _require_winner(matrix)
    n_policies = matrix.shape[0]
    if assume_condorcet:
        if epsilon:
            raise ValueError("epsilon > 0 is only supported with assume_condorcet=False")
        rivals = np.array([j for j in range(n_policies) if j != best])
        witnesses = best_witnesses(matrix)[rivals]
        information = np.asarray(kl_bernoulli(matrix[witnesses, rivals], HALF))
        rows, cols = witnesses, rivals
    else:
        rivals = np.array([k for k in range(n_policies) if k != best])
        information = np.asarray(kl_bernoulli(matrix[best, rivals], HALF - epsilon))
        rows, cols = np.full(rivals.shape, best), rivals
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
