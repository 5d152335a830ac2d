"""Limits on what llmpo accepts, in one place (documented in docs/security.md)."""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_ANSWER_CHARS", "MAX_NAME_LENGTH", "name_problem", "truncate_answer"]

#: The longest policy name (names appear in tables, reports, file names and the web app).
MAX_NAME_LENGTH = 200

#: Characters of an answer kept when it is stored; a longer one is cut and marked.
MAX_ANSWER_CHARS = 1_000_000

#: Appended to an answer cut at :data:`MAX_ANSWER_CHARS`.
TRUNCATION_MARKER = "\n[… answer truncated by llmpo at {limit:,} of {length:,} characters]"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a policy (None when it can).

    Refused: an empty name, more than :data:`MAX_NAME_LENGTH` characters, and control or
    format characters (NUL, newlines, tabs, bidirectional overrides such as U+202E), which
    would make a name print as another one or break a line of a report.
    """
    if not name.strip():
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name):,} characters long; at most {MAX_NAME_LENGTH} are allowed"
    for character in name:
        if unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp"):
            return (
                f"contains the invisible or control character U+{ord(character):04X}; names "
                "may hold letters, digits, spaces and punctuation"
            )
    return None


def truncate_answer(text: str) -> str:
    """``text`` cut to :data:`MAX_ANSWER_CHARS` characters with a marker, when longer."""
    if len(text) <= MAX_ANSWER_CHARS:
        return text
    return text[:MAX_ANSWER_CHARS] + TRUNCATION_MARKER.format(
        limit=MAX_ANSWER_CHARS, length=len(text)
    )
