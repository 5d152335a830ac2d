"""Experiments, their comparisons and their events, in SQLite.

Every comparison is committed before its outcome is told to the experiment, so a run killed at any
instant loses at most the comparison in flight and resumes by replaying the store in sequence
order. A comparison's outcome is checked before it is written (a number in [0, 1]; see
:meth:`~llmpo.store.records.ComparisonRecord.outcome_problem`): a bad one is refused with a message
naming the comparison, and nothing stored before it is touched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from llmpo import __version__
from llmpo.errors import StoreError, scrub_value
from llmpo.store.payloads import event_detail
from llmpo.store.records import (
    COMPARISON_COLUMNS,
    STATUSES,
    ComparisonRecord,
    ExperimentRecord,
)
from llmpo.store.sqlite import Database, dumps, loads, now

#: Rows read per query when comparisons or events are iterated (memory: a chunk, not the table).
READ_CHUNK = 2_000


def legacy_stop(status: str, result: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """A status and result as written today, from a store written before budgets were told apart.

    Old stores recorded both budgets as status ``budget``: a cost stop left ``stop_reason`` null
    and ``stopped_by: max_cost`` in the result, a comparison-budget stop ``stop_reason: budget``.
    """
    if status != "budget" and (result is None or result.get("stop_reason") != "budget"):
        return status, result
    reason = (
        "max_cost" if result is not None and result.get("stopped_by") == "max_cost"
        else "max_comparisons"
    )
    if result is not None:
        result = {**result, "stop_reason": reason}
    return (reason if status == "budget" else status), result


def update_status(
    connection: sqlite3.Connection,
    table: str,
    row_id: int,
    status: str,
    result: dict[str, Any] | None,
) -> None:
    """Set the status, time and final result of one row of ``experiments`` or ``evaluations``."""
    connection.execute(
        f"UPDATE {table} SET status = ?, updated_at = ?, result = ? WHERE id = ?",
        (status, now(), dumps(result), row_id),
    )


class ComparisonTable:
    """One table of comparisons (``comparisons`` of runs, ``evaluation_comparisons``), keyed
    by owner and sequence number."""

    def __init__(self, table: str, key: str, owner: str) -> None:
        self.table, self.key, self.owner = table, key, owner

    def append(
        self, database: Database, owner_id: int, records: Iterable[ComparisonRecord]
    ) -> None:
        """Commit ``records``, in one transaction, after checking each outcome and that the
        numbers follow the last stored one without gap or repeat; none is written if one fails.

        Raises
        ------
        StoreError
            For an outcome that cannot be stored, or a number that would leave a gap or repeat.
        """
        with database.transaction() as connection:
            last = connection.execute(
                f"SELECT coalesce(max(seq), 0) FROM {self.table} WHERE {self.key} = ?",
                (owner_id,),
            ).fetchone()[0]
            connection.executemany(
                f"INSERT INTO {self.table} ({self.key}, {', '.join(COMPARISON_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self._row(database, owner_id, last + k, r) for k, r in enumerate(records, 1)),
            )

    def _row(
        self, database: Database, owner_id: int, expected: int, record: ComparisonRecord
    ) -> tuple[Any, ...]:
        """The row of ``record``, checked, as comparison number ``expected`` of its owner."""
        if record.seq != expected:
            raise StoreError(
                f"{database.path}: {self.owner} {owner_id} has {expected - 1} comparisons; "
                f"cannot store comparison #{record.seq} (is another process running it?)"
            )
        problem = record.outcome_problem()
        if problem is not None:
            raise StoreError(
                f"{database.path}: {self.owner} {owner_id}, comparison #{record.seq} (policy "
                f"{record.policy_a} against {record.policy_b}, task {record.task_id!r}): "
                f"{problem}; it was not stored (nothing stored before it changed). Fix: give "
                "outcomes in [0, 1] — 1 win, 0.5 tie, 0 loss, or a preference probability — "
                "and no tie flag on a fractional outcome"
            )
        return (
            owner_id,
            record.seq,
            record.policy_a,
            record.policy_b,
            float(record.outcome),
            record.task_id,
            record.order,
            dumps(record.raw),
            record.started_at,
            record.finished_at,
            record.cost_usd,
            record.input_tokens,
            record.output_tokens,
        )

    def iterate(self, database: Database, owner_id: int) -> Iterator[ComparisonRecord]:
        """The owner's comparisons in sequence order, read :data:`READ_CHUNK` at a time.

        Each chunk is its own query, read whole: no statement stays open between chunks, so a
        reader that keeps the iterator (resume re-tells stored comparisons one by one while it
        writes events) neither holds every record nor pins the WAL.
        """
        after = 0
        while True:
            rows = database.query(
                f"SELECT {', '.join(COMPARISON_COLUMNS)} FROM {self.table} "
                f"WHERE {self.key} = ? AND seq > ? ORDER BY seq LIMIT ?",
                (owner_id, after, READ_CHUNK),
            )
            for row in rows:
                yield ComparisonRecord(
                    seq=row[0],
                    policy_a=row[1],
                    policy_b=row[2],
                    outcome=row[3],
                    task_id=row[4],
                    order=row[5],
                    raw=loads(row[6]),
                    started_at=row[7],
                    finished_at=row[8],
                    cost_usd=row[9],
                    input_tokens=row[10],
                    output_tokens=row[11],
                )
            if len(rows) < READ_CHUNK:
                return
            after = rows[-1][0]

    def count(self, database: Database, owner_id: int) -> int:
        """How many comparisons the owner has."""
        return int(
            database.query(
                f"SELECT count(*) FROM {self.table} WHERE {self.key} = ?", (owner_id,)
            )[0][0]
        )


RUN_COMPARISONS = ComparisonTable("comparisons", "experiment_id", "experiment")


def insert_event(
    connection: sqlite3.Connection,
    experiment_id: int | None,
    kind: str,
    detail: dict[str, Any] | None,
) -> None:
    """Add one event inside the caller's transaction (its detail scrubbed of secrets)."""
    payload = event_detail(kind, detail)
    connection.execute(
        "INSERT INTO events (experiment_id, at, kind, detail) VALUES (?, ?, ?, ?)",
        (experiment_id, now(), kind, dumps(None if payload is None else scrub_value(payload))),
    )


class Experiments(Database):
    """The experiments of a store, their comparisons and events."""

    def create_experiment(
        self,
        config: dict[str, Any],
        policies: list[str],
        name: str | None = None,
        holdout_tasks: list[str] | None = None,
    ) -> int:
        """Record a new experiment (status ``running``) and return its id.

        ``holdout_tasks``, the task ids kept out of its selection run, are recorded with it in
        the same transaction.
        """
        stamp = now()
        with self.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO experiments (name, created_at, updated_at, status, code_version, "
                "config, policies) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (name, stamp, stamp, __version__, dumps(config), dumps(policies)),
            )
            experiment_id = int(cursor.lastrowid or 0)
            if holdout_tasks is not None:
                connection.executemany(
                    "INSERT INTO holdout_tasks (experiment_id, task_id) VALUES (?, ?)",
                    [(experiment_id, task_id) for task_id in holdout_tasks],
                )
            insert_event(
                connection,
                experiment_id,
                "created",
                {"policies": len(policies)}
                | ({} if holdout_tasks is None else {"holdout_tasks": len(holdout_tasks)}),
            )
        return experiment_id

    def holdout_tasks(self, experiment_id: int) -> list[str] | None:
        """The task ids the experiment held out of its selection run (None: no holdout)."""
        rows = self.query(
            "SELECT task_id FROM holdout_tasks WHERE experiment_id = ? ORDER BY task_id",
            (experiment_id,),
        )
        return [row[0] for row in rows] or None

    def experiments(self) -> list[ExperimentRecord]:
        """Every stored experiment, oldest first."""
        rows = self.query(
            "SELECT id, name, created_at, updated_at, status, code_version, config, policies, "
            "result FROM experiments ORDER BY id"
        )
        records = []
        for row in rows:
            status, result = legacy_stop(row[4], loads(row[8]))
            records.append(
                ExperimentRecord(
                    row[0], row[1], row[2], row[3], status, row[5],
                    loads(row[6]), loads(row[7]), result,
                )
            )
        return records

    def experiment(self, experiment_id: int | None = None) -> ExperimentRecord:
        """One experiment by id; the latest when ``experiment_id`` is None.

        Raises
        ------
        StoreError
            When there is no such experiment; the message lists the ids present.
        """
        records = self.experiments()
        if not records:
            raise StoreError(f"{self.path}: holds no experiment yet. Fix: 'llmpo run CONFIG' first")
        if experiment_id is None:
            return records[-1]
        for record in records:
            if record.id == experiment_id:
                return record
        ids = ", ".join(str(r.id) for r in records)
        raise StoreError(f"{self.path}: no experiment {experiment_id}; it holds {ids}")

    def set_status(
        self,
        experiment_id: int,
        status: str,
        result: dict[str, Any] | None = None,
        event: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Set an experiment's status (and final result), with an optional event, atomically."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self.transaction() as connection:
            update_status(connection, "experiments", experiment_id, status, result)
            if event is not None:
                insert_event(connection, experiment_id, event, detail)

    def reopen(
        self, experiment_id: int, config: dict[str, Any], detail: dict[str, Any]
    ) -> None:
        """Give a stopped experiment a new configuration (a larger budget) and mark it
        ``interrupted``, its result cleared, with a ``budget_extended`` event, atomically."""
        with self.transaction() as connection:
            connection.execute(
                "UPDATE experiments SET config = ? WHERE id = ?", (dumps(config), experiment_id)
            )
            update_status(connection, "experiments", experiment_id, "interrupted", None)
            insert_event(connection, experiment_id, "budget_extended", detail)

    # ---- comparisons ---------------------------------------------------------------------------
    def append_comparison(self, experiment_id: int, record: ComparisonRecord) -> None:
        """Commit one comparison; its sequence number must follow the last stored one.

        Raises
        ------
        StoreError
            When the sequence number would leave a gap or repeat one, or the outcome is not a
            number in [0, 1] (or a fractional outcome is flagged as a tie); nothing is written.
        """
        RUN_COMPARISONS.append(self, experiment_id, (record,))

    def append_comparisons(
        self, experiment_id: int, records: Iterable[ComparisonRecord]
    ) -> None:
        """Commit many comparisons in one transaction (an import, a benchmark's store), with
        the checks of :meth:`append_comparison`; none is written if one is refused."""
        RUN_COMPARISONS.append(self, experiment_id, records)

    def iter_comparisons(self, experiment_id: int) -> Iterator[ComparisonRecord]:
        """The experiment's comparisons in sequence order."""
        return RUN_COMPARISONS.iterate(self, experiment_id)

    def comparisons(self, experiment_id: int) -> list[ComparisonRecord]:
        """The experiment's comparisons in sequence order, as a list."""
        return list(self.iter_comparisons(experiment_id))

    def comparison_count(self, experiment_id: int) -> int:
        """How many comparisons are stored for the experiment."""
        return RUN_COMPARISONS.count(self, experiment_id)

    # ---- events --------------------------------------------------------------------------------
    def add_event(
        self,
        experiment_id: int | None,
        kind: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record an event (committed at once)."""
        with self.transaction() as connection:
            insert_event(connection, experiment_id, kind, detail)

    def iter_events(self, experiment_id: int) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
        """The experiment's events: (time, kind, detail), oldest first, read in chunks (a live
        run's ``asked`` events hold a row per comparison: resume never holds them all)."""
        after = 0
        while True:
            rows = self.query(
                "SELECT id, at, kind, detail FROM events WHERE experiment_id = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (experiment_id, after, READ_CHUNK),
            )
            # Scrubbed again on the way out: a store written by an older llmpo may hold a key.
            for _, at, kind, detail in rows:
                yield at, kind, scrub_value(loads(detail)) if detail else None
            if len(rows) < READ_CHUNK:
                return
            after = rows[-1][0]

    def events(self, experiment_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
        """The experiment's events: (time, kind, detail), oldest first."""
        return list(self.iter_events(experiment_id))
