"""The concurrent runner of live LLM experiments: up to N comparisons in flight at once.

The experiment is asked for as many pairs as there are free slots (pending pairs count as
sampled, so a batch spreads over the pairs the rule wants most); each finished comparison is
committed to the store (its newly cached answers in the same transaction), then told, and the
stopping rule is checked after every one. Once the
experiment is done the comparisons still in flight are cancelled (their finished generations stay
in the cache) and never told.

Numbers and replicates. Comparison number n (in order of dispatch) draws its task from
(seed, n). A policy's answers to a task are numbered by replicate index, the smallest index not
used by a stored or in-flight comparison, so every told comparison uses fresh samples while an
answer generated for a comparison that was never stored (interrupted, cancelled) is found in the
cache and reused by the next comparison that needs a sample.

Resuming. Completion order depends on timing, so a resumed run does not re-ask the stored pairs:
it tells the stored comparisons in their stored order (the model's state is what the stopping rule
needs), then continues. Invalid verdicts are recorded as ``invalid_verdict`` events and not told.
Every batch of dispatched comparisons is recorded first as one ``asked`` event (number, pair, task,
replicates); a resumed run dispatches again, before asking for new pairs, the asked comparisons
that were neither stored nor found invalid (in flight when the run stopped), with the same number,
task and replicates, so the answers they had already paid for are found in the cache, and each
number is told at most once.

Stopping. On SIGINT or SIGTERM no comparison is dispatched any more and those in flight get the
same grace as after a failure (below) before they are cancelled, so a run stops within
:data:`FAILURE_GRACE_SECONDS` whatever the server does (hangs, or asks to retry much later); it
is left ``interrupted``.

Failures. A call that still fails after its retries, or a judge whose verdicts are more than 90%
invalid (after 50 results), stops the run: no comparison is dispatched any more, those in flight
get up to :data:`FAILURE_GRACE_SECONDS` (at most one call timeout) to finish and be stored, the
rest are cancelled; the run records a ``backend_failed`` event, marks the experiment
``interrupted`` (every finished comparison is stored) and raises :class:`RunFailedError`;
``llmpo run CONFIG --resume`` continues it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from llmpo.llm.backends import BackendError
from llmpo.llm.environment import LiveComparison, LLMEnvironment, LLMSetupError
from llmpo.runner import Progress, RunFailedError, Runner, RunOutcome
from llmpo.store import Store, StoreError

#: A run stops when more than this share of its verdicts are invalid (after enough results).
MAX_INVALID_SHARE = 0.9
MIN_RESULTS_FOR_JUDGE_CHECK = 50

#: After a failure, the comparisons in flight get this long (at most one call timeout) to finish:
#: those that do are stored and told, so a resumed run does not pay for their answers again.
FAILURE_GRACE_SECONDS = 10.0


class AsyncRunner(Runner):
    """Runs (or resumes) one stored live-LLM experiment with ``concurrency`` comparisons in flight.

    Parameters
    ----------
    store : Store
        The store, opened as writer; it also holds the generation cache.
    experiment_id : int
        The experiment to run.
    concurrency : int
        Comparisons in flight at once (each makes two generation calls, then the judge's).
    on_progress : callable, optional
        Called with a :class:`~llmpo.runner.Progress` at most every ``progress_interval`` s.
    progress_interval : float
        Seconds between progress reports.
    """

    def __init__(
        self,
        store: Store,
        experiment_id: int,
        concurrency: int = 8,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.5,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency}")
        super().__init__(store, experiment_id, on_progress, progress_interval)
        if not isinstance(self.environment, LLMEnvironment):
            raise StoreError(f"experiment {experiment_id} is not a live LLM experiment")
        self.live: LLMEnvironment = self.environment
        self.live.cache = store
        self.live.concurrency = self.concurrency = concurrency
        self._used_replicates: dict[tuple[int, str], set[int]] = {}
        self._lowest_free: dict[tuple[int, str], int] = {}  # every replicate below it is used
        self._next_number = 1
        self._unfinished: list[tuple[int, int, int, str, tuple[int, int]]] = []
        self._asked: list[list[Any]] = []
        self._sequence = 0
        self._new = 0
        self._invalid = 0

    def run(self) -> RunOutcome:
        """Replay the stored comparisons, then run new ones concurrently until done.

        Raises
        ------
        RunFailedError
            When a backend fails for good; the experiment is left ``interrupted``.
        StoreError
            When the store holds more comparisons than the experiment needed.
        """
        # asyncio's own loop: uvloop, when installed, made results arrive in larger clumps
        # (benchmarks/throughput.py at 64 in flight: 82% of the ideal in-process, against 88%).
        with self._stop_on_signals():
            return asyncio.run(self._run())

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _use(self, policy: int, task_id: str, replicate: int) -> None:
        self._used_replicates.setdefault((policy, task_id), set()).add(replicate)

    def _fresh_replicate(self, policy: int, task_id: str) -> int:
        key = (policy, task_id)
        used = self._used_replicates.setdefault(key, set())
        replicate = self._lowest_free.get(key, 0)  # amortised O(1), not a scan from 0
        while replicate in used:
            replicate += 1
        used.add(replicate)
        self._lowest_free[key] = replicate + 1
        return replicate

    def _remember(self, raw: Any, a: int, b: int, task_id: str | None) -> None:
        """Mark a stored comparison's number and replicates as used."""
        if not isinstance(raw, dict) or task_id is None:
            return
        number = raw.get("number")
        if isinstance(number, int):
            self._next_number = max(self._next_number, number + 1)
        replicates = raw.get("replicates")
        if isinstance(replicates, list) and len(replicates) == 2:
            self._use(a, task_id, int(replicates[0]))
            self._use(b, task_id, int(replicates[1]))

    def _replay(self) -> int:
        stored = self.store.comparisons(self.record.id)
        for record in stored:
            self._remember(record.raw, record.policy_a, record.policy_b, record.task_id)
            if record.cost_usd is not None:
                self._cost_usd = (self._cost_usd or 0.0) + record.cost_usd
            if self.experiment.done:
                raise StoreError(
                    f"experiment {self.record.id}: the store holds {len(stored)} comparisons but "
                    f"the experiment stopped after {record.seq - 1}; the code or data changed"
                )
            self.experiment.tell(record.policy_a, record.policy_b, record.outcome)
        self._sequence = len(stored)
        finished = {r.raw.get("number") for r in stored if isinstance(r.raw, dict)}
        asked: dict[int, list[Any]] = {}
        for _, kind, detail in self.store.events(self.record.id):
            if kind == "invalid_verdict" and detail is not None:
                finished.add(detail.get("number"))
                self._remember(detail, detail["a"], detail["b"], detail.get("task_id"))
                if detail.get("cost_usd") is not None:
                    self._cost_usd = (self._cost_usd or 0.0) + detail["cost_usd"]
            elif kind == "asked" and detail is not None:
                asked.update((int(row[0]), row) for row in detail["comparisons"])
        for number, (_, a, b, task_id, ra, rb) in sorted(asked.items()):
            self._next_number = max(self._next_number, number + 1)
            if number in finished or self.live.task(number).id != task_id:
                continue  # told, recorded invalid, or the tasks changed since it was asked
            self._remember({"replicates": [ra, rb]}, a, b, task_id)
            self._unfinished.append((number, a, b, task_id, (ra, rb)))
        return len(stored)

    def _judge_failure(self) -> str | None:
        """A message when the judge's verdicts are mostly invalid (the run would never end)."""
        results = self._new + self._invalid
        if results < MIN_RESULTS_FOR_JUDGE_CHECK or self._invalid <= MAX_INVALID_SHARE * results:
            return None
        return (
            f"the judge gave {self._invalid} invalid verdicts in {results} comparisons of this "
            "run (see the invalid_verdict events for its raw replies). Fix the judge's prompt or "
            "model"
        )

    def _grace_seconds(self) -> float:
        """How long the comparisons in flight may still finish (and be stored) after a failure."""
        return min(FAILURE_GRACE_SECONDS, self.live.retry.timeout_seconds)

    def _over_cost(self) -> bool:
        limit = self.config.max_cost
        return limit is not None and self._cost_usd is not None and self._cost_usd >= limit

    # ---- one result ----------------------------------------------------------------------------
    def _settle(self, comparison: LiveComparison) -> None:
        """Commit a finished comparison, then tell it (or record it as invalid)."""
        if comparison.cost_usd is not None:
            self._cost_usd = (self._cost_usd or 0.0) + comparison.cost_usd
        outcome = comparison.verdict.outcome
        if outcome is None:
            self._invalid += 1
            self.experiment.model.unmark_pending(comparison.a, comparison.b)
            self.store.add_event(
                self.record.id,
                "invalid_verdict",
                {
                    **comparison.raw(),
                    "a": comparison.a,
                    "b": comparison.b,
                    "task_id": comparison.task_id,
                    "order": comparison.verdict.order,
                    "cost_usd": comparison.cost_usd,
                },
            )
            return
        self._sequence += 1
        self.store.append_comparison(
            self.record.id, comparison.to_record(self._sequence, comparison.a, comparison.b)
        )  # committed before it is told
        self._new += 1
        self.experiment.tell(comparison.a, comparison.b, outcome)

    def _dispatch(self, a: int, b: int) -> asyncio.Task[LiveComparison]:
        number = self._next_number
        self._next_number += 1
        task = self.live.task(number)
        replicates = (self._fresh_replicate(a, task.id), self._fresh_replicate(b, task.id))
        self._asked.append([number, a, b, task.id, *replicates])
        return asyncio.create_task(self.live.compare(a, b, number, task, replicates))

    def _redispatch(self) -> asyncio.Task[LiveComparison]:
        """Dispatch again the oldest comparison a previous run asked but never finished."""
        number, a, b, _, replicates = self._unfinished.pop(0)
        self.experiment.model.mark_pending(a, b)
        task = self.live.task(number)
        return asyncio.create_task(self.live.compare(a, b, number, task, replicates))

    def _record_asked(self) -> None:
        """One ``asked`` event (one commit) for the comparisons just dispatched."""
        if self._asked:
            self.store.add_event(self.record.id, "asked", {"comparisons": self._asked})
            self._asked = []

    # ---- the loop ------------------------------------------------------------------------------
    async def _run(self) -> RunOutcome:
        replayed = self._replay()
        experiment_id = self.record.id
        if self.record.status in ("running", "interrupted"):
            self.store.set_status(
                experiment_id,
                "running",
                event="resumed" if replayed else "started",
                detail={"stored_comparisons": replayed, "concurrency": self.concurrency},
            )
        started = time.monotonic()
        last_report = -math.inf
        in_flight: set[asyncio.Task[LiveComparison]] = set()
        failure: str | None = None
        failed_at: float | None = None
        try:
            while True:
                can_dispatch = not (
                    self.experiment.done
                    or self._stop_requested.is_set()
                    or self._over_cost()
                    or failure
                )
                while can_dispatch and self._unfinished and len(in_flight) < self.concurrency:
                    in_flight.add(self._redispatch())
                if can_dispatch and len(in_flight) < self.concurrency:
                    for a, b in self.experiment.ask(self.concurrency - len(in_flight)):
                        in_flight.add(self._dispatch(a, b))
                    self._record_asked()
                if not in_flight:
                    break
                finished, in_flight = await asyncio.wait(
                    in_flight, timeout=0.25, return_when=asyncio.FIRST_COMPLETED
                )
                for task in finished:
                    error = task.exception()
                    if isinstance(error, BackendError | LLMSetupError):
                        failure = failure or str(error)
                        continue
                    if error is not None:
                        raise error
                    if self.experiment.done:
                        continue  # not told: the answer is final
                    self._settle(task.result())
                    failure = failure or self._judge_failure()
                self.store.flush_stale()  # answers of unfinished comparisons: within ~1 s
                now = time.monotonic()
                if self.on_progress is not None and now - last_report >= self.progress_interval:
                    last_report = now
                    self.on_progress(self.progress(now - started))
                if (failure or self._stop_requested.is_set()) and failed_at is None:
                    failed_at = now  # a stop, like a failure, leaves the calls in flight a grace
                out_of_grace = failed_at is not None and now - failed_at >= self._grace_seconds()
                if (self.experiment.done or out_of_grace) and in_flight:
                    for task in in_flight:
                        task.cancel()
                    await asyncio.gather(*in_flight, return_exceptions=True)
                    in_flight = set()
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await self.live.aclose()
        return self._finish(replayed, started, failure)

    def _finish(self, replayed: int, started: float, failure: str | None) -> RunOutcome:
        experiment_id = self.record.id
        result = self.experiment.result
        detail: dict[str, Any] = {
            "comparisons": self._sequence,
            "invalid_verdicts": self._invalid,
            "backend_calls": self.live.calls,
            "retries": self.live.retries,
            "cost_usd": self._cost_usd,
            "seconds": time.monotonic() - started,
        }
        if failure is not None and not self.experiment.done:  # done: the failure cost nothing
            self.store.set_status(
                experiment_id,
                "interrupted",
                event="backend_failed",
                detail={**detail, "error": failure},
            )
            raise RunFailedError(
                f"{failure}\nStopped after {self._sequence} comparisons, all stored. Fix the "
                f"endpoint, then resume: llmpo run CONFIG --resume (or llmpo resume "
                f"{self.store.path} {experiment_id})"
            )
        if self.experiment.done:
            status, final = str(result.stop_reason), result.to_dict()
        elif self._over_cost():
            status, final = "budget", {**result.to_dict(), "stopped_by": "max_cost"}
        else:
            status, final = "interrupted", None
        if final is None:
            self.store.set_status(experiment_id, status, event="interrupted", detail=detail)
        elif self.record.status != status:
            self.store.set_status(experiment_id, status, final, event="finished", detail=detail)
        if self.on_progress is not None:
            self.on_progress(self.progress(time.monotonic() - started))
        return RunOutcome(experiment_id, status, result, replayed, self._new, ())
