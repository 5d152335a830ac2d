"""The live source: LLM policies answer tasks, a judge (a model, a function or people) decides.

Rounds with shared answers (:mod:`llmpo.sharing`, docs/cost.md). Each batch the experiment asks
is packed into rounds: one task, one answer per policy of the round, every comparison of the round
on those answers (a judge that scores each answer on its own compares every pair of them, at no
extra call). Rounds share answers only where it is proven δ-correct
(:func:`llmpo.sharing.sharing_allowed`) and only when the source is built with
``share_answers`` (people judge one comparison at a time; an evaluation compares one pair).

Round number n draws its task from (seed, n) — or, in an evaluation, takes the task at position
(n − 1) mod T of its own order of the held-out tasks. The numbers and replicates themselves are
kept by the driver (:class:`llmpo.runtime.driver.Ledger`), the one place resume is decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmpo.llm.backends import BackendError
from llmpo.llm.environment import LiveComparison, LLMEnvironment, LLMSetupError
from llmpo.llm.tasks import Task
from llmpo.runtime.sources import Finished, Job
from llmpo.sharing import Round, ask_rounds, sharing_allowed, unshared_rounds

if TYPE_CHECKING:
    from llmpo.runtime.driver import Target

#: After a stop or a failure, the comparisons in flight get this long (at most one call timeout)
#: to finish: those that do are stored and told, so a resumed run does not pay for them again.
FAILURE_GRACE_SECONDS = 10.0


class LiveSource:
    """Live LLM policies and their judge as a source of outcomes.

    Parameters
    ----------
    live : LLMEnvironment
        The live environment, built with the store as its generation cache.
    share_answers : bool
        Pack each batch into rounds that share answers, where proven valid.
    task_order : sequence of Task, optional
        The tasks in the order comparisons take them (an evaluation's held-out order); default:
        round n draws its task from (seed, n).
    """

    in_order = False
    stop_errors: tuple[type[BaseException], ...] = (BackendError, LLMSetupError)

    def __init__(
        self,
        live: LLMEnvironment,
        share_answers: bool = True,
        task_order: Sequence[Task] | None = None,
    ) -> None:
        self.live = live
        self.policies = tuple(live.policies)
        self.share_answers = share_answers
        self.task_order = None if task_order is None else tuple(task_order)
        self.grace_seconds = min(FAILURE_GRACE_SECONDS, live.retry.timeout_seconds)

    @property
    def judge(self) -> Any:
        """The judge of the live environment."""
        return self.live.judge

    def score_each(self, target: Target) -> bool:
        from llmpo.experiment import Experiment

        return (
            self.share_answers
            and self.live.judge.scores_each_answer
            and isinstance(target, Experiment)
            and sharing_allowed(target)
        )

    def plan(self, target: Target, n: int) -> list[Round]:
        from llmpo.experiment import Experiment

        if not self.share_answers or not isinstance(target, Experiment):
            return unshared_rounds(target.ask(n))
        return ask_rounds(target, n, self.score_each(target))

    def task(self, round_number: int) -> Task:
        if self.task_order is not None:
            return self.task_order[(round_number - 1) % len(self.task_order)]
        return self.live.task(round_number)

    async def run(self, job: Job) -> list[Finished]:
        planned = [
            (number, a, b, replicates)
            for number, a, b, replicates in job.comparisons
            if replicates is not None  # a live round is on a task: every answer has a replicate
        ]
        results = await self.live.compare_round(job.round_number, job.task, planned, job.score_each)
        return [_finished(result) for result in results]

    def session_detail(self) -> dict[str, Any]:
        # What each call paid is in the store's payments (llmpo.llm.paid); these count the
        # attempts, which no payment shows.
        return {
            "backend_calls": self.live.calls,
            "retries": self.live.retries,
        }

    async def aclose(self) -> None:
        await self.live.aclose()


def _finished(result: LiveComparison) -> Finished:
    return Finished(
        result.a,
        result.b,
        result.verdict.outcome,
        result.cost_usd,
        result.to_record,
        {
            **result.raw(),
            "a": result.a,
            "b": result.b,
            "task_id": result.task_id,
            "order": result.verdict.order,
            "cost_usd": result.cost_usd,
        },
        origin=result,
    )
