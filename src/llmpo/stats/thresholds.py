"""Stopping thresholds β for generalized-likelihood-ratio (GLR) statistics.

A GLR statistic here is a sum over a set S of pairs of ``n_ab · d(p̂_ab, c)``. The procedure stops
when every alternative answer has a statistic above its threshold. A threshold is *valid* when,
whatever the sampling rule, the probability that the statistic of the true answer's alternative
ever crosses it is at most δ.

Why the Krichevsky–Trofimov (KT) threshold is valid (docs/statistics.md). For one pair with true
mean p and outcomes y ∈ [0, 1] (ties count ½), the likelihood ratio ``Π (q/p)^y
((1−q)/(1−p))^(1−y)`` is a non-negative supermartingale for each q (the map y ↦
(q/p)^y((1−q)/(1−p))^(1−y) is convex, so its mean is at most its value at the Bernoulli endpoints,
which is 1). So is its mixture over q ~ Beta(½, ½), the KT mixture ``KT_n``. The KT regret bound
``log(max_q L_n(q) / KT_n) ≤ ½ log n + log 2`` then gives ``n d(p̂, p) ≤ log(KT_n / L_n(p)) + ½ log
n + log 2``; Ville's inequality bounds the probability that ``KT_n / L_n(p)`` ever exceeds 1/δ' by
δ'. On the wrong answer, d(p̂, c) ≤ d(p̂, p) because p ≤ c < p̂. For a sum over a data-dependent
set S of pairs, ``Π_{k∈S} X_k ≤ 2^m Π_k (1 + X_k)/2`` (m = number of pairs that may enter S), and
the product on the right is again a supermartingale because each comparison moves one factor only;
this costs m·log 2.

With ``ties="decisive"`` (docs/ties.md) the count n of a pair is its decisive weight α + β, not
its number of comparisons, and p̂ = α/(α + β); the proof above then runs on the decisive scale
(:mod:`llmpo.models.unstructured` gives it), and ``tests/stats/test_thresholds.py`` checks the
crossing probability on laws with 60% and 85% ties and with fractional outcomes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
from numpy.typing import NDArray

from llmpo.errors import ConfigError
from llmpo.registry import THRESHOLDS as REGISTERED

LOG2 = math.log(2.0)


class Threshold(ABC):
    """One stopping threshold, split as β = common(t, δ, M) + Σ_{pairs in the statistic} local(n).

    The split lets a model keep ``statistic − local(n)`` per pair up to date in O(1) per comparison
    and check the stopping rule with one comparison against ``common``. ``log_multiplicity`` (log M)
    is the log of the number of ways the procedure can be wrong that the union bound must pay for
    (log(K − 1) for class A: the error is on one of the pairs of the true winner, not known in
    advance).
    """

    #: Name used on the command line and in configs.
    name: str
    #: True when no proof of δ-correctness is known for this threshold.
    heuristic: bool = False

    @abstractmethod
    def common(self, t: float, delta: float, log_multiplicity: float) -> float:
        """The part of β shared by every pair."""

    @abstractmethod
    def local(self, counts: NDArray[np.float64]) -> NDArray[np.float64]:
        """The part of β paid per pair in the statistic, as a function of its count (vectorized)."""

    @abstractmethod
    def local_scalar(self, count: float) -> float:
        """:meth:`local` for one pair, in pure Python (the hot path)."""

    def pair(
        self, counts: NDArray[np.float64], t: float, delta: float, log_multiplicity: float
    ) -> NDArray[np.float64]:
        """Per-pair thresholds for statistics ``n · d(p̂, c)`` of single pairs with these counts."""
        return self.common(t, delta, log_multiplicity) + self.local(counts)

    def pair_set(
        self, counts: NDArray[np.float64], t: float, delta: float, log_multiplicity: float
    ) -> float:
        """Threshold for a statistic summed over the pairs with these counts."""
        return self.common(t, delta, log_multiplicity) + float(np.sum(self.local(counts)))


class KTThreshold(Threshold):
    """KT-mixture threshold (valid): β = log(M/δ) + Σ_{pairs} (½ log n + log 2).

    See the module docstring for the proof; ``tests/stats/test_thresholds.py`` checks the KT regret
    bound numerically (also for fractional counts from ties) and the crossing probability by
    Monte Carlo.
    """

    name = "kt"

    def common(self, t: float, delta: float, log_multiplicity: float) -> float:
        return log_multiplicity + math.log(1.0 / delta)

    def local(self, counts: NDArray[np.float64]) -> NDArray[np.float64]:
        return 0.5 * np.log(np.maximum(counts, 1.0)) + LOG2

    def local_scalar(self, count: float) -> float:
        return 0.5 * math.log(max(count, 1.0)) + LOG2


class GK16HeuristicThreshold(Threshold):
    """Heuristic β(t, δ) = log((1 + log t)/δ) (Garivier & Kaufmann 2016, §6). NOT proven valid.

    Common in experiments because it is much smaller than any valid threshold; offered for
    comparison only, under a name that says so. It ignores the union over answers and the number
    of pairs in a summed statistic.
    """

    name = "gk16-heuristic"
    heuristic = True

    def common(self, t: float, delta: float, log_multiplicity: float) -> float:
        return math.log((1.0 + math.log(max(t, 1.0))) / delta)

    def local(self, counts: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.zeros(np.shape(counts))

    def local_scalar(self, count: float) -> float:
        return 0.0


class LikelihoodThreshold(Threshold):
    """A threshold that needs a likelihood model (the structured space): no per-pair form.

    The model computes β itself (:meth:`llmpo.models.structured.StructuredModel.stopping_threshold`
    documents the proofs); the pair-count interface refuses it with a message naming the fix.
    """

    def common(self, t: float, delta: float, log_multiplicity: float) -> float:
        raise ConfigError(
            f"threshold {self.name!r} needs a likelihood model: use it with the structured space, "
            "or choose 'kt'"
        )

    def local(self, counts: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.common(0.0, 1.0, 0.0) + np.zeros(np.shape(counts))

    def local_scalar(self, count: float) -> float:
        return self.common(0.0, 1.0, 0.0)


class UniversalInferenceThreshold(LikelihoodThreshold):
    """Universal-inference threshold (valid) of the structured space: log(1/δ) + prediction regret.

    It needs the running log-likelihood of sequential predictions, which only a likelihood model
    has; :class:`~llmpo.models.structured.StructuredModel` computes it and documents the proof
    (Wasserman, Ramdas & Balakrishnan 2020).
    """

    name = "universal"


class GaussianMixtureThreshold(LikelihoodThreshold):
    """Gaussian-mixture threshold (valid) of the structured space: log(1/δ) + information regret.

    β_t = log(1/δ) + (ρ/2)‖θ̂‖² + ½ log det(I + B_t/ρ), where B_t is the curvature of a quadratic
    lower bound of the log-likelihood at θ̂ (at most the information ¼ Σ n zzᵀ) and ρ the prior
    precision. It grows with the information gathered rather than with t, and needs no
    sequential predictions. The proof (a mixture martingale, Robbins 1970; the quadratic bound of
    Jaakkola & Jordan 2000) is in :class:`~llmpo.models.structured.StructuredModel` and
    docs/structured-stopping.md.

    Parameters
    ----------
    prior_precision : float
        ρ > 0 of the N(0, I/ρ) mixing distribution over θ. It must be fixed before the data are
        seen (a choice after seeing them voids the guarantee).
    """

    name = "mixture"

    def __init__(self, prior_precision: float = 1.0) -> None:
        if not prior_precision > 0 or not math.isfinite(prior_precision):
            raise ConfigError(f"prior_precision: must be a positive number, got {prior_precision}")
        self.prior_precision = float(prior_precision)


class HybridThreshold(GaussianMixtureThreshold):
    """Mixture threshold at (1 − η)δ, or a direct one-dimensional test at ηδ/(K − 1), per rival.

    A rival j of the leader î is ruled out when either (a) its GLR statistic exceeds the
    :class:`GaussianMixtureThreshold` at (1 − η)δ, or (b) the comparisons whose feature
    difference equals x_î − x_j (the direct pair and, with factor features, every pair that
    differs the same way) show î ahead: n·kl(p̂, ½ − ε) > log((K − 1)/(ηδ)) + ½ log n + log 2
    with p̂ > ½ − ε. η is the share of δ given to the direct route (½ for ``hybrid``). Route (b)
    costs no d-dimensional regret, so it wins for close rivals in high dimension. The proof (the
    two routes' error events have probabilities ≤ (1 − η)δ and ≤ ηδ, so their union ≤ δ) is in
    :class:`~llmpo.models.structured.StructuredModel` and docs/structured-stopping.md.

    Parameters
    ----------
    prior_precision : float
        ρ of the mixture route.
    direct_share : float
        η ∈ (0, 1), fixed before the data are seen.
    """

    name = "hybrid"
    #: η of this named threshold.
    default_direct_share = 0.5
    #: The structured route's regret: ``"mixture"`` (Gaussian mixture) or ``"universal"``
    #: (sequential plug-in predictions, :class:`UniversalInferenceThreshold`).
    structured_route = "mixture"

    def __init__(self, prior_precision: float = 1.0, direct_share: float | None = None) -> None:
        super().__init__(prior_precision)
        share = self.default_direct_share if direct_share is None else direct_share
        if not 0.0 < share < 1.0:
            raise ConfigError(
                field="direct_share", problem=f"must lie strictly between 0 and 1, got {share}"
            )
        self.direct_share = float(share)

    def structured_log_inverse_delta(self, delta: float) -> float:
        """log(1/((1 − η)δ)): the confidence term of route (a)."""
        return math.log(1.0 / ((1.0 - self.direct_share) * delta))

    def direct_log_inverse_delta(self, delta: float, n_policies: int) -> float:
        """log((K − 1)/(ηδ)): the confidence term of route (b), per rival."""
        return math.log((n_policies - 1) / (self.direct_share * delta))


class LeanHybridThreshold(HybridThreshold):
    """Universal inference at 0.9δ, or the direct test at 0.1δ/(K − 1), per rival.

    :class:`HybridThreshold`'s rule with two changes that make it no worse than ``universal``
    where the direct route certifies nothing: the structured route is universal inference
    (its sequential predictions' regret, smaller than the mixture's at small t on the
    benchmark), and it keeps 90% of δ, costing log(1/0.9) ≈ 0.11 nats over ``universal``; the
    direct route pays log 5 ≈ 1.6 nats more than in ``hybrid`` (it needs ~13 nats there anyway).
    The default of the structured space (docs/structured-stopping.md). ``prior_precision`` is
    unused (no mixture).
    """

    name = "hybrid-lean"
    default_direct_share = 0.1
    structured_route = "universal"


THRESHOLDS: dict[str, type[Threshold]] = {
    KTThreshold.name: KTThreshold,
    GK16HeuristicThreshold.name: GK16HeuristicThreshold,
    UniversalInferenceThreshold.name: UniversalInferenceThreshold,
    GaussianMixtureThreshold.name: GaussianMixtureThreshold,
    HybridThreshold.name: HybridThreshold,
    LeanHybridThreshold.name: LeanHybridThreshold,
}


def make_threshold(name: str | Threshold) -> Threshold:
    """The threshold called ``name`` (``"kt"``, ``"gk16-heuristic"``, …); Thresholds pass."""
    if isinstance(name, Threshold):
        return name
    # The registry holds THRESHOLDS and the installed plug-ins (docs/plugins.md).
    if name not in REGISTERED:
        known = ", ".join(REGISTERED.names())
        raise ConfigError(
            f"unknown threshold {name!r}; choose one of: {known}. Fix: use one of these, or "
            f"install the package that provides it (entry-point group {REGISTERED.group})"
        )
    threshold: Threshold = REGISTERED.get(name, "threshold")()
    return threshold
