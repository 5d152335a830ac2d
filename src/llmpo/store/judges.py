"""The people who may judge through ``llmpo serve``: names and salted token hashes, in SQLite.

A judge's sign-in token is shown once when it is made and never stored; the store keeps a salt
and the SHA-256 hash of salt and token (:mod:`llmpo.human.tokens`).
"""

from __future__ import annotations

from llmpo.errors import StoreError
from llmpo.store.sqlite import Database, now


class Judges(Database):
    """The judges of a store."""

    def set_judge(self, name: str, salt: str, token_hash: str, replace: bool = False) -> None:
        """Record a judge's salted token hash (``replace``: a new token for an existing judge).

        Raises
        ------
        StoreError
            When the judge exists and ``replace`` is False.
        """
        with self.transaction() as connection:
            exists = connection.execute("SELECT 1 FROM judges WHERE name = ?", (name,)).fetchone()
            if exists and not replace:
                raise StoreError(
                    f"{self.path}: judge {name!r} already exists. Fix: choose another name, or "
                    "add --replace to give them a new token (the old one stops working)"
                )
            connection.execute(
                "INSERT OR REPLACE INTO judges (name, salt, token_hash, created_at) "
                "VALUES (?, ?, ?, ?)",
                (name, salt, token_hash, now()),
            )

    def judge_credentials(self) -> list[tuple[str, str, str]]:
        """Every judge as (name, salt, token hash), by name."""
        rows = self.query("SELECT name, salt, token_hash FROM judges ORDER BY name")
        return [(str(n), str(s), str(h)) for n, s, h in rows]
