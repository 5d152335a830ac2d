"""Incremental statistics of the structured space (DESIGN §3): Bradley–Terry with policy features.

The model keeps one record per *distinct* pair compared (its difference vector, count and sum of
outcomes) in arrays that grow by doubling, and pending counts in a dictionary, so the cost of an
update depends on the number of distinct pairs seen, not on t, and nothing is K×K. The ridge MLE
θ̂ is refreshed by warm-started Newton when it is next needed (usually one or two steps).

Stopping (GLR). Z_j = LL(θ̂) − max_{λ: λᵀ(x_j − x_î) = 0} LL(λ) for each rival j of the leader
î = argmax θ̂ᵀx. Checking it exactly needs one constrained fit per rival, so a Gaussian screen
comes first: Z_j ≈ Δ_j² / (2 y_jᵀ H⁻¹ y_j) with y_j = x_î − x_j, Δ_j = θ̂ᵀy_j and H the observed
information. The exact fits run only when every screened value exceeds half the threshold, in
increasing order of the screened value, and stop at the first rival that fails. The screen only
decides *when* the exact rule is evaluated, never what it concludes, so it cannot affect
δ-correctness (the thresholds hold uniformly in time).

Thresholds (``threshold`` argument):

* ``"universal"`` (:class:`UniversalInferenceThreshold`, the default of the structured space) —
  valid, grows like (d/2)·log t, not with the number of pairs. Universal inference (Wasserman,
  Ramdas & Balakrishnan 2020, "Universal inference", PNAS; sequential version §7): let
  M_t = Σ_{s≤t} log p_{θ̃_{s−1}}(y_s), where θ̃_{s−1} is the estimate held *before* outcome s was
  told (so it is predictable) and p_θ(y) = σ(θᵀz)^y (1 − σ(θᵀz))^{1−y}. For the true θ,
  exp(M_t − LL_t(θ)) is a non-negative supermartingale with initial value 1 (each factor
  (q/p)^y((1−q)/(1−p))^{1−y} has mean ≤ 1 for any outcome law on [0, 1] with mean p, by
  convexity in y — which covers ties counted ½). By Ville's inequality
  P(∃t: M_t − LL_t(θ) ≥ log(1/δ)) ≤ δ. The rule stops when min_j [M_t − max_{Alt_j} LL] >
  log(1/δ); if it stops with î ≠ i*, then θ lies in Alt_{i*} (θᵀ(x_{i*} − x_î) > 0), so
  max_{Alt_{i*}} LL ≥ LL(θ) and the event above has happened: error probability ≤ δ, with no
  union over rivals. Written as a GLR, the rule is Z_j > log(1/δ) + [LL(θ̂) − M_t]: the
  threshold is log(1/δ) plus the regret of the predictions, ≈ (d/2) log t.
* ``"kt"`` — the saturated-model KT threshold of DESIGN §3(a), valid:
  β = log(1/δ) + Σ_{ab: n_ab>0} (½ log n_ab + log 2). Z_{i*} ≤ LL(θ̂) − LL(θ) ≤
  Σ_ab n_ab d(p̂_ab, p_ab) (the saturated model fits each pair freely), and the product over
  pairs of the KT-mixture ratios of :mod:`llmpo.stats.thresholds` is a supermartingale. It grows
  with the number of distinct pairs sampled, so it suits small K.
* ``"gk16-heuristic"`` — log((1 + log t)/δ), no proof; for comparison only.

Validity needs max_{Alt_j} LL exactly (an underestimate would inflate Z_j): a rival whose
constrained Newton fit does not converge counts as not ruled out. θ̂ itself may be any estimate:
the universal rule does not depend on it (it cancels), and a θ̂ below the MLE only lowers the KT
rule's Z.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, log_expit
from scipy.stats import norm

from llmpo.models.base import Certificate, PreferenceModel
from llmpo.stats.structured import (
    StructuredAllocation,
    candidate_pairs,
    fisher_frank_wolfe,
    fit_constrained_mle,
    fit_mle,
    log_likelihood,
)
from llmpo.stats.thresholds import Threshold, UniversalInferenceThreshold

# Ridge penalty of θ̂: a N(0, I) prior that keeps estimates finite before the data identify θ
# (separable outcomes); its weight vanishes against t comparisons.
RIDGE = 1.0
# Exact GLR fits run only when every Gaussian-screened statistic exceeds this share of β.
SCREEN_SHARE = 0.5
# Regularization η of the Fisher program solved inside the loop (DESIGN §3: ~1% cost in T*).
FISHER_REGULARIZATION = 1e-3
# Frank–Wolfe steps per lazy re-solve of w*(θ̂), and the cap on the age of a warm start (so that
# later steps can still move the weights when θ̂ has moved).
SOLVER_ITERATIONS = 200
MAX_WARM_START_AGE = 400
# Lazy re-solve schedule of w*(θ̂): at t ≥ RESOLVE_GROWTH × (t of the last solve), or when the
# leader changes.
RESOLVE_GROWTH = 1.25


class StructuredModel(PreferenceModel):
    """Pair statistics, ridge MLE, leader and GLR stopping of the structured space.

    Parameters
    ----------
    features : ndarray
        K × d feature matrix, validated by :class:`~llmpo.spaces.Structured`.
    delta : float
        Error probability of the certificate.
    threshold : Threshold
        :class:`~llmpo.stats.thresholds.UniversalInferenceThreshold` (default of the space),
        :class:`~llmpo.stats.thresholds.KTThreshold` (saturated model) or the GK16 heuristic.
    """

    def __init__(self, features: NDArray[np.float64], delta: float, threshold: Threshold) -> None:
        self.features = np.asarray(features, float)
        self.n_policies, self.dimension = self.features.shape
        self.delta = delta
        self.threshold = threshold
        self.n_told = 0
        self.n_pending = 0
        self._index: dict[tuple[int, int], int] = {}  # (a, b), a < b → row in the arrays below
        capacity = 16
        self._rows = np.zeros(capacity, dtype=np.intp)
        self._cols = np.zeros(capacity, dtype=np.intp)
        self._differences = np.zeros((capacity, self.dimension))
        self._counts = np.zeros(capacity)
        self._wins = np.zeros(capacity)  # outcomes of rows[k] against cols[k], ties ½
        self._pending: dict[tuple[int, int], int] = {}
        self._theta = np.zeros(self.dimension)
        self._stale = False  # θ̂ lags the data
        self._leader = 0
        # Σ_s log p_{θ̃_{s−1}}(y_s): the universal-inference running log-likelihood.
        self.predictive_log_likelihood = 0.0
        self._allocation: StructuredAllocation | None = None
        self._allocation_time = 0
        self._solver_age = 0  # Frank–Wolfe steps behind the current warm start

    # ---- updates -------------------------------------------------------------------------------
    @property
    def n_pairs(self) -> int:
        """Distinct pairs compared so far."""
        return len(self._index)

    def _slot(self, a: int, b: int) -> tuple[int, bool]:
        """Row of the pair {a, b} (created if new) and whether a is its first policy."""
        key = (a, b) if a < b else (b, a)
        slot = self._index.get(key)
        if slot is None:
            slot = len(self._index)
            if slot == self._counts.size:
                self._grow()
            self._index[key] = slot
            self._rows[slot], self._cols[slot] = key
            self._differences[slot] = self.features[key[0]] - self.features[key[1]]
        return slot, a < b

    def _grow(self) -> None:
        size = 2 * self._counts.size

        def grown(array: NDArray) -> NDArray:
            bigger = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
            bigger[: array.shape[0]] = array
            return bigger

        self._rows, self._cols = grown(self._rows), grown(self._cols)
        self._counts, self._wins = grown(self._counts), grown(self._wins)
        self._differences = grown(self._differences)

    def tell(self, a: int, b: int, outcome: float) -> None:
        slot, forward = self._slot(a, b)
        win = outcome if forward else 1.0 - outcome
        # Universal inference: score the outcome with the estimate built before it.
        margin = float(self._differences[slot] @ self.estimate())
        self.predictive_log_likelihood += win * float(log_expit(margin)) + (1.0 - win) * float(
            log_expit(-margin)
        )
        self._counts[slot] += 1.0
        self._wins[slot] += win
        self.n_told += 1
        self._stale = True

    def mark_pending(self, a: int, b: int) -> None:
        key = (a, b) if a < b else (b, a)
        self._pending[key] = self._pending.get(key, 0) + 1
        self.n_pending += 1

    def unmark_pending(self, a: int, b: int) -> bool:
        key = (a, b) if a < b else (b, a)
        count = self._pending.get(key, 0)
        if count == 0:
            return False
        if count == 1:
            del self._pending[key]
        else:
            self._pending[key] = count - 1
        self.n_pending -= 1
        return True

    def effective_count(self, a: int, b: int) -> float:
        key = (a, b) if a < b else (b, a)
        slot = self._index.get(key)
        told = self._counts[slot] if slot is not None else 0.0
        return float(told + self._pending.get(key, 0))

    # ---- estimates -----------------------------------------------------------------------------
    def pair_statistics(
        self,
    ) -> tuple[
        NDArray[np.intp],
        NDArray[np.intp],
        NDArray[np.float64],
        NDArray[np.float64],
        NDArray[np.float64],
    ]:
        """Rows, columns, differences, counts and wins of the distinct pairs told (views)."""
        m = self.n_pairs
        return (
            self._rows[:m],
            self._cols[:m],
            self._differences[:m],
            self._counts[:m],
            self._wins[:m],
        )

    def estimate(self) -> NDArray[np.float64]:
        """θ̂: the ridge MLE (refreshed by warm-started Newton if outcomes arrived since)."""
        if self._stale:
            _, _, z, n, s = self.pair_statistics()
            self._theta = fit_mle(z, n, s, ridge=RIDGE, start=self._theta)
            self._leader = int(np.argmax(self.features @ self._theta))
            self._stale = False
        return self._theta

    @property
    def leader(self) -> int:
        self.estimate()
        return self._leader

    def utilities(self) -> NDArray[np.float64]:
        """Estimated utilities θ̂ᵀx_i of all policies (untested ones included)."""
        return self.features @ self.estimate()

    def observed_information(self, include_pending: bool = False) -> NDArray[np.float64]:
        """Σ n_ab σ(1 − σ) z zᵀ at θ̂ plus the ridge (d × d); optionally counting pending pairs."""
        theta = self.estimate()
        _, _, z, n, _ = self.pair_statistics()
        p = expit(z @ theta)
        information = (z.T * (n * p * (1.0 - p))) @ z + RIDGE * np.eye(self.dimension)
        if include_pending and self._pending:
            keys = list(self._pending)
            zp = self.features[[a for a, _ in keys]] - self.features[[b for _, b in keys]]
            pp = expit(zp @ theta)
            weights = np.fromiter(self._pending.values(), float) * pp * (1.0 - pp)
            information += (zp.T * weights) @ zp
        return information

    def utility_intervals(self, level: float = 0.95) -> NDArray[np.float64]:
        """Wald intervals (K × 2) of the utilities relative to the leader's, at this level.

        Utilities are identified only up to directions the features leave free, so the interval
        of i is for θᵀ(x_i − x_î), from the observed information; approximate, not anytime-valid.
        """
        gaps = self.features - self.features[self.leader]
        solved = np.linalg.solve(self.observed_information(), gaps.T)
        spread = norm.ppf(0.5 + level / 2) * np.sqrt(np.einsum("kd,dk->k", gaps, solved))
        centre = gaps @ self.estimate()
        return np.column_stack([centre - spread, centre + spread])

    def gaussian_statistics(
        self, include_pending: bool = False
    ) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
        """Screened GLR Δ_j²/(2 y_jᵀH⁻¹y_j) of every rival j, the rivals and their alternatives.

        The alternative λ_j = θ̂ − (Δ_j / y_jᵀH⁻¹y_j) H⁻¹y_j is the closest point of the
        hyperplane λᵀy_j = 0 in the metric of the observed information H (DESIGN §3, Fisher form).
        """
        theta = self.estimate()
        leader = self._leader
        rivals = np.delete(np.arange(self.n_policies), leader)
        gaps = self.features[leader] - self.features[rivals]
        delta = gaps @ theta
        solved = np.linalg.solve(self.observed_information(include_pending), gaps.T)
        quadratic = np.einsum("jd,dj->j", gaps, solved)
        alternatives = theta - (delta / quadratic)[:, None] * solved.T
        return rivals, delta**2 / (2.0 * quadratic), alternatives

    # ---- stopping ------------------------------------------------------------------------------
    def stopping_threshold(self) -> float:
        """β_t(δ), the same for every rival (see the module docstring)."""
        theta = self.estimate()
        log_inverse_delta = math.log(1.0 / self.delta)
        if isinstance(self.threshold, UniversalInferenceThreshold):
            _, _, z, n, s = self.pair_statistics()
            regret = log_likelihood(theta, z, n, s) - self.predictive_log_likelihood
            return log_inverse_delta + regret
        counts = self.pair_statistics()[3]
        return self.threshold.pair_set(counts, float(self.n_told), self.delta, 0.0)

    def exact_statistic(self, rival: int, start: NDArray[np.float64] | None = None) -> float:
        """Z_j = LL(θ̂) − max_{λᵀ(x_j − x_î) = 0} LL(λ); 0 if the constrained fit fails."""
        theta = self.estimate()
        _, _, z, n, s = self.pair_statistics()
        fit = fit_constrained_mle(
            z,
            n,
            s,
            self.features[rival] - self.features[self._leader],
            start=theta if start is None else start,
        )
        if not fit.converged:
            return 0.0
        return max(log_likelihood(theta, z, n, s) - fit.log_likelihood, 0.0)

    def is_certified(self) -> bool:
        if self.n_told == 0:
            return False
        threshold = self.stopping_threshold()
        rivals, screened, alternatives = self.gaussian_statistics()
        if screened.min() <= SCREEN_SHARE * threshold:
            return False
        for k in np.argsort(screened):
            if self.exact_statistic(int(rivals[k]), alternatives[k]) <= threshold:
                return False
        return True

    def certificate(self) -> Certificate:
        threshold = self.stopping_threshold()
        rivals, _, alternatives = self.gaussian_statistics()
        statistics = np.array(
            [self.exact_statistic(int(j), lam) for j, lam in zip(rivals, alternatives, strict=True)]
        )
        return Certificate(self._leader, rivals, statistics, np.full(rivals.size, threshold))

    # ---- allocation ----------------------------------------------------------------------------
    def plugin_allocation(self) -> StructuredAllocation:
        """w*(θ̂) from Frank–Wolfe on the Fisher form, re-solved lazily and warm-started.

        Schedule: the program is solved again when t has grown by the factor 1.25 since the last
        solve (t = 1.25^k, k = 1, 2, …: O(log t) solves in a run) or when the leader changed
        (w* then changes discontinuously; the solve starts afresh). Otherwise each solve starts
        from the previous weights, on the candidate pairs of :func:`candidate_pairs` at θ̂ plus
        the previous support.
        """
        leader = self.leader
        t = self.n_told + self.n_pending
        previous = self._allocation
        if (
            previous is not None
            and previous.best == leader
            and t < RESOLVE_GROWTH * max(self._allocation_time, 1)
        ):
            return previous
        theta = self.estimate()
        rows, cols = candidate_pairs(self.features, theta)
        start, age = None, 0
        if previous is not None and previous.best == leader:
            support = previous.shares > 0
            keys = np.concatenate([
                rows * self.n_policies + cols,
                previous.rows[support] * self.n_policies + previous.cols[support],
            ])
            keys = np.unique(keys)
            rows, cols = keys // self.n_policies, keys % self.n_policies
            start = np.zeros(keys.size)
            previous_keys = previous.rows[support] * self.n_policies + previous.cols[support]
            start[np.searchsorted(keys, previous_keys)] = previous.shares[support]
            age = min(self._solver_age, MAX_WARM_START_AGE)
        self._allocation = fisher_frank_wolfe(
            self.features, theta, (rows, cols), leader, start, age, SOLVER_ITERATIONS,
            FISHER_REGULARIZATION,
        )
        self._solver_age = age + SOLVER_ITERATIONS
        self._allocation_time = t
        return self._allocation

    def target_proportions(self) -> list[tuple[int, int, float]]:
        return [(a, b, share) for a, b, share in self.plugin_allocation().support()]

    def win_prob_hat(self) -> NDArray[np.float64]:
        utilities = self.utilities()
        return expit(utilities[:, None] - utilities[None, :])

    def counts(self) -> NDArray[np.float64]:
        matrix = np.zeros((self.n_policies, self.n_policies))
        rows, cols, _, n, _ = self.pair_statistics()
        matrix[rows, cols] = n
        matrix[cols, rows] = n
        return matrix
