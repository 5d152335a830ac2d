"""Cached answers are committed with the next write of the store, and never lose a comparison."""

import time

import pytest

import llmpo.store.answers
from llmpo.config import load_config
from llmpo.experiment import Experiment
from llmpo.runtime.run import Runner
from llmpo.runtime.setup import start_experiment
from llmpo.store import CachedGeneration, ComparisonRecord, Store, StoreError
from llmpo.testing.store import count_rows

ANSWER = CachedGeneration("4", 5, 1, 0.2)


def generations(path) -> int:
    """Answers another connection (a reader, or the store after a crash) sees."""
    return count_rows(path, "generations")


def test_answers_commit_with_the_comparison_that_used_them(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path, writer=True) as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        store.cache_generation("a", "t1", 0, "k", "m", ANSWER)
        store.cache_generation("b", "t1", 0, "k", "m", ANSWER)
        store.cache_generation("b", "t1", 0, "k", "m", CachedGeneration("5", 5, 1, 0.2))
        assert generations(path) == 0  # not committed on their own…
        assert store.cached_generation("b", "t1", 0, "k") == ANSWER  # …but found (first kept)
        assert store.cached_generation("b", "t1", 1, "k") is None
        store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 0.5, "t1"))
        assert generations(path) == 2
        assert count_rows(path, "comparisons") == 1
        assert store.cached_generation("b", "t1", 0, "k") == ANSWER  # now from the table


def test_a_refused_write_keeps_the_pending_answers(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path, writer=True) as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        store.cache_generation("a", "t1", 0, "k", "m", ANSWER)
        with pytest.raises(StoreError, match="has 0 comparisons"):
            store.append_comparison(experiment_id, ComparisonRecord(2, 0, 1, 1.0))
        assert generations(path) == 0 and store.cached_generation("a", "t1", 0, "k") == ANSWER
        store.add_event(experiment_id, "note")
        assert generations(path) == 1


def test_pending_answers_are_committed_at_close_and_when_stale(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    with Store(path, writer=True) as store:
        store.cache_generation("a", "t1", 0, "k", "m", ANSWER)
        store.flush_stale()
        assert generations(path) == 0
    assert generations(path) == 1  # close

    monkeypatch.setattr(llmpo.store.answers, "CACHE_FLUSH_SECONDS", 0.05)
    with Store(path, writer=True) as store:
        store.cache_generation("a", "t1", 1, "k", "m", ANSWER)
        assert generations(path) == 1
        time.sleep(0.06)
        store.flush_stale()
        assert generations(path) == 2
        store.cache_generation("a", "t1", 2, "k", "m", ANSWER)
        time.sleep(0.06)
        store.cache_generation("a", "t1", 3, "k", "m", ANSWER)  # the oldest waited long enough
        assert generations(path) == 4


def test_every_told_comparison_is_committed_with_its_answers_first(project, server, monkeypatch):
    """At concurrency 16 results arrive together; each is on disk before the model hears it."""
    server.responder = lambda body: "none"  # every comparison a tie: the run goes to its budget
    server.latency = 0.02
    path = project / "runs.db"
    seen: list[tuple[int, int, int]] = []
    tell = Experiment.tell

    def checked_tell(self, i, j, outcome):
        seen.append(
            (
                self.n_comparisons,
                count_rows(path, "comparisons"),
                generations(path),
            )
        )
        tell(self, i, j, outcome)

    monkeypatch.setattr(Experiment, "tell", checked_tell)
    config = load_config(project / "live.yaml", {"max_comparisons": 120})
    with Store(config.store, writer=True) as store:
        experiment_id = start_experiment(config, store)
        outcome = Runner(store, experiment_id, concurrency=16).run()
        stored = store.comparisons(experiment_id)
    assert outcome.new_comparisons == len(stored) == len(seen) == 120
    for told, on_disk, answers in seen:
        assert on_disk >= told + 1  # committed before told
        assert answers >= 2 * (told + 1)  # with both of its answers


def test_fresh_replicates_are_the_smallest_unused_indices(project):
    config = load_config(project / "live.yaml")
    with Store(config.store, writer=True) as store:
        runner = Runner(store, start_experiment(config, store), concurrency=2)
        for replicate in (0, 2):  # as a replay marks them, out of order
            runner.driver.ledger.use(0, "t1", replicate)
        assert [runner.driver.ledger.fresh_replicate(0, "t1") for _ in range(2)] == [1, 3]
        runner.driver.ledger.use(0, "t1", 5)
        runner.driver.ledger.use(0, "t1", 4)
        assert [runner.driver.ledger.fresh_replicate(0, "t1") for _ in range(2)] == [6, 7]
        ledger = runner.driver.ledger
        assert ledger.fresh_replicate(1, "t1") == ledger.fresh_replicate(0, "t2") == 0
