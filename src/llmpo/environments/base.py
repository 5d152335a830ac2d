"""The environment interface: answer one comparison of two policies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
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
    cost_usd : float, optional
        Money spent on this comparison (generations and judge), when known.
    input_tokens, output_tokens : int, optional
        Tokens consumed and produced, when known.
    """

    outcome: float
    task_id: str | None = None
    order: str | None = None
    raw: Any = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class Environment(ABC):
    """Something that compares two policies and returns the judged outcome."""

    #: Policy names, indexed as in the experiment.
    policies: tuple[str, ...]
    #: Task ids held out of the selection run (set by the runner's builder), or None.
    holdout_task_ids: tuple[str, ...] | None = None

    def reseed(self, seed: Sequence[int]) -> None:
        """Make the randomness of the next comparison a function of ``seed`` alone.

        The runner calls it before each comparison with (experiment seed, sequence number), so a
        resumed run draws exactly what the uninterrupted run would have drawn. Environments that
        draw random numbers override it.

        Raises
        ------
        NotImplementedError
            By default: this environment cannot replay its randomness.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be reseeded per comparison")

    @abstractmethod
    def compare(self, a: int, b: int) -> Comparison:
        """Run one comparison of policy ``a`` against policy ``b``."""
