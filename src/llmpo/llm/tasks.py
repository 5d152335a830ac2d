"""Task sets for live LLM policies: JSONL or CSV rows with an ``id`` and template fields."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmpo.jsonl import read_objects, read_text


class TaskError(ValueError):
    """A task file that cannot be used; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class Task:
    """One task both policies of a comparison answer.

    Attributes
    ----------
    id : str
        Unique identifier.
    fields : dict
        Every column of the row (``prompt``, ``reference`` and any template field).
    """

    id: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str | None:
        """The reference answer, when the row has one."""
        value = self.fields.get("reference")
        return None if value is None or value == "" else str(value)


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        text = read_text(path, TaskError)
        try:
            return list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as error:
            raise TaskError(f"{path}: not a readable CSV file ({error}). Fix: correct it") from None
    return [row for _, row in read_objects(path, TaskError)]


def load_tasks(path: str | Path) -> tuple[Task, ...]:
    """Read a task set: JSONL (one object per line) or CSV (``.csv``, with a header).

    Raises
    ------
    TaskError
        For an unreadable or empty file, a row without ``id``, or a repeated ``id``.
    """
    path = Path(path)
    try:
        rows = _rows(path)
    except OSError as error:
        raise TaskError(
            f"{path}: cannot read the tasks ({error.strerror}). Fix: check the path"
        ) from None
    if not rows:
        raise TaskError(f"{path}: holds no task. Fix: add one row per task")
    tasks = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        if row.get("id") in (None, ""):
            raise TaskError(f"{path}: task #{number} has no 'id'. Fix: give every task an id")
        task_id = str(row["id"])
        if task_id in seen:
            raise TaskError(f"{path}: task id {task_id!r} repeats. Fix: make ids unique")
        seen.add(task_id)
        tasks.append(Task(task_id, dict(row)))
    return tuple(tasks)


def draw_task(tasks: tuple[Task, ...], seed: int, number: int) -> Task:
    """The task of comparison ``number``: uniform, a function of (seed, number) alone."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, number]))
    return tasks[int(rng.integers(len(tasks)))]
