"""Synthetic environment of a structured instance: Bradley–Terry outcomes from features."""

from __future__ import annotations

import math

import numpy as np

from llmpo.environments.synthetic import SyntheticEnvironment
from llmpo.harness.instances import StructuredInstance


class StructuredEnvironment(SyntheticEnvironment):
    """Draws a wins b with probability σ(θᵀ(x_a − x_b)) (no ties), without any K×K table.

    The random streams are those of :class:`~llmpo.environments.synthetic.SyntheticEnvironment`
    (one per pair, derived from the seed), so strategies run with one seed share common random
    numbers.

    Parameters
    ----------
    instance : StructuredInstance
        Features and true parameter.
    seed : int or SeedSequence, optional
        Source of randomness.
    """

    def __init__(
        self, instance: StructuredInstance, seed: int | np.random.SeedSequence | None = None
    ) -> None:
        self.instance = instance  # type: ignore[assignment]
        self.policies = instance.policies
        if not isinstance(seed, np.random.SeedSequence):
            seed = np.random.SeedSequence(seed)
        self._seed = seed
        self._draws = {}
        self._blocks = {}
        self._utilities = instance.utilities.tolist()

    def outcome(self, a: int, b: int) -> float:
        """1 if a wins, 0 otherwise."""
        if a > b:
            return 1.0 - self.outcome(b, a)
        win_prob = 1.0 / (1.0 + math.exp(self._utilities[b] - self._utilities[a]))
        return 1.0 if self._next_draw(a, b) < win_prob else 0.0
