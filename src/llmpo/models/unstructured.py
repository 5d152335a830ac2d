"""Incremental statistics of the unstructured space (docs/statistics.md), for the ask/tell loop.

Every tell touches one pair, so the model updates that pair's estimate and divergence in pure
Python and the two affected row minima with numpy; the leader is recomputed lazily. The stopping
check first tests, in O(1), whether the leader beats every rival empirically, and only then
computes the per-rival statistics and thresholds.

Ties and fractional outcomes (docs/ties.md). An outcome y ∈ [0, 1] of a against b enters the
*decisive* statistic (``ties="decisive"``, the default) as a win of weight (2y − 1)⁺ or a loss of
weight (1 − 2y)⁺: a verdict 1 or 0 is one decisive comparison, a tie (½) none, a preference
probability 0.8 is 0.6 of a win. Per pair, α = Σ(2y − 1)⁺, β = Σ(1 − 2y)⁺, n = α + β and
p̂ = α/n; the statistic is n·d(p̂, c) and the KT threshold is paid on n (``ties="half"``, the
statistic before ties were handled: n = comparisons and p̂ = mean outcome, ties ½).

Why the KT threshold stays valid on the decisive scale, whatever the sampling rule and for any law
of y on [0, 1]: write z = 2y − 1, A = E z⁺, B = E z⁻ and p* = A/(A + B). Then a leader that is not
better (E y ≤ ½) has A ≤ B, i.e. p* ≤ ½. For each q the factor
h_q(z) = (q/p*)^{z⁺}((1−q)/(1−p*))^{z⁻} is convex on [0, 1] and on [−1, 0] and equals 1 at
z = 0, so it lies below its chords on each side:
E h_q ≤ 1 + A(q/p* − 1) + B((1−q)/(1−p*) − 1) = 1 + (q − p*)(A/p* − B/(1 − p*)) = 1. Hence
Π h_q(z_s) over the pair's comparisons — each drawn when the sampling rule asks, which only
depends on the past — is a non-negative supermartingale, so is its Beta(½, ½) mixture, and the
argument of :mod:`llmpo.stats.thresholds` (KT regret ≤ ½ log n + log 2 for real counts α, β,
Ville, d(p̂, c) ≤ d(p̂, p*) when p* ≤ c < p̂) goes through with n = α + β. For verdicts this is the
decisive-subsequence argument: the decisive comparisons of a pair are i.i.d. Bernoulli(p*) by
optional skipping, a tie multiplies nothing. The decisive statistic is never smaller than the half
one, and its threshold never larger: n·d(α/n, ½) + (N − n)·d(½, ½) ≥ N·d((α + (N − n)/2)/N, ½) by
joint convexity of (m, s) ↦ m·d(s/m, ½) (N comparisons, Σy = α + (N − n)/2), and n ≤ N.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from llmpo.errors import ConfigError
from llmpo.models.base import Certificate, PreferenceModel
from llmpo.stats.bernoulli import kl_bernoulli_scalar
from llmpo.stats.thresholds import LOG2, Threshold
from llmpo.stats.unstructured import HALF, check_ties_mode, leader_from_row_min

# Smallest divergence used when inverting 1/d for plug-in proportions: a pair whose estimate is on
# the wrong side of the level gets (almost) all the weight.
MIN_DIVERGENCE = 1e-9


class UnstructuredModel(PreferenceModel):
    """Pair counts, estimates and GLR stopping of the unstructured space.

    Parameters
    ----------
    n_policies : int
        K ≥ 2.
    delta : float
        Error probability of the certificate.
    threshold : Threshold
        Stopping threshold.
    epsilon : float
        Indifference margin: certify a leader whose every rival has p > ½ − ε (class A only).
    assume_condorcet : bool
        Class B statistics (valid only if a Condorcet winner exists).
    ties : {"decisive", "half"}
        Statistic on the decisive outcomes (default) or with ties counted ½ (module docstring).
    """

    def __init__(
        self,
        n_policies: int,
        delta: float,
        threshold: Threshold,
        epsilon: float = 0.0,
        assume_condorcet: bool = False,
        ties: str = "decisive",
    ) -> None:
        if assume_condorcet and epsilon:
            raise ConfigError("epsilon > 0 is only supported with assume_condorcet=False")
        self.ties = check_ties_mode(ties)
        self.n_policies = n_policies
        self.delta = delta
        self.threshold = threshold
        self.level = HALF - epsilon
        self.assume_condorcet = assume_condorcet
        self.n_told = 0
        self.n_pending = 0
        size = (n_policies, n_policies)
        self._counts = np.zeros(size)  # comparisons told per pair
        self._pending = np.zeros(size)
        # _decisive[a, b]: decisive weight Σ(2y − 1)⁺ of a's outcomes against b (its wins)
        self._decisive = np.zeros(size)
        # The statistic's count n and wins per pair: decisive (α + β, α) or half (N, Σy).
        self._stat_counts = np.zeros(size)
        self._stat_wins = np.zeros(size)
        self._p_masked = np.full(size, HALF)  # p̂ with +inf on the diagonal, for row minima
        np.fill_diagonal(self._p_masked, np.inf)
        unsampled = kl_bernoulli_scalar(HALF, self.level)
        # Signed divergence: +d(p̂_ab, c) when p̂_ab > c, −d(p̂_ab, c) otherwise.
        self._signed_divergence = np.full(size, -unsampled)
        np.fill_diagonal(self._signed_divergence, 0.0)
        # statistic − local threshold per pair (n·(±d) − local(n)); +inf on the diagonal so that a
        # row minimum runs over rivals only.
        self._local_margin = np.full(size, -threshold.local_scalar(0.0))
        np.fill_diagonal(self._local_margin, np.inf)
        self._row_min = np.full(n_policies, HALF)
        self._leader: int | None = None
        self._upper = np.triu_indices(n_policies, 1)
        self._least_pair_count = 0.0  # a lower bound on every pair's effective count
        # Class A errs on one of the K − 1 pairs of the true winner; class B sums over at most
        # K − 1 witness pairs of the true winner (see llmpo.stats.thresholds).
        self._log_multiplicity = (
            (n_policies - 1) * LOG2 if assume_condorcet else math.log(n_policies - 1)
        )

    # ---- updates -------------------------------------------------------------------------------
    def tell(self, a: int, b: int, outcome: float) -> None:
        self._counts[a, b] += 1.0
        self._counts[b, a] += 1.0
        win, loss = max(2.0 * outcome - 1.0, 0.0), max(1.0 - 2.0 * outcome, 0.0)
        self._decisive[a, b] += win
        self._decisive[b, a] += loss
        counts, wins = self._stat_counts, self._stat_wins
        if self.ties == "decisive":
            counts[a, b] += win + loss
            wins[a, b] += win
        else:
            counts[a, b] += 1.0
            wins[a, b] += outcome
        counts[b, a] = counts[a, b]
        wins[b, a] = counts[a, b] - wins[a, b]
        n_ab = counts[a, b]
        # A pair without decisive outcomes stays at ½, as if unsampled.
        p_ab = wins[a, b] / n_ab if n_ab > 0 else HALF
        self._p_masked[a, b] = p_ab
        self._p_masked[b, a] = 1.0 - p_ab
        local = self.threshold.local_scalar(n_ab)
        for row, col, p in ((a, b, p_ab), (b, a, 1.0 - p_ab)):
            signed = self._signed(p)
            self._signed_divergence[row, col] = signed
            self._local_margin[row, col] = n_ab * signed - local
        self._row_min[a] = self._p_masked[a].min()
        self._row_min[b] = self._p_masked[b].min()
        self._leader = None
        self.n_told += 1

    def _signed(self, p: float) -> float:
        divergence = kl_bernoulli_scalar(p, self.level)
        return divergence if p > self.level else -divergence

    def mark_pending(self, a: int, b: int) -> None:
        self._pending[a, b] += 1.0
        self._pending[b, a] += 1.0
        self.n_pending += 1

    def unmark_pending(self, a: int, b: int) -> bool:
        if self._pending[a, b] <= 0:
            return False
        self._pending[a, b] -= 1.0
        self._pending[b, a] -= 1.0
        self.n_pending -= 1
        return True

    def least_sampled_pair(self, floor: float) -> tuple[int, int] | None:
        """The pair with the fewest effective comparisons if that is below ``floor``, else None.

        Counts only grow, so the O(K²) scan runs only when ``floor`` passes the last minimum seen.
        """
        if floor <= self._least_pair_count:
            return None
        pair_counts = (self._counts + self._pending)[self._upper]
        least = int(np.argmin(pair_counts))
        self._least_pair_count = float(pair_counts[least])
        if self._least_pair_count >= floor:
            return None
        return int(self._upper[0][least]), int(self._upper[1][least])

    def effective_count(self, a: int, b: int) -> float:
        return float(self._counts[a, b] + self._pending[a, b])

    def effective_row(self, a: int) -> NDArray[np.float64]:
        """Told plus pending comparisons of ``a`` with every policy."""
        return self._counts[a] + self._pending[a]

    def effective_counts(self) -> NDArray[np.float64]:
        """K×K told plus pending comparisons."""
        return self._counts + self._pending

    def _rate(self, rows: NDArray[np.intp] | int, cols: NDArray[np.intp]) -> NDArray[np.float64]:
        """Estimated share of a pair's comparisons that count in its statistic (1 if unsampled).

        Always 1 for ``ties="half"``; for ``"decisive"`` the decisive weight per comparison so
        far, floored at 1e-3 so that a pair seen only tied still has a finite price.
        """
        counts = self._counts[rows, cols]
        told = np.maximum(counts, 1.0)
        return np.where(counts > 0, np.maximum(self._stat_counts[rows, cols] / told, 1e-3), 1.0)

    def statistic_counts(
        self, rows: NDArray[np.intp] | int, cols: NDArray[np.intp]
    ) -> NDArray[np.float64]:
        """The statistic's count n per pair, pending comparisons included at the pair's rate.

        Decisive information, not comparisons, is what the balance rule equalizes: a pair with
        80% ties gains a fifth of the count per comparison.
        """
        return self._stat_counts[rows, cols] + self._pending[rows, cols] * self._rate(rows, cols)

    def told_statistic_counts(
        self, rows: NDArray[np.intp] | int, cols: NDArray[np.intp]
    ) -> NDArray[np.float64]:
        """The statistic's count n per pair from told outcomes only (what thresholds are paid on:
        decisive comparisons by default, all comparisons for ``ties="half"``)."""
        return self._stat_counts[rows, cols].copy()

    def outcome_counts(self, a: int, b: int) -> tuple[float, float, float]:
        """Wins, ties and losses of ``a`` against ``b``.

        For verdicts these are counts; a fractional outcome y adds (2y − 1)⁺ to the wins,
        (1 − 2y)⁺ to the losses and the rest to the ties, so they always sum to the comparisons.
        """
        wins, losses = float(self._decisive[a, b]), float(self._decisive[b, a])
        return wins, float(self._counts[a, b]) - wins - losses, losses

    # ---- estimates -----------------------------------------------------------------------------
    @property
    def leader(self) -> int:
        if self._leader is None:
            self._leader = leader_from_row_min(self._row_min, self._p_masked)
        return self._leader

    def leader_wins_all(self) -> bool:
        """True when the leader beats every rival empirically by more than the level c."""
        return bool(self._row_min[self.leader] > self.level)

    def signed_divergence_row(self, a: int) -> NDArray[np.float64]:
        """±d(p̂_ak, c) for every k: positive where a beats k empirically (by more than c)."""
        return self._signed_divergence[a]

    def signed_divergence(
        self, rows: NDArray[np.intp], cols: NDArray[np.intp]
    ) -> NDArray[np.float64]:
        """±d(p̂_ab, c) for the pairs (rows[i], cols[i])."""
        return self._signed_divergence[rows, cols]

    def witnesses(self) -> NDArray[np.intp]:
        """b̂(j) = argmax_k p̂_kj = argmin_k p̂_jk: each policy's strongest opponent so far."""
        return np.argmin(self._p_masked, axis=1)

    def win_prob_hat(self) -> NDArray[np.float64]:
        matrix = self._p_masked.copy()
        np.fill_diagonal(matrix, HALF)
        return matrix

    def counts(self) -> NDArray[np.float64]:
        return self._counts.copy()

    # ---- stopping ------------------------------------------------------------------------------
    def is_certified(self) -> bool:
        leader = self.leader
        if self.assume_condorcet:
            # Every rival must lose at least one pair empirically before its statistic is > 0.
            losing = self._row_min < HALF
            if np.count_nonzero(losing) - losing[leader] < self.n_policies - 1:
                return False
            return self.certificate().certified
        if not self.leader_wins_all():
            return False
        common = self.threshold.common(self.n_told, self.delta, self._log_multiplicity)
        return bool(self._local_margin[leader].min() > common)

    def certificate(self) -> Certificate:
        leader = self.leader
        rivals = self._rivals(leader)
        t = float(self.n_told)
        if self.assume_condorcet:
            # Z_j = Σ_{k: p̂_jk < ½} n_jk d(p̂_jk, ½); d is symmetric about ½.
            losing = self._signed_divergence < 0
            per_pair = np.where(losing, -self._signed_divergence * self._stat_counts, 0.0)
            statistics = per_pair[rivals].sum(axis=1)
            thresholds = np.array(
                [
                    self.threshold.pair_set(
                        self._stat_counts[j][losing[j]], t, self.delta, self._log_multiplicity
                    )
                    for j in rivals
                ]
            )
        else:
            divergence = self._signed_divergence[leader, rivals]
            statistics = np.where(
                divergence > 0, divergence * self._stat_counts[leader, rivals], 0.0
            )
            thresholds = self.threshold.pair(
                self._stat_counts[leader, rivals], t, self.delta, self._log_multiplicity
            )
        return Certificate(leader, rivals, statistics, np.asarray(thresholds, dtype=float))

    def _rivals(self, leader: int) -> NDArray[np.intp]:
        return np.delete(np.arange(self.n_policies), leader)

    # ---- allocation ----------------------------------------------------------------------------
    def plugin_weights(self) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
        """w*(p̂): the closed form of docs/statistics.md at the current estimates.

        Returns rows, columns and shares (of comparisons) of the pairs with positive weight: w ∝
        1/(r̂·d(p̂, c)) with r̂ the pair's estimated decisive rate (1 for ``ties="half"``). Pairs
        whose estimate sits on the wrong side of the level get divergence 1e-9, so they take
        nearly all weight.
        """
        leader = self.leader
        if self.assume_condorcet:
            cols = self._rivals(leader)
            rows = self.witnesses()[cols]
            divergence = self._signed_divergence[rows, cols]
        else:
            cols = self._rivals(leader)
            rows = np.full(cols.shape, leader)
            divergence = self._signed_divergence[leader, cols]
        inverse = 1.0 / np.maximum(divergence * self._rate(rows, cols), MIN_DIVERGENCE)
        return rows, cols, inverse / inverse.sum()

    def target_proportions(self) -> list[tuple[int, int, float]]:
        rows, cols, shares = self.plugin_weights()
        return [
            (int(min(a, b)), int(max(a, b)), float(w))
            for a, b, w in zip(rows, cols, shares, strict=True)
        ]
