"""Stored comparisons as rows for people and other tools: ``llmpo export``, the MLflow artifact
and the viewer's download share these rows and this CSV writer."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from llmpo.report import answer_texts
from llmpo.store import COMPARISON_COLUMNS, ComparisonRecord, ExperimentRecord, Store

#: The columns of an exported comparison (csv, parquet, the MLflow artifact), before any answers.
EXPORT_COLUMNS = ["experiment_id", "name_a", "name_b", *COMPARISON_COLUMNS, "seconds"]
#: The two extra columns of an export with the answers' texts.
ANSWER_COLUMNS = ["answer_a", "answer_b"]

#: First characters that make a spreadsheet read a cell as a formula (formula injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that would start a formula gets a
    leading apostrophe (the OWASP advice); numbers are left as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def iso(seconds: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC with milliseconds, like the store's own times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def export_row(
    record: ExperimentRecord, comparison: ComparisonRecord, answers_from: Store | None = None
) -> dict[str, Any]:
    """One exported comparison; with ``answers_from``, the two answers' texts as well."""
    started, finished = comparison.started_at, comparison.finished_at
    row = {
        "experiment_id": record.id,
        "name_a": record.policies[comparison.policy_a],
        "name_b": record.policies[comparison.policy_b],
        "seq": comparison.seq,
        "policy_a": comparison.policy_a,
        "policy_b": comparison.policy_b,
        "outcome": comparison.outcome,
        "task_id": comparison.task_id,
        "presentation_order": comparison.order,
        "raw": None if comparison.raw is None else json.dumps(comparison.raw),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "cost_usd": comparison.cost_usd,
        "input_tokens": comparison.input_tokens,
        "output_tokens": comparison.output_tokens,
        "seconds": None if started is None or finished is None else finished - started,
    }
    if answers_from is not None:
        texts = answer_texts(answers_from, tuple(record.policies), comparison)
        row["answer_a"], row["answer_b"] = texts
    return row


def csv_chunks(
    rows: Iterable[dict[str, Any]], columns: list[str], rows_per_chunk: int = 1000
) -> Iterator[str]:
    """``rows`` as CSV text with a header, every cell made inert (:func:`inert`), in chunks of
    ``rows_per_chunk`` rows: a large export streams without being held whole."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for number, row in enumerate(rows, start=1):
        writer.writerow({key: inert(value) for key, value in row.items()})
        if number % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def write_csv(rows: Iterable[dict[str, Any]], columns: list[str], handle: TextIO) -> None:
    """Write ``rows`` as CSV with a header, every cell made inert (:func:`inert`)."""
    for chunk in csv_chunks(rows, columns):
        handle.write(chunk)
