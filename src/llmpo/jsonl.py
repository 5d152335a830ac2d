"""JSON-lines files: one JSON object per line, blank lines skipped, errors that name the file,
the line and the fix (task sets, recorded judgments, pair counts)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def read_objects(
    path: Path, error: Callable[[str], Exception]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of ``path`` as (line number from 1, object).

    Raises
    ------
    OSError
        When the file cannot be opened (the caller words it).
    Exception
        ``error(message)`` for a line that is not a JSON object.
    """
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as decode_error:
                raise error(
                    f"{path}, line {number}: not valid JSON ({decode_error.msg}). Fix: write one "
                    "JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise error(
                    f"{path}, line {number}: expected a JSON object. Fix: write one JSON object "
                    "({...}) per line"
                )
            yield number, record
