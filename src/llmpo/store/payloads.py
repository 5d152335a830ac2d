"""Typed forms of the JSON a store keeps (a comparison's ``raw``, an event's ``detail``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class EventDetail:
    """Base of the typed details of an event."""

    def to_json(self) -> dict[str, Any]:
        """The stored form: the fields that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def event_detail(kind: str, detail: EventDetail | dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored JSON of an event's detail."""
    if detail is None or isinstance(detail, dict):
        return detail
    return detail.to_json()
