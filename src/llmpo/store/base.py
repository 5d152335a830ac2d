"""What the rest of llmpo needs from a store, as protocols (one per concern, and their union).

Runners, reports, the viewer and the CLI depend on these, not on SQLite; :class:`llmpo.store.Store`
(:mod:`llmpo.store.sqlite` and its parts) implements them, and :mod:`llmpo.testing.store` is the
conformance suite any other implementation must pass.

The contract, beyond the signatures:

* a comparison is durable when ``append_comparison`` returns (``append_comparisons``: all of
  them, or none), numbers follow 1, 2, … without gap
  or repeat (anything else is refused, nothing written), and reads return them in that order;
* an outcome is a number in [0, 1] — NaN, a value outside, or a tie flag on a fractional outcome is
  refused with a :class:`~llmpo.errors.StoreError` naming the comparison;
* status changes with their event are atomic;
* a cached answer is visible to ``cached_generation`` at once and durable after ``flush``, and
  so is a recorded payment (to ``payments``);
* a read-only opening changes nothing; a second writer is refused while the first holds the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from llmpo.store.records import (
    CachedGeneration,
    ComparisonRecord,
    EvaluationRecord,
    ExperimentRecord,
    Payment,
)

#: An event's detail (declared per kind in :mod:`llmpo.store.payloads`).
Detail = dict[str, Any] | None


@runtime_checkable
class ExperimentStore(Protocol):
    """Experiments, their comparisons and events."""

    path: Path

    def create_experiment(
        self,
        config: dict[str, Any],
        policies: list[str],
        name: str | None = None,
        holdout_tasks: list[str] | None = None,
    ) -> int: ...

    def holdout_tasks(self, experiment_id: int) -> list[str] | None: ...

    def experiments(self) -> list[ExperimentRecord]: ...

    def experiment(self, experiment_id: int | None = None) -> ExperimentRecord: ...

    def set_status(
        self,
        experiment_id: int,
        status: str,
        result: dict[str, Any] | None = None,
        event: str | None = None,
        detail: Detail = None,
    ) -> None: ...

    def reopen(self, experiment_id: int, config: dict[str, Any], detail: Detail) -> None: ...

    def append_comparison(self, experiment_id: int, record: ComparisonRecord) -> None: ...

    def append_comparisons(
        self, experiment_id: int, records: Iterable[ComparisonRecord]
    ) -> None: ...

    def iter_comparisons(self, experiment_id: int) -> Iterator[ComparisonRecord]: ...

    def comparisons(self, experiment_id: int) -> list[ComparisonRecord]: ...

    def comparison_count(self, experiment_id: int) -> int: ...

    def add_event(self, experiment_id: int | None, kind: str, detail: Detail = None) -> None: ...

    def iter_events(
        self, experiment_id: int
    ) -> Iterator[tuple[str, str, dict[str, Any] | None]]: ...

    def events(self, experiment_id: int) -> list[tuple[str, str, dict[str, Any] | None]]: ...


@runtime_checkable
class EvaluationStore(Protocol):
    """Held-out evaluations and their comparisons."""

    def create_evaluation(
        self, experiment_id: int, winner: str, baseline: str, settings: dict[str, Any]
    ) -> int: ...

    def evaluations(self, experiment_id: int | None = None) -> list[EvaluationRecord]: ...

    def evaluation(self, evaluation_id: int) -> EvaluationRecord: ...

    def set_evaluation_status(
        self, evaluation_id: int, status: str, result: dict[str, Any] | None = None
    ) -> None: ...

    def append_evaluation_comparison(
        self, evaluation_id: int, record: ComparisonRecord
    ) -> None: ...

    def evaluation_comparisons(self, evaluation_id: int) -> list[ComparisonRecord]: ...


@runtime_checkable
class AnswerCache(Protocol):
    """The cache of generated answers."""

    def cached_generation(
        self, policy: str, task_id: str, replicate: int, request_key: str
    ) -> CachedGeneration | None: ...

    def answer_text(
        self, policy: str, task_id: str, replicate: int, request_key: str | None = None
    ) -> str | None: ...

    def cache_generation(
        self,
        policy: str,
        task_id: str,
        replicate: int,
        request_key: str,
        model: str,
        generation: CachedGeneration,
    ) -> None: ...

    def record_payment(self, payment: Payment) -> None: ...

    def payments(
        self, experiment_id: int, evaluation_id: int | None = None
    ) -> list[Payment] | None: ...

    def flush(self) -> None: ...

    def flush_stale(self) -> None: ...

    def generation_count(self) -> int: ...

    def answers(self) -> list[tuple[str, str, int, str]]: ...


@runtime_checkable
class JudgeStore(Protocol):
    """The people who judge and their salted token hashes."""

    def set_judge(self, name: str, salt: str, token_hash: str, replace: bool = False) -> None: ...

    def judge_credentials(self) -> list[tuple[str, str, str]]: ...


@runtime_checkable
class StoreProtocol(ExperimentStore, EvaluationStore, AnswerCache, JudgeStore, Protocol):
    """Everything a store offers; closing it commits what is pending and releases it."""

    def close(self) -> None: ...

    def migration_note(self) -> str | None: ...
