"""Task sets for live LLM policies: JSONL or CSV rows with an ``id`` and template fields.

Rows may also follow Inspect's or OpenAI evals' conventions; they are mapped on load
(:func:`load_tasks`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmpo.errors import DataError
from llmpo.jsonl import read_objects, read_text


class TaskError(DataError):
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
        """The reference answer (the first, when the row lists several), when the row has one."""
        return next(iter(self.references), None)

    @property
    def references(self) -> tuple[str, ...]:
        """Every acceptable reference answer: ``reference`` may be one value or a list."""
        value = self.fields.get("reference")
        values = value if isinstance(value, list) else [value]
        return tuple(str(v) for v in values if v is not None and v != "")

    @property
    def context(self) -> tuple[tuple[str, str], ...]:
        """The chat turns before the prompt, when the row's ``input`` is a message list."""
        messages = self.fields.get("input")
        if not isinstance(messages, list):
            return ()
        return tuple((m["role"], m["content"]) for m in messages[:-1])


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        text = read_text(path, TaskError)
        try:
            return list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as error:
            raise TaskError(f"{path}: not a readable CSV file ({error}). Fix: correct it") from None
    return [row for _, row in read_objects(path, TaskError)]


#: Chat roles a message list of ``input`` may use.
_ROLES = ("system", "user", "assistant")


def _conventional(row: dict[str, Any], where: str, number: int) -> dict[str, Any]:
    """The row with Inspect's and OpenAI evals' fields mapped to ``prompt``/``reference``/``id``."""
    row = dict(row)
    given = row.get("input")
    if "prompt" not in row and given is not None:
        if isinstance(given, list):
            bad = next(
                (
                    m
                    for m in given
                    if not isinstance(m, dict)
                    or m.get("role") not in _ROLES
                    or not isinstance(m.get("content"), str)
                ),
                None,
            )
            if bad is not None or not given or given[-1]["role"] != "user":
                raise TaskError(
                    f"{where}: task #{number}: 'input' must be a string or a list of "
                    "{role: system|user|assistant, content: text} messages ending with a user "
                    "message. Fix: correct the row"
                )
            row["prompt"] = given[-1]["content"]
        else:
            row["prompt"] = str(given)
        if row.get("id") in (None, ""):
            row["id"] = str(number)  # as Inspect numbers samples without an id
    for name in ("target", "ideal"):
        if "reference" not in row and row.get(name) is not None:
            row["reference"] = row[name]
    return row


def load_tasks(path: str | Path) -> tuple[Task, ...]:
    """Read a task set: JSONL (one object per line) or CSV (``.csv``, with a header).

    Besides llmpo's own ``prompt`` and ``reference``, rows may follow Inspect's convention
    (``input``, ``target``, optional ``id``) or OpenAI evals' (``input`` as a list of chat
    messages, ``ideal``). ``input`` becomes ``prompt`` (for a message list, the content of its
    last message, which must be the user's; the turns before it are sent before the prompt, see
    :attr:`Task.context`); ``target`` or ``ideal`` becomes ``reference`` (a list means any of its
    values is right); a row with ``input`` and no ``id`` is numbered by its position, from 1.
    Fields a row already has are never replaced.

    Raises
    ------
    TaskError
        For an unreadable or empty file, a row without ``id``, a repeated ``id``, or an
        ``input`` message list that is malformed.
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
        row = _conventional(row, str(path), number)
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
