"""Held-out evaluations of an experiment's certified policy against its baseline, in SQLite."""

from __future__ import annotations

from typing import Any

from llmpo.errors import StoreError
from llmpo.store.experiments import ComparisonTable, insert_event, update_status
from llmpo.store.records import EVALUATION_STATUSES, ComparisonRecord, EvaluationRecord
from llmpo.store.sqlite import Database, dumps, loads, now

EVALUATION_COMPARISONS = ComparisonTable("evaluation_comparisons", "evaluation_id", "evaluation")


class Evaluations(Database):
    """The held-out evaluations of a store (``llmpo evaluate``) and their comparisons."""

    def create_evaluation(
        self, experiment_id: int, winner: str, baseline: str, settings: dict[str, Any]
    ) -> int:
        """Record a new evaluation (status ``running``) of an experiment and return its id."""
        stamp = now()
        with self.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO evaluations (experiment_id, created_at, updated_at, status, winner, "
                "baseline, settings) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (experiment_id, stamp, stamp, winner, baseline, dumps(settings)),
            )
            evaluation_id = int(cursor.lastrowid or 0)
            insert_event(
                connection, experiment_id, "evaluation_created", {"evaluation": evaluation_id}
            )
        return evaluation_id

    def evaluations(self, experiment_id: int | None = None) -> list[EvaluationRecord]:
        """The evaluations of an experiment (of every experiment when None), oldest first."""
        where, parameters = (
            ("WHERE experiment_id = ?", (experiment_id,)) if experiment_id else ("", ())
        )
        rows = self.query(
            "SELECT id, experiment_id, created_at, updated_at, status, winner, baseline, "
            f"settings, result FROM evaluations {where} ORDER BY id",
            parameters,
        )
        return [
            EvaluationRecord(
                id=row[0],
                experiment_id=row[1],
                created_at=row[2],
                updated_at=row[3],
                status=row[4],
                winner=row[5],
                baseline=row[6],
                settings=loads(row[7]),
                result=loads(row[8]),
            )
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
        with self.transaction() as connection:
            update_status(connection, "evaluations", evaluation_id, status, result)

    def append_evaluation_comparison(self, evaluation_id: int, record: ComparisonRecord) -> None:
        """Commit one comparison of an evaluation; its sequence number must follow the last.

        Raises
        ------
        StoreError
            When the sequence number would leave a gap or repeat one, or the outcome cannot be
            stored; nothing is written.
        """
        EVALUATION_COMPARISONS.append(self, evaluation_id, (record,))

    def evaluation_comparisons(self, evaluation_id: int) -> list[ComparisonRecord]:
        """The evaluation's comparisons in sequence order."""
        return list(EVALUATION_COMPARISONS.iterate(self, evaluation_id))
