"""Incremental statistics of the structured space (docs/structured.md): Bradley–Terry with policy
features.

The model keeps one record per *distinct* pair compared (its difference vector, count and sum of
outcomes) in arrays that grow by doubling, and pending counts in a dictionary, so the cost of an
update depends on the number of distinct pairs seen, not on t, and nothing is K×K. The ridge MLE
θ̂ is refreshed by warm-started Newton when it is next needed (usually one or two steps).

Stopping (GLR). Z_j = LL(θ̂) − max_{λ: λᵀ(x_j − x_î) = γ} LL(λ) for each rival j of the leader
î = argmax θ̂ᵀx (γ = logit(½ + ε), 0 for exact identification). Checking it exactly needs one
constrained fit per rival, so a Gaussian screen comes first: Z_j ≈ (Δ_j + γ)² / (2 y_jᵀ H⁻¹ y_j)
with y_j = x_î − x_j, Δ_j = θ̂ᵀy_j and H the observed information. Nothing exact runs while the
smallest screened value is below half the threshold. Then a provable lower bound on every Z_j
(self-concordance of the logistic loss, :meth:`StructuredModel.statistic_lower_bounds`, O(K·d²)
for all rivals) clears the rivals far beyond the threshold, and constrained fits run only for the
rest, weakest first, stopping at the first that fails. The screen only decides *when* the exact
rule is evaluated and the bound is a proven bound, so neither can affect δ-correctness (the
thresholds hold uniformly in time).

Thresholds (``threshold`` argument):

* ``"universal"`` (:class:`UniversalInferenceThreshold`; ``"hybrid-lean"``, the default, is it
  at 0.9δ or a direct test per rival) —
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
* ``"mixture"`` (:class:`GaussianMixtureThreshold`) — valid, grows with the information
  gathered: β_t = log(1/δ) + (ρ/2)‖θ̂‖² + ½ log det(I + B_t/ρ). Proof. Let
  Λ_t = ∫ exp(LL_t(θ) − LL_t(θ*)) N(θ; 0, I/ρ) dθ, the mixture of likelihood ratios (Robbins
  1970; the "method of mixtures" of Abbasi-Yadkori, Pál & Szepesvári 2011 and de la Peña et al.).
  For each θ, exp(LL_t(θ) − LL_t(θ*)) is a non-negative supermartingale with initial value 1
  (one factor per comparison, of mean ≤ 1 by the convexity argument above, ties included;
  the pair compared is chosen before its outcome is seen), and by Tonelli so is Λ_t; Ville:
  P(∃t: log Λ_t ≥ log(1/δ)) ≤ δ. A computable lower bound of log ∫ e^{LL_t} dN: each pair's
  term n log σ(u) − (n − s)u, u = θᵀz, is bounded below by the Jaakkola–Jordan quadratic
  log σ(u) ≥ log σ(ξ) + (u − ξ)/2 − (c(ξ)/2)(u² − ξ²), c(ξ) = tanh(ξ/2)/(2ξ) ≤ ¼, tangent at
  ξ = θ̂ᵀz (Jaakkola & Jordan 2000). Summed, LL_t(θ) ≥ LL_t(θ̂) + gᵀ(θ − θ̂) −
  ½(θ − θ̂)ᵀB_t(θ − θ̂) with g = ∇LL_t(θ̂) and B_t = Σ n_k c(ξ_k) z_k z_kᵀ, for any θ̂. The
  Gaussian integral of the right side is LL_t(θ̂) − (ρ/2)‖θ̂‖² + ½rᵀ(B_t + ρI)⁻¹r −
  ½ log det(I + B_t/ρ) with r = g − ρθ̂, at least LL_t(θ̂) − (ρ/2)‖θ̂‖² − ½ log det(I + B_t/ρ).
  So Z_j > β_t for j = i* implies log Λ_t > log(1/δ) (as for ``universal``, max_{Alt_{i*}} LL ≥
  LL(θ*)): error probability ≤ δ, with no union over rivals and whatever θ̂ is. For one-hot
  features and p near ½, c ≈ ¼ is the Fisher information, so the regret is ≈ (d/2) log t less
  what the allocation leaves unexplored.
* ``"hybrid"`` and ``"hybrid-lean"`` (:class:`HybridThreshold`) — valid, "whichever certifies first"
  of the structured statistic and the unstructured (one-pair) one, rival by rival, with δ split as
  (1 − η)δ + ηδ (η = ½ for ``hybrid``, 0.1 for ``hybrid-lean``): a rival j is ruled out when Z_j
  exceeds the structured threshold at (1 − η)δ — the mixture one for ``hybrid``, the
  universal-inference one for ``hybrid-lean`` — or when the direct test clears it: with n
  comparisons of pairs whose difference is ±(x_î − x_j), of which the î side won a share p̂ > ½ − ε,
  n·kl(p̂, ½ − ε) > log((K − 1)/(ηδ)) + ½ log n + log 2. Proof. If the rule stops on î ≠ i*, rival
  i* was ruled out by one of the two. (a) has probability ≤ (1 − η)δ (the universal or mixture
  argument above with δ replaced by (1 − η)δ: Ville at level 1/((1 − η)δ)). (b): the pairs whose
  difference is x_î − x_{i*} share the win probability p = σ(θ*ᵀ(x_î − x_{i*})) ≤ ½ − ε, so n·kl(p̂,
  ½ − ε) ≤ n·kl(p̂, p) ≤ log(KT_n/L_n(p)) + ½ log n + log 2 (the KT bound of
  :mod:`llmpo.stats.thresholds`), and KT_n/L_n(p) is a non-negative supermartingale; Ville bounds
  its crossing of (K − 1)/(ηδ) by ηδ/(K − 1). î ranges over the K − 1 policies other than i*, so at
  most K − 1 such pooled sequences exist: (b) has probability ≤ ηδ, and the union of (a) and (b) ≤
  δ. The two events need no independence (a union bound), and the per-rival "or" rules out at least
  every rival that the global "either rule certifies" would. The direct test needs no d-dimensional
  regret, so for a close rival in high dimension it certifies long before the structured statistic;
  with factor features it pools every pair that differs in the same factor levels. A smaller η costs
  the direct route log(½/η) nats and saves the structured route log((1 − η)/½) (``hybrid-lean``: 1.6
  and 0.59); ``hybrid-lean`` then pays log(1/0.9) ≈ 0.11 nats over ``universal`` where the direct
  route certifies nothing.
* ``"kt"`` — the saturated-model KT threshold of docs/structured.md (a), valid:
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

# ndtri is the normal quantile: scipy.stats costs ~0.5 s to import.
from scipy.special import expit, log_expit, logit, ndtri

from llmpo.models.base import Certificate, Pair, PreferenceModel
from llmpo.stats.bernoulli import kl_bernoulli
from llmpo.stats.structured import (
    StructuredAllocation,
    candidate_pairs,
    fisher_frank_wolfe,
    fit_constrained_mle,
    fit_mle,
    log_likelihood,
    log_likelihood_gradient,
)
from llmpo.stats.thresholds import (
    LOG2,
    GaussianMixtureThreshold,
    HybridThreshold,
    Threshold,
    UniversalInferenceThreshold,
)
from llmpo.stats.unstructured import check_ties_mode

# Ridge penalty of θ̂: a N(0, I) prior that keeps estimates finite before the data identify θ
# (separable outcomes); its weight vanishes against t comparisons.
RIDGE = 1.0
# Exact GLR fits run only when every Gaussian-screened statistic exceeds this share of β.
SCREEN_SHARE = 0.5
# Rivals whose bounds are checked before those of all the others.
PRECHECKED_RIVALS = 8
# Largest violation of the duality bound's linear constraint, relative to Σ n_k‖z_k‖₁, that is
# accepted as rounding.
FEASIBILITY_TOLERANCE = 1e-10
# Rivals per block of the duality bound (memory: pairs × DUAL_CHUNK floats).
DUAL_CHUNK = 512
# Most exact constrained fits in one certificate (the other rivals get their provable bound).
MAX_EXACT_REPORTED = 200
# Regularization η of the Fisher program solved inside the loop (docs/structured.md: ~1% in T*).
FISHER_REGULARIZATION = 1e-3
# Frank–Wolfe steps per lazy re-solve of w*(θ̂), and the cap on the age of a warm start (so that
# later steps can still move the weights when θ̂ has moved).
SOLVER_ITERATIONS = 200
MAX_WARM_START_AGE = 400
# Lazy re-solve schedule of w*(θ̂): at t ≥ RESOLVE_GROWTH × (t of the last solve), or when the
# leader changes.
RESOLVE_GROWTH = 1.25


def jaakkola_jordan_curvature(margins: NDArray[np.float64]) -> NDArray[np.float64]:
    """c(ξ) = tanh(ξ/2)/(2ξ), ¼ at ξ = 0: curvature of the quadratic lower bound of log σ tangent
    at ±ξ (Jaakkola & Jordan 2000): log σ(u) ≥ log σ(ξ) + (u − ξ)/2 − (c(ξ)/2)(u² − ξ²)."""
    xi = np.abs(np.asarray(margins, float))
    small = xi < 1e-6
    safe = np.where(small, 1.0, xi)
    # tanh(ξ/2)/(2ξ) = ¼ − ξ²/96 + …: the series below 1e-6 avoids 0/0.
    return np.where(small, 0.25 - xi**2 / 96.0, np.tanh(safe / 2.0) / (2.0 * safe))


def _log_det_information(
    z: NDArray[np.float64], n: NDArray[np.float64], theta: NDArray[np.float64], precision: float
) -> float:
    """log det(I + B/ρ) with B = Σ_k n_k c(|θᵀz_k|) z_k z_kᵀ (Jaakkola–Jordan curvatures)."""
    curvature = n * jaakkola_jordan_curvature(z @ theta)
    matrix = np.eye(z.shape[1]) + (z.T * curvature) @ z / precision
    sign, value = np.linalg.slogdet(matrix)
    return float(value) if sign > 0 else math.inf


def _canonical(difference: NDArray[np.float64]) -> tuple[bytes, int]:
    """Key of ±difference (first non-zero entry positive) and the sign that maps it there."""
    nonzero = np.flatnonzero(difference)
    sign = -1 if nonzero.size and difference[nonzero[0]] < 0 else 1
    # + 0.0 turns −0.0 into 0.0, so equal vectors give equal bytes.
    return (sign * difference + 0.0).tobytes(), sign


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
    epsilon : float
        Indifference margin ε ∈ [0, ½) on the win-probability scale: certify a policy î with
        P(î ≻ j) > ½ − ε for every j, i.e. θᵀ(x_j − x_î) < γ = logit(½ + ε). The alternative of
        rival j is then {λ : λᵀ(x_j − x_î) ≥ γ}; if the rule stops on a policy that is not
        ε-optimal, θ lies in the alternative of i*, which is all the proofs of the thresholds use.
    """

    def __init__(
        self,
        features: NDArray[np.float64],
        delta: float,
        threshold: Threshold,
        epsilon: float = 0.0,
        ties: str = "decisive",
    ) -> None:
        self.ties = check_ties_mode(ties)
        self.features = np.asarray(features, float)
        self.n_policies, self.dimension = self.features.shape
        self.delta = delta
        self.threshold = threshold
        self.epsilon = epsilon
        #: γ = logit(½ + ε): a rival counts as better only when it leads by γ in utility.
        self.margin = float(logit(0.5 + epsilon))
        self._gaps_leader = -1
        self._rivals = np.zeros(0, dtype=np.intp)
        self._gaps = np.zeros((0, self.dimension))
        self._exact_cache: dict[int, float] = {}
        self._exact_cache_time = -1
        #: Constrained fits run by the last :meth:`is_certified` that passed the screen.
        self.exact_fits_last_check = 0
        self.n_told = 0
        self.n_pending = 0
        self._index: dict[tuple[int, int], int] = {}  # (a, b), a < b → row in the arrays below
        capacity = 16
        self._rows = np.zeros(capacity, dtype=np.intp)
        self._cols = np.zeros(capacity, dtype=np.intp)
        self._differences = np.zeros((capacity, self.dimension))
        self._counts = np.zeros(capacity)
        self._wins = np.zeros(capacity)  # outcomes of rows[k] against cols[k], ties ½
        self._told = np.zeros(capacity)  # comparisons told per pair (_counts: their weight)
        self._told_weight = 0.0  # Σ _counts: the comparisons' weight (n_told when no tie)
        self._sorted_keys: tuple[int, NDArray[np.intp], NDArray[np.intp]] | None = None
        self._pending: dict[tuple[int, int], int] = {}
        self._theta = np.zeros(self.dimension)
        self._stale = False  # θ̂ lags the data
        self._leader = 0
        # Σ_s log p_{θ̃_{s−1}}(y_s): the universal-inference running log-likelihood.
        self.predictive_log_likelihood = 0.0
        self._allocation: StructuredAllocation | None = None
        self._allocation_time = 0
        self._solver_age = 0  # Frank–Wolfe steps behind the current warm start
        # Pairs with the same feature difference share one win probability (hybrid threshold):
        # canonical difference → [(slot, ±1: the slot's difference is ± the canonical one)].
        self._groups: dict[bytes, list[tuple[int, int]]] = {}
        self._threshold_cache: tuple[int, float] = (-1, math.nan)  # (n_told, β)
        # (n_told, leader, rival → (comparisons, î-side wins) pooled by the direct test)
        self._direct_tallies: tuple[int, int, dict[int, tuple[float, float]]] = (-1, -1, {})

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
            group, sign = _canonical(self._differences[slot])
            self._groups.setdefault(group, []).append((slot, sign))
        return slot, a < b

    def _grow(self) -> None:
        size = 2 * self._counts.size

        def grown(array: NDArray) -> NDArray:
            bigger = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
            bigger[: array.shape[0]] = array
            return bigger

        self._rows, self._cols = grown(self._rows), grown(self._cols)
        self._counts, self._wins = grown(self._counts), grown(self._wins)
        self._told = grown(self._told)
        self._differences = grown(self._differences)

    def tell(self, a: int, b: int, outcome: float) -> None:
        slot, forward = self._slot(a, b)
        win = outcome if forward else 1.0 - outcome
        # ties="decisive": Bradley–Terry on the decisive outcomes. y enters with weight |2y − 1|
        # as a win or a loss, so a tie adds nothing to the likelihood; under the Davidson tie
        # model P(a wins | not a tie) = σ(θᵀ(x_a − x_b)) exactly, and the universal-inference
        # factors of the decisive outcomes keep mean ≤ 1 (docs/ties.md).
        weight = 1.0
        if self.ties == "decisive":
            weight, win = abs(2.0 * win - 1.0), float(win > 0.5)
        # Universal inference: score the outcome with the estimate built before it.
        margin = float(self._differences[slot] @ self.estimate())
        self.predictive_log_likelihood += weight * (
            win * float(log_expit(margin)) + (1.0 - win) * float(log_expit(-margin))
        )
        self._counts[slot] += weight
        self._wins[slot] += weight * win
        self._told[slot] += 1.0
        self._told_weight += weight
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
        """Comparisons of {a, b} told or pending, ties included: what sampling rules count (a
        pair that keeps tying is sampled, not starved of its exploration for ever)."""
        key = (a, b) if a < b else (b, a)
        slot = self._index.get(key)
        told = self._told[slot] if slot is not None else 0.0
        return float(told + self._pending.get(key, 0))

    def decisive_shares(
        self, rows: NDArray[np.intp], cols: NDArray[np.intp]
    ) -> NDArray[np.float64] | None:
        """Estimated information per comparison of the pairs (rows[k], cols[k]), in (0, 1].

        With ``ties="decisive"`` a tie adds nothing to the likelihood, so a comparison of a pair
        is worth its chance of being decisive. Estimate, per pair: (weight told + 2g) /
        (comparisons told + 2), shrunk toward the share g over all pairs (Laplace). None while no
        comparison has lost weight (no ties: every pair is worth a whole comparison). Sampling
        uses it to stop spending comparisons on pairs that keep tying; validity does not depend
        on it.
        """
        overall = self._overall_decisive_share()
        if overall is None:
            return None
        m, k = self.n_pairs, self.n_policies
        if self._sorted_keys is None or self._sorted_keys[0] != m:  # a pair was added since
            told_keys = self._rows[:m] * k + self._cols[:m]  # rows[s] < cols[s] for every slot
            by_key = np.argsort(told_keys)
            self._sorted_keys = (m, told_keys[by_key], by_key)
        _, sorted_keys, by_key = self._sorted_keys
        keys = np.minimum(rows, cols) * k + np.maximum(rows, cols)
        found = np.minimum(np.searchsorted(sorted_keys, keys), m - 1)
        slots = by_key[found]
        known = sorted_keys[found] == keys
        pair_shares = (self._counts[slots] + 2.0 * overall) / (self._told[slots] + 2.0)
        return np.where(known, pair_shares, overall)

    def _overall_decisive_share(self) -> float | None:
        """g = (weight told + 1)/(comparisons told + 2); None while no comparison has tied."""
        if self._told_weight >= self.n_told:
            return None
        return (self._told_weight + 1.0) / (self.n_told + 2.0)

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
        spread = ndtri(0.5 + level / 2) * np.sqrt(np.einsum("kd,dk->k", gaps, solved))
        centre = gaps @ self.estimate()
        return np.column_stack([centre - spread, centre + spread])

    def feature_effects(self, level: float = 0.95) -> NDArray[np.float64]:
        """θ̂ with Wald intervals (d × 3: estimate, low, high) at this level: the effect of each
        feature on the utility, for one-hot factors that of a level against the factor's first
        level. From the observed information, like :meth:`utility_intervals`; approximate."""
        theta = self.estimate()
        spread = ndtri(0.5 + level / 2) * np.sqrt(
            np.diag(np.linalg.inv(self.observed_information()))
        )
        return np.column_stack([theta, theta - spread, theta + spread])

    def gaussian_statistics(
        self, include_pending: bool = False
    ) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
        """Screened GLR (Δ_j + γ)²/(2 y_jᵀH⁻¹y_j) of every rival j, the rivals and alternatives.

        The alternative λ_j = θ̂ − ((Δ_j + γ) / y_jᵀH⁻¹y_j) H⁻¹y_j is the closest point of the
        hyperplane λᵀy_j = −γ in the metric of the observed information H (docs/structured.md,
        Fisher form); γ = logit(½ + ε) is the utility margin of ε-optimal identification (0 for ε =
        0). """
        theta = self.estimate()
        rivals, gaps = self._rival_gaps()
        delta = gaps @ theta + self.margin
        # H is d × d and symmetric: one inverse and a product beat a solve with K right-hand sides.
        solved = gaps @ np.linalg.inv(self.observed_information(include_pending))  # rows H⁻¹y_j
        quadratic = np.einsum("jd,jd->j", gaps, solved)
        alternatives = theta - (delta / quadratic)[:, None] * solved
        return rivals, delta**2 / (2.0 * quadratic), alternatives

    def _rival_gaps(self) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
        """The leader's rivals and y_j = x_î − x_j (K − 1 rows), cached while the leader stays."""
        leader = self.leader
        if self._gaps_leader != leader:
            self._rivals = np.delete(np.arange(self.n_policies), leader)
            self._gaps = self.features[leader] - self.features[self._rivals]
            self._gaps_leader = leader
        return self._rivals, self._gaps

    def statistic_lower_bounds(
        self, rivals: NDArray[np.intp] | None = None
    ) -> NDArray[np.float64]:
        """Provable lower bounds on the exact GLR statistics Z_j, for all rivals at O(K·m·d).

        The larger of two bounds (m distinct pairs compared, A = H₀ + ρI the observed
        information at θ̂, H₀ = −∇²LL(θ̂), g = ∇LL(θ̂)):

        * **Duality.** log(1 + eᵘ) = max_{p∈[0,1]} [p·u + h(p)] (h the binary entropy), so
          LL(λ) = min_p Σ_k [(s_k − n_k p_k) λᵀz_k − n_k h(p_k)], and by weak duality, for every
          p ∈ [0,1]^m with Σ_k (s_k − n_k p_k) z_k = ν (x_j − x_î),
          max_{λᵀ(x_j − x_î) = γ} LL(λ) ≤ νγ − Σ_k n_k h(p_k). Equality holds at
          p_k = σ(λ*ᵀz_k) for the constrained optimum λ*. The p used is that of the Gaussian
          alternative λ_j corrected by one Newton step in the metric H₀ so that it satisfies the
          linear constraint exactly; Z_j ≥ LL(θ̂) − (that upper bound), tight to second order.
          Rivals whose corrected p leaves [0, 1], or misses the constraint by more than rounding
          (checked on the p used), get no bound from here.
        * **Self-concordance.** With D_j = (Δ_j + γ)/‖y_j‖_{A⁻¹}, ζ = max_k ‖z_k‖_{A⁻¹} and
          κ = 1 − ρ/λ_min(A): Z_j ≥ κ·ψ(ζD_j)/ζ² − ‖g‖_{A⁻¹}D_j, ψ(r) = e^{−r} + r − 1. Along
          any direction u the logistic loss has |third derivative| ≤ max_k |z_kᵀu| × second
          derivative, so φ(u) = LL(θ̂) − LL(θ̂ + u) ≥ −gᵀu + uᵀH₀u·ψ(R)/R², R = max_k |z_kᵀu|
          (Bach 2010, "Self-concordant analysis for logistic regression", EJS 4, Prop. 1); on
          ‖u‖_A = D_j, R ≤ ζD_j and uᵀH₀u ≥ κD_j²; every u reaching the hyperplane has
          ‖u‖_A ≥ D_j, and convexity of φ (φ(0) = 0) extends a positive bound outwards.

        Negative bounds are reported as 0.
        """
        theta = self.estimate()
        _, _, z, n, s = self.pair_statistics()
        information = self.observed_information()
        factor = np.linalg.cholesky(information)
        leader = self._leader
        if rivals is None:
            rivals, gaps = self._rival_gaps()
        else:
            gaps = self.features[leader] - self.features[rivals]
        if self.n_pairs == 0:
            return np.zeros(rivals.size)
        delta = gaps @ theta + self.margin

        whitening = np.linalg.inv(factor)  # L⁻¹ (d × d): ‖v‖_{A⁻¹} = ‖L⁻¹v‖

        def inverse_norms(vectors: NDArray[np.float64]) -> NDArray[np.float64]:
            whitened = vectors @ whitening.T
            return np.sqrt(np.einsum("kd,kd->k", whitened, whitened))

        # Self-concordance bound.
        distance = delta / inverse_norms(gaps)
        gradient = log_likelihood_gradient(theta, z, n, s)
        gradient_norm = float(inverse_norms(gradient[None, :])[0])
        reach = float(inverse_norms(z).max())
        smallest = float(np.linalg.eigvalsh(information)[0])
        kappa = max(1.0 - RIDGE / smallest, 0.0)
        r = reach * distance
        concordant = kappa * (np.expm1(-r) + r) / reach**2 - gradient_norm * distance

        # Duality bound, in chunks of rivals (memory m × chunk).
        fitted = log_likelihood(theta, z, n, s)
        p_hat = expit(z @ theta)
        weights = n * p_hat * (1.0 - p_hat)
        dual = np.full(rivals.size, -np.inf)
        curvature = (z.T * weights) @ z
        try:  # H₀ exactly (no jitter): the corrected p must satisfy the constraint exactly
            np.linalg.cholesky(curvature)
            inverse = np.linalg.inv(curvature)  # d × d; a product per block beats a solve
        except np.linalg.LinAlgError:  # the pairs do not span R^d yet
            return np.where(delta > 0, np.maximum(concordant, 0.0), 0.0)
        solved_gaps = inverse @ gaps.T  # H₀⁻¹y_j, d × J
        quadratic = np.einsum("dj,dj->j", gaps.T, solved_gaps)
        alternatives = theta[:, None] - (delta / quadratic) * solved_gaps  # on λᵀy_j = −γ
        for start in range(0, rivals.size, DUAL_CHUNK):
            part = slice(start, start + DUAL_CHUNK)
            probabilities = expit(z @ alternatives[:, part])  # m × J
            residual = z.T @ (s[:, None] - n[:, None] * probabilities)  # ∇LL(λ_j), d × J
            step = inverse @ residual
            # ν such that the step stays on the hyperplane (yᵀH₀⁻¹(r − νy) = 0 with y = −v).
            multiplier = np.einsum("dj,dj->j", gaps[part].T, step) / quadratic[part]
            step -= multiplier * solved_gaps[:, part]
            # p(1 − p) = weights / n, also for a pair told only ties (n = 0, no term)
            corrected = probabilities + (p_hat * (1.0 - p_hat))[:, None] * (z @ step)
            inside = np.all((corrected >= 0.0) & (corrected <= 1.0), axis=0)
            safe = np.clip(corrected, 1e-300, 1.0 - 1e-16)
            entropy = -(safe * np.log(safe) + (1.0 - safe) * np.log1p(-safe))
            entropy = np.where((corrected <= 0.0) | (corrected >= 1.0), 0.0, entropy)
            # Σ(s − np)z = r − H₀·step = μ·y_j (y_j = −(x_j − x_î)), so ν = −μ. Checked on the
            # p actually used: the part of Σ(s − np)z off the line of y_j must be rounding only
            # (an ill-conditioned H₀ fails this, and the rival gets no bound from here).
            achieved = z.T @ (s[:, None] - n[:, None] * corrected)  # d × J
            y = gaps[part].T
            along = np.einsum("dj,dj->j", y, achieved) / np.einsum("dj,dj->j", y, y)
            off = np.linalg.norm(achieved - along * y, axis=0)
            feasible = inside & (off <= FEASIBILITY_TOLERANCE * (1.0 + float(n @ np.abs(z).sum(1))))
            upper = -along * self.margin - n @ entropy
            dual[part] = np.where(feasible, fitted - upper, -np.inf)
        bound = np.maximum(concordant, dual)
        return np.where(delta > 0, np.maximum(bound, 0.0), 0.0)

    # ---- stopping ------------------------------------------------------------------------------
    def stopping_threshold(self) -> float:
        """β_t(δ), the same for every rival (see the module docstring); cached per outcome
        (the sampling rule and the stopping check both ask for it)."""
        if self._threshold_cache[0] != self.n_told:
            self._threshold_cache = (self.n_told, self._stopping_threshold())
        return self._threshold_cache[1]

    def _stopping_threshold(self) -> float:
        threshold = self.threshold
        if isinstance(threshold, HybridThreshold):  # (1 − η)δ for the structured route
            regret = (
                self.universal_regret()
                if threshold.structured_route == "universal"
                else self.mixture_regret()
            )
            return threshold.structured_log_inverse_delta(self.delta) + regret
        log_inverse_delta = math.log(1.0 / self.delta)
        if isinstance(threshold, GaussianMixtureThreshold):
            return log_inverse_delta + self.mixture_regret()
        if isinstance(threshold, UniversalInferenceThreshold):
            return log_inverse_delta + self.universal_regret()
        counts = self.pair_statistics()[3]
        return threshold.pair_set(counts, float(self.n_told), self.delta, 0.0)

    def universal_regret(self) -> float:
        """LL(θ̂) − Σ_s log p_{θ̃_{s−1}}(y_s): the regret of the sequential plug-in predictions
        (universal inference, module docstring)."""
        _, _, z, n, s = self.pair_statistics()
        return log_likelihood(self.estimate(), z, n, s) - self.predictive_log_likelihood

    def mixture_regret(self) -> float:
        """(ρ/2)‖θ̂‖² + ½ log det(I + B/ρ): LL(θ̂) minus a lower bound of the mixture likelihood.

        ρ is the prior precision of the :class:`GaussianMixtureThreshold` (1 by default) and
        B = Σ_k n_k c(ξ_k) z_k z_kᵀ with ξ_k = |θ̂ᵀz_k| and c(ξ) = tanh(ξ/2)/(2ξ) (¼ at ξ = 0) the
        curvature of the Jaakkola–Jordan bound of each pair's log-likelihood, tangent at θ̂
        (see the module docstring for why LL(θ̂) − this ≤ log ∫ e^{LL(θ)} N(θ; 0, I/ρ) dθ).
        """
        threshold = self.threshold
        precision = (
            threshold.prior_precision if isinstance(threshold, GaussianMixtureThreshold) else 1.0
        )
        theta = self.estimate()
        _, _, z, n, _ = self.pair_statistics()
        return float(
            0.5 * precision * theta @ theta + 0.5 * _log_det_information(z, n, theta, precision)
        )

    @property
    def hybrid(self) -> bool:
        """True when rivals may also be ruled out by the direct test (``"hybrid"`` threshold)."""
        return isinstance(self.threshold, HybridThreshold)

    def direct_statistics(
        self, rivals: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Direct test of the leader against each rival: statistics, thresholds and counts.

        The comparisons pooled for rival j are those of every pair whose feature difference is
        ±(x_î − x_j) (they share the win probability σ(θᵀ(x_î − x_j))), oriented so that p̂ is
        the rate at which the î side wins. Statistic n·kl(p̂, ½ − ε) when p̂ > ½ − ε, else 0;
        threshold log((K − 1)/(ηδ)) + ½ log n + log 2 (module docstring, "hybrid").
        """
        leader = self.leader
        floor = 0.5 - self.epsilon
        if self._direct_tallies[:2] != (self.n_told, leader):  # new data: tally afresh
            self._direct_tallies = (self.n_told, leader, {})
        tallies = self._direct_tallies[2]
        counts = np.zeros(rivals.size)
        ahead = np.zeros(rivals.size)  # wins of the î side
        for position, rival in enumerate(rivals):
            tally = tallies.get(int(rival))
            if tally is None:
                key, sign = _canonical(self.features[leader] - self.features[int(rival)])
                told = won = 0.0
                for slot, member in self._groups.get(key, ()):
                    n, w = self._counts[slot], self._wins[slot]
                    told += n
                    won += w if member == sign else n - w
                tally = tallies[int(rival)] = (told, won)
            counts[position], ahead[position] = tally
        rate = np.divide(ahead, counts, out=np.zeros(rivals.size), where=counts > 0)
        statistics = np.where(
            rate > floor, counts * np.asarray(kl_bernoulli(rate, floor)), 0.0
        )
        thresholds = (
            self._direct_log_inverse_delta()
            + 0.5 * np.log(np.maximum(counts, 1.0))
            + LOG2
        )
        return statistics, thresholds, counts

    def _direct_routes(
        self, rivals: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], list[Pair]]:
        """For each rival, the pair to sample for its direct test and that pair's decisive share.

        Every pair whose feature difference is ±(x_î − x_j) feeds the same direct test; without
        ties each is worth one decisive comparison and the direct pair (î, j) is taken. With
        ties, the member told most decisively (:meth:`decisive_shares`) is taken: two policies
        that always tie each other may still differ, in the same factor level, from two that do
        not.
        """
        leader = self.leader
        direct = [(leader, int(rival)) for rival in rivals]
        firsts = np.full(rivals.size, leader, dtype=np.intp)
        shares = self.decisive_shares(firsts, np.asarray(rivals, dtype=np.intp))
        if shares is None:
            return np.ones(rivals.size), direct
        for position, rival in enumerate(rivals):
            key, _ = _canonical(self.features[leader] - self.features[int(rival)])
            members = [slot for slot, _ in self._groups.get(key, ())]
            if not members:
                continue
            rows, cols = self._rows[members], self._cols[members]
            member_shares = self.decisive_shares(rows, cols)
            assert member_shares is not None
            best = int(np.argmax(member_shares))
            if member_shares[best] > shares[position]:
                shares[position] = member_shares[best]
                direct[position] = (int(rows[best]), int(cols[best]))
        return shares, direct

    def _direct_log_inverse_delta(self) -> float:
        """log((K − 1)/(ηδ)) of the hybrid threshold's direct route."""
        assert isinstance(self.threshold, HybridThreshold)
        return self.threshold.direct_log_inverse_delta(self.delta, self.n_policies)

    def directly_cleared(self, rivals: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Which of these rivals the direct test rules out (none unless hybrid; a view, no cost
        otherwise)."""
        if not self.hybrid:
            return np.zeros(rivals.size, dtype=bool)
        statistics, thresholds, _ = self.direct_statistics(rivals)
        return statistics > thresholds

    def direct_pair(self, rivals: NDArray[np.intp], screened: NDArray[np.float64]) -> Pair | None:
        """The pair that feeds the weakest rival's direct test, when routing the weakest rivals
        to the direct test finishes sooner; None: the structured best response runs.

        Projected remaining comparisons, for the ``PRECHECKED_RIVALS`` rivals of smallest
        screened statistic Z_j (in that order) not yet ruled out: structured, t·(β_t/Z_j − 1)
        (the statistic grows about in proportion to t, and the structured route must lift the
        weakest rival it keeps); direct, (n_j − decisive comparisons so far) / s_j, where n_j
        solves n·kl(σ(θ̂ᵀ(x_î − x_j)), ½ − ε) = log((K − 1)/(ηδ)) + ½ log n + log 2 and s_j is the
        decisive share of the pair that feeds the test (:meth:`_direct_routes`; 1 without ties).
        Routing the k weakest rivals directly costs the sum of their direct remainders plus the
        structured remainder of the (k+1)-th; the k minimizing that is chosen, and when k > 0
        the weakest of them gets its pair. Only speed depends on this choice.
        """
        if not self.hybrid:
            return None
        threshold = self.stopping_threshold()
        order = np.argsort(screened)[:PRECHECKED_RIVALS]
        chosen = rivals[order]
        statistics, thresholds, counts = self.direct_statistics(chosen)
        open_rivals = statistics <= thresholds
        order, chosen, counts = order[open_rivals], chosen[open_rivals], counts[open_rivals]
        if order.size == 0 or screened[order[0]] > threshold:
            return None
        leader = self.leader
        p = expit((self.features[leader] - self.features[chosen]) @ self.estimate())
        floor = 0.5 - self.epsilon
        rate = np.where(p > floor, np.asarray(kl_bernoulli(p, floor)), 0.0)
        base = self._direct_log_inverse_delta() + LOG2
        t = self.n_told + self.n_pending + 1.0
        structured = t * np.maximum(threshold / np.maximum(screened[order], 1e-12) - 1.0, 0.0)
        direct = np.full(order.size, math.inf)
        shares, routes = self._direct_routes(chosen)
        for k in np.flatnonzero(rate > 0.0):
            needed = base
            for _ in range(3):  # fixed point of n = (base + ½ log n) / rate
                needed = base + 0.5 * math.log(max(needed / rate[k], 1.0))
            # decisive comparisons still needed, in comparisons: a pooled pair that keeps tying
            # is never worth routing to (it would take every comparison and gain nothing)
            direct[k] = max(needed / rate[k] - counts[k], 0.0) / shares[k]
        # totals[k]: the k weakest direct, the rest structured; routing every rival considered
        # directly still leaves the last one's structured remainder unless all K − 1 rivals were
        # considered and open (conservative: cleared rivals may hide open ones beyond).
        others_open = screened.size > PRECHECKED_RIVALS or not open_rivals.all()
        last = structured[-1] if others_open else 0.0
        totals = np.concatenate([[0.0], np.cumsum(direct)]) + np.append(structured, last)
        if int(np.argmin(totals)) == 0:
            return None
        return routes[0]

    def exact_statistic(self, rival: int, start: NDArray[np.float64] | None = None) -> float:
        """Z_j = LL(θ̂) − max_{λᵀ(x_j − x_î) = γ} LL(λ); 0 if the constrained fit fails."""
        theta = self.estimate()
        _, _, z, n, s = self.pair_statistics()
        fit = fit_constrained_mle(
            z,
            n,
            s,
            self.features[rival] - self.features[self._leader],
            start=theta if start is None else start,
            level=self.margin,
        )
        if not fit.converged:
            return 0.0
        return max(log_likelihood(theta, z, n, s) - fit.log_likelihood, 0.0)

    def _exact_statistics(
        self, order: NDArray[np.intp], rivals: NDArray[np.intp], alternatives: NDArray[np.float64]
    ) -> dict[int, float]:
        """Exact Z of the rivals at positions ``order``, cached for the current data."""
        if self._exact_cache_time != self.n_told:
            self._exact_cache, self._exact_cache_time = {}, self.n_told
        for k in order:
            rival = int(rivals[k])
            if rival not in self._exact_cache:
                self._exact_cache[rival] = self.exact_statistic(rival, alternatives[k])
        return {int(rivals[k]): self._exact_cache[int(rivals[k])] for k in order}

    def is_certified(self) -> bool:
        """Whether every rival's exact GLR statistic exceeds the threshold.

        Gaussian screen first (no exact work while the weakest screened statistic is below half
        the threshold); then the provable lower bounds of :meth:`statistic_lower_bounds` — of the
        ``PRECHECKED_RIVALS`` weakest rivals first, then of all — clear the rivals beyond the
        threshold, and constrained fits run only for the rivals whose bound does not, stopping at
        the first that fails. The bound is tight to ~1e-3, so fits are rare.
        """
        if self.n_told == 0:
            return False
        threshold = self.stopping_threshold()
        rivals, screened, alternatives = self.gaussian_statistics()
        order = np.argsort(screened)
        # Hybrid: a rival the direct test rules out needs no structured evidence. Checked
        # weakest first, so the usual failure costs one lookup.
        for k in order[screened[order] <= SCREEN_SHARE * threshold]:
            if not self.directly_cleared(rivals[k : k + 1])[0]:
                return False
        # The weakest rivals first (usually one fails, and then nothing else is computed), then
        # the bounds of all rivals and exact fits for those the bounds do not clear.
        weakest = order[:PRECHECKED_RIVALS]
        self.exact_fits_last_check = 0
        for group in (weakest, order[PRECHECKED_RIVALS:]):
            if group.size == 0:
                continue
            lower = self.statistic_lower_bounds(rivals[group])
            for k in group[lower <= threshold]:
                if self.directly_cleared(rivals[k : k + 1])[0]:
                    continue
                self.exact_fits_last_check += 1
                exact = self._exact_statistics(np.array([k]), rivals, alternatives)
                if exact[int(rivals[k])] <= threshold:
                    return False
        return True

    def certificate(self) -> Certificate:
        """Statistics per rival: exact for the weakest rivals, provable lower bounds for the rest.

        The ``MAX_EXACT_REPORTED`` rivals of smallest screened statistic get their exact Z_j (so
        every rival at K ≤ 201), as do those whose fit :meth:`is_certified` already ran on the
        same data; the others get the bound of :meth:`statistic_lower_bounds`. After a
        certification every rival is either fitted exactly or bounded above the threshold, so
        ``certified`` of the certificate agrees with :meth:`is_certified`, and a progress display
        at K = 10,000 costs O(K·d²) plus a bounded number of fits.
        """
        threshold = self.stopping_threshold()
        rivals, screened, alternatives = self.gaussian_statistics()
        statistics = self.statistic_lower_bounds()
        chosen = np.argsort(screened)[:MAX_EXACT_REPORTED]
        if self._exact_cache_time == self.n_told and self._exact_cache:
            position = {int(r): k for k, r in enumerate(rivals)}
            cached = [position[r] for r in self._exact_cache if r in position]
            chosen = np.unique(np.concatenate([chosen, np.array(cached, dtype=np.intp)]))
        exact = self._exact_statistics(chosen, rivals, alternatives)
        for k in chosen:
            statistics[k] = max(statistics[k], exact[int(rivals[k])])  # both are valid
        thresholds = np.full(rivals.size, threshold)
        if self.hybrid:  # a rival the direct test rules out shows that test's evidence
            direct, direct_thresholds, _ = self.direct_statistics(rivals)
            use = (direct > direct_thresholds) & (statistics <= thresholds)
            statistics[use], thresholds[use] = direct[use], direct_thresholds[use]
        return Certificate(self._leader, rivals, statistics, thresholds)

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
            FISHER_REGULARIZATION, margin=self.margin,
        )
        self._solver_age = age + SOLVER_ITERATIONS
        self._allocation_time = t
        return self._allocation

    def target_proportions(self) -> list[tuple[int, int, float]]:
        return [(a, b, share) for a, b, share in self.plugin_allocation().support()]

    def compared_pairs(self) -> list[tuple[int, int, int, float]]:
        """The distinct pairs told, ``(a, b, comparisons, σ(θ̂ᵀ(x_a − x_b)))``, without K×K work."""
        rows, cols, z, n, _ = self.pair_statistics()
        p = expit(z @ self.estimate())
        return [
            (int(a), int(b), int(c), float(q))
            for a, b, c, q in zip(rows, cols, n, p, strict=True)
        ]

    def win_prob_hat(self) -> NDArray[np.float64]:
        utilities = self.utilities()
        return expit(utilities[:, None] - utilities[None, :])

    def counts(self) -> NDArray[np.float64]:
        matrix = np.zeros((self.n_policies, self.n_policies))
        rows, cols, _, n, _ = self.pair_statistics()
        matrix[rows, cols] = n
        matrix[cols, rows] = n
        return matrix
