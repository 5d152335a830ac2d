"""Rounds with shared answers: one generation per (policy, task, replicate) serves every
comparison of a batch that needs it (docs/cost.md).

A batch ``ask(n)`` is decided before any of its outcomes is seen. :func:`plan_rounds` packs its
pairs into *rounds*: a round is one task, a set of policies that each answer it once (fresh
replicates), and the pairs compared on those answers, each pair at most once per round. The
leader compared with three rivals becomes one round of four answers instead of three comparisons
of two answers each. A judge that scores each answer on its own (the ``reference`` judge) then
compares *every* pair of the round's answers at no extra call.

Why this stays δ-correct (unstructured space, class A). Let F_b be everything observed before batch
b is asked. The batch fixes, from F_b and independent randomness only, its rounds, their tasks
(drawn from the seed and a number) and fresh replicate indices; a round's comparisons are told
together in a fixed order, and the order of the rounds does not depend on their outcomes (a fixed
order in :func:`llmpo.environments.answers.run_with_rounds`; completion time in the concurrent
runner, which assumes, as it always has, that timing and not content orders results). Fix a pair (i,
j). Within a batch it is compared at most once per round, and different rounds use different answers
(fresh replicates, their tasks drawn independently), so the pair's outcomes in batch b are
independent given F_b, each with mean p_ij — even though pairs that share an answer in a round are
strongly correlated with each other. Let G be the filtration that at the start of a batch is F_b and
inside it adds only the pair's own outcomes: G is nested (F_b and the pair's outcomes of batch b are
in F_{b+1}), and under G the pair's outcomes are conditionally independent with mean p_ij, told in
an order that does not depend on them. So the pair's likelihood ratio ``Π (q/p)^y
((1−q)/(1−p))^(1−y)`` — and its Beta(½, ½) mixture, the KT mixture of :mod:`llmpo.stats.thresholds`
— is a non-negative G-supermartingale, in particular at batch boundaries; Ville's inequality bounds
the probability that it *ever* exceeds 1/δ' by δ', at any tell, inside a batch or not. Class A errs
only if the statistic of one of the K − 1 pairs of the true winner crosses; the union bound over
those pairs needs no independence between them. The same holds for any statistic of one pair (the
decisive-outcome test of a pair with ties: its decisive outcomes are conditionally i.i.d. given G as
well).

How much sharing can save (why :func:`ask_rounds` adds every rival still short of its threshold
to every round of the leader, and nothing else). A class A run ends when each rival j's pair with
the leader has crossed its threshold, and only that pair's own outcomes move its statistic; let
R_j be the leader comparisons rival j needed (its crossing time, a property of its outcome
sequence, whatever the plan). A round compares a pair at most once, so any plan needs at least
max_j R_j rounds, each paying one leader answer, and R_j answers of rival j (an answer of j
serves one comparison with the leader): at least max_j R_j + Σ_j R_j generation calls. Adding
every short rival to every leader round attains it (rounds hold the leader and the rivals not yet
across, so the run takes max_j R_j rounds and each rival answers only while it needs evidence),
up to the rounds of the last batch. Without sharing the same comparisons cost 2·Σ_j R_j, so the
saving is 2Σ R_j/(max R_j + Σ R_j) — 2(K − 1)/K when the rivals cross together, less when their
crossing times spread: with K = 4 equal rivals, a scoring judge and the decisive statistic the
slowest rival needs 1.44× the mean R_j (20 seeds of ``benchmarks/sharing.py``) and the saving is
1.34×, while the calls measured match max_j R_j + Σ_j R_j within 1%.
Only a statistic that draws more evidence from each answer can do better (free comparisons
between rivals do not certify anything in class A).

Where sharing is NOT allowed. Statistics that combine several pairs rely on conditional
independence *across* pairs within a step: class B bounds a sum over the witness pairs of a rival
by the product ``Π_k (1 + X_k)/2`` of per-pair supermartingales, which stays a supermartingale only
when each comparison moves one factor; two comparisons of one rival that share its answer move
two factors jointly, and E[Π (1 + X_k Λ_k)/2] can exceed Π (1 + X_k)/2 when the Λ_k are positively
correlated (``tests/test_sharing.py`` measures it). The structured space's likelihood assumes every
comparison independent given the past. Self-stopping baselines carry their own rules. So
:func:`sharing_allowed` is True only for the unstructured space with class A statistics and the
GLR stopping rule; everywhere else each comparison gets its own answers, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING

from llmpo.models.base import Pair

if TYPE_CHECKING:
    from llmpo.experiment import Experiment


@dataclass
class Round:
    """One task answered once by each of ``policies``, and the pairs compared on those answers.

    Attributes
    ----------
    policies : list of int
        The policies answering, in order of arrival in the round.
    asked : list of (int, int)
        The pairs the sampling rule asked, oriented as asked, each unordered pair at most once.
    """

    policies: list[int] = field(default_factory=list)
    asked: list[Pair] = field(default_factory=list)

    def holds(self, a: int, b: int) -> bool:
        """Whether the round already compares the unordered pair {a, b}."""
        return any({a, b} == {x, y} for x, y in self.asked)

    def pairs(self, score_each: bool) -> list[Pair]:
        """The comparisons of the round: the asked pairs, then, when the judge scores each answer
        on its own, every other pair of its answers (free: no generation, no judge call)."""
        if not score_each:
            return list(self.asked)
        extra = [(a, b) for a, b in combinations(self.policies, 2) if not self.holds(a, b)]
        return [*self.asked, *extra]


def plan_rounds(pairs: Iterable[Pair]) -> list[Round]:
    """Pack one batch's pairs into rounds that share answers.

    Greedy, in order: a pair joins the first round that already has both of its policies and does
    not compare them yet (no new answer), else the first round that has one of them (one new
    answer), else opens a round (two new answers). A round never compares one pair twice, so a
    pair's comparisons within the batch are on different answers (see the module docstring).

    Parameters
    ----------
    pairs : iterable of (int, int)
        The batch, as ``Experiment.ask`` returned it.

    Returns
    -------
    list of Round
        Every pair appears in exactly one round, in its given orientation.
    """
    rounds: list[Round] = []
    for a, b in pairs:
        best: Round | None = None
        best_cost = 2
        for candidate in rounds:
            if candidate.holds(a, b):
                continue
            cost = (a not in candidate.policies) + (b not in candidate.policies)
            if cost < best_cost:
                best, best_cost = candidate, cost
                if cost == 0:
                    break
        if best is None:
            best = Round()
            rounds.append(best)
        for policy in (a, b):
            if policy not in best.policies:
                best.policies.append(policy)
        best.asked.append((a, b))
    return rounds


def unshared_rounds(pairs: Iterable[Pair]) -> list[Round]:
    """One round per pair: each comparison generates its own two answers (no sharing)."""
    return [Round([a, b], [(a, b)]) for a, b in pairs]


def generation_calls(rounds: Sequence[Round]) -> int:
    """Answers the rounds generate: one per (policy, round)."""
    return sum(len(r.policies) for r in rounds)


def sharing_allowed(experiment: Experiment) -> bool:
    """Whether the experiment's statistics stay δ-correct with answers shared within a batch.

    True only for the unstructured space with class A statistics (no ``assume_condorcet``) and
    the model's GLR stopping rule (not a self-stopping baseline): see the module docstring.
    """
    return (
        not experiment.structured
        and not experiment.assume_condorcet
        and not experiment.self_stopping
    )


def ask_rounds(experiment: Experiment, n: int, score_each: bool = False) -> list[Round]:
    """Ask the experiment for ``n`` pairs and pack them into rounds that share answers (one round
    per pair when sharing is not allowed).

    The sampling rule then exploits the shared answers: every round that holds the leader also
    compares it with each rival still short of its stopping threshold, at one generation each
    instead of two (rivals already past their threshold are not added). These comparisons are
    decided now, with the batch, before any of its outcomes is seen. The added comparisons, and
    with ``score_each`` the ones the judge gets for free (pairs of a round not asked), are marked
    pending, so the experiment counts them until they are told.
    """
    pairs = experiment.ask(n)
    if not sharing_allowed(experiment):
        return unshared_rounds(pairs)
    rounds = plan_rounds(pairs)
    certificate = experiment.certificate()
    leader = int(certificate.leader)
    short = [
        int(rival)
        for rival, statistic, threshold in zip(
            certificate.rivals, certificate.statistics, certificate.thresholds, strict=True
        )
        if statistic <= threshold
    ]
    for one in rounds:
        if leader in one.policies:
            for rival in short:
                if rival not in one.policies:
                    one.policies.append(rival)
                    one.asked.append((leader, rival))
                    experiment.mark_pending(leader, rival)
        if score_each:
            for a, b in one.pairs(True)[len(one.asked) :]:
                experiment.mark_pending(a, b)
    return rounds
