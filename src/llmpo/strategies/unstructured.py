"""LLM-PO sampling rules for the unstructured space (DESIGN §2).

Both rules first apply forced exploration (D-tracking of Garivier & Kaufmann 2016): when some pair
has fewer than √t − P/2 comparisons (P = K(K−1)/2 pairs), the least-sampled pair is compared. Every
estimate is then consistent, so the leader and the plug-in proportions converge, which is what the
asymptotic-optimality argument uses; it costs O(P√t) comparisons. (Cheaper restrictions, forcing
only the leader's pairs at √t and all pairs at a slower rate, were measured and rejected: a true
winner whose row holds an unlucky early loss is then rarely re-sampled, and some runs take 10–50×
longer; see the closing notes of issue 2.)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from llmpo.models.base import Pair
from llmpo.models.unstructured import UnstructuredModel
from llmpo.strategies.base import Strategy


def forced_exploration_pair(model: UnstructuredModel) -> Pair | None:
    """The least-sampled pair if it has fewer than √t − P/2 comparisons, else None."""
    k = model.n_policies
    floor = math.sqrt(model.n_told + model.n_pending) - k * (k - 1) / 4.0
    return model.least_sampled_pair(floor) if floor > 0 else None


def balance_key(
    effective_counts: NDArray[np.float64],
    signed_divergence: NDArray[np.float64],
    local_threshold: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Sampling priority of the balance rule (smallest first).

    Pairs that the leader wins empirically rank by their margin to the stopping threshold,
    n·d(p̂, c) − local(n) (the part of the threshold that depends on the pair's count), so that
    all rivals reach the threshold together. Pairs it does not win (yet) get −1/(n + 1) ∈ [−1, 0):
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
    rather than the raw evidence lets all rivals cross it together. Pairs that the leader does not win yet are
    sampled first (see :func:`balance_key`). With ``assume_condorcet`` (class B) the pair is (b̂(j), j) for the
    rival j with the least evidence, b̂(j) its strongest opponent so far.
    """

    name = "llmpo"

    def select(self, model: UnstructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = forced_exploration_pair(model)
        if forced is not None:
            return forced
        leader = model.leader
        if model.assume_condorcet:
            witnesses = model.witnesses()
            rivals = np.arange(model.n_policies)
            counts = model.effective_counts()[witnesses, rivals]
            evidence = balance_key(
                counts, model.signed_divergence(witnesses, rivals), model.threshold.local(counts)
            )
            evidence[leader] = np.inf
            rival = int(np.argmin(evidence))
            return int(witnesses[rival]), rival
        row = model.effective_row(leader)
        evidence = balance_key(
            row, model.signed_divergence_row(leader), model.threshold.local(row)
        )
        evidence[leader] = np.inf
        return leader, int(np.argmin(evidence))


class TrackingRule(Strategy):
    """Plug-in D-tracking: sample argmax_ab (t·ŵ_ab − n_ab) with ŵ = w*(p̂) (DESIGN §2)."""

    name = "llmpo-tracking"

    def select(self, model: UnstructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = forced_exploration_pair(model)
        if forced is not None:
            return forced
        rows, cols, shares = model.plugin_weights()
        t = model.n_told + model.n_pending + 1
        counts = model.effective_counts()[rows, cols]
        best = int(np.argmax(t * shares - counts))
        return int(rows[best]), int(cols[best])
