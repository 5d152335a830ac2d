"""A synthetic environment of *answers*, for rounds that share them (:mod:`llmpo.sharing`).

Policy i's answer to a task has quality ``q = μ_i + s·z + ε``: ``z ~ N(0, 1)`` is the task's ease
(shared by every answer to it), ``ε ~ N(0, 1)`` the answer's own noise. Two judges read the same
answers:

* ``score_each`` (like the ``reference`` judge): an answer is correct when q > 0; correct against
  incorrect wins, equal correctness is a tie;
* pairwise (like an LLM judge): a wins when q_a − q_b > ``margin``, loses below −``margin``, tie
  between.

A round generates one answer per policy, so every comparison of the round that involves a policy
uses the same answer: outcomes of one round are strongly correlated (through the shared answer and
the shared task), which is what the δ-correctness checks of sharing need. The true preference
matrix (ties ½) is computed by :meth:`AnswerModel.win_prob` with Gauss–Hermite quadrature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

from llmpo.experiment import Experiment
from llmpo.models.base import Pair
from llmpo.sharing import Round, ask_rounds, generation_calls, unshared_rounds


@dataclass(frozen=True)
class AnswerModel:
    """Answer qualities ``μ_i + s·z + ε`` and the two judges described in the module docstring.

    Parameters
    ----------
    means : sequence of float
        μ_i per policy.
    task_scale : float
        s: how much the task moves every answer's quality.
    margin : float
        Half-width of the pairwise judge's tie zone.
    score_each : bool
        True: the correctness judge (every pair of a round is compared); False: pairwise.
    """

    means: Sequence[float]
    task_scale: float = 1.0
    margin: float = 0.5
    score_each: bool = True

    @property
    def n_policies(self) -> int:
        """K."""
        return len(self.means)

    def answers(self, policies: Sequence[int], rng: np.random.Generator) -> dict[int, float]:
        """One task, and one answer quality per policy."""
        ease = rng.standard_normal()
        return {
            p: float(self.means[p] + self.task_scale * ease + rng.standard_normal())
            for p in policies
        }

    def outcome(self, quality_a: float, quality_b: float) -> float:
        """The judge's outcome for a against b."""
        if self.score_each:
            correct_a, correct_b = quality_a > 0, quality_b > 0
            return 0.5 if correct_a == correct_b else float(correct_a)
        gap = quality_a - quality_b
        return 1.0 if gap > self.margin else 0.0 if gap < -self.margin else 0.5

    def win_prob(self) -> NDArray[np.float64]:
        """K×K P(i ≻ j) with ties ½ (exact up to quadrature)."""
        means = np.asarray(self.means, dtype=float)
        k = means.size
        if not self.score_each:  # q_a − q_b ~ N(μ_a − μ_b, 2): the task cancels
            gap = (means[:, None] - means[None, :]) / np.sqrt(2.0)
            m = self.margin / np.sqrt(2.0)
            win, loss = norm.sf(m - gap), norm.cdf(-m - gap)
            return win + 0.5 * (1.0 - win - loss)
        nodes, weights = np.polynomial.hermite_e.hermegauss(80)
        weights = weights / weights.sum()
        correct = norm.cdf(means[:, None] + self.task_scale * nodes[None, :])  # K × nodes
        matrix = np.full((k, k), 0.5)
        for a in range(k):
            for b in range(k):
                if a != b:
                    win = np.sum(weights * correct[a] * (1 - correct[b]))
                    loss = np.sum(weights * correct[b] * (1 - correct[a]))
                    matrix[a, b] = win + 0.5 * (1.0 - win - loss)
        return matrix


@dataclass(frozen=True)
class RoundsRun:
    """How one simulated run with rounds ended, and what it cost."""

    best: int
    certified: bool
    comparisons: int
    generation_calls: int
    rounds: int


def run_with_rounds(
    experiment: Experiment,
    model: AnswerModel,
    rng: np.random.Generator,
    batch_size: int,
    share: bool = True,
) -> RoundsRun:
    """Drive an experiment to its end on :class:`AnswerModel` answers, batch by batch.

    Each batch is asked at once, packed into rounds (``share``; one round per pair otherwise, or
    when :func:`~llmpo.sharing.sharing_allowed` says no), every round draws its task and answers,
    and the comparisons are told in a fixed order (round by round). Comparisons left when the
    experiment stops are not told and not counted; the generations of a round are counted once
    it is started.
    """
    calls = n_rounds = 0
    while not experiment.done:
        rounds: list[Round]
        if share:
            rounds = ask_rounds(experiment, batch_size, model.score_each)
        else:
            rounds = unshared_rounds(experiment.ask(batch_size))
        if not rounds:
            break
        for one in rounds:
            if experiment.done:
                break
            quality = model.answers(one.policies, rng)
            calls += generation_calls([one])
            n_rounds += 1
            pairs: list[Pair] = one.pairs(model.score_each and share)
            for a, b in pairs:
                if experiment.done:
                    break
                experiment.tell(a, b, model.outcome(quality[a], quality[b]))
    result = experiment.result
    return RoundsRun(result.best, result.certified, result.n_comparisons, calls, n_rounds)
