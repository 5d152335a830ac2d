"""LLM-PO sampling rules for the unstructured space (DESIGN §2).

Both rules first apply forced exploration (D-tracking of Garivier & Kaufmann 2016): when some pair
has fewer than √t − P/2 comparisons (P = K(K−1)/2 pairs), the least-sampled pair is compared. This
makes every estimate consistent, so the leader and the plug-in proportions converge, which is what
the asymptotic-optimality proofs use; it costs O(√t) comparisons.
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
    effective_counts: NDArray[np.float64], signed_divergence: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Sampling priority of the balance rule (smallest first).

    Pairs that the leader wins empirically rank by their evidence n·d(p̂, c). Pairs it does not
    win (yet) come first, least-sampled first (−1/(n + 1)); counting pending comparisons in n
    spreads a batch over them instead of piling it on one pair.
    """
    return np.where(
        signed_divergence > 0,
        effective_counts * signed_divergence,
        -1.0 / (effective_counts + 1.0),
    )


class BalanceRule(Strategy):
    """LLM-PO's default rule: sample the leader's pair with the smallest evidence n·d(p̂, c).

    This enforces the optimality condition w_k · d_k = constant of the closed form directly, which
    is far less noisy than inverting d(p̂, ½) near ½. Pairs that the leader does not win yet are
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
            evidence = balance_key(
                model.effective_counts()[witnesses, rivals],
                model.signed_divergence(witnesses, rivals),
            )
            evidence[leader] = np.inf
            rival = int(np.argmin(evidence))
            return int(witnesses[rival]), rival
        evidence = balance_key(model.effective_row(leader), model.signed_divergence_row(leader))
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
