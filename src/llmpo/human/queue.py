"""The human judge: pending comparisons waiting for people, each leased to one judge at a time.

The live runner calls :meth:`HumanJudge.judge` for every comparison whose answers are ready; the
call waits until a person's verdict arrives through :meth:`HumanJudge.submit`. Meanwhile the web
app hands the comparison out with :meth:`HumanJudge.assign`: to one judge only, under a lease of
``lease_seconds``; a lease that expires unanswered lets the comparison go to the next judge who
asks, and the first judge's late verdict is then refused. The two answers are shown in a random
order drawn from the comparison's own seed, and the order is recorded with the verdict.

Everything here runs on the event loop of the server (no locks needed).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from llmpo.config import HumanJudgeConfig
from llmpo.errors import ConfigError, DataError, LlmpoError
from llmpo.llm.judges import Judge, Verdict
from llmpo.llm.tasks import Task

#: A person's choice on the judging page → score of the answer shown first (left, "A").
CHOICES = {"A": 1.0, "B": 0.0, "tie": 0.5}
MAX_COMMENT = 2000


class LeaseError(LlmpoError, ValueError):
    """A verdict that cannot be accepted: the comparison is gone or leased to someone else."""


@dataclass
class PendingComparison:
    """A comparison whose answers wait for a person.

    Attributes
    ----------
    id : str
        Random identifier used by the judging form.
    task : Task
        The task both policies answered.
    shown : tuple of str
        The two answers in the order shown (A on the left, B on the right).
    order : str
        ``"ab"`` when A is the first policy's answer, ``"ba"`` when it is the second's.
    holder : str or None
        The judge holding the lease.
    lease_id : str or None
        Random identifier of the current lease (a new one each time it is handed out).
    expires : float
        Clock time at which the lease lapses.
    handed_out : float
        Clock time of the current lease's start.
    """

    id: str
    task: Task
    shown: tuple[str, str]
    order: str
    future: asyncio.Future[Verdict] = field(repr=False)
    created: float
    holder: str | None = None
    lease_id: str | None = None
    expires: float = 0.0
    handed_out: float = 0.0
    leases: int = 0
    settled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


class HumanJudge(Judge):
    """A judge whose verdicts come from people through the web app.

    Parameters
    ----------
    lease_seconds : float
        How long a judge holds a comparison before it may go to another judge.
    show_reference : bool
        Whether the judging page shows the task's reference answer.
    clock : callable
        Monotonic time in seconds (replaceable in tests).
    """

    def __init__(
        self,
        lease_seconds: float = 600.0,
        show_reference: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigError(f"lease_seconds must be positive, got {lease_seconds}")
        self.lease_seconds = lease_seconds
        self.show_reference = show_reference
        self.clock = clock
        self.pending: dict[str, PendingComparison] = {}

    @classmethod
    def from_config(cls, config: HumanJudgeConfig, generate: object = None) -> HumanJudge:
        """The judge of a ``type: human`` configuration (its registration in
        :data:`llmpo.registry.JUDGES`; ``generate`` is not used)."""
        return cls(config.lease_seconds, config.show_reference)

    async def judge(
        self, task: Task, answer_a: str, answer_b: str, rng: np.random.Generator
    ) -> Verdict:
        swapped = bool(rng.integers(2))
        shown = (answer_b, answer_a) if swapped else (answer_a, answer_b)
        item = PendingComparison(
            secrets.token_urlsafe(9),
            task,
            shown,
            "ba" if swapped else "ab",
            asyncio.get_running_loop().create_future(),
            self.clock(),
        )
        self.pending[item.id] = item
        try:
            return await item.future
        finally:
            self.pending.pop(item.id, None)

    # ---- leases --------------------------------------------------------------------------------
    def held_by(self, judge: str) -> PendingComparison | None:
        """The comparison whose live lease ``judge`` holds, if any."""
        now = self.clock()
        for item in self.pending.values():
            if item.holder == judge and item.expires > now and not item.future.done():
                return item
        return None

    def assign(self, judge: str) -> PendingComparison | None:
        """The comparison ``judge`` should judge now, leased to them; None when none is free.

        A judge keeps the comparison they hold (reloading the page shows it again); otherwise
        they get the oldest comparison that nobody holds, or whose lease has lapsed.
        """
        held = self.held_by(judge)
        if held is not None:
            return held
        now = self.clock()
        for item in self.pending.values():
            if item.future.done():
                continue
            if item.holder is None or item.expires <= now:
                item.holder = judge
                item.lease_id = secrets.token_urlsafe(9)
                item.expires = now + self.lease_seconds
                item.handed_out = now
                item.leases += 1
                return item
        return None

    def submit(
        self, judge: str, item_id: str, lease_id: str, choice: str, comment: str = ""
    ) -> PendingComparison:
        """Accept ``judge``'s verdict on a comparison they hold; it is told by the runner.

        A lapsed lease still counts while nobody else has taken the comparison.

        Raises
        ------
        ValueError
            For a choice other than ``A``, ``B``, ``tie`` (nothing changes).
        LeaseError
            When the comparison is no longer pending or is leased to another judge.
        """
        if choice not in CHOICES:
            raise DataError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        item = self.pending.get(item_id)
        if item is None or item.future.done():
            raise LeaseError(
                "this comparison is no longer waiting for a verdict (judged already, or the "
                "experiment moved on)"
            )
        if item.holder != judge or item.lease_id != lease_id:
            raise LeaseError(
                "your lease on this comparison lapsed and it was handed to another judge"
            )
        score = CHOICES[choice]
        outcome = score if item.order == "ab" else 1.0 - score
        raw = {
            "judge_name": judge,
            "choice": choice,
            "shown": item.order,
            "comment": comment.strip()[:MAX_COMMENT] or None,
            "seconds": round(self.clock() - item.handed_out, 3),
            "leases": item.leases,
        }
        item.future.set_result(Verdict(outcome, item.order, raw))
        return item

    def counts(self) -> tuple[int, dict[str, int]]:
        """Comparisons waiting for a judge, and those being judged by each judge."""
        now = self.clock()
        waiting, held = 0, dict[str, int]()
        for item in self.pending.values():
            if item.future.done():
                continue
            if item.holder is not None and item.expires > now:
                held[item.holder] = held.get(item.holder, 0) + 1
            else:
                waiting += 1
        return waiting, held
