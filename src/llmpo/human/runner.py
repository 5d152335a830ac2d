"""The live runner of an experiment judged by people, run inside the web server's event loop."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from llmpo.human.queue import HumanJudge
from llmpo.llm.environment import LiveComparison
from llmpo.llm.runner import AsyncRunner
from llmpo.runner import RunOutcome
from llmpo.store import Store, StoreError


def judge_name(raw: Any) -> str | None:
    """The judge's name in a stored comparison's raw verdict (None for machine judges)."""
    if isinstance(raw, dict) and isinstance(raw.get("judge"), dict):
        name = raw["judge"].get("judge_name")
        return str(name) if name is not None else None
    return None


class HumanRunner(AsyncRunner):
    """An :class:`~llmpo.llm.runner.AsyncRunner` whose judge is a :class:`HumanJudge`.

    ``concurrency`` is the number of comparisons waiting for people at once (with their answers
    generated ahead). Verdicts are committed to the store, then told, exactly as for any judge.

    Raises
    ------
    StoreError
        When the experiment is not a live experiment with ``judge: {type: human}``.
    """

    #: People judge one comparison at a time: each gets its own answers (no rounds).
    share_answers = False

    def __init__(self, store: Store, experiment_id: int, concurrency: int = 4) -> None:
        super().__init__(store, experiment_id, concurrency)
        judge = self.live.judge
        if not isinstance(judge, HumanJudge):
            raise StoreError(
                f"experiment {experiment_id} is judged by a {type(judge).__name__}, not by "
                "people. Fix: run it with 'llmpo resume', or serve an experiment whose "
                "configuration has judge: {type: human}"
            )
        self.judge: HumanJudge = judge
        self.verdicts_by_judge: Counter[str] = Counter(
            name
            for name in (judge_name(c.raw) for c in store.iter_comparisons(experiment_id))
            if name is not None
        )
        self.outcome: RunOutcome | None = None
        self._settled: dict[int, asyncio.Event] = {}

    def settled_event(self, verdict: object) -> asyncio.Event:
        """Set once the comparison of this verdict is committed and told."""
        return self._settled.setdefault(id(verdict), asyncio.Event())

    def _settle(self, comparison: LiveComparison) -> None:
        super()._settle(comparison)
        name = judge_name(comparison.raw())
        if name is not None:
            self.verdicts_by_judge[name] += 1
        self.settled_event(comparison.verdict).set()
        self._settled.pop(id(comparison.verdict), None)

    async def serve(self) -> RunOutcome:
        """Run until the experiment is done; when cancelled (server stopping), mark it
        ``interrupted`` so that the next ``llmpo serve`` resumes it."""
        try:
            self.outcome = await self._run()
            return self.outcome
        except asyncio.CancelledError:
            if not self.experiment.done:
                self.store.set_status(
                    self.record.id,
                    "interrupted",
                    event="interrupted",
                    detail={"comparisons": self._sequence, "by": "server stopped"},
                )
            raise
