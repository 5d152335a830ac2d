"""The concurrent runner of live LLM experiments: up to N comparisons in flight at once.

The experiment is asked for as many pairs as there are free slots (pending pairs count as
sampled, so a batch spreads over the pairs the rule wants most); each finished comparison is
committed to the store (its newly cached answers in the same transaction), then told, and the
stopping rule is checked after every one. Once the experiment is done the comparisons still in
flight are cancelled (their finished generations stay in the cache) and never told.

Rounds with shared answers (:mod:`llmpo.sharing`, docs/cost.md). Each batch the experiment asks
is packed into rounds: one task, one answer per policy of the round, every comparison of the round
on those answers (a judge that scores each answer on its own compares every pair of them, at no
extra call). Its comparisons are numbered consecutively; the round's number is its first one.
Rounds are sharing only where it is proven δ-correct (:func:`llmpo.sharing.sharing_allowed`); a
round's comparisons are committed and told together, in their fixed order, when the round is done.

Numbers and replicates. Round number n (in order of dispatch) draws its task from (seed, n). A
policy's answers to a task are numbered by replicate index, the smallest index not used by a
stored or in-flight comparison, so every told comparison uses fresh samples (shared only inside
its round) while an answer generated for a round that was never stored (interrupted, cancelled)
is found in the cache and reused by the next round that needs a sample: its outcomes were never
seen, so it is as fresh as a new one.

Resuming. Completion order depends on timing, so a resumed run does not re-ask the stored pairs:
it tells the stored comparisons in their stored order (the model's state is what the stopping rule
needs), then continues. Invalid verdicts are recorded as ``invalid_verdict`` events and not told.
Every batch of dispatched comparisons is recorded first as one ``asked`` event (number, pair, task,
replicates, round); a resumed run dispatches again, before asking for new pairs, the asked
comparisons that were neither stored nor found invalid (in flight when the run stopped), with the
same number, task, replicates and round, so the answers they had already paid for are found in
the cache, and each number is told at most once.

Stopping. On SIGINT or SIGTERM no comparison is dispatched any more and those in flight get the
same grace as after a failure (below) before they are cancelled, so a run stops within
:data:`FAILURE_GRACE_SECONDS` whatever the server does (hangs, or asks to retry much later); it
is left ``interrupted``.

Failures. A call that still fails after its retries, or a judge whose verdicts are more than 90%
invalid (after 50 results), stops the run: no comparison is dispatched any more, those in flight
get up to :data:`FAILURE_GRACE_SECONDS` (at most one call timeout) to finish and be stored, the
rest are cancelled; the run records a ``backend_failed`` event, marks the experiment
``failed`` (every finished comparison is stored) and raises :class:`RunFailedError`;
``llmpo run CONFIG --resume`` continues it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from llmpo.llm.backends import BackendError
from llmpo.llm.batch import BatchJournal
from llmpo.llm.environment import LiveComparison, LLMEnvironment, LLMSetupError, call_totals
from llmpo.runner import Progress, RunFailedError, Runner, RunOutcome, judge_warning
from llmpo.sharing import Round, ask_rounds, sharing_allowed, unshared_rounds
from llmpo.store import UNFINISHED_STATUSES, Store, StoreError

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

    #: Pack each batch into rounds that share answers (where proven valid); a subclass whose
    #: judges are people keeps one comparison per round.
    share_answers = True

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
        self.live.batch_journal = BatchJournal(store, experiment_id)
        self.live.concurrency = self.concurrency = concurrency
        self._used_replicates: dict[tuple[int, str], set[int]] = {}
        self._lowest_free: dict[tuple[int, str], int] = {}  # every replicate below it is used
        self._next_number = 1
        # Comparisons a previous run asked but never finished: (number, a, b, task, replicates,
        # round), redispatched round by round.
        self._unfinished: list[tuple[int, int, int, str, tuple[int, int], int]] = []
        self._asked: list[list[Any]] = []
        self._sequence = 0
        self._new = 0
        self._invalid = 0

    def run(self) -> RunOutcome:
        """Replay the stored comparisons, then run new ones concurrently until done.

        Raises
        ------
        RunFailedError
            When a backend fails for good; the experiment is left ``failed``.
        StoreError
            When the store holds more comparisons than the experiment needed.
        """
        # asyncio's own loop: uvloop, when installed, made results arrive in larger clumps
        # (benchmarks/throughput.py at 64 in flight: 82% of the ideal in-process, against 88%).
        with self._stop_on_signals(), self._failure_recorded():
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
        for number, row in sorted(asked.items()):
            _, a, b, task_id, ra, rb = row[:6]
            round_number = int(row[6]) if len(row) > 6 else number  # older stores: no rounds
            self._next_number = max(self._next_number, number + 1)
            if number in finished or self.live.task(round_number).id != task_id:
                continue  # told, recorded invalid, or the tasks changed since it was asked
            self._remember({"replicates": [ra, rb]}, a, b, task_id)
            self._unfinished.append((number, a, b, task_id, (ra, rb), round_number))
        return len(stored)

    def _judge_failure(self) -> str | None:
        """A message when the judge's verdicts are mostly invalid (the run would never end)."""
        results = self._new + self._invalid
        if results < MIN_RESULTS_FOR_JUDGE_CHECK or self._invalid <= MAX_INVALID_SHARE * results:
            return None
        return (
            f"the judge gave {self._invalid} invalid verdicts in {results} comparisons of this "
            "run: its replies could not be read as A, B or TIE (they are recorded in the store as "
            "invalid_verdict events). Fix: give the judge room and a clear instruction "
            "(judge.max_tokens, judge.system_prompt, judge.prompt; see docs/judges-llm.md) or use "
            "a stronger judge model"
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

    def _score_each(self) -> bool:
        """Whether the judge compares every pair of a round's answers from one score each."""
        return (
            self.share_answers
            and self.live.judge.scores_each_answer
            and sharing_allowed(self.experiment)
        )

    def _ask(self, n: int) -> list[Round]:
        if not self.share_answers:
            return unshared_rounds(self.experiment.ask(n))
        return ask_rounds(self.experiment, n, self._score_each())

    def _dispatch(self, planned: Round) -> asyncio.Task[list[LiveComparison]]:
        round_number = self._next_number
        task = self.live.task(round_number)
        replicates = {p: self._fresh_replicate(p, task.id) for p in planned.policies}
        comparisons = []
        for a, b in planned.pairs(self._score_each()):
            number = self._next_number
            self._next_number += 1
            comparisons.append((number, a, b, (replicates[a], replicates[b])))
            self._asked.append([number, a, b, task.id, replicates[a], replicates[b], round_number])
        return asyncio.create_task(
            self.live.compare_round(round_number, task, comparisons, self._score_each())
        )

    def _redispatch(self) -> asyncio.Task[list[LiveComparison]]:
        """Dispatch again the oldest round a previous run asked but never finished (its
        comparisons still unfinished)."""
        round_number = self._unfinished[0][5]
        rows = [row for row in self._unfinished if row[5] == round_number]
        self._unfinished = [row for row in self._unfinished if row[5] != round_number]
        for _, a, b, _, _, _ in rows:
            self.experiment.model.mark_pending(a, b)
        task = self.live.task(round_number)
        comparisons = [(number, a, b, replicates) for number, a, b, _, replicates, _ in rows]
        # A pairwise judge reads pairs, a scoring judge answers: both give the same verdicts.
        return asyncio.create_task(
            self.live.compare_round(round_number, task, comparisons, self._score_each())
        )

    def _record_asked(self) -> None:
        """One ``asked`` event (one commit) for the comparisons just dispatched."""
        if self._asked:
            self.store.add_event(self.record.id, "asked", {"comparisons": self._asked})
            self._asked = []

    # ---- the loop ------------------------------------------------------------------------------
    async def _run(self) -> RunOutcome:
        replayed = self._replay()
        experiment_id = self.record.id
        if self.record.status in UNFINISHED_STATUSES:
            self.store.set_status(
                experiment_id,
                "running",
                event="resumed" if replayed else "started",
                detail={"stored_comparisons": replayed, "concurrency": self.concurrency},
            )
        started = time.monotonic()
        last_report = -math.inf
        in_flight: set[asyncio.Task[list[LiveComparison]]] = set()
        load: dict[asyncio.Task[list[LiveComparison]], int] = {}  # comparisons per round
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
                while can_dispatch and self._unfinished and sum(load.values()) < self.concurrency:
                    task = self._redispatch()
                    in_flight.add(task)
                    load[task] = 1
                busy = sum(load.values())
                if can_dispatch and busy < self.concurrency:
                    for planned in self._ask(self.concurrency - busy):
                        task = self._dispatch(planned)
                        in_flight.add(task)
                        load[task] = len(planned.asked)
                    self._record_asked()
                if not in_flight:
                    break
                finished, in_flight = await asyncio.wait(
                    in_flight, timeout=0.25, return_when=asyncio.FIRST_COMPLETED
                )
                for task in finished:
                    load.pop(task, None)
                    error = task.exception()
                    if isinstance(error, BackendError | LLMSetupError):
                        failure = failure or str(error)
                        continue
                    if error is not None:
                        raise error
                    for comparison in task.result():  # a round: told together, in order
                        if self.experiment.done:
                            break  # not told: the answer is final
                        self._settle(comparison)
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
                    load.clear()
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await self.live.aclose()
        return self._finish(replayed, started, failure)

    def calls(self) -> dict[str, Any]:
        """What the experiment paid so far, over every session that ran it, this one included
        (see :func:`~llmpo.llm.environment.call_totals`)."""
        invalid, sessions = [], []
        for _, kind, detail in self.store.events(self.record.id):
            if detail is None:
                continue
            if kind == "invalid_verdict":
                invalid.append(detail)
            elif (
                kind in ("finished", "interrupted", "backend_failed") and "session_calls" in detail
            ):
                sessions.append(detail["session_calls"])
        sessions.append(self._session_calls())
        totals = call_totals(self.store.comparisons(self.record.id), invalid, sessions)
        # What the non-adaptive alternative pays: every policy answers every selection task once.
        totals["grid_generation_calls"] = len(self.live.policies) * len(self.live.tasks)
        return totals

    def _session_calls(self) -> dict[str, int]:
        return {"generation": self.live.generation_calls, "judge": self.live.judge_calls}

    def _finish(self, replayed: int, started: float, failure: str | None) -> RunOutcome:
        experiment_id = self.record.id
        result = self.experiment.result
        calls = self.calls()
        detail: dict[str, Any] = {
            "calls": calls,
            "session_calls": self._session_calls(),
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
                "failed",
                event="backend_failed",
                detail={**detail, "error": failure},
            )
            # The judge's message names its own fix; a backend's error needs the endpoint fixed.
            fix = "Then" if failure == self._judge_failure() else "Fix the endpoint, then"
            raise RunFailedError(
                f"{failure}\nStopped after {self._sequence} comparisons, all stored. {fix} "
                f"resume: llmpo run CONFIG --resume (or llmpo resume {self.store.path} "
                f"{experiment_id})"
            )
        if self.experiment.done:
            status, final = str(result.stop_reason), {**result.to_dict(), "calls": calls}
        elif self._over_cost():
            result = dataclasses.replace(result, stop_reason="max_cost")
            status, final = "max_cost", {**result.to_dict(), "calls": calls}
        else:
            status, final = "interrupted", None
        if final is None:
            self.store.set_status(experiment_id, status, event="interrupted", detail=detail)
        elif self.record.status != status:
            self.store.set_status(experiment_id, status, final, event="finished", detail=detail)
        if self.on_progress is not None:
            self.on_progress(self.progress(time.monotonic() - started))
        warning = judge_warning(self.store.comparisons(experiment_id))
        return RunOutcome(experiment_id, status, result, replayed, self._new, (), warning, calls)
