"""The one driver on its own: it commits each comparison before telling it, keeps at most
``concurrency`` in flight, stops within a bounded time, and resumes one way."""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from llmpo import Experiment
from llmpo.environments import SyntheticEnvironment
from llmpo.harness.reference import reference_instance
from llmpo.runtime.driver import Driver, FixedPair
from llmpo.runtime.sources import Finished, Job, OrderedSource
from llmpo.sharing import unshared_rounds
from llmpo.store import ComparisonRecord, StoreError


class Reseeded(SyntheticEnvironment):
    """A synthetic environment reseeded per comparison, as the runner's."""

    def __init__(self) -> None:
        self.instance = reference_instance("BT4")
        super().__init__(self.instance, seed=0)

    def reseed(self, seed: Any) -> None:
        SyntheticEnvironment.__init__(self, self.instance, seed=list(seed))


class Sink:
    """Records what was committed, and how many comparisons the experiment had been told then."""

    def __init__(self, experiment: Experiment | None = None) -> None:
        self.experiment = experiment
        self.records: list[ComparisonRecord] = []
        self.told_at_commit: list[int] = []
        self.invalids: list[Finished] = []

    def append(self, seq: int, finished: Finished) -> None:
        self.records.append(finished.record(seq, finished.a, finished.b))
        if self.experiment is not None:
            self.told_at_commit.append(self.experiment.n_comparisons)

    def invalid(self, finished: Finished) -> None:
        self.invalids.append(finished)

    def asked(self, rows: list[list[Any]]) -> None:
        return None


def test_each_comparison_is_committed_before_it_is_told_and_resume_is_exact():
    def experiment() -> Experiment:
        return Experiment(
            reference_instance("BT4").policies, delta=0.1, seed=1, max_comparisons=300
        )

    reference = experiment()
    sink = Sink(reference)
    driver = Driver(reference, OrderedSource(Reseeded(), 1, batch_size=3), sink)
    assert asyncio.run(driver.drive()) is None and reference.done
    assert sink.told_at_commit == list(range(len(sink.records)))  # committed, then told

    # Stop after 20, resume from the 20 stored: the same comparisons as the uninterrupted run.
    first = experiment()
    stopped = Sink(first)
    source = OrderedSource(Reseeded(), 1, batch_size=3)
    compare = source.compare

    def compare_then_stop(number: int, a: int, b: int):
        if number == 20:
            driver.stop.set()
        return compare(number, a, b)

    source.compare = compare_then_stop  # type: ignore[method-assign]
    driver = Driver(first, source, stopped)
    asyncio.run(driver.drive())
    assert len(stopped.records) == 20 and not first.done

    resumed = experiment()
    rest = Sink(resumed)
    driver = Driver(resumed, OrderedSource(Reseeded(), 1, batch_size=3), rest)
    driver.resume(stopped.records)
    asyncio.run(driver.drive())
    assert driver.replayed == 20 and driver.new == len(sink.records) - 20
    assert resumed.result.to_dict() == reference.result.to_dict()
    def key(records: list[ComparisonRecord]) -> list[tuple[int, int, int, float]]:
        return [(r.seq, r.policy_a, r.policy_b, r.outcome) for r in records]

    assert key(sink.records) == key(stopped.records + rest.records)


class Tracked:
    """Stored comparisons read afresh on each iteration as new objects, counting how many are
    alive at once: a resume that holds the records (a list) keeps every one alive."""

    def __init__(self, records: list[ComparisonRecord]) -> None:
        self.records = records
        self.alive = 0
        self.most = 0
        self.reads = 0

    def __iter__(self) -> Iterator[ComparisonRecord]:
        self.reads += 1
        for record in self.records:
            copy = dataclasses.replace(record)  # a fresh object, as a store read gives
            self.alive += 1
            weakref.finalize(copy, self._freed)
            self.most = max(self.most, self.alive)
            yield copy

    def _freed(self) -> None:
        self.alive -= 1


def test_resume_streams_the_stored_comparisons_and_holds_none_of_them():
    """An in-order source reads the store twice (the ledger, then one record per ask), a live
    one once; neither keeps the records: at most two are alive at any time, for 300 stored."""

    def experiment() -> Experiment:
        return Experiment(
            reference_instance("BT4").policies, delta=0.1, seed=1, max_comparisons=300
        )

    reference = experiment()
    sink = Sink(reference)
    asyncio.run(Driver(reference, OrderedSource(Reseeded(), 1), sink).drive())
    assert len(sink.records) == 300

    resumed = experiment()
    stored = Tracked(sink.records)
    driver = Driver(resumed, OrderedSource(Reseeded(), 1), Sink(resumed))
    driver.resume(stored)
    assert driver.stored == 300 and driver.unfinished_replay == 300 and stored.alive == 0
    asyncio.run(driver.drive())
    assert driver.replayed == 300 and driver.unfinished_replay == 0 and stored.reads == 2
    assert resumed.result.to_dict() == reference.result.to_dict()
    assert stored.most <= 2, f"{stored.most} stored comparisons alive at once"

    live = [
        ComparisonRecord(n, 0, 1, 1.0, "t", raw={"number": n, "replicates": [n, n]})
        for n in range(1, 301)
    ]
    target = FixedPair(0, 1, total=400)
    stored = Tracked(live)
    source = SlowSource()
    source.task = lambda round_number: SimpleNamespace(id="t")  # type: ignore[method-assign]
    live_driver = Driver(target, source, Sink())
    # Comparison 301 was asked and never stored (in flight at the stop), 300 was stored.
    asked = [[300, 0, 1, "t", 300, 300, 300], [301, 0, 1, "t", 0, 0, 301]]
    live_driver.resume(stored, [("asked", {"comparisons": asked})])
    assert target.told == live_driver.replayed == 300 and live_driver.ledger.next_number == 302
    assert stored.reads == 1 and stored.most <= 2, f"{stored.most} alive at once"
    assert live_driver.ledger.unfinished == [(301, 0, 1, "t", (0, 0), 301)]
    assert live_driver.ledger.used[(0, "t")] == set(range(301))


def test_a_resume_that_diverges_from_the_store_is_refused():
    experiment = Experiment(reference_instance("BT4").policies, delta=0.1, seed=1)
    first = experiment.ask(1)[0]
    wrong = ComparisonRecord(1, first[1], first[0], 1.0)
    fresh = Experiment(reference_instance("BT4").policies, delta=0.1, seed=1)
    driver = Driver(fresh, OrderedSource(Reseeded(), 1), Sink())
    driver.resume([wrong])
    with pytest.raises(StoreError, match="stored comparison #1 is of"):
        asyncio.run(driver.drive())


class SlowSource:
    """A live-like source: each job takes a while; counts the jobs in flight at once."""

    in_order = False
    grace_seconds = 0.05
    stop_errors: tuple[type[BaseException], ...] = (ConnectionError,)
    policies = ("x", "y")

    def __init__(self, fail_at: int | None = None) -> None:
        self.running = 0
        self.most = 0
        self.fail_at = fail_at

    def plan(self, target, n):
        return unshared_rounds(target.ask(n))

    def task(self, round_number):
        return None

    def score_each(self, target):
        return False

    async def run(self, job: Job) -> list[Finished]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            (number, a, b, _), = job.comparisons
            if number == self.fail_at:
                raise ConnectionError("the endpoint is gone")
            await asyncio.sleep(0.01 if number % 7 else 5.0)  # every 7th hangs
            outcome = None if number % 5 == 0 else 1.0  # every 5th verdict is invalid
            return [
                Finished(a, b, outcome, 0.01, lambda seq, x, y: ComparisonRecord(seq, x, y, 1.0))
            ]
        finally:
            self.running -= 1

    def session_detail(self):
        return {}

    async def aclose(self):
        return None


def test_fixed_pair_concurrency_invalid_verdicts_and_a_bounded_failure():
    source = SlowSource(fail_at=12)
    target = FixedPair(0, 1, total=30)
    sink = Sink()
    driver = Driver(target, source, sink, concurrency=4)
    failure = asyncio.run(asyncio.wait_for(driver.drive(), timeout=3.0))  # hung jobs: cancelled
    assert failure == "the endpoint is gone"
    assert source.most == 4 and not target.done
    assert len(sink.records) == target.told
    assert [r.seq for r in sink.records] == list(range(1, target.told + 1))
    assert len(sink.invalids) == driver.invalid >= 1
    assert driver.ledger.cost_usd == pytest.approx(0.01 * (len(sink.records) + driver.invalid))


def test_fixed_pair_asks_no_more_than_it_needs():
    target = FixedPair(0, 1, total=5, told=2)
    assert target.ask(10) == [(0, 1)] * 3 and target.ask(1) == []
    target.abandon(0, 1)
    assert target.ask(4) == [(0, 1)]
    for _ in range(3):
        target.tell(0, 1, 1.0)
    assert target.done


def test_a_concurrency_below_one_is_a_config_error_naming_the_field(tmp_path):
    from llmpo.errors import ConfigError
    from llmpo.runtime.run import Runner
    from llmpo.store import Store

    with pytest.raises(ConfigError, match="field 'concurrency': must be a positive integer, got 0"):
        Driver(Experiment(3), OrderedSource(Reseeded(), 1), Sink(), concurrency=0)
    with Store(tmp_path / "runs.db", writer=True) as store, pytest.raises(ConfigError) as error:
        Runner(store, 1, concurrency=0)
    assert error.value.field == "concurrency"
