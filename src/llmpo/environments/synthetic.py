"""Synthetic environment: outcomes drawn from a known preference matrix, with optional ties."""

from __future__ import annotations

import numpy as np

from llmpo.environments.base import Comparison, Environment
from llmpo.instances import UnstructuredInstance


class SyntheticEnvironment(Environment):
    """Draws outcomes of an :class:`~llmpo.instances.UnstructuredInstance` with a seeded RNG.

    A comparison of (a, b) is a tie with probability ``tie_prob[a, b]``, a win of ``a`` with
    probability ``win_prob[a, b] − tie_prob[a, b]/2``, otherwise a win of ``b``; so the mean
    outcome is ``win_prob[a, b]``.

    Parameters
    ----------
    instance : UnstructuredInstance
        The true win and tie probabilities.
    seed : int or numpy Generator, optional
        Source of randomness; the same seed gives the same outcomes.
    """

    def __init__(
        self, instance: UnstructuredInstance, seed: int | np.random.Generator | None = None
    ) -> None:
        self.instance = instance
        self.policies = instance.policies
        self.rng = np.random.default_rng(seed)
        self._win = (instance.win_prob - instance.tie_prob / 2).tolist()
        self._win_or_tie = (instance.win_prob + instance.tie_prob / 2).tolist()

    def compare(self, a: int, b: int) -> Comparison:
        return Comparison(outcome=self.outcome(a, b))

    def outcome(self, a: int, b: int) -> float:
        """Just the outcome (the simulation hot path)."""
        draw = self.rng.random()
        if draw < self._win[a][b]:
            return 1.0
        if draw < self._win_or_tie[a][b]:
            return 0.5
        return 0.0
