"""Baseline procedures of the unstructured space, behind the same strategy interface as LLM-PO.

Each one reads the same :class:`~llmpo.models.unstructured.UnstructuredModel` (counts and
estimates) and is driven by the same ask/tell :class:`~llmpo.experiment.Experiment`, so a
benchmark compares like with like: same environment, same comparisons counted, same seeds.

* ``top-two`` (:class:`TopTwo`) only samples differently; it stops with the model's GLR rule, like
  LLM-PO, so it is δ-correct whatever it samples.
* ``successive-elimination`` (:class:`SuccessiveElimination`) and ``knockout``
  (:class:`Knockout`) are classical procedures with their own stopping rules: they are
  :class:`~llmpo.strategies.base.SelfStopping`. Both assume that a Condorcet winner exists, and
  both only support ε = 0 and class A statistics.

Every confidence statement below uses the model's threshold for one pair,
β(n) = log(M/δ) + local(n); with the default KT threshold, local(n) = ½ log n + log 2, and
"n·d(p̂, ½) > β(n) with p̂ > ½" is the statement that the KL lower confidence bound of p (the
anytime KL-UCB radius of Kaufmann & Koolen 2021 with a KT mixture, see
:mod:`llmpo.stats.thresholds`) lies above ½. M counts the pairs on which an error can happen.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from llmpo.errors import ConfigError
from llmpo.models.base import Certificate, Pair
from llmpo.models.unstructured import UnstructuredModel
from llmpo.stats.unstructured import HALF
from llmpo.strategies.base import SelfStopping, Strategy
from llmpo.strategies.unstructured import balance_key, exploration_pair

#: Probability that Top-Two samples the leader's pair rather than the challenger's (β = ½).
LEADER_PROBABILITY = 0.5


def _certificate(
    leader: int,
    rivals: NDArray[np.intp],
    statistics: NDArray[np.float64],
    thresholds: NDArray[np.float64],
    eliminated: dict[int, tuple[int, float, float]],
) -> Certificate:
    """A certificate whose eliminated rivals show the evidence recorded when they went out.

    ``statistics`` and ``thresholds`` hold the values for rivals still in play; ``eliminated``
    maps a rival to (eliminator, statistic, threshold) at its elimination. Recording them keeps
    a decision final even if later comparisons of the same pair move its estimate.
    """
    statistics, thresholds = statistics.copy(), thresholds.copy()
    for index, rival in enumerate(rivals):
        if int(rival) in eliminated:
            _, statistics[index], thresholds[index] = eliminated[int(rival)]
    return Certificate(leader, rivals, statistics, thresholds)


def _require_plain_condorcet(model: UnstructuredModel, name: str) -> None:
    """Refuse options that an elimination procedure cannot honour."""
    if model.level != HALF or model.assume_condorcet:
        raise ConfigError(
            f"strategy {name!r} identifies the Condorcet winner with its own stopping rule; "
            "it supports neither epsilon > 0 nor assume_condorcet"
        )


def _evidence(
    model: UnstructuredModel, rows: NDArray[np.intp], cols: NDArray[np.intp]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """n_ab·d(p̂_ab, ½) where p̂_ab > ½ (else 0), and the statistic's counts n_ab, for pairs
    (a, b): decisive comparisons by default (docs/ties.md), all comparisons with ties="half"."""
    counts = model.told_statistic_counts(rows, cols)
    signed = model.signed_divergence(rows, cols)
    return np.where(signed > 0, counts * signed, 0.0), counts


class TopTwo(Strategy):
    """Top-Two sampling for the Condorcet winner, stopped by the model's GLR rule.

    Top-Two rules (Russo 2016, "Simple Bayesian algorithms for best arm identification"; with a
    GLR challenger, Jourdan, Degenne, Baudry, de Heide & Kaufmann 2022, "Top two algorithms
    revisited") sample, with probability β = ½, the leader, and otherwise the challenger: the
    alternative answer that the current evidence rules out least. Here an answer is a policy and
    a comparison is a pair, so each answer is served by its most informative pair:

    * leader î (the model's empirical Condorcet winner); challenger c = the rival with the
      smallest GLR margin n_îc·d(p̂_îc, ½) − local(n_îc) (rivals î does not beat empirically
      come first, least-sampled first: :func:`~llmpo.strategies.unstructured.balance_key`);
    * with probability ½ sample the leader's pair (î, c);
    * otherwise the challenger's pair (b̂(c), c), where b̂(c) is c's strongest opponent so far —
      the pair that best refutes "c is the winner".

    Under strong stochastic transitivity b̂(c) = î eventually and the rule samples (î, c) only;
    when a non-winner has a stronger opponent than the winner (instance CYC4), half the
    comparisons go to that pair, which the class A lower bound does not need.

    Forced exploration comes first, the same as LLM-PO's
    (:func:`~llmpo.strategies.unstructured.exploration_pair`), so that the two rules differ only
    in what they sample afterwards. Without it the rule can stall forever: on CYC4, a winner that
    loses its first comparisons has p̂ = 0 against every cycle member, the leader's pair with it
    then carries the largest margin and is never chosen again (measured: 1 run in 60 at δ = 0.1).
    """

    name = "top-two"

    def select(self, model: UnstructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        forced = exploration_pair(model)
        if forced is not None:
            return forced
        leader = model.leader
        row = model.statistic_counts(leader, np.arange(model.n_policies))
        margins = balance_key(row, model.signed_divergence_row(leader), model.threshold.local(row))
        margins[leader] = np.inf
        challenger = int(np.argmin(margins))
        if rng.random() < LEADER_PROBABILITY:
            return leader, challenger
        return int(model.witnesses()[challenger]), challenger


class SuccessiveElimination(SelfStopping):
    """Pairwise successive elimination with anytime KL confidence bounds.

    The classical PAC dueling-bandit scheme (Even-Dar, Mannor & Mansour 2006 for arms; for pairs,
    e.g. Urvoy, Clerot, Féraud & Naamane 2013, "Generic exploration and K-armed voting bandits"):
    keep a set of active policies, compare every pair of active policies in turn (the least
    sampled first, so a batch covers the round), and eliminate policy j as soon as some policy k
    beats it confidently: p̂_kj > ½ and n_kj·d(p̂_kj, ½) > β(n_kj). Stop when one policy is left.

    **Stopping rule and its correctness.** The Condorcet winner i* is eliminated only if, for some
    k, the statistic of the pair (k, i*) crosses its threshold although p_ki* < ½; since
    d(p̂, ½) ≤ d(p̂, p) there, this is a crossing of the pair's KT bound. There are K − 1 such
    pairs, so β uses M = K − 1 and the procedure is δ-correct when a Condorcet winner exists.
    """

    name = "successive-elimination"

    def __init__(self) -> None:
        self._active: NDArray[np.bool_] | None = None
        # rival → (eliminator, statistic, threshold) at the moment it was eliminated
        self._eliminated: dict[int, tuple[int, float, float]] = {}

    def _state(self, model: UnstructuredModel) -> NDArray[np.bool_]:
        if self._active is None:
            _require_plain_condorcet(model, self.name)
            self._active = np.ones(model.n_policies, dtype=bool)
        return self._active

    def select(self, model: UnstructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        active = np.flatnonzero(self._state(model))
        counts = model.effective_counts()[np.ix_(active, active)]
        upper = np.triu_indices(active.size, 1)
        least = int(np.argmin(counts[upper]))
        return int(active[upper[0][least]]), int(active[upper[1][least]])

    def _threshold(
        self, model: UnstructuredModel, counts: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return model.threshold.pair(
            counts, float(model.n_told), model.delta, math.log(model.n_policies - 1)
        )

    def is_certified(self, model: UnstructuredModel) -> bool:  # type: ignore[override]
        active = self._state(model)
        k = model.n_policies
        row_grid, col_grid = np.meshgrid(np.arange(k), np.flatnonzero(active), indexing="ij")
        rows, cols = row_grid.ravel(), col_grid.ravel()
        statistics, counts = _evidence(model, rows, cols)
        thresholds = self._threshold(model, counts)
        ruled_out = (statistics > thresholds) & (rows != cols)
        for index in np.flatnonzero(ruled_out):
            rival = int(cols[index])
            if active[rival] and int(np.count_nonzero(active)) > 1:
                active[rival] = False
                self._eliminated[rival] = (
                    int(rows[index]),
                    float(statistics[index]),
                    float(thresholds[index]),
                )
        return int(np.count_nonzero(active)) == 1

    def certificate(self, model: UnstructuredModel) -> Certificate:  # type: ignore[override]
        active = np.flatnonzero(self._state(model))
        if active.size == 1:
            leader = int(active[0])
        else:
            # Best so far: the active policy whose worst estimate against the others is highest.
            estimates = model.win_prob_hat()[np.ix_(active, active)]
            np.fill_diagonal(estimates, np.inf)
            leader = int(active[np.argmax(estimates.min(axis=1))])
        rivals = np.delete(np.arange(model.n_policies), leader)
        statistics, counts = _evidence(model, np.full(rivals.shape, leader), rivals)
        thresholds = self._threshold(model, counts)
        return _certificate(leader, rivals, statistics, thresholds, self._eliminated)


class Knockout(SelfStopping):
    """A single-elimination tournament with a sequential test per match.

    Knockout tournaments for maximum selection from noisy comparisons: Mohajer, Suh & Elmahdy
    2017 (ICML, "Active learning for top-K rank aggregation from noisy comparisons") and
    Falahatgar, Orlitsky, Pichapati & Suresh 2017 (ICML, "Maximum selection and ranking under
    noisy comparisons"). Those fix each match's length in advance from a known gap; here each
    match is an anytime sequential test, so no gap is needed: the bracket is a random permutation
    of the policies (odd one out gets a bye), the matches of a round are played in parallel (the
    least-sampled undecided match first, so a batch spreads over them), and a match (a, b) is won
    by a as soon as p̂_ab > ½ and n_ab·d(p̂_ab, ½) > β(n_ab). The champion is the answer.

    **Stopping rule and its correctness.** The Condorcet winner plays at most ⌈log₂ K⌉ matches
    and is knocked out only if one of its matches' statistics crosses its threshold for the
    wrong side, a crossing of that pair's KT bound; so β uses M = ⌈log₂ K⌉ and the procedure is
    δ-correct when a Condorcet winner exists. Each pair meets at most once, so the model's pair
    counts are the match counts.
    """

    name = "knockout"

    def __init__(self) -> None:
        self._round: list[int] = []
        self._winners: dict[Pair, int] = {}
        # loser → (winner, statistic, threshold) when its match was decided
        self._eliminated: dict[int, tuple[int, float, float]] = {}

    def _matches(self) -> list[Pair]:
        players = self._round
        return [(players[i], players[i + 1]) for i in range(0, len(players) - 1, 2)]

    def select(self, model: UnstructuredModel, rng: np.random.Generator) -> Pair:  # type: ignore[override]
        if not self._round:
            _require_plain_condorcet(model, self.name)
            self._round = [int(i) for i in rng.permutation(model.n_policies)]
        undecided = [match for match in self._matches() if match not in self._winners]
        return min(undecided, key=lambda match: model.effective_count(*match))

    def is_certified(self, model: UnstructuredModel) -> bool:  # type: ignore[override]
        if len(self._round) < 2:
            return len(self._round) == 1
        log_multiplicity = math.log(math.ceil(math.log2(model.n_policies)))
        undecided = [match for match in self._matches() if match not in self._winners]
        # Both orientations of every undecided match: the row policy wins when its test crosses.
        rows = np.array([a for a, b in undecided] + [b for a, b in undecided])
        cols = np.array([b for a, b in undecided] + [a for a, b in undecided])
        statistics, counts = _evidence(model, rows, cols)
        thresholds = model.threshold.pair(
            counts, float(model.n_told), model.delta, log_multiplicity
        )
        for index in np.flatnonzero(statistics > thresholds):
            winner, loser = int(rows[index]), int(cols[index])
            match = (winner, loser) if (winner, loser) in undecided else (loser, winner)
            self._winners[match] = winner
            self._eliminated[loser] = (winner, float(statistics[index]), float(thresholds[index]))
        matches = self._matches()
        if all(match in self._winners for match in matches):
            bye = [self._round[-1]] if len(self._round) % 2 else []
            self._round = [self._winners[match] for match in matches] + bye
        return len(self._round) == 1

    def certificate(self, model: UnstructuredModel) -> Certificate:  # type: ignore[override]
        alive = self._round or list(range(model.n_policies))
        leader = model.leader if model.leader in alive else alive[0]
        rivals = np.delete(np.arange(model.n_policies), leader)
        # A rival still in the tournament has not been ruled out: no statistic, no finite bar.
        statistics = np.zeros(rivals.shape)
        thresholds = np.full(rivals.shape, np.inf)
        return _certificate(leader, rivals, statistics, thresholds, self._eliminated)


#: Baselines of the unstructured space, by the name used in experiments, simulations and suites.
UNSTRUCTURED_BASELINES: dict[str, type[Strategy]] = {
    TopTwo.name: TopTwo,
    SuccessiveElimination.name: SuccessiveElimination,
    Knockout.name: Knockout,
}
