"""The experiment store: one SQLite file per project, behind an interface.

The store keeps four things, one module each: experiments with their comparisons and events
(:mod:`~llmpo.store.experiments`), held-out evaluations (:mod:`~llmpo.store.evaluations`), the
cache of LLM answers (:mod:`~llmpo.store.answers`) and the people who judge
(:mod:`~llmpo.store.judges`). :mod:`~llmpo.store.schema` alone owns the tables and their
migrations, :mod:`~llmpo.store.sqlite` the file (opening, locking, transactions),
:mod:`~llmpo.store.integrity` the checks ``llmpo doctor`` runs, :mod:`~llmpo.store.views` the
viewer's paged read-only queries, and :mod:`~llmpo.store.payloads` the typed form of the JSON it
keeps. What the rest of llmpo relies on is written down in :mod:`~llmpo.store.base`; the
conformance suite :mod:`llmpo.testing.store` checks an implementation against it. Nothing outside
this package writes SQL. See docs/architecture.md, "The store".
"""

from __future__ import annotations

from llmpo.errors import StoreError
from llmpo.store.answers import CACHE_FLUSH_SECONDS, Answers
from llmpo.store.evaluations import Evaluations
from llmpo.store.experiments import Experiments
from llmpo.store.judges import Judges
from llmpo.store.records import (
    COMPARISON_COLUMNS,
    EVALUATION_STATUSES,
    FINISHED_STATUSES,
    STATUS_TEXT,
    STATUSES,
    UNFINISHED_STATUSES,
    CachedGeneration,
    ComparisonRecord,
    EvaluationRecord,
    ExperimentRecord,
    Payment,
)
from llmpo.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID",
    "CACHE_FLUSH_SECONDS",
    "COMPARISON_COLUMNS",
    "EVALUATION_STATUSES",
    "FINISHED_STATUSES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "STATUS_TEXT",
    "UNFINISHED_STATUSES",
    "CachedGeneration",
    "ComparisonRecord",
    "EvaluationRecord",
    "ExperimentRecord",
    "Payment",
    "Store",
    "StoreError",
]


class Store(Experiments, Evaluations, Answers, Judges):
    """An llmpo store file (SQLite): every part of the store on one connection.

    Parameters
    ----------
    path : str or Path
        The SQLite file; created (with its schema) when missing unless ``readonly``. An older
        schema is migrated in place in one transaction (:meth:`migration_note` says what
        changed).
    readonly : bool
        Open for reading only (reports, exports, the viewer): no lock, no migration, no change.
    writer : bool
        Take the store's writer lock, so that one process at a time runs experiments in it.
    check : bool
        Check the store's integrity and refuse it when a problem is found (``llmpo doctor``
        opens it unchecked).

    Raises
    ------
    StoreError
        For a missing (read-only), corrupt, foreign or newer-schema file, or a store that another
        process is writing; the file is left unchanged.
    """

    def __enter__(self) -> Store:
        return self
