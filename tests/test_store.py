"""The SQLite store: schema, append-only comparisons, refusal of files it must not touch."""

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmpo.store import APPLICATION_ID, SCHEMA_VERSION, ComparisonRecord, Store, StoreError, views


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_store_has_versioned_schema_and_wal(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path, writer=True) as store:
        experiment_id = store.create_experiment({"delta": 0.05}, ["a", "b"], "first")
        store.append_comparison(
            experiment_id, ComparisonRecord(1, 0, 1, 1.0, "t1", "ab", {"v": "A"})
        )
        store.append_comparison(experiment_id, ComparisonRecord(2, 1, 0, 0.5))
        store.set_status(experiment_id, "certified", {"best": "a"}, event="finished")
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()
    with Store(path, readonly=True) as store:
        record = store.experiment()
        assert (record.id, record.name, record.status, record.policies) == (
            experiment_id,
            "first",
            "certified",
            ["a", "b"],
        )
        assert record.config == {"delta": 0.05} and record.result == {"best": "a"}
        comparisons = store.comparisons(experiment_id)
        assert [c.seq for c in comparisons] == [1, 2]
        assert comparisons[0].raw == {"v": "A"} and comparisons[1].outcome == 0.5
        assert [kind for _, kind, _ in store.events(experiment_id)] == ["created", "finished"]


def test_sequence_numbers_cannot_repeat_or_skip(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 1.0))
        for seq in (1, 3):
            with pytest.raises(StoreError, match="has 1 comparisons"):
                store.append_comparison(experiment_id, ComparisonRecord(seq, 0, 1, 1.0))
        assert store.comparison_count(experiment_id) == 1


def test_corrupt_file_is_refused_unchanged(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"this is not a database at all" * 100)
    before = digest(path)
    for options in ({}, {"readonly": True}, {"writer": True}):
        with pytest.raises(StoreError, match="corrupt or not a store"):
            Store(path, **options)
    assert digest(path) == before


def test_foreign_sqlite_file_is_refused_unchanged(tmp_path):
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE customers (name TEXT)")
    connection.execute("INSERT INTO customers VALUES ('x')")
    connection.commit()
    connection.close()
    before = digest(path)
    with pytest.raises(StoreError, match="another application"):
        Store(path, writer=True)
    assert digest(path) == before
    assert not (tmp_path / "other.db-wal").exists()


def test_newer_schema_is_refused_unchanged(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        store.create_experiment({}, ["a", "b"])
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    connection.commit()
    connection.close()
    before = digest(path)
    with pytest.raises(StoreError, match=r"newer llmpo.*upgrade llmpo"):
        Store(path)
    with pytest.raises(StoreError, match="newer llmpo"):
        Store(path, readonly=True)
    assert digest(path) == before


def test_missing_store_for_reading_and_unknown_experiment(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "absent.db", readonly=True)
    with pytest.raises(StoreError, match=r"does not exist\. Fix: create it"):
        Store(tmp_path / "no-folder" / "runs.db")
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)
    assert not (tmp_path / "absent.db").exists()
    with Store(tmp_path / "runs.db") as store:
        with pytest.raises(StoreError, match="holds no experiment"):
            store.experiment()
        store.create_experiment({}, ["a", "b"])
        with pytest.raises(StoreError, match="no experiment 7; it holds 1"):
            store.experiment(7)


def test_second_writer_is_refused_while_readers_go_on(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path, writer=True) as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 1.0))
        with pytest.raises(StoreError, match="in use by another llmpo process"):
            Store(path, writer=True)
        # Another process is refused too, with the holder's pid.
        script = (
            "import sys\nfrom llmpo.store import Store, StoreError\n"
            f"try:\n    Store({str(path)!r}, writer=True)\n"
            "except StoreError as e:\n    print(e)\n    sys.exit(3)\n"
        )
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert child.returncode == 3 and "in use by another llmpo process" in child.stdout
        with Store(path, readonly=True) as reader:
            assert reader.comparison_count(experiment_id) == 1
    with Store(path, writer=True) as store:  # released on close
        assert store.comparison_count(experiment_id) == 1


def test_older_schema_is_migrated_in_one_transaction(tmp_path, monkeypatch):
    import llmpo.store.schema as store_module

    path = tmp_path / "runs.db"
    with Store(path) as store:
        experiment_id = store.create_experiment({"delta": 0.1}, ["a", "b"])
        store.append_comparison(experiment_id, ComparisonRecord(1, 0, 1, 1.0))

    def broken(connection):
        connection.execute("ALTER TABLE comparisons ADD COLUMN judge_model TEXT")
        raise sqlite3.OperationalError("disk full, say")

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, SCHEMA_VERSION + 1, broken)
    with pytest.raises(
        StoreError,
        match=rf"v{SCHEMA_VERSION} to v{SCHEMA_VERSION + 1} \(disk full, say\).*not changed",
    ):
        Store(path)
    with sqlite3.connect(path) as connection:  # rolled back: still the old schema
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [row[1] for row in connection.execute("PRAGMA table_info(comparisons)")]
        assert "judge_model" not in columns

    def add_column(connection):
        connection.execute("ALTER TABLE comparisons ADD COLUMN judge_model TEXT")

    monkeypatch.setitem(store_module.MIGRATIONS, SCHEMA_VERSION + 1, add_column)
    with pytest.raises(StoreError, match="migrate"):
        Store(path, readonly=True)  # readers never migrate
    with Store(path) as store:
        assert store.comparison_count(experiment_id) == 1
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        columns = [row[1] for row in connection.execute("PRAGMA table_info(comparisons)")]
        assert "judge_model" in columns


def test_budget_statuses_of_older_stores_read_as_the_budget_that_stopped_them(tmp_path):
    path = tmp_path / "old.db"
    with Store(path, writer=True) as store:
        ids = [store.create_experiment({}, ["a", "b"]) for _ in range(3)]
        store.set_status(ids[2], "certified", {"stop_reason": "certified", "certified": True})
    # As llmpo wrote them before budgets were told apart.
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "UPDATE experiments SET status = 'budget', result = ? WHERE id = ?",
            ('{"stop_reason": null, "stopped_by": "max_cost", "certified": false}', ids[0]),
        )
        connection.execute(
            "UPDATE experiments SET status = 'budget', result = ? WHERE id = ?",
            ('{"stop_reason": "budget", "certified": false}', ids[1]),
        )
    connection.close()
    with Store(path, readonly=True) as store:
        cost, comparisons, certified = (store.experiment(i) for i in ids)
    assert cost.status == cost.result["stop_reason"] == "max_cost"
    assert comparisons.status == comparisons.result["stop_reason"] == "max_comparisons"
    assert certified.status == certified.result["stop_reason"] == "certified"


def test_only_exact_statuses_are_written(tmp_path):
    with Store(tmp_path / "s.db", writer=True) as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        with pytest.raises(ValueError, match="status must be one of"):
            store.set_status(experiment_id, "budget")
        for status in ("failed", "max_comparisons", "max_cost"):
            store.set_status(experiment_id, status)
            assert store.experiment(experiment_id).status == status


def test_the_viewers_connection_refuses_every_write(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        store.create_experiment({}, ["a", "b"])
    before = path.stat().st_mtime_ns
    with views.open_readonly(path) as store:
        for statement in (
            "INSERT INTO events (experiment_id, at, kind) VALUES (1, 'now', 'x')",
            "DELETE FROM comparisons",
            "CREATE TABLE x (y)",
        ):
            with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
                store.connection.execute(statement)
    assert path.stat().st_mtime_ns == before


def test_stores_gain_the_task_index_when_opened_for_writing(tmp_path):
    path = tmp_path / "old.db"
    with Store(path) as store:
        store.connection.execute("DROP INDEX comparisons_by_task")  # as a store made before
    with views.open_readonly(path) as store:
        names = {r[0] for r in store.connection.execute("SELECT name FROM sqlite_master")}
    assert "comparisons_by_task" not in names
    Store(path, writer=True).close()
    with views.open_readonly(path) as store:
        plan = store.connection.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM comparisons WHERE experiment_id = 1 "
            "AND task_id = 't1' AND seq < 99 ORDER BY seq DESC LIMIT 51"
        ).fetchall()
    assert "comparisons_by_task" in str(plan)


def test_comparisons_and_events_are_read_in_chunks_across_their_boundaries(tmp_path, monkeypatch):
    """Iterating reads a chunk per query (resume never holds the table): every row once, in
    order, whatever the chunk size, and later chunks are only read when the iterator gets there."""
    from llmpo.store import experiments

    monkeypatch.setattr(experiments, "READ_CHUNK", 3)
    with Store(tmp_path / "s.db") as store:
        experiment_id = store.create_experiment({}, ["a", "b"])
        other = store.create_experiment({}, ["a", "b"])
        for owner in (experiment_id, other):
            store.append_comparisons(
                owner, [ComparisonRecord(seq, 0, 1, 1.0, raw={"n": seq}) for seq in range(1, 8)]
            )
            for k in range(5):
                store.add_event(owner, "resumed", {"stored_comparisons": k})
        assert [c.raw["n"] for c in store.iter_comparisons(experiment_id)] == list(range(1, 8))
        assert store.comparisons(other) == list(store.iter_comparisons(other))
        events = list(store.iter_events(experiment_id))
        assert [kind for _, kind, _ in events] == ["created"] + ["resumed"] * 5
        assert [d["stored_comparisons"] for _, _, d in events[1:]] == list(range(5))
        queries = []
        store.connection.set_trace_callback(queries.append)
        reading = store.iter_comparisons(experiment_id)
        assert [next(reading).seq for _ in range(3)] == [1, 2, 3]
        assert len(queries) == 1  # the first chunk only
        assert next(reading).seq == 4 and len(queries) == 2
