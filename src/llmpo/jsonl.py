"""JSON and JSON-lines files: one JSON object per line, blank lines skipped, errors that name the
file, the line and the fix (task sets, recorded judgments, pair counts, instances).

Reads are bounded: a line longer than :data:`MAX_LINE_BYTES` or a JSON file larger than
:data:`MAX_JSON_BYTES` is refused (``/dev/zero`` given as a path ends in a message, not in a
MemoryError), text must be UTF-8, and JSON that nests too deeply or holds a number of more
digits than Python converts is refused with the line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The longest line of a JSON-lines file (answers are capped at 1 MB each; a line holds a few).
MAX_LINE_BYTES = 16 * 2**20

#: The largest JSON file (an instance) read whole.
MAX_JSON_BYTES = 64 * 2**20


class _ConstantError(Exception):
    """NaN, Infinity or -Infinity in JSON (Python accepts them; JSON does not)."""


def _refuse_constant(name: str) -> Any:
    raise _ConstantError(name)


def parse_json(text: str | bytes, where: str, error: Callable[[str], Exception]) -> Any:
    """``json.loads(text)``, with every failure turned into ``error`` naming ``where``.

    Raises
    ------
    Exception
        ``error(message)`` for invalid JSON, NaN or Infinity, nesting too deep, or a number too
        long to convert.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _ConstantError as constant:
        raise error(
            f"{where}: {constant} is not a number llmpo accepts. Fix: write a finite number "
            "(or a string, for a reference answer)"
        ) from None
    except json.JSONDecodeError as decode_error:
        raise error(f"{where}: not valid JSON ({decode_error.msg}). Fix: correct it") from None
    except RecursionError:
        raise error(
            f"{where}: JSON nested too deeply to read. Fix: flatten it (a few levels suffice)"
        ) from None
    except ValueError:  # e.g. an integer of more than 4,300 digits
        raise error(
            f"{where}: a number with more digits than can be read (at most 4,300). Fix: "
            "write it with fewer digits"
        ) from None


def read_text(path: Path, error: Callable[[str], Exception], limit: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of ``path``, reading at most ``limit`` bytes.

    Raises
    ------
    OSError
        When the file cannot be opened (the caller words it).
    Exception
        ``error(message)`` for a file larger than ``limit`` or not UTF-8.
    """
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(
            f"{path}: larger than {limit // 2**20} MB, too large to read. Fix: check the path"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        line = data[: decode_error.start].count(b"\n") + 1
        raise error(
            f"{path}, line {line}: not UTF-8 text (byte {decode_error.start}). Fix: save the "
            "file as UTF-8"
        ) from None


def read_lines(path: Path, error: Callable[[str], Exception]) -> Iterator[tuple[int, str]]:
    """Each line of ``path`` (UTF-8) as (line number from 1, text), each at most
    :data:`MAX_LINE_BYTES`.

    Raises
    ------
    OSError
        When the file cannot be opened (the caller words it).
    Exception
        ``error(message)`` for a line too long or not UTF-8.
    """
    with path.open("rb") as handle:
        number = 0
        while line := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise error(
                    f"{path}, line {number}: longer than {MAX_LINE_BYTES // 2**20} MB. Fix: check "
                    "the path (a file of one JSON object per line is expected)"
                )
            try:
                yield number, line.decode("utf-8")
            except UnicodeDecodeError as decode_error:
                raise error(
                    f"{path}, line {number}: not UTF-8 text (byte {decode_error.start} of the "
                    "line). Fix: save the file as UTF-8"
                ) from None


def read_objects(
    path: Path, error: Callable[[str], Exception]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of ``path`` as (line number from 1, object).

    Raises
    ------
    OSError
        When the file cannot be opened (the caller words it).
    Exception
        ``error(message)`` for a line that is not a JSON object (or too long, or not UTF-8).
    """
    for number, line in read_lines(path, error):
        if not line.strip():
            continue
        record = parse_json(line, f"{path}, line {number}", error)
        if not isinstance(record, dict):
            raise error(
                f"{path}, line {number}: expected a JSON object. Fix: write one JSON object "
                "({...}) per line"
            )
        yield number, record
