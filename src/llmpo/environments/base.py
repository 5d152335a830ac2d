"""The environment interface: answer one comparison of two policies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Comparison:
    """One judged comparison of policy ``a`` against policy ``b``.

    Attributes
    ----------
    outcome : float
        1 if a won, 0.5 for a tie, 0 if b won.
    task_id : str, optional
        The task both policies answered.
    order : str, optional
        Presentation order shown to the judge (``"ab"`` or ``"ba"``).
    raw : Any, optional
        The judge's raw verdict, as recorded.
    """

    outcome: float
    task_id: str | None = None
    order: str | None = None
    raw: Any = None


class Environment(ABC):
    """Something that compares two policies and returns the judged outcome."""

    #: Policy names, indexed as in the experiment.
    policies: tuple[str, ...]

    @abstractmethod
    def compare(self, a: int, b: int) -> Comparison:
        """Run one comparison of policy ``a`` against policy ``b``."""
