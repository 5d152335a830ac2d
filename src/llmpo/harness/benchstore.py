"""The cell store of ``llmpo bench``: finished cells in one SQLite table, so suites resume.

One row per cell, keyed by the fingerprint :func:`llmpo.harness.bench.cell_key` computes from
everything that decides the cell's numbers (instance, strategy and options, δ, replications,
seed, budget). A cell is written in its own transaction as soon as it is finished, so a suite
interrupted at any moment keeps every finished cell; re-running the suite reads them back and
runs only the others. A changed suite simply misses the old keys and runs its new cells; so does
another release of llmpo (or of duelpy, for its algorithms), whose version is part of the key.
After changing the code without a new version, delete the file (or choose another with
``--store``).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmpo.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_cells (
    key TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    strategy TEXT NOT NULL,
    delta REAL NOT NULL,
    finished_at TEXT NOT NULL,
    cell TEXT NOT NULL
)
"""


class CellStoreError(StoreError):
    """A file that is not a bench cell store."""


class CellStore:
    """Finished cells of benchmark suites in a SQLite file (created when missing).

    Parameters
    ----------
    path : str or Path
        The SQLite file.

    Raises
    ------
    CellStoreError
        When the file exists and is not an SQLite database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection = sqlite3.connect(self.path)
            self._connection.execute(_SCHEMA)
            self._connection.commit()
        except sqlite3.DatabaseError as error:
            raise CellStoreError(
                f"store: {self.path} is not a bench cell store ({error}); choose another file"
            ) from None

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored cell (as a dictionary) under ``key``, or None."""
        row = self._connection.execute(
            "SELECT cell FROM bench_cells WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, cell: dict[str, Any]) -> None:
        """Save a finished cell (committed at once)."""
        with self._connection:
            self._connection.execute(
                "INSERT OR REPLACE INTO bench_cells VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    str(cell["instance"]),
                    str(cell["strategy"]),
                    float(cell["delta"]),
                    datetime.now(UTC).isoformat(),
                    json.dumps(cell),
                ),
            )

    def __len__(self) -> int:
        return int(self._connection.execute("SELECT COUNT(*) FROM bench_cells").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        self._connection.close()
