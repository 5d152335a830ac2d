"""Synthetic environment: outcomes drawn from a known preference matrix, with optional ties."""

from __future__ import annotations

import numpy as np

from llmpo.environments.base import Comparison, Environment
from llmpo.harness.instances import UnstructuredInstance

# Uniform draws are generated this many at a time per pair (amortizes the generator call).
BLOCK = 256


class SyntheticEnvironment(Environment):
    """Draws outcomes of an :class:`~llmpo.harness.instances.UnstructuredInstance` with a seeded
    RNG.

    A comparison of (a, b) is a tie with probability ``tie_prob[a, b]``, a win of ``a`` with
    probability ``win_prob[a, b] − tie_prob[a, b]/2``, otherwise a win of ``b``; so the mean
    outcome is ``win_prob[a, b]``.

    Each pair has its own random stream, derived from the seed and the pair: the m-th comparison
    of a pair has the same outcome whatever was compared before. Two strategies run with the same
    seed therefore see common random numbers, which makes their paired difference far less noisy
    than independent runs.

    Parameters
    ----------
    instance : UnstructuredInstance
        The true win and tie probabilities.
    seed : int or SeedSequence, optional
        Source of randomness; the same seed gives the same outcomes.
    """

    def __init__(
        self, instance: UnstructuredInstance, seed: int | np.random.SeedSequence | None = None
    ) -> None:
        self.instance = instance
        self.policies = instance.policies
        self._seed = (
            seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        )
        self._win = (instance.win_prob - instance.tie_prob / 2).tolist()
        self._win_or_tie = (instance.win_prob + instance.tie_prob / 2).tolist()
        self._draws: dict[tuple[int, int], list[float]] = {}
        self._blocks: dict[tuple[int, int], int] = {}

    def compare(self, a: int, b: int) -> Comparison:
        return Comparison(outcome=self.outcome(a, b))

    def _next_draw(self, a: int, b: int) -> float:
        draws = self._draws.get((a, b))
        if not draws:
            block = self._blocks.get((a, b), 0)
            self._blocks[(a, b)] = block + 1
            stream = np.random.SeedSequence(
                self._seed.entropy, spawn_key=(*self._seed.spawn_key, a, b, block)
            )
            draws = self._draws[(a, b)] = np.random.default_rng(stream).random(BLOCK).tolist()
            draws.reverse()  # pop() from the end yields the draws in generation order
        return draws.pop()

    def outcome(self, a: int, b: int) -> float:
        """Just the outcome of a against b (the simulation hot path)."""
        if a > b:
            return 1.0 - self.outcome(b, a)
        draw = self._next_draw(a, b)
        if draw < self._win[a][b]:
            return 1.0
        if draw < self._win_or_tie[a][b]:
            return 0.5
        return 0.0
