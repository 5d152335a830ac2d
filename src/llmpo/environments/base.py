"""The environment interface: answer one comparison of two policies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


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
    """Something that compares two policies and returns the judged outcome.

    Environments draw their randomness from ``self.rng``.
    """

    #: Policy names, indexed as in the experiment.
    policies: tuple[str, ...]
    #: Source of the environment's randomness.
    rng: np.random.Generator

    def reseed(self, seed: Sequence[int]) -> None:
        """Draw the randomness of the next comparison from ``seed`` alone.

        The runner calls it before each comparison with (experiment seed, sequence number), so a
        resumed run draws exactly what the uninterrupted run would have drawn.
        """
        self.rng = np.random.default_rng(list(seed))

    @abstractmethod
    def compare(self, a: int, b: int) -> Comparison:
        """Run one comparison of policy ``a`` against policy ``b``."""
