"""The store's SQL schema and its migrations; the only module that writes DDL.

A store is marked with :data:`APPLICATION_ID` in its SQLite header and its schema version in
``user_version``. ``MIGRATIONS[v]`` brings a store from schema v − 1 to v (v = 1 creates it);
:meth:`llmpo.store.sqlite.Database._migrate` runs the missing ones in one transaction, so a store
is either migrated whole or left as it was.

Versions:

1. ``experiments``, ``comparisons``, ``events``;
2. ``generations``: the cache of live LLM answers;
3. ``judges``: people who judge through ``llmpo serve`` (salted token hashes);
4. ``holdout_tasks``, ``evaluations``, ``evaluation_comparisons``;
5. outcomes in [0, 1]: the comparison tables are rebuilt with ``CHECK (outcome BETWEEN 0 AND 1)``
   in place of ``outcome IN (0, 0.5, 1)``, so that preference probabilities (fractional outcomes)
   can be stored. Every row is copied unchanged; the statistic of each experiment is part of its
   stored configuration (``ties``), so an experiment resumes as it was created.
6. ``payments``: one row per LLM call paid (a policy's answer or a judge's reply), naming the
   experiment (and evaluation) that paid it, with its tokens and cost, committed with the reply
   itself. Older experiments have none: their totals are still computed from their comparisons
   and session counts (:mod:`llmpo.llm.paid`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

#: "llpo" in ASCII, written in the SQLite header of every llmpo store.
APPLICATION_ID = 0x6C6C706F
SCHEMA_VERSION = 6

#: The comparison tables and the column naming their owner.
COMPARISON_TABLES = (
    ("comparisons", "experiment_id", "experiments"),
    ("evaluation_comparisons", "evaluation_id", "evaluations"),
)

#: The CHECK on outcomes: verdicts only up to v4, any number in [0, 1] from v5.
_VERDICTS = "outcome IN (0.0, 0.5, 1.0)"
_UNIT_INTERVAL = "outcome BETWEEN 0.0 AND 1.0"


def _comparison_fields(check: str) -> str:
    """The columns of one judged comparison, shared by the tables of runs and of evaluations."""
    return f"""    seq INTEGER NOT NULL,
    policy_a INTEGER NOT NULL,
    policy_b INTEGER NOT NULL,
    task_id TEXT,
    presentation_order TEXT,
    outcome REAL NOT NULL CHECK ({check}),
    raw TEXT,
    started_at REAL,
    finished_at REAL,
    cost_usd REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
"""


def _comparison_table(table: str, key: str, parent: str, check: str) -> str:
    return (
        f"CREATE TABLE {table} (\n    {key} INTEGER NOT NULL REFERENCES {parent}(id),\n"
        + _comparison_fields(check)
        + f"    PRIMARY KEY ({key}, seq)\n) WITHOUT ROWID"
    )


def _create_schema_v1(connection: sqlite3.Connection) -> None:
    connection.execute(
        """CREATE TABLE experiments (
            id INTEGER PRIMARY KEY,
            name TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            status TEXT NOT NULL,
            code_version TEXT NOT NULL,
            config TEXT NOT NULL,
            policies TEXT NOT NULL,
            result TEXT
        )"""
    )
    connection.execute(_comparison_table(*COMPARISON_TABLES[0], _VERDICTS))
    connection.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER REFERENCES experiments(id),
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT
        )"""
    )


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
    connection.execute(_comparison_table(*COMPARISON_TABLES[1], _VERDICTS))


def _admit_fractional_outcomes(connection: sqlite3.Connection) -> None:
    # SQLite cannot alter a CHECK: each table is rebuilt under a new name, filled with every row
    # unchanged, and renamed over the old one (inside the migration's single transaction, so a
    # failure leaves the v4 store as it was). Its indexes are recreated by INDEXES on opening.
    for table, key, parent in COMPARISON_TABLES:
        connection.execute(_comparison_table(f"{table}_v5", key, parent, _UNIT_INTERVAL))
        connection.execute(f"INSERT INTO {table}_v5 SELECT * FROM {table}")
        connection.execute(f"DROP TABLE {table}")
        connection.execute(f"ALTER TABLE {table}_v5 RENAME TO {table}")


def _add_payments(connection: sqlite3.Connection) -> None:
    # The call's place in the answer cache (policy, task, replicate, request key) is NULL for a
    # judge reply that is not cached (one that scores answers on their own).
    connection.execute(
        """CREATE TABLE payments (
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            evaluation_id INTEGER REFERENCES evaluations(id),
            kind TEXT NOT NULL CHECK (kind IN ('generation', 'judge')),
            policy TEXT,
            task_id TEXT,
            replicate INTEGER,
            request_key TEXT,
            model TEXT NOT NULL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd REAL,
            paid_at REAL NOT NULL
        )"""
    )
    connection.execute("CREATE INDEX payments_by_payer ON payments (experiment_id, evaluation_id)")


#: MIGRATIONS[v] brings a store from schema v − 1 to v (v = 1 creates it), inside a transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _create_schema_v1,
    2: _add_generations,
    3: _add_judges,
    4: _add_holdout_and_evaluations,
    5: _admit_fractional_outcomes,
    6: _add_payments,
}

#: Migrations after which a store of the version before them still reads correctly as it is:
#: a reader (report, export, viewer) opens such a store without migrating it. v5 only widens a
#: CHECK, so a v4 store reads as a v5 one; v6 only adds ``payments``, and a reader of a store
#: without it computes its totals as before (:mod:`llmpo.llm.paid`).
READ_COMPATIBLE = frozenset({5, 6})

#: What each migration changes, in words (told to the user when a store is migrated).
MIGRATION_TEXT = {
    2: "a cache of LLM answers",
    3: "people who judge",
    4: "held-out tasks and evaluations",
    5: "comparison outcomes in [0, 1] (preference probabilities); every experiment keeps the "
    "statistic it was created with",
    6: "a record of every LLM call paid and by which experiment, so that totals count what was "
    "paid even by a session that was killed",
}

#: Indexes for readers (``llmpo view`` pages comparisons of one task in sequence order), created
#: whenever a store is opened for writing: older stores gain them without a schema change.
INDEXES = (
    "CREATE INDEX IF NOT EXISTS comparisons_by_task ON comparisons (experiment_id, task_id, seq)",
    "CREATE INDEX IF NOT EXISTS evaluation_comparisons_by_task "
    "ON evaluation_comparisons (evaluation_id, task_id, seq)",
)
