"""A model built on first use, once, whichever thread asks first (the local backend and the
embedding judge load their ``transformers`` models this way, in worker threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoadedOnce(Generic[T]):
    """Holds what ``build`` returns, calling it on the first :meth:`get` only.

    A failed build raises and leaves nothing behind, so a later :meth:`get` tries again.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        """The value, built now if this is the first call."""
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value
