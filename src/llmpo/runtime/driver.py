"""The one run loop: ask the target, hand the work to a source, store each comparison, tell it.

Every way llmpo runs comparisons goes through :class:`Driver` — ``llmpo run`` and ``resume``
(:class:`llmpo.runtime.run.Runner`), ``llmpo evaluate`` (:mod:`llmpo.runtime.evaluation`) and
``llmpo serve`` (:mod:`llmpo.human.runner`) — with the source of outcomes as a parameter
(:mod:`llmpo.runtime.sources`). The loop:

1. while nothing stops it (the target done, a stop asked, the cost budget spent, a failure), it
   fills the free slots (``concurrency``, comparisons in flight): first the rounds an earlier
   session asked but never finished, then new rounds the source plans from the target's asks;
   each batch of dispatched comparisons is recorded as one ``asked`` event before it runs;
2. it waits for a round to finish, then, in the round's order, commits each comparison to the
   store and only then tells it (an invalid verdict is recorded as an event and the pair
   abandoned); once the target is done, nothing more is told;
3. after a stop or a failure, the comparisons in flight get the source's grace to finish (and
   be stored) before they are cancelled.

Resume is decided in one place, :meth:`Driver.resume`. Stored comparisons are re-told in their
stored order. A source whose outcomes are a function of (seed, number, pair) (``in_order``) is
re-asked: each stored comparison answers the pair the target asks again, which must be the stored
pair (the store diverged otherwise), so the resumed run is exactly the uninterrupted one. A live
source is not (completion order depends on timing): the stored comparisons are told directly, and
the comparisons an ``asked`` event records that were neither stored nor found invalid (in flight
when the run stopped) are dispatched again with the same number, task, replicates and round, so
the answers they had paid for are found in the cache and each number is told at most once. The
:class:`Ledger` keeps the numbers and replicates: a policy's answer to a task is numbered by the
smallest replicate index no stored or in-flight comparison uses, so every told comparison uses
fresh samples (shared only inside its round) while an answer generated for a round never stored
is reused by the next round that needs one (its outcome was never seen).
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

from llmpo.errors import ConfigError
from llmpo.models.base import Pair
from llmpo.runtime.sources import Finished, Job, Planned, Source, stored_finished
from llmpo.sharing import Round
from llmpo.store import ComparisonRecord, StoreError
from llmpo.store.payloads import number_of, replicates_of

#: A run stops when more than this share of its verdicts are invalid (after enough results).
MAX_INVALID_SHARE = 0.9
MIN_RESULTS_FOR_JUDGE_CHECK = 50

T = TypeVar("T")


class Target(Protocol):
    """What the driver asks and tells: an :class:`~llmpo.experiment.Experiment`, or the fixed
    pair of an evaluation (:class:`FixedPair`)."""

    @property
    def done(self) -> bool: ...

    def ask(self, n: int = 1) -> list[Pair]: ...

    def tell(self, i: int, j: int, outcome: float) -> None: ...

    def mark_pending(self, i: int, j: int) -> None: ...

    def abandon(self, i: int, j: int) -> None: ...


class FixedPair:
    """A target that asks one pair until ``total`` comparisons of it are told (an evaluation).

    Parameters
    ----------
    a, b : int
        The pair.
    total : int
        Comparisons wanted.
    told : int
        Comparisons already stored (a resumed evaluation).
    """

    def __init__(self, a: int, b: int, total: int, told: int = 0) -> None:
        self.pair = (a, b)
        self.total = total
        self.told = told
        self.pending = 0

    @property
    def done(self) -> bool:
        return self.told >= self.total

    def ask(self, n: int = 1) -> list[Pair]:
        k = max(min(n, self.total - self.told - self.pending), 0)
        self.pending += k
        return [self.pair] * k

    def tell(self, i: int, j: int, outcome: float) -> None:
        self.told += 1
        self.pending = max(self.pending - 1, 0)

    def mark_pending(self, i: int, j: int) -> None:
        self.pending += 1

    def abandon(self, i: int, j: int) -> None:
        self.pending = max(self.pending - 1, 0)


class Sink(Protocol):
    """Where the driver commits what it gets: an experiment's comparisons, or an evaluation's."""

    def append(self, seq: int, finished: Finished) -> None:
        """Commit a valid comparison as number ``seq`` (before it is told)."""
        ...

    def invalid(self, finished: Finished) -> None:
        """Record an invalid verdict (an event: never told, but paid for)."""
        ...

    def asked(self, rows: list[list[Any]]) -> None:
        """Record the comparisons just dispatched (one event, one commit)."""
        ...


class Ledger:
    """Numbers and replicates in use, and what resume must dispatch again.

    A policy's answers to a task are numbered by replicate index; :meth:`fresh_replicate` gives
    the smallest index not used yet.
    """

    def __init__(self) -> None:
        self.used: dict[tuple[int, str], set[int]] = {}
        self._lowest_free: dict[tuple[int, str], int] = {}  # every replicate below it is used
        self.next_number = 1
        self.cost_usd: float | None = None
        #: Comparisons an earlier session asked but never finished: (number, a, b, task id,
        #: replicates, round), dispatched again round by round.
        self.unfinished: list[tuple[int, int, int, str, tuple[int, int], int]] = []

    def use(self, policy: int, task_id: str, replicate: int) -> None:
        """Mark a replicate as used."""
        self.used.setdefault((policy, task_id), set()).add(replicate)

    def fresh_replicate(self, policy: int, task_id: str) -> int:
        """The smallest replicate of ``policy`` on ``task_id`` not used yet (now used)."""
        key = (policy, task_id)
        used = self.used.setdefault(key, set())
        replicate = self._lowest_free.get(key, 0)  # amortised O(1), not a scan from 0
        while replicate in used:
            replicate += 1
        used.add(replicate)
        self._lowest_free[key] = replicate + 1
        return replicate

    def remember(self, raw: Any, a: int, b: int, task_id: str | None) -> None:
        """Mark a stored comparison's number and replicates as used."""
        if task_id is None:
            return
        number = number_of(raw)
        if number is not None:
            self.next_number = max(self.next_number, number + 1)
        replicates = replicates_of(raw)
        if replicates is not None:
            self.use(a, task_id, replicates[0])
            self.use(b, task_id, replicates[1])

    def add_cost(self, cost_usd: float | None) -> None:
        if cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost_usd


def _mark(numbers: bytearray, number: int | None) -> None:
    """Set ``numbers[number]`` (a byte per comparison number: resume's record of the finished
    ones, 1 byte each where a set of ints takes ~60)."""
    if number is None:
        return
    if number >= len(numbers):
        numbers.extend(bytes(max(number + 1 - len(numbers), len(numbers))))  # amortised growth
    numbers[number] = 1


def _marked(numbers: bytearray, number: int) -> bool:
    return number < len(numbers) and numbers[number] == 1


class Reread(Generic[T]):
    """An iterable that reads afresh each time it is iterated: ``Reread(lambda: store.
    iter_comparisons(id))`` gives :meth:`Driver.resume` the stored comparisons as a stream it
    may read twice (an in-order source), never as a list."""

    def __init__(self, read: Callable[[], Iterable[T]]) -> None:
        self._read = read

    def __iter__(self) -> Iterator[T]:
        return iter(self._read())


def check_concurrency(concurrency: int) -> None:
    """Refuse a number of comparisons in flight below 1 (a ConfigError naming the field)."""
    if concurrency < 1:
        raise ConfigError(
            field="concurrency",
            problem=f"must be a positive integer, got {concurrency}",
            fix="give 1 or more",
        )


class Driver:
    """The one run loop (module docstring).

    Parameters
    ----------
    target : Target
        What is asked and told (an experiment, or an evaluation's fixed pair).
    source : Source
        Where outcomes come from.
    sink : Sink
        Where comparisons are committed before they are told.
    concurrency : int
        Comparisons in flight at once (an ``in_order`` source runs one at a time).
    max_cost : float, optional
        Stop dispatching once this many dollars are spent (the comparisons in flight finish).
    stop : threading.Event, optional
        Set to stop (signal handlers set it); a fresh one by default.
    on_settled : callable, optional
        Called with each :class:`~llmpo.runtime.sources.Finished` once it is committed and told
        (or recorded invalid).
    on_tick : callable, optional
        Called after each wait for results (progress displays).
    judge_check : bool
        Stop with a failure when more than :data:`MAX_INVALID_SHARE` of the verdicts are invalid
        (after :data:`MIN_RESULTS_FOR_JUDGE_CHECK`): the run would otherwise never end.
    """

    def __init__(
        self,
        target: Target,
        source: Source,
        sink: Sink,
        *,
        concurrency: int = 1,
        max_cost: float | None = None,
        stop: threading.Event | None = None,
        on_settled: Callable[[Finished], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        judge_check: bool = True,
    ) -> None:
        check_concurrency(concurrency)
        self.target = target
        self.source = source
        self.sink = sink
        self.concurrency = 1 if source.in_order else concurrency
        self.max_cost = max_cost
        self.stop = stop if stop is not None else threading.Event()
        self.on_settled = on_settled
        self.on_tick = on_tick
        self.judge_check = judge_check
        self.ledger = Ledger()
        #: Comparisons stored (those of earlier sessions included), new ones, invalid ones.
        self.stored = 0
        self.replayed = 0
        self.new = 0
        self.invalid = 0
        self._replay: Iterator[ComparisonRecord] = iter(())
        self._replay_left = 0  # stored comparisons of an in-order source not re-told yet
        self._asked: list[list[Any]] = []

    # ---- resume: the one place ------------------------------------------------------------------
    def resume(
        self,
        stored: Iterable[ComparisonRecord],
        events: Iterable[tuple[str, Any]] = (),
        also_used: Iterable[ComparisonRecord] = (),
    ) -> None:
        """Take up what the store holds (module docstring: the resume rule).

        Nothing here holds the stored comparisons: each is read, remembered in the
        :class:`Ledger` (numbers, replicates, cost) and told or left, so that a store read as a
        stream (:class:`Reread` over :meth:`~llmpo.store.Store.iter_comparisons`) costs the
        ledger's memory, not the records'.

        Parameters
        ----------
        stored : iterable of ComparisonRecord
            The comparisons stored so far, in stored order. An in-order source reads them twice
            (the ledger, then one by one as the target asks again), so give a collection that
            reads them afresh each time it is iterated (:class:`Reread`, a list); a one-shot
            iterator is read into a list first.
        events : iterable of (kind, detail)
            The stored events: ``invalid_verdict`` (finished, never told) and ``asked``.
        also_used : iterable of ComparisonRecord
            Other comparisons whose replicates must not be reused (an evaluation: those of its
            experiment and of its other evaluations), with policy indices of the source.

        Raises
        ------
        StoreError
            When the target is done before every stored comparison is told.
        """
        in_order = self.source.in_order
        if in_order and iter(stored) is stored:  # a one-shot iterator cannot be read twice
            stored = list(stored)
        finished = bytearray()  # finished[n] == 1: comparison number n was stored
        stopped_after: int | None = None
        for record in stored:
            self.ledger.remember(record.raw, record.policy_a, record.policy_b, record.task_id)
            self.ledger.add_cost(record.cost_usd)
            self.stored += 1
            if in_order:
                continue  # re-told against the pairs the target asks again (in the loop)
            _mark(finished, number_of(record.raw))
            if stopped_after is not None:
                continue  # counted for the message below, never told
            if self.target.done:
                stopped_after = record.seq - 1
                continue
            self.target.tell(record.policy_a, record.policy_b, record.outcome)
            self.replayed += 1
        for record in also_used:
            self.ledger.remember(record.raw, record.policy_a, record.policy_b, record.task_id)
        if stopped_after is not None:
            raise StoreError(
                f"the store holds {self.stored} comparisons but the experiment stopped "
                f"after {stopped_after}; the code or data changed"
            )
        if in_order:
            # Determinism: stored comparison n answers the n-th ask, read when it is asked.
            self._replay = iter(stored)
            self._replay_left = self.stored
            self.ledger.next_number = 1
            return
        # Only the rows asked but not (yet seen) finished are kept: those in flight at the stop.
        asked: dict[int, list[Any]] = {}
        for kind, detail in events:
            if kind == "invalid_verdict" and detail is not None:
                _mark(finished, number_of(detail))
                self.ledger.remember(detail, detail["a"], detail["b"], detail.get("task_id"))
                self.ledger.add_cost(detail.get("cost_usd"))
            elif kind == "asked" and detail is not None:
                for row in detail["comparisons"]:
                    number = int(row[0])
                    self.ledger.next_number = max(self.ledger.next_number, number + 1)
                    if not _marked(finished, number):
                        asked[number] = row
        for number, row in sorted(asked.items()):
            _, a, b, task_id, ra, rb = row[:6]
            round_number = int(row[6]) if len(row) > 6 else number  # older stores: no rounds
            if _marked(finished, number) or self.source.task(round_number).id != task_id:
                continue  # told, recorded invalid, or the tasks changed since it was asked
            self.ledger.remember({"replicates": [ra, rb]}, a, b, task_id)
            self.ledger.unfinished.append((number, a, b, task_id, (ra, rb), round_number))

    # ---- dispatch -------------------------------------------------------------------------------
    def _dispatch(self, planned: Round) -> asyncio.Task[list[Finished]]:
        round_number = self.ledger.next_number
        score_each = self.source.score_each(self.target)
        if self._replay_left:  # an in-order source's stored comparison, re-told
            ((a, b),) = planned.pairs(False)
            self.ledger.next_number += 1
            self._replay_left -= 1
            return asyncio.create_task(self._stored(next(self._replay), a, b))
        task = self.source.task(round_number)
        replicates: dict[int, int] = {}
        if task is not None:
            replicates = {p: self.ledger.fresh_replicate(p, task.id) for p in planned.policies}
        comparisons: list[Planned] = []
        for a, b in planned.pairs(score_each):
            number = self.ledger.next_number
            self.ledger.next_number += 1
            if task is None:
                comparisons.append((number, a, b, None))
                continue
            comparisons.append((number, a, b, (replicates[a], replicates[b])))
            self._asked.append([number, a, b, task.id, replicates[a], replicates[b], round_number])
        job = Job(round_number, task, tuple(comparisons), score_each)
        return asyncio.create_task(self.source.run(job))

    def _redispatch(self) -> asyncio.Task[list[Finished]]:
        """Dispatch again the oldest round an earlier session asked but never finished."""
        round_number = self.ledger.unfinished[0][5]
        rows = [row for row in self.ledger.unfinished if row[5] == round_number]
        self.ledger.unfinished = [r for r in self.ledger.unfinished if r[5] != round_number]
        for _, a, b, _, _, _ in rows:
            self.target.mark_pending(a, b)
        comparisons = tuple((number, a, b, reps) for number, a, b, _, reps, _ in rows)
        # A pairwise judge reads pairs, a scoring judge answers: both give the same verdicts.
        job = Job(
            round_number,
            self.source.task(round_number),
            comparisons,
            self.source.score_each(self.target),
        )
        return asyncio.create_task(self.source.run(job))

    async def _stored(self, record: ComparisonRecord, a: int, b: int) -> list[Finished]:
        if (record.policy_a, record.policy_b) != (a, b):
            raise StoreError(
                f"stored comparison #{record.seq} is of ({record.policy_a}, {record.policy_b}) "
                f"but the experiment now asks ({a}, {b}); the code or the data changed since it "
                "was stored, so it cannot be resumed"
            )
        return [stored_finished(record)]

    def _record_asked(self) -> None:
        if self._asked:
            self.sink.asked(self._asked)
            self._asked = []

    # ---- settling -------------------------------------------------------------------------------
    def _settle(self, finished: Finished) -> None:
        """Commit a finished comparison, then tell it (or record it as invalid)."""
        if finished.stored:
            self.replayed += 1
        else:
            self.ledger.add_cost(finished.cost_usd)
            if finished.outcome is None:
                self.invalid += 1
                self.target.abandon(finished.a, finished.b)
                self.sink.invalid(finished)
                if self.on_settled is not None:
                    self.on_settled(finished)
                return
            self.stored += 1
            self.sink.append(self.stored, finished)  # committed before it is told
            self.new += 1
        assert finished.outcome is not None
        self.target.tell(finished.a, finished.b, finished.outcome)
        if self.on_settled is not None:
            self.on_settled(finished)

    def judge_failure(self) -> str | None:
        """A message when the judge's verdicts are mostly invalid (the run would never end)."""
        results = self.new + self.invalid
        if (
            not self.judge_check
            or results < MIN_RESULTS_FOR_JUDGE_CHECK
            or self.invalid <= MAX_INVALID_SHARE * results
        ):
            return None
        return (
            f"the judge gave {self.invalid} invalid verdicts in {results} comparisons of this "
            "run: its replies could not be read as A, B or TIE (they are recorded in the store as "
            "invalid_verdict events). Fix: give the judge room and a clear instruction "
            "(judge.max_tokens, judge.system_prompt, judge.prompt; see docs/judges-llm.md) or use "
            "a stronger judge model"
        )

    def over_cost(self) -> bool:
        """True once the cost budget is spent."""
        cost = self.ledger.cost_usd
        return self.max_cost is not None and cost is not None and cost >= self.max_cost

    @property
    def unfinished_replay(self) -> int:
        """Stored comparisons of an in-order source not re-told yet."""
        return self._replay_left

    # ---- the loop -------------------------------------------------------------------------------
    async def drive(self) -> str | None:
        """Run until the target is done or something stops the loop.

        Returns
        -------
        str or None
            The failure that stopped it (a source's stop error, or a judge whose verdicts are
            mostly invalid), else None.
        """
        in_flight: set[asyncio.Task[list[Finished]]] = set()
        load: dict[asyncio.Task[list[Finished]], int] = {}  # comparisons per round
        failure: str | None = None
        stopped_at: float | None = None
        try:
            while True:
                can_dispatch = not (
                    self.target.done or self.stop.is_set() or self.over_cost() or failure
                )
                while (
                    can_dispatch
                    and self.ledger.unfinished
                    and sum(load.values()) < self.concurrency
                ):
                    task = self._redispatch()
                    in_flight.add(task)
                    load[task] = 1
                busy = sum(load.values())
                if can_dispatch and busy < self.concurrency:
                    for planned in self.source.plan(self.target, self.concurrency - busy):
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
                    if isinstance(error, self.source.stop_errors):
                        failure = failure or str(error)
                        continue
                    if error is not None:
                        raise error
                    for result in task.result():  # a round: told together, in order
                        if self.target.done:
                            break  # not told: the answer is final
                        self._settle(result)
                    failure = failure or self.judge_failure()
                if self.on_tick is not None:
                    self.on_tick()
                now = time.monotonic()
                if (failure or self.stop.is_set()) and stopped_at is None:
                    stopped_at = now  # a stop, like a failure, leaves the calls in flight a grace
                out_of_grace = (
                    stopped_at is not None and now - stopped_at >= self.source.grace_seconds
                )
                if (self.target.done or out_of_grace) and in_flight:
                    for task in in_flight:
                        task.cancel()
                    await asyncio.gather(*in_flight, return_exceptions=True)
                    in_flight = set()
                    load.clear()
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await self.source.aclose()
        return failure


class Reporter(Generic[T]):
    """Calls ``on_progress(make(elapsed seconds))`` at most every ``interval`` seconds, and
    always when ``final`` (a progress display that does not slow the loop)."""

    def __init__(
        self,
        on_progress: Callable[[T], None] | None,
        make: Callable[[float], T],
        interval: float,
    ) -> None:
        self.on_progress = on_progress
        self.make = make
        self.interval = interval
        self.started = time.monotonic()
        self._last = -math.inf

    def __call__(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress is None or (not final and now - self._last < self.interval):
            return
        self._last = now
        self.on_progress(self.make(now - self.started))


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT or SIGTERM sets ``stop`` (a bounded stop); a second one stops at once
    (``KeyboardInterrupt``). Only in the main thread; elsewhere signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():  # asked twice (SIGINT or SIGTERM): stop at once
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = [
    "MAX_INVALID_SHARE",
    "MIN_RESULTS_FOR_JUDGE_CHECK",
    "Driver",
    "FixedPair",
    "Ledger",
    "Reporter",
    "Reread",
    "Sink",
    "Target",
    "stop_on_signals",
]
