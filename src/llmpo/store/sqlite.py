"""The SQLite file under a store: opening, checking, migrating, locking, transactions.

One SQLite file per project (stdlib ``sqlite3``, WAL journal). Opening checks that the file is an
llmpo store (its ``application_id``), refuses a corrupt or foreign file and a newer schema without
changing them, migrates an older schema in one transaction (:mod:`llmpo.store.schema`), and
checks the store's integrity (:mod:`llmpo.store.integrity`). One process writes a store at a
time: a second writer is refused with the first one's process id (readers never wait).

The store's concerns (:mod:`~llmpo.store.experiments`, :mod:`~llmpo.store.evaluations`,
:mod:`~llmpo.store.answers`, :mod:`~llmpo.store.judges`) are parts of one
:class:`~llmpo.store.Store` built on :class:`Database`; nothing outside this package writes SQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from llmpo import __version__
from llmpo.errors import StoreError
from llmpo.store import schema
from llmpo.store.integrity import find_problems


def now() -> str:
    """The current UTC time as stored (ISO 8601, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str | None:
    """JSON text of a stored value (None stays NULL)."""
    return None if value is None else json.dumps(value, default=str)


def loads(text: str | None) -> Any:
    """A stored JSON value (NULL reads as None)."""
    return None if text is None or text == "" else json.loads(text)


class Database:
    """An open llmpo store file.

    Parameters
    ----------
    path : str or Path
        The SQLite file; created (with its schema) when missing unless ``readonly``.
    readonly : bool
        Open for reading only (reports, exports, the viewer): no lock, no migration, no change;
        any write through its connection fails.
    writer : bool
        Take the store's writer lock (a ``.lock`` file beside the file the path resolves to,
        symlinks followed), so that one process at a time runs experiments in it, whatever path
        leads to it.
    check : bool
        Check the store's integrity (:func:`llmpo.store.integrity.find_problems`) and refuse it
        when a problem is found (``llmpo doctor`` opens it unchecked).

    Attributes
    ----------
    migrated_from : int or None
        The schema version the file had when this opening migrated it (None: not migrated;
        0: created).

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
        self.readonly = readonly
        self.migrated_from: int | None = None
        self._lock_handle: Any = None
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
                if not all(
                    target in schema.READ_COMPATIBLE
                    for target in range(version + 1, schema.SCHEMA_VERSION + 1)
                ):
                    raise StoreError(
                        f"{self.path}: store of schema v{version}; open it once with "
                        "'llmpo resume' to migrate it, then read it"
                    )
                self.connection.execute("PRAGMA query_only=ON")
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
        if application != schema.APPLICATION_ID:
            raise StoreError(
                f"{self.path}: an SQLite database of another application, not an llmpo store; "
                "it was not changed. Fix: choose another store path"
            )
        if version > schema.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer llmpo (store schema v{version}; this llmpo "
                f"{__version__} reads up to v{schema.SCHEMA_VERSION}); it was not changed. "
                "Fix: upgrade llmpo"
            )
        return int(version)

    def _check(self) -> None:
        """Refuse a store whose contents no run writes (see :mod:`llmpo.store.integrity`)."""
        problems = find_problems(self.connection)
        if problems:
            lines = "\n".join(f"  - {problem.message}" for problem in problems[:10])
            raise StoreError(
                f"{self.path}: failed its integrity check; it was not changed:\n{lines}\n"
                f"Fix: llmpo doctor {self.path} explains each problem, and with --repair fixes "
                "what it safely can"
            )

    def _migrate(self) -> None:
        with self.transaction():
            version = self._inspect()  # again, under the write lock of the transaction
            for target in range(version + 1, schema.SCHEMA_VERSION + 1):
                try:
                    schema.MIGRATIONS[target](self.connection)
                except sqlite3.Error as error:
                    raise StoreError(
                        f"{self.path}: cannot migrate the store from schema v{target - 1} to "
                        f"v{target} ({error}); it was not changed"
                    ) from None
                self.connection.execute(f"PRAGMA user_version={target}")
            if version == 0:
                self.connection.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
            for statement in schema.INDEXES:
                self.connection.execute(statement)
        if version < schema.SCHEMA_VERSION:
            self.migrated_from = version

    def migration_note(self) -> str | None:
        """What this opening changed in an existing store, in words (None: nothing)."""
        if not self.migrated_from:  # None: not migrated; 0: a new store
            return None
        changes = "; ".join(
            schema.MIGRATION_TEXT[v]
            for v in range(self.migrated_from + 1, schema.SCHEMA_VERSION + 1)
            if v in schema.MIGRATION_TEXT
        )
        return (
            f"{self.path}: store migrated in place from schema v{self.migrated_from} to "
            f"v{schema.SCHEMA_VERSION} ({changes}); older llmpo versions can no longer open it"
        )

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
        """Commit what is pending, close the connection, release the lock."""
        try:
            self.flush()
        finally:
            self.connection.close()
            if self._lock_handle is not None:
                self._lock_handle.close()
                self._lock_handle = None

    def flush(self) -> None:
        """Commit whatever waits for the next transaction (nothing here; see the answer cache)."""

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading and writing -------------------------------------------------------------------
    def _before_commit(self, connection: sqlite3.Connection) -> None:
        """Writes that join every transaction (the answer cache adds its pending answers)."""

    def _after_commit(self) -> None:
        """Called once a transaction is committed."""

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        if self.readonly:
            raise StoreError(
                f"{self.path}: opened read-only; nothing was written. Fix: open it for writing "
                "(no other llmpo process may be writing it)"
            )
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise StoreError(f"{self.path}: cannot write ({error})") from None
        try:
            self._before_commit(self.connection)
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")
        self._after_commit()

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Every row of a read, or :class:`StoreError` when the file cannot be read."""
        try:
            return self.connection.execute(sql, parameters).fetchall()
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path}: cannot read ({error}); the store may be damaged"
            ) from None
