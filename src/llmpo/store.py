"""The experiment store: one SQLite file per project (stdlib ``sqlite3``, WAL journal).

Tables (schema version 4):

- ``experiments``: id, name, status (``running`` | ``interrupted`` | ``failed`` | ``certified`` |
  ``max_comparisons`` | ``max_cost``; older stores said ``budget`` for both budgets, read back as
  the one it was),
  the resolved configuration (JSON), the policy names, the llmpo version that created it, and the
  final result (JSON) once done;
- ``comparisons``: one row per judged comparison, keyed by (experiment, sequence number): pair,
  task, presentation order, outcome, the judge's raw verdict, timings and cost fields;
- ``events``: what happened to an experiment and when (created, resumed, interrupted, finished);
- ``generations`` (v2): the cache of live LLM answers, keyed by (policy, task, replicate index,
  request key — a hash of the model, endpoint, messages and decoding parameters), so re-runs and
  resumed runs never pay twice for the same sample;
- ``judges`` (v3): the people who may judge through ``llmpo serve``: name, and a salted SHA-256
  hash of their sign-in token (the token itself is shown once and never stored);
- ``holdout_tasks`` (v4): the task ids an experiment held out of its selection run, recorded when
  it is created;
- ``evaluations`` and ``evaluation_comparisons`` (v4): held-out evaluations of an experiment's
  certified policy against its baseline (``llmpo evaluate``), their comparisons stored like those
  of a run.

Every comparison is committed before its outcome is told to the experiment, so a run killed at any
instant loses at most the comparison in flight and resumes by replaying the store. Cached answers
are not committed on their own: they join the store's next transaction (the comparison that used
them, an event, a status), or are committed at :meth:`Store.close`, by :meth:`Store.flush`, or once
the oldest has waited ``CACHE_FLUSH_SECONDS`` — so a comparison and its answers are committed
together, and a process killed outright loses at most the last second's answers (paid again, never
reused wrongly). The file is
marked with an SQLite ``application_id`` and its schema version in ``user_version``; a file of
another application, a corrupt file, or a store of a newer schema is refused without being changed,
and an older schema is migrated in one transaction. One process writes a store at a time: a second
writer is refused with the first one's process id (readers — reports, exports — never wait).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from llmpo import __version__
from llmpo.errors import StoreError, scrub_value
from llmpo.integrity import find_problems

if TYPE_CHECKING:
    from llmpo.environments.base import Comparison

#: "llpo" in ASCII, written in the SQLite header of every llmpo store.
APPLICATION_ID = 0x6C6C706F
SCHEMA_VERSION = 4
#: An experiment's status: unfinished (``running``; ``interrupted`` by the user; ``failed``: a
#: backend or judge failed for good — all three can be resumed) or why it stopped.
UNFINISHED_STATUSES = ("running", "interrupted", "failed")
FINISHED_STATUSES = ("certified", "max_comparisons", "max_cost")
STATUSES = UNFINISHED_STATUSES + FINISHED_STATUSES
#: What each status means, in words (reports and listings).
STATUS_TEXT = {
    "running": "it is still running",
    "interrupted": "it was interrupted",
    "failed": "a failure stopped it (see its events)",
    "certified": "certified",
    "max_comparisons": "the comparison budget (max_comparisons) ran out",
    "max_cost": "the cost budget (max_cost) ran out",
}
EVALUATION_STATUSES = ("running", "interrupted", "done")

#: Cached answers wait at most this long (seconds) for the next write of the store to commit them.
CACHE_FLUSH_SECONDS = 1.0

#: The columns of one judged comparison, shared by the tables of runs and of evaluations.
_COMPARISON_FIELDS = """    seq INTEGER NOT NULL,
    policy_a INTEGER NOT NULL,
    policy_b INTEGER NOT NULL,
    task_id TEXT,
    presentation_order TEXT,
    outcome REAL NOT NULL CHECK (outcome IN (0.0, 0.5, 1.0)),
    raw TEXT,
    started_at REAL,
    finished_at REAL,
    cost_usd REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
"""

_SCHEMA_V1 = (
    """
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    name TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    status TEXT NOT NULL,
    code_version TEXT NOT NULL,
    config TEXT NOT NULL,
    policies TEXT NOT NULL,
    result TEXT
);
CREATE TABLE comparisons (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
"""
    + _COMPARISON_FIELDS
    + """    PRIMARY KEY (experiment_id, seq)
) WITHOUT ROWID;
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER REFERENCES experiments(id),
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
"""
)


def _create_schema_v1(connection: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            connection.execute(statement)


def _add_generations(connection: sqlite3.Connection) -> None:
    connection.execute(
        """CREATE TABLE generations (
            policy TEXT NOT NULL,
            task_id TEXT NOT NULL,
            replicate INTEGER NOT NULL,
            request_key TEXT NOT NULL,
            model TEXT NOT NULL,
            text TEXT NOT NULL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            seconds REAL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (policy, task_id, replicate, request_key)
        ) WITHOUT ROWID"""
    )


def _add_judges(connection: sqlite3.Connection) -> None:
    connection.execute(
        """CREATE TABLE judges (
            name TEXT PRIMARY KEY,
            salt TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        ) WITHOUT ROWID"""
    )


def _add_holdout_and_evaluations(connection: sqlite3.Connection) -> None:
    connection.execute(
        """CREATE TABLE holdout_tasks (
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            task_id TEXT NOT NULL,
            PRIMARY KEY (experiment_id, task_id)
        ) WITHOUT ROWID"""
    )
    connection.execute(
        """CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            status TEXT NOT NULL,
            winner TEXT NOT NULL,
            baseline TEXT NOT NULL,
            settings TEXT NOT NULL,
            result TEXT
        )"""
    )
    connection.execute(
        "CREATE TABLE evaluation_comparisons (\n"
        "    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),\n"
        + _COMPARISON_FIELDS
        + "    PRIMARY KEY (evaluation_id, seq)\n) WITHOUT ROWID"
    )


#: MIGRATIONS[v] brings a store from schema v − 1 to v (v = 1 creates it), inside a transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _create_schema_v1,
    2: _add_generations,
    3: _add_judges,
    4: _add_holdout_and_evaluations,
}


#: Indexes for readers (``llmpo view`` pages comparisons of one task in sequence order), created
#: whenever a store is opened for writing: older stores gain them without a schema change.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS comparisons_by_task ON comparisons (experiment_id, task_id, seq)",
    "CREATE INDEX IF NOT EXISTS evaluation_comparisons_by_task "
    "ON evaluation_comparisons (evaluation_id, task_id, seq)",
)


@dataclass(frozen=True)
class CachedGeneration:
    """One cached LLM answer."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    seconds: float | None


@dataclass(frozen=True)
class EvaluationRecord:
    """One stored held-out evaluation of an experiment's winner against its baseline."""

    id: int
    experiment_id: int
    created_at: str
    updated_at: str
    status: str
    winner: str
    baseline: str
    settings: dict[str, Any]
    result: dict[str, Any] | None



def _legacy_stop(status: str, result: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
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


def _update_status(
    connection: sqlite3.Connection,
    table: str,
    row_id: int,
    status: str,
    result: dict[str, Any] | None,
) -> None:
    """Set the status, time and final result of one row of ``experiments`` or ``evaluations``."""
    connection.execute(
        f"UPDATE {table} SET status = ?, updated_at = ?, result = ? WHERE id = ?",
        (status, _now(), json.dumps(result) if result is not None else None, row_id),
    )


@dataclass(frozen=True)
class ExperimentRecord:
    """One stored experiment."""

    id: int
    name: str | None
    created_at: str
    updated_at: str
    status: str
    code_version: str
    config: dict[str, Any]
    policies: list[str]
    result: dict[str, Any] | None


@dataclass(frozen=True)
class ComparisonRecord:
    """One stored comparison; ``outcome`` is for ``policy_a`` (1 win, ½ tie, 0 loss)."""

    seq: int
    policy_a: int
    policy_b: int
    outcome: float
    task_id: str | None = None
    order: str | None = None
    raw: Any = None
    started_at: float | None = None
    finished_at: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    @classmethod
    def of(
        cls,
        seq: int,
        policy_a: int,
        policy_b: int,
        comparison: Comparison,
        started_at: float,
        finished_at: float,
    ) -> ComparisonRecord:
        """The stored form of an environment's comparison of ``policy_a`` with ``policy_b``."""
        return cls(
            seq=seq,
            policy_a=policy_a,
            policy_b=policy_b,
            outcome=comparison.outcome,
            task_id=comparison.task_id,
            order=comparison.order,
            raw=comparison.raw,
            started_at=started_at,
            finished_at=finished_at,
            cost_usd=comparison.cost_usd,
            input_tokens=comparison.input_tokens,
            output_tokens=comparison.output_tokens,
        )


COMPARISON_COLUMNS = (
    "seq",
    "policy_a",
    "policy_b",
    "outcome",
    "task_id",
    "presentation_order",
    "raw",
    "started_at",
    "finished_at",
    "cost_usd",
    "input_tokens",
    "output_tokens",
)


def _insert_comparison(
    connection: sqlite3.Connection, table: str, key: str, owner_id: int, record: ComparisonRecord
) -> None:
    connection.execute(
        f"INSERT INTO {table} ({key}, {', '.join(COMPARISON_COLUMNS)}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            owner_id,
            record.seq,
            record.policy_a,
            record.policy_b,
            record.outcome,
            record.task_id,
            record.order,
            None if record.raw is None else json.dumps(record.raw, default=str),
            record.started_at,
            record.finished_at,
            record.cost_usd,
            record.input_tokens,
            record.output_tokens,
        ),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """An llmpo store file.

    Parameters
    ----------
    path : str or Path
        The SQLite file; created (with its schema) when missing unless ``readonly``.
    readonly : bool
        Open for reading only (reports, exports): no lock, no migration, no change.
    writer : bool
        Take the store's writer lock (a ``.lock`` file beside the file the path resolves to,
        symlinks followed), so that one process at a time runs experiments in it, whatever path
        leads to it.
    check : bool
        Check the store's integrity (:func:`llmpo.integrity.find_problems`) and refuse it when
        a problem is found (``llmpo doctor`` opens it unchecked).

    Raises
    ------
    StoreError
        For a missing (read-only), corrupt, foreign or newer-schema file, or a store that another
        process is writing; the file is left unchanged.
    """

    def __init__(
        self, path: str | Path, *, readonly: bool = False, writer: bool = False, check: bool = True
    ) -> None:
        self.path = Path(path)
        self._lock_handle: Any = None
        #: Answers waiting for the next transaction: key → row, and when the first one arrived.
        self._pending_generations: dict[tuple[str, str, int, str], tuple[Any, ...]] = {}
        self._pending_since = 0.0
        if readonly and not self.path.exists():
            raise StoreError(f"{self.path}: no such store. Fix: check the path.")
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a store file")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(
                f"{self.path}: is a device, pipe or socket, not a store file. Fix: give the path "
                "of a file (a new name creates one)"
            )
        if not self.path.parent.is_dir():
            raise StoreError(
                f"{self.path}: the folder {self.path.parent} does not exist. "
                "Fix: create it, or choose another store path"
            )
        try:
            uri = f"file:{self.path}?mode={'ro' if readonly else 'rwc'}"
            self.connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot open ({error})") from None
        try:
            version = self._inspect()
            if readonly:
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: store of schema v{version}; open it once with "
                        "'llmpo resume' to migrate it, then read it"
                    )
            else:
                if writer:
                    self._lock()
                self.connection.execute("PRAGMA journal_mode=WAL")
                self.connection.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
            self.connection.execute("PRAGMA foreign_keys=ON")
            if check and version > 0:
                self._check()
        except BaseException:
            self.close()
            raise

    # ---- opening -------------------------------------------------------------------------------
    def _inspect(self) -> int:
        """Check that the file is an llmpo store (or empty) without changing it; its version."""
        try:
            application = self.connection.execute("PRAGMA application_id").fetchone()[0]
            version = self.connection.execute("PRAGMA user_version").fetchone()[0]
            tables = self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path}: not a readable SQLite database ({error}); the file is corrupt or "
                "not a store. Fix: point to an llmpo store, or to a new file name"
            ) from None
        if application == 0 and version == 0 and tables == 0:
            return 0
        if application != APPLICATION_ID:
            raise StoreError(
                f"{self.path}: an SQLite database of another application, not an llmpo store; "
                "it was not changed. Fix: choose another store path"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer llmpo (store schema v{version}; this llmpo "
                f"{__version__} reads up to v{SCHEMA_VERSION}); it was not changed. "
                "Fix: upgrade llmpo"
            )
        return version

    def _check(self) -> None:
        """Refuse a store whose contents no run writes (see :mod:`llmpo.integrity`)."""
        problems = find_problems(self.connection)
        if problems:
            lines = "\n".join(f"  - {problem.message}" for problem in problems[:10])
            raise StoreError(
                f"{self.path}: failed its integrity check; it was not changed:\n{lines}\n"
                f"Fix: llmpo doctor {self.path} explains each problem, and with --repair fixes "
                "what it safely can"
            )

    def _migrate(self) -> None:
        with self._transaction():
            version = self._inspect()  # again, under the write lock of the transaction
            for target in range(version + 1, SCHEMA_VERSION + 1):
                try:
                    MIGRATIONS[target](self.connection)
                except sqlite3.Error as error:
                    raise StoreError(
                        f"{self.path}: cannot migrate the store from schema v{target - 1} to "
                        f"v{target} ({error}); it was not changed"
                    ) from None
                self.connection.execute(f"PRAGMA user_version={target}")
            if version == 0:
                self.connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
            for statement in INDEXES:
                self.connection.execute(statement)

    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover - not POSIX
            return
        # Keyed by the file itself, not by how its path is spelt: a symlink, a relative path or
        # "a/../runs.db" must meet the same lock.
        real = self.path.resolve()
        lock_path = real.with_name(real.name + ".lock")
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise StoreError(
                f"{self.path}: in use by another llmpo process (pid {owner}). Fix: wait for it "
                "to finish (or stop it), or use another store"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def close(self) -> None:
        """Commit the cached answers still pending, close the connection, release the lock."""
        try:
            self.flush()
        finally:
            self.connection.close()
            if self._lock_handle is not None:
                self._lock_handle.close()
                self._lock_handle = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise StoreError(f"{self.path}: cannot write ({error})") from None
        try:
            if self._pending_generations:
                self.connection.executemany(
                    "INSERT OR IGNORE INTO generations (policy, task_id, replicate, request_key, "
                    "model, text, input_tokens, output_tokens, seconds, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    self._pending_generations.values(),
                )
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")
        self._pending_generations.clear()

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.connection.execute(sql, parameters).fetchall()
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path}: cannot read ({error}); the store may be damaged"
            ) from None

    # ---- experiments ---------------------------------------------------------------------------
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
        now = _now()
        with self._transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO experiments (name, created_at, updated_at, status, code_version, "
                "config, policies) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (name, now, now, __version__, json.dumps(config), json.dumps(policies)),
            )
            experiment_id = int(cursor.lastrowid or 0)
            if holdout_tasks is not None:
                connection.executemany(
                    "INSERT INTO holdout_tasks (experiment_id, task_id) VALUES (?, ?)",
                    [(experiment_id, task_id) for task_id in holdout_tasks],
                )
            self._event(
                connection,
                experiment_id,
                "created",
                {"policies": len(policies)}
                | ({} if holdout_tasks is None else {"holdout_tasks": len(holdout_tasks)}),
            )
        return experiment_id

    def holdout_tasks(self, experiment_id: int) -> list[str] | None:
        """The task ids the experiment held out of its selection run (None: no holdout)."""
        rows = self._query(
            "SELECT task_id FROM holdout_tasks WHERE experiment_id = ? ORDER BY task_id",
            (experiment_id,),
        )
        return [row[0] for row in rows] or None

    def experiments(self) -> list[ExperimentRecord]:
        """Every stored experiment, oldest first."""
        rows = self._query(
            "SELECT id, name, created_at, updated_at, status, code_version, config, policies, "
            "result FROM experiments ORDER BY id"
        )
        records = []
        for row in rows:
            status, result = _legacy_stop(row[4], json.loads(row[8]) if row[8] else None)
            records.append(
                ExperimentRecord(
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    status,
                    row[5],
                    json.loads(row[6]),
                    json.loads(row[7]),
                    result,
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
        with self._transaction() as connection:
            _update_status(connection, "experiments", experiment_id, status, result)
            if event is not None:
                self._event(connection, experiment_id, event, detail)

    def reopen(self, experiment_id: int, config: dict[str, Any], detail: dict[str, Any]) -> None:
        """Give a stopped experiment a new configuration (a larger budget) and mark it
        ``interrupted``, its result cleared, with a ``budget_extended`` event, atomically."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE experiments SET config = ? WHERE id = ?",
                (json.dumps(config), experiment_id),
            )
            _update_status(connection, "experiments", experiment_id, "interrupted", None)
            self._event(connection, experiment_id, "budget_extended", detail)

    # ---- comparisons ---------------------------------------------------------------------------
    def append_comparison(self, experiment_id: int, record: ComparisonRecord) -> None:
        """Commit one comparison; its sequence number must follow the last stored one.

        Raises
        ------
        StoreError
            When the sequence number would leave a gap or repeat one.
        """
        self._append("comparisons", "experiment_id", "experiment", experiment_id, record)

    def _append(
        self, table: str, key: str, owner: str, owner_id: int, record: ComparisonRecord
    ) -> None:
        """Commit ``record`` to ``table`` after checking that its number follows the last."""
        with self._transaction() as connection:
            last = connection.execute(
                f"SELECT coalesce(max(seq), 0) FROM {table} WHERE {key} = ?", (owner_id,)
            ).fetchone()[0]
            if record.seq != last + 1:
                raise StoreError(
                    f"{self.path}: {owner} {owner_id} has {last} comparisons; cannot "
                    f"store comparison #{record.seq} (is another process running it?)"
                )
            _insert_comparison(connection, table, key, owner_id, record)

    def iter_comparisons(self, experiment_id: int) -> Iterator[ComparisonRecord]:
        """The experiment's comparisons in sequence order."""
        return self._iter_comparisons("comparisons", "experiment_id", experiment_id)

    def _iter_comparisons(self, table: str, key: str, owner_id: int) -> Iterator[ComparisonRecord]:
        try:
            cursor = self.connection.execute(
                f"SELECT {', '.join(COMPARISON_COLUMNS)} FROM {table} WHERE {key} = ? ORDER BY seq",
                (owner_id,),
            )
            for row in cursor:
                yield ComparisonRecord(
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    json.loads(row[6]) if row[6] is not None else None,
                    *row[7:],
                )
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path}: cannot read ({error}); the store may be damaged"
            ) from None

    def comparisons(self, experiment_id: int) -> list[ComparisonRecord]:
        """The experiment's comparisons in sequence order, as a list."""
        return list(self.iter_comparisons(experiment_id))

    def comparison_count(self, experiment_id: int) -> int:
        """How many comparisons are stored for the experiment."""
        return int(
            self._query(
                "SELECT count(*) FROM comparisons WHERE experiment_id = ?", (experiment_id,)
            )[0][0]
        )

    # ---- events --------------------------------------------------------------------------------
    @staticmethod
    def _event(
        connection: sqlite3.Connection,
        experiment_id: int | None,
        kind: str,
        detail: dict[str, Any] | None,
    ) -> None:
        connection.execute(
            "INSERT INTO events (experiment_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            (
                experiment_id,
                _now(),
                kind,
                json.dumps(scrub_value(detail)) if detail is not None else None,
            ),
        )

    def add_event(
        self, experiment_id: int | None, kind: str, detail: dict[str, Any] | None = None
    ) -> None:
        """Record an event (committed at once)."""
        with self._transaction() as connection:
            self._event(connection, experiment_id, kind, detail)

    def events(self, experiment_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
        """The experiment's events: (time, kind, detail), oldest first."""
        rows = self._query(
            "SELECT at, kind, detail FROM events WHERE experiment_id = ? ORDER BY id",
            (experiment_id,),
        )
        # Scrubbed again on the way out: a store written by an older llmpo may hold a key.
        return [
            (at, kind, scrub_value(json.loads(detail)) if detail else None)
            for at, kind, detail in rows
        ]

    # ---- held-out evaluations -------------------------------------------------------------------
    def create_evaluation(
        self, experiment_id: int, winner: str, baseline: str, settings: dict[str, Any]
    ) -> int:
        """Record a new evaluation (status ``running``) of an experiment and return its id."""
        now = _now()
        with self._transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO evaluations (experiment_id, created_at, updated_at, status, winner, "
                "baseline, settings) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (experiment_id, now, now, winner, baseline, json.dumps(settings)),
            )
            evaluation_id = int(cursor.lastrowid or 0)
            self._event(
                connection, experiment_id, "evaluation_created", {"evaluation": evaluation_id}
            )
        return evaluation_id

    def evaluations(self, experiment_id: int | None = None) -> list[EvaluationRecord]:
        """The evaluations of an experiment (of every experiment when None), oldest first."""
        where, parameters = (
            ("WHERE experiment_id = ?", (experiment_id,))
            if experiment_id
            else (
                "",
                (),
            )
        )
        rows = self._query(
            "SELECT id, experiment_id, created_at, updated_at, status, winner, baseline, "
            f"settings, result FROM evaluations {where} ORDER BY id",
            parameters,
        )
        return [
            EvaluationRecord(*row[:7], json.loads(row[7]), json.loads(row[8]) if row[8] else None)
            for row in rows
        ]

    def evaluation(self, evaluation_id: int) -> EvaluationRecord:
        """One evaluation by id.

        Raises
        ------
        StoreError
            When there is no such evaluation.
        """
        for record in self.evaluations():
            if record.id == evaluation_id:
                return record
        raise StoreError(f"{self.path}: no evaluation {evaluation_id}")

    def set_evaluation_status(
        self, evaluation_id: int, status: str, result: dict[str, Any] | None = None
    ) -> None:
        """Set an evaluation's status (and final result)."""
        if status not in EVALUATION_STATUSES:
            raise ValueError(f"status must be one of {EVALUATION_STATUSES}, got {status!r}")
        with self._transaction() as connection:
            _update_status(connection, "evaluations", evaluation_id, status, result)

    def append_evaluation_comparison(self, evaluation_id: int, record: ComparisonRecord) -> None:
        """Commit one comparison of an evaluation; its sequence number must follow the last.

        Raises
        ------
        StoreError
            When the sequence number would leave a gap or repeat one.
        """
        self._append("evaluation_comparisons", "evaluation_id", "evaluation", evaluation_id, record)

    def evaluation_comparisons(self, evaluation_id: int) -> list[ComparisonRecord]:
        """The evaluation's comparisons in sequence order."""
        return list(
            self._iter_comparisons("evaluation_comparisons", "evaluation_id", evaluation_id)
        )

    # ---- generation cache ----------------------------------------------------------------------
    def cached_generation(
        self, policy: str, task_id: str, replicate: int, request_key: str
    ) -> CachedGeneration | None:
        """The cached answer of a policy to a task for one replicate and request, if any."""
        pending = self._pending_generations.get((policy, task_id, replicate, request_key))
        if pending is not None:
            return CachedGeneration(*pending[5:9])
        rows = self._query(
            "SELECT text, input_tokens, output_tokens, seconds FROM generations WHERE policy = ? "
            "AND task_id = ? AND replicate = ? AND request_key = ?",
            (policy, task_id, replicate, request_key),
        )
        return CachedGeneration(*rows[0]) if rows else None

    def answer_text(
        self, policy: str, task_id: str, replicate: int, request_key: str | None = None
    ) -> str | None:
        """The cached answer text of one sample, for reports and exports.

        Without ``request_key`` (comparisons stored before it was recorded) the answer is found
        only when a single request of the policy answered that task and replicate; otherwise
        None, never a guess.
        """
        if request_key is not None:
            found = self.cached_generation(policy, task_id, replicate, request_key)
            return None if found is None else found.text
        rows = self._query(
            "SELECT text FROM generations WHERE policy = ? AND task_id = ? AND replicate = ? "
            "LIMIT 2",
            (policy, task_id, replicate),
        )
        return rows[0][0] if len(rows) == 1 else None

    def cache_generation(
        self,
        policy: str,
        task_id: str,
        replicate: int,
        request_key: str,
        model: str,
        generation: CachedGeneration,
    ) -> None:
        """Add an answer to the cache (a repeated key keeps the first answer).

        It is committed with the store's next transaction, at the latest ``CACHE_FLUSH_SECONDS``
        after the oldest pending answer arrived (checked here and by :meth:`flush_stale`), or at
        :meth:`close`.
        """
        key = (policy, task_id, replicate, request_key)
        if not self._pending_generations:
            self._pending_since = time.monotonic()
        self._pending_generations.setdefault(
            key,
            (
                *key,
                model,
                generation.text,
                generation.input_tokens,
                generation.output_tokens,
                generation.seconds,
                _now(),
            ),
        )
        self.flush_stale()

    def flush(self) -> None:
        """Commit the cached answers still pending (if any)."""
        if self._pending_generations:
            with self._transaction():
                pass

    def flush_stale(self) -> None:
        """Commit the pending cached answers once the oldest has waited ``CACHE_FLUSH_SECONDS``."""
        if (
            self._pending_generations
            and time.monotonic() - self._pending_since >= CACHE_FLUSH_SECONDS
        ):
            self.flush()

    def generation_count(self) -> int:
        """How many answers the cache holds (pending ones are committed first)."""
        self.flush()
        return int(self._query("SELECT count(*) FROM generations")[0][0])

    # ---- human judges --------------------------------------------------------------------------
    def set_judge(self, name: str, salt: str, token_hash: str, replace: bool = False) -> None:
        """Record a judge's salted token hash (``replace``: a new token for an existing judge).

        Raises
        ------
        StoreError
            When the judge exists and ``replace`` is False.
        """
        with self._transaction() as connection:
            exists = connection.execute("SELECT 1 FROM judges WHERE name = ?", (name,)).fetchone()
            if exists and not replace:
                raise StoreError(
                    f"{self.path}: judge {name!r} already exists. Fix: choose another name, or "
                    "add --replace to give them a new token (the old one stops working)"
                )
            connection.execute(
                "INSERT OR REPLACE INTO judges (name, salt, token_hash, created_at) "
                "VALUES (?, ?, ?, ?)",
                (name, salt, token_hash, _now()),
            )

    def judge_credentials(self) -> list[tuple[str, str, str]]:
        """Every judge as (name, salt, token hash), by name."""
        rows = self._query("SELECT name, salt, token_hash FROM judges ORDER BY name")
        return [(str(n), str(s), str(h)) for n, s, h in rows]
