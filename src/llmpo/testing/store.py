"""The conformance suite of a store, and the store's test utilities (needs pytest).

Any implementation of :class:`llmpo.store.base.StoreProtocol` must pass :class:`StoreConformance`:
subclass it in a test module, name the subclass ``Test…`` and implement :meth:`open_store`::

    from llmpo.testing.store import StoreConformance

    class TestMyStore(StoreConformance):
        def open_store(self, path, *, readonly=False, writer=False):
            return MyStore(path, readonly=readonly, writer=writer)

llmpo runs it against its SQLite store in ``tests/test_store_conformance.py``. The suite checks
the contract written in :mod:`llmpo.store.base`: experiments created and found again after
closing, comparisons appended strictly in order and read back in it, outcomes in [0, 1] with the
bad ones refused by name, atomic status changes with their event, events in order with secrets
scrubbed, evaluations, the answer cache, judges, read-only openings that change nothing, and one
writer at a time while readers go on.

:func:`tamper` and :func:`count_rows` are for tests that must reach under the interface of the
SQLite store: to damage or rewrite a store on purpose (as a person, a disk or an older llmpo
would), or to watch one from another connection while a run writes it.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmpo.errors import StoreError
from llmpo.store.base import StoreProtocol
from llmpo.store.records import CachedGeneration, ComparisonRecord, Payment

__all__ = ["StoreConformance", "count_rows", "tamper"]


@contextmanager
def tamper(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A raw connection to a store file, committed and closed on leaving; for tests only.

    Tests that break or rewrite a store on purpose go through here, so that the store package is
    the only code that speaks SQL to a store (the hardening tests list what they change).
    """
    connection = sqlite3.connect(path)
    try:
        with connection:
            yield connection
    finally:
        connection.close()


def count_rows(path: str | Path, table: str) -> int:
    """Rows of ``table`` committed in the store at ``path``, read as another process would (0
    while the file or table does not exist yet)."""
    if not Path(path).exists():
        return 0
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    try:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0
    finally:
        connection.close()


class StoreConformance:
    """What every store must do; subclass with a ``Test`` name and define :meth:`open_store`."""

    def open_store(
        self, path: Path, *, readonly: bool = False, writer: bool = False
    ) -> StoreProtocol:
        """Open (creating unless ``readonly``) the store at ``path``."""
        raise NotImplementedError

    # ---- experiments ---------------------------------------------------------------------------
    def test_experiments_are_created_and_found_again_after_closing(self, tmp_path: Path) -> None:
        path = tmp_path / "store.db"
        store = self.open_store(path, writer=True)
        with pytest.raises(StoreError, match="holds no experiment"):
            store.experiment()
        first = store.create_experiment({"delta": 0.1}, ["a", "b"], "first")
        second = store.create_experiment({"delta": 0.05}, ["a", "b", "c"], None, ["t2", "t1"])
        store.close()
        store = self.open_store(path, writer=True)
        try:
            assert first != second
            assert [r.id for r in store.experiments()] == [first, second]
            assert store.experiment().id == second  # the latest by default
            record = store.experiment(first)
            assert (record.name, record.config, record.policies) == (
                "first", {"delta": 0.1}, ["a", "b"]
            )
            assert record.status == "running" and record.result is None
            assert store.holdout_tasks(first) is None
            assert store.holdout_tasks(second) == ["t1", "t2"]
            with pytest.raises(StoreError, match=f"no experiment {second + 7}"):
                store.experiment(second + 7)
        finally:
            store.close()

    def test_a_status_changes_with_its_event_at_once(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "store.db", writer=True)
        try:
            experiment_id = store.create_experiment({"delta": 0.1}, ["a", "b"])
            with pytest.raises(ValueError, match="status must be one of"):
                store.set_status(experiment_id, "nearly", event="finished")
            assert [kind for _, kind, _ in store.events(experiment_id)] == ["created"]
            store.set_status(
                experiment_id, "certified", {"best": "a"}, "finished", {"comparisons": 3}
            )
            record = store.experiment(experiment_id)
            assert (record.status, record.result) == ("certified", {"best": "a"})
            assert store.events(experiment_id)[-1][1:] == ("finished", {"comparisons": 3})
            store.reopen(experiment_id, {"delta": 0.1, "max_comparisons": 9}, {"to": 9})
            record = store.experiment(experiment_id)
            assert (record.status, record.result) == ("interrupted", None)
            assert record.config["max_comparisons"] == 9
            assert store.events(experiment_id)[-1][1:] == ("budget_extended", {"to": 9})
        finally:
            store.close()

    def test_events_are_kept_in_order_with_secrets_scrubbed(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "store.db", writer=True)
        try:
            experiment_id = store.create_experiment({}, ["a", "b"])
            secret = "sk-" + "a1B2c3D4" * 5
            store.add_event(experiment_id, "failed", {"error": f"401 for key {secret}"})
            store.add_event(experiment_id, "resumed", None)
            store.add_event(None, "note", {"n": 1})  # an event of no experiment
            events = store.events(experiment_id)
            assert list(store.iter_events(experiment_id)) == events
            assert [kind for _, kind, _ in events] == ["created", "failed", "resumed"]
            assert secret[:12] not in str(events[1][2]) and events[2][2] is None
            times = [at for at, _, _ in events]
            assert times == sorted(times)
        finally:
            store.close()

    # ---- comparisons ---------------------------------------------------------------------------
    def test_comparisons_are_appended_in_order_and_read_back_whole(self, tmp_path: Path) -> None:
        path = tmp_path / "store.db"
        store = self.open_store(path, writer=True)
        experiment_id = store.create_experiment({}, ["a", "b", "c"])
        records = [
            ComparisonRecord(1, 0, 1, 1.0, "t1", "ab", {"judge": {"replies": ["A"]}}, 1.0, 2.5,
                             0.002, 10, 3),
            ComparisonRecord(2, 2, 0, 0.5),
            ComparisonRecord(3, 1, 2, 0.0, "t2", "ba", ["raw", 1], None, None, 0.0, 0, 0),
            ComparisonRecord(4, 0, 2, 0.8125, "t3"),  # a preference probability
        ]
        for record in records:
            store.append_comparison(experiment_id, record)
        for seq in (4, 6):  # a repeat, a gap
            with pytest.raises(StoreError, match=f"cannot store comparison #{seq}"):
                store.append_comparison(experiment_id, ComparisonRecord(seq, 0, 1, 1.0))
        store.close()
        store = self.open_store(path, readonly=True)
        try:
            assert store.comparisons(experiment_id) == records
            assert list(store.iter_comparisons(experiment_id)) == records
            assert store.comparison_count(experiment_id) == 4
        finally:
            store.close()

    def test_many_comparisons_are_appended_all_or_none(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "store.db", writer=True)
        try:
            experiment_id = store.create_experiment({}, ["a", "b"])
            store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 1.0))
            good = [ComparisonRecord(seq, seq % 2, 1 - seq % 2, 0.5) for seq in (2, 3, 4)]
            for bad in (ComparisonRecord(5, 0, 1, 2.0), ComparisonRecord(6, 0, 1, 1.0)):
                with pytest.raises(StoreError, match=r"comparison #[56]"):
                    store.append_comparisons(experiment_id, [*good, bad])
                assert store.comparison_count(experiment_id) == 1
            store.append_comparisons(experiment_id, iter(good))
            assert [c.seq for c in store.comparisons(experiment_id)] == [1, 2, 3, 4]
        finally:
            store.close()

    @pytest.mark.parametrize(
        ("outcome", "raw"),
        [(math.nan, None), (1.0000001, None), (-0.5, None), (0.75, {"tie": True})],
    )
    def test_a_bad_outcome_is_refused_by_name_and_nothing_is_written(
        self, tmp_path: Path, outcome: float, raw: object
    ) -> None:
        store = self.open_store(tmp_path / "store.db", writer=True)
        try:
            experiment_id = store.create_experiment({}, ["a", "b"])
            store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 0.0))
            with pytest.raises(StoreError, match=r"comparison #2 \(policy 1 against 0"):
                store.append_comparison(experiment_id, ComparisonRecord(2, 1, 0, outcome, raw=raw))
            assert store.comparison_count(experiment_id) == 1
            store.append_comparison(experiment_id, ComparisonRecord(2, 1, 0, 1.0))
        finally:
            store.close()

    # ---- evaluations ---------------------------------------------------------------------------
    def test_evaluations_keep_their_own_comparisons(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "store.db", writer=True)
        try:
            experiment_id = store.create_experiment({}, ["a", "b"])
            store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 1.0))
            evaluation_id = store.create_evaluation(experiment_id, "a", "b", {"comparisons": 2})
            assert [kind for _, kind, _ in store.events(experiment_id)][-1] == "evaluation_created"
            store.append_evaluation_comparison(evaluation_id, ComparisonRecord(1, 0, 1, 0.25))
            with pytest.raises(StoreError, match="cannot store comparison #3"):
                store.append_evaluation_comparison(evaluation_id, ComparisonRecord(3, 0, 1, 1.0))
            with pytest.raises(ValueError, match="status must be one of"):
                store.set_evaluation_status(evaluation_id, "certified")
            store.set_evaluation_status(evaluation_id, "done", {"wins": 0.25})
            record = store.evaluation(evaluation_id)
            assert (record.status, record.result, record.settings) == (
                "done", {"wins": 0.25}, {"comparisons": 2}
            )
            assert (record.winner, record.baseline, record.experiment_id) == (
                "a", "b", experiment_id
            )
            assert [e.id for e in store.evaluations(experiment_id)] == [evaluation_id]
            assert [c.outcome for c in store.evaluation_comparisons(evaluation_id)] == [0.25]
            assert store.comparison_count(experiment_id) == 1  # the run's own are apart
            with pytest.raises(StoreError, match=f"no evaluation {evaluation_id + 1}"):
                store.evaluation(evaluation_id + 1)
        finally:
            store.close()

    # ---- answer cache --------------------------------------------------------------------------
    def test_cached_answers_are_seen_at_once_and_kept_after_closing(self, tmp_path: Path) -> None:
        path = tmp_path / "store.db"
        first = CachedGeneration("four", 12, 1, 0.5)
        store = self.open_store(path, writer=True)
        assert store.cached_generation("p", "t", 0, "k") is None
        store.cache_generation("p", "t", 0, "k", "model-1", first)
        store.cache_generation("p", "t", 0, "k", "model-1", CachedGeneration("5", 1, 1, 0.1))
        store.cache_generation("p", "t", 0, "k2", "model-2", CachedGeneration("IV", 1, 1, None))
        assert store.cached_generation("p", "t", 0, "k") == first  # before any commit
        store.close()
        store = self.open_store(path, readonly=True)
        try:
            assert store.cached_generation("p", "t", 0, "k") == first  # the first one kept
            assert store.cached_generation("p", "t", 1, "k") is None
            assert store.generation_count() == 2
            assert store.answer_text("p", "t", 0, "k2") == "IV"
            assert store.answer_text("p", "t", 0) is None  # two requests: never a guess
            assert store.answers() == [("p", "t", 0, "four"), ("p", "t", 0, "IV")]
        finally:
            store.close()

    def test_a_flush_makes_cached_answers_durable(self, tmp_path: Path) -> None:
        path = tmp_path / "store.db"
        store = self.open_store(path, writer=True)
        try:
            store.cache_generation("p", "t", 0, "k", "m", CachedGeneration("x", None, None, None))
            store.flush()
            reader = self.open_store(path, readonly=True)
            try:
                assert reader.answer_text("p", "t", 0, "k") == "x"
            finally:
                reader.close()
        finally:
            store.close()

    def test_payments_are_kept_per_payer_and_durable_after_a_flush(self, tmp_path: Path) -> None:
        path = tmp_path / "store.db"
        store = self.open_store(path, writer=True)
        try:
            run = store.create_experiment({"seed": 1}, ["a", "b"])
            other = store.create_experiment({"seed": 2}, ["a", "b"])
            evaluation = store.create_evaluation(run, "a", "b", {})
            paid = [
                Payment(run, None, "generation", "a", "t", 0, "k", "m", 3, 4, 0.5, 1.0),
                Payment(run, None, "judge", None, None, None, None, "j", 1, 1, None, 2.0),
                Payment(run, evaluation, "generation", "b", "t", 1, "k", "m", 1, 2, None, 3.0),
                Payment(other, None, "generation", "a", "t", 0, "k", "m", 3, 4, 0.5, 4.0),
            ]
            for payment in paid:
                store.record_payment(payment)
            assert store.payments(run) == paid[:2]  # seen before any commit
            store.flush()
            reader = self.open_store(path, readonly=True)
            try:
                assert reader.payments(run) == paid[:2]
                assert reader.payments(run, evaluation) == [paid[2]]
                assert reader.payments(other) == [paid[3]]
            finally:
                reader.close()
        finally:
            store.close()

    # ---- judges --------------------------------------------------------------------------------
    def test_judges_are_added_once_and_replaced_on_request(self, tmp_path: Path) -> None:
        store = self.open_store(tmp_path / "store.db", writer=True)
        try:
            store.set_judge("zoe", "s1", "h1")
            store.set_judge("ann", "s2", "h2")
            with pytest.raises(StoreError, match="judge 'zoe' already exists"):
                store.set_judge("zoe", "s3", "h3")
            store.set_judge("zoe", "s3", "h3", replace=True)
            assert store.judge_credentials() == [("ann", "s2", "h2"), ("zoe", "s3", "h3")]
        finally:
            store.close()

    # ---- opening -------------------------------------------------------------------------------
    def test_a_read_only_opening_changes_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "store.db"
        with pytest.raises(StoreError, match="no such store"):
            self.open_store(path, readonly=True)
        assert not path.exists()
        store = self.open_store(path, writer=True)
        experiment_id = store.create_experiment({}, ["a", "b"])
        store.close()
        reader = self.open_store(path, readonly=True)
        try:
            with pytest.raises(StoreError, match="read-only"):
                reader.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 1.0))
            with pytest.raises(StoreError, match="read-only"):
                reader.create_experiment({}, ["a", "b"])
            assert reader.comparison_count(experiment_id) == 0
            assert len(reader.experiments()) == 1
        finally:
            reader.close()

    def test_one_writer_at_a_time_while_readers_go_on(self, tmp_path: Path) -> None:
        path = tmp_path / "store.db"
        writer = self.open_store(path, writer=True)
        try:
            experiment_id = writer.create_experiment({}, ["a", "b"])
            writer.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 1.0))
            with pytest.raises(StoreError, match="in use by another llmpo process"):
                self.open_store(path, writer=True)
            reader = self.open_store(path, readonly=True)
            try:
                assert reader.comparison_count(experiment_id) == 1
                writer.append_comparison(experiment_id, ComparisonRecord(2, 1, 0, 0.5))
                assert reader.comparison_count(experiment_id) == 2  # sees each commit
            finally:
                reader.close()
        finally:
            writer.close()
        again = self.open_store(path, writer=True)  # released on close
        try:
            assert again.comparison_count(experiment_id) == 2
        finally:
            again.close()
