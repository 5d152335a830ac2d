"""LLM-PO sampling rules for the structured space (docs/structured.md).

Both rules start with forced exploration on a fixed set E of d pairs whose differences span R^d
(chosen once by pivoted QR): each pair of E is compared once, and afterwards whenever its count
falls below √t − |E|/2 (D-tracking of Garivier & Kaufmann 2016 restricted to E). Then
λ_min(Σ n_ab z_ab z_abᵀ) ≥ λ_min(Σ_{e∈E} z_e z_eᵀ)·(√t − d/2), which grows like c√t: θ̂ is
consistent whatever the rule does, so the leader and w*(θ̂) converge, at a cost of O(d√t).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import qr
from scipy.special import expit

from llmpo.models.base import Pair
from llmpo.models.structured import PRECHECKED_RIVALS, StructuredModel
from llmpo.stats.bernoulli import kl_bernoulli
from llmpo.stats.structured import MAX_ALL_PAIRS, all_pairs
from llmpo.strategies.base import Strategy

# For large K the best response searches the pairs among this many policies at each end of the
# ranking by (λ* − θ̂)ᵀx, plus the leader and the binding rival.
EXTREME_POLICIES = 8


def spanning_pairs(features: NDArray[np.float64]) -> list[Pair]:
    """d pairs (r, j) whose differences x_j − x_r are linearly independent (pivoted QR).

    The reference r is policy 0; column pivoting picks the d best-conditioned differences.
    """
    differences = (features[1:] - features[0]).T  # d × (K − 1)
    _, _, pivots = qr(differences, mode="economic", pivoting=True)
    return [(0, int(p) + 1) for p in pivots[: features.shape[1]]]


class _StructuredRule(Strategy):
    """Forced exploration shared by the structured rules."""

    def __init__(self) -> None:
        self._exploration: list[Pair] | None = None

    def forced_pair(self, model: StructuredModel) -> Pair | None:
        """An exploration pair that is due, or None."""
        if self._exploration is None:
            self._exploration = spanning_pairs(model.features)
        counts = [model.effective_count(a, b) for a, b in self._exploration]
        least = int(np.argmin(counts))
        floor = math.sqrt(model.n_told + model.n_pending) - len(counts) / 2.0
        if counts[least] == 0 or counts[least] < floor:
            return self._exploration[least]
        return None


class BestResponse(_StructuredRule):
    """LLM-PO's default structured rule: best response to the binding alternative
    (docs/structured.md).

    The binding rival j* minimizes the (Gaussian-screened) GLR statistic, and λ* is its closest
    alternative under the current information, pending comparisons included (so a batch spreads).
    The rule samples the pair that separates θ̂ from λ* most, argmax_ab d(σ(θ̂ᵀz_ab), σ(λ*ᵀz_ab)):
    the comparison that raises the weakest statistic fastest. For K(K−1)/2 > 5,000 the search is
    over the pairs among the policies at both ends of the ranking by (λ* − θ̂)ᵀx (where the
    divergence is largest), the leader and j*.
    """

    name = "llmpo"

    def __init__(self) -> None:
        super().__init__()
        self._all_pairs: tuple[NDArray[np.intp], NDArray[np.intp]] | None = None

    def _search_pairs(
        self, model: StructuredModel, direction: NDArray[np.float64], keep: list[int]
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        k = model.n_policies
        if k * (k - 1) // 2 <= MAX_ALL_PAIRS:
            if self._all_pairs is None:
                self._all_pairs = all_pairs(k)
            return self._all_pairs
        scores = model.features @ direction
        order = np.argpartition(scores, [EXTREME_POLICIES, k - EXTREME_POLICIES - 1])
        chosen = np.unique(
            np.concatenate([order[:EXTREME_POLICIES], order[-EXTREME_POLICIES:], keep])
        )
        first, second = np.triu_indices(chosen.size, 1)
        return chosen[first], chosen[second]

    def select(self, model: StructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = self.forced_pair(model)
        if forced is not None:
            return forced
        theta = model.estimate()
        rivals, screened, alternatives = model.gaussian_statistics(include_pending=True)
        direct = model.direct_pair(rivals, screened)
        if direct is not None:
            return direct
        binding = int(np.argmin(screened))
        if model.hybrid:  # a rival the direct test already rules out binds nothing
            order = np.argsort(screened)[:PRECHECKED_RIVALS]
            open_rivals = order[~model.directly_cleared(rivals[order])]
            binding = int(open_rivals[0]) if open_rivals.size else binding
        alternative = alternatives[binding]
        rows, cols = self._search_pairs(
            model, alternative - theta, [model.leader, int(rivals[binding])]
        )
        z = model.features[rows] - model.features[cols]
        divergence = np.asarray(kl_bernoulli(expit(z @ theta), expit(z @ alternative)))
        shares = model.decisive_shares(rows, cols)  # a tie carries no information
        if shares is not None:
            divergence = divergence * shares
        best = int(np.argmax(divergence))
        return int(rows[best]), int(cols[best])


class Tracking(_StructuredRule):
    """Plug-in D-tracking of w*(θ̂): sample argmax_ab (t·ŵ_ab − n_ab) over the support of ŵ.

    ŵ comes from :meth:`~llmpo.models.structured.StructuredModel.plugin_allocation`, the fast
    Fisher-form solver re-solved lazily (at t = 1.25^k and when the leader changes).
    """

    name = "llmpo-tracking"

    def select(self, model: StructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = self.forced_pair(model)
        if forced is not None:
            return forced
        allocation = model.plugin_allocation()
        support = np.flatnonzero(allocation.shares > 0)
        rows, cols = allocation.rows[support], allocation.cols[support]
        t = model.n_told + model.n_pending + 1
        counts = np.array([model.effective_count(a, b) for a, b in zip(rows, cols, strict=True)])
        best = int(np.argmax(t * allocation.shares[support] - counts))
        return int(rows[best]), int(cols[best])
