"""People as judges: the human layer over the one driver, run inside the web server's loop."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from llmpo.human.queue import HumanJudge
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import RunOutcome
from llmpo.runtime.sources import Finished
from llmpo.store import Store, StoreError


def judge_name(raw: Any) -> str | None:
    """The judge's name in a stored comparison's raw verdict (None for machine judges)."""
    if isinstance(raw, dict) and isinstance(raw.get("judge"), dict):
        name = raw["judge"].get("judge_name")
        return str(name) if name is not None else None
    return None


class HumanRunner:
    """Serves an experiment judged by people: a :class:`~llmpo.runtime.run.Runner` whose live
    judge is a :class:`~llmpo.human.queue.HumanJudge`, one comparison per round, plus what the
    web app shows (verdicts per judge) and waits for (a verdict committed and told).

    ``concurrency`` is the number of comparisons waiting for people at once (with their answers
    generated ahead). Verdicts are committed to the store, then told, exactly as for any judge.

    Raises
    ------
    StoreError
        When the experiment is not a live experiment with ``judge: {type: human}``.
    """

    def __init__(self, store: Store, experiment_id: int, concurrency: int = 4) -> None:
        self.runner = Runner(
            store,
            experiment_id,
            concurrency=concurrency,
            share_answers=False,  # people judge one comparison at a time: no rounds
            on_settled=self._settled,
        )
        judge = getattr(self.runner.source, "judge", None)
        if not isinstance(judge, HumanJudge):
            raise StoreError(
                f"experiment {experiment_id} is judged by a {type(judge).__name__}, not by "
                "people. Fix: run it with 'llmpo resume', or serve an experiment whose "
                "configuration has judge: {type: human}"
            )
        self.judge: HumanJudge = judge
        self.record = self.runner.record
        self.experiment = self.runner.experiment
        self.progress = self.runner.progress
        self.verdicts_by_judge: Counter[str] = Counter(
            name
            for name in (judge_name(c.raw) for c in store.iter_comparisons(experiment_id))
            if name is not None
        )
        self.outcome: RunOutcome | None = None
        self._settled_events: dict[int, asyncio.Event] = {}

    def settled_event(self, verdict: object) -> asyncio.Event:
        """Set once the comparison of this verdict is committed and told."""
        return self._settled_events.setdefault(id(verdict), asyncio.Event())

    def _settled(self, finished: Finished) -> None:
        if finished.stored:
            return
        comparison = finished.origin
        name = judge_name(comparison.raw())
        if name is not None:
            self.verdicts_by_judge[name] += 1
        self.settled_event(comparison.verdict).set()
        self._settled_events.pop(id(comparison.verdict), None)

    async def serve(self) -> RunOutcome:
        """Run until the experiment is done; when cancelled (server stopping), it is left
        ``interrupted`` so that the next ``llmpo serve`` resumes it."""
        self.outcome = await self.runner.serve()
        return self.outcome
