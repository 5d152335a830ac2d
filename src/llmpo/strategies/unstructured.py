"""LLM-PO sampling rules for the unstructured space (docs/statistics.md).

Both rules first apply forced exploration, in three parts (:func:`exploration_pair`):

1. While no policy beats every other empirically (by more than the level c = ½ − ε), compare the
   least-sampled of the pairs (j, b̂(j)) that hold each policy's row minimum. This is what can
   change the leader: in particular a true winner held back by an unlucky early loss gets that
   pair re-sampled at once.
2. Otherwise keep the leader's K − 1 pairs above √t − (K−1)/2 comparisons, as D-tracking does
   (Garivier & Kaufmann 2016), so that the pairs that decide the answer are tracked.
3. Keep every pair above 2√t/P comparisons (P = K(K−1)/2). This floor grows without bound, so all
   estimates are consistent and the leader converges to the Condorcet winner — what the asymptotic
   optimality argument needs — at a cost of about √t comparisons in all.

Plain D-tracking (every pair above √t − P/2) was measured too: it is δ-correct but spends most of
its comparisons on irrelevant pairs once K ≥ 10 (slope of comparisons in log(1/δ) 1.46·T* against
1.00·T* at K = 10), while dropping part 1 lets some runs stall for 10–50× longer.
``tests/strategies/test_unstructured.py`` checks the floors along long runs.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from llmpo.models.base import Pair
from llmpo.models.unstructured import UnstructuredModel
from llmpo.strategies.base import Strategy


def exploration_pair(model: UnstructuredModel) -> Pair | None:
    """The pair that forced exploration requires now (see the module docstring), or None."""
    k = model.n_policies
    leader = model.leader
    if not model.leader_wins_all():
        rows = np.arange(k)
        weakest = model.witnesses()
        row = int(np.argmin(model.effective_counts()[rows, weakest]))
        return row, int(weakest[row])
    root_t = math.sqrt(model.n_told + model.n_pending)
    leader_floor = root_t - (k - 1) / 2.0
    if leader_floor > 0:
        counts = model.effective_row(leader)
        counts[leader] = np.inf
        least = int(np.argmin(counts))
        if counts[least] < leader_floor:
            return leader, least
    return model.least_sampled_pair(4.0 * root_t / (k * (k - 1)))


def balance_key(
    effective_counts: NDArray[np.float64],
    signed_divergence: NDArray[np.float64],
    local_threshold: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Sampling priority of the balance rule (smallest first).

    Pairs that the leader wins empirically rank by their margin to the stopping threshold,
    n·d(p̂, c) − local(n) (the part of the threshold that depends on the pair's count), so that
    all rivals reach the threshold together. n is the statistic's count (decisive comparisons by
    default, :meth:`~llmpo.models.unstructured.UnstructuredModel.statistic_counts`), so the rule
    balances information, not comparisons. Pairs it does not win (yet) get −1/(n + 1) ∈ [−1, 0):
    least-sampled first, ahead of every winner with a positive margin; counting pending
    comparisons in n spreads a batch over them instead of piling it on one pair.
    """
    return np.where(
        signed_divergence > 0,
        effective_counts * signed_divergence - local_threshold,
        -1.0 / (effective_counts + 1.0),
    )


class BalanceRule(Strategy):
    """LLM-PO's default rule: sample the leader's pair with the smallest evidence n·d(p̂, c).

    This enforces the optimality condition w_k · d_k = constant of the closed form directly, which
    is far less noisy than inverting d(p̂, ½) near ½; balancing the margins to the threshold
    rather than the raw evidence lets all rivals cross it together (priorities:
    :func:`balance_key`). With ``assume_condorcet`` (class B) the pair is (b̂(j), j) for the rival j
    with the least evidence, b̂(j) its strongest opponent so far.
    """

    name = "llmpo"

    def select(self, model: UnstructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = exploration_pair(model)
        if forced is not None:
            return forced
        leader = model.leader
        if model.assume_condorcet:
            witnesses = model.witnesses()
            rivals = np.arange(model.n_policies)
            counts = model.statistic_counts(witnesses, rivals)
            evidence = balance_key(
                counts, model.signed_divergence(witnesses, rivals), model.threshold.local(counts)
            )
            evidence[leader] = np.inf
            rival = int(np.argmin(evidence))
            return int(witnesses[rival]), rival
        row = model.statistic_counts(leader, np.arange(model.n_policies))
        evidence = balance_key(row, model.signed_divergence_row(leader), model.threshold.local(row))
        evidence[leader] = np.inf
        return leader, int(np.argmin(evidence))


class TrackingRule(Strategy):
    """Plug-in D-tracking: sample argmax_ab (t·ŵ_ab − n_ab) with ŵ = w*(p̂) (docs/statistics.md)."""

    name = "llmpo-tracking"

    def select(self, model: UnstructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = exploration_pair(model)
        if forced is not None:
            return forced
        rows, cols, shares = model.plugin_weights()
        t = model.n_told + model.n_pending + 1
        counts = model.effective_counts()[rows, cols]
        best = int(np.argmax(t * shares - counts))
        return int(rows[best]), int(cols[best])
