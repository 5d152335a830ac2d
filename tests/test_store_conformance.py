"""The store conformance suite shipped in :mod:`llmpo.testing.store`, run on the SQLite store."""

from __future__ import annotations

from pathlib import Path

from llmpo.store import Store
from llmpo.store.base import StoreProtocol
from llmpo.testing.store import StoreConformance


class TestSQLiteStore(StoreConformance):
    def open_store(
        self, path: Path, *, readonly: bool = False, writer: bool = False
    ) -> StoreProtocol:
        return Store(path, readonly=readonly, writer=writer)


def test_the_sqlite_store_implements_every_protocol(tmp_path):
    with Store(tmp_path / "store.db") as store:
        assert isinstance(store, StoreProtocol)
