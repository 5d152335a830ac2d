"""The sampling-rule interface, and the rules that work in every policy space.

A strategy reads a :class:`~llmpo.models.base.PreferenceModel` (whose effective counts include the
pending comparisons of the current batch) and returns one pair. To propose a batch the experiment
calls it repeatedly, marking each returned pair pending in between, so that a batch of B pairs is
the rule applied B times with pending pairs counted as sampled.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from llmpo.errors import ConfigError
from llmpo.models.base import Certificate, Pair, PreferenceModel


class Strategy(ABC):
    """A sampling rule."""

    #: Name used on the command line, in configs and in results.
    name: str

    @abstractmethod
    def select(self, model: PreferenceModel, rng: np.random.Generator) -> Pair:
        """Return the next pair (a, b) with a ≠ b to compare."""


class SelfStopping(Strategy):
    """A strategy with its own stopping rule, used by the experiment instead of the model's GLR.

    Classical procedures such as successive elimination or a knockout tournament decide when to
    stop from their own state (who is eliminated, which matches are decided), not from the
    model's GLR statistic. The :class:`~llmpo.experiment.Experiment` calls :meth:`is_certified`
    after every tell (so the strategy may update its state there) and reports
    :meth:`certificate`; everything else (counts, estimates, budgets) stays with the model.
    """

    @abstractmethod
    def is_certified(self, model: PreferenceModel) -> bool:
        """True when this strategy's own rule certifies its answer (called after every tell)."""

    @abstractmethod
    def certificate(self, model: PreferenceModel) -> Certificate:
        """The answer (as ``leader``) and, per rival, the statistic and threshold ruling it out."""


def pair_from_index(index: int, n_policies: int) -> Pair:
    """The index-th pair (a, b), a < b, in lexicographic order, without listing all pairs."""
    # Pairs with first element < a number a·K − a(a+1)/2; invert that quadratic, then correct.
    k = n_policies
    a = int((2 * k - 1 - math.sqrt((2 * k - 1) ** 2 - 8 * index)) // 2)
    while a > 0 and a * k - a * (a + 1) // 2 > index:
        a -= 1
    while (a + 1) * k - (a + 1) * (a + 2) // 2 <= index:
        a += 1
    offset = a * k - a * (a + 1) // 2
    return a, a + 1 + index - offset


class Uniform(Strategy):
    """Round-robin over all K(K−1)/2 pairs, whatever the outcomes (the classical baseline)."""

    name = "uniform"

    def __init__(self) -> None:
        self._next = 0

    def select(self, model: PreferenceModel, rng: np.random.Generator) -> Pair:
        n_pairs = model.n_policies * (model.n_policies - 1) // 2
        pair = pair_from_index(self._next % n_pairs, model.n_policies)
        self._next += 1
        return pair


class Oracle(Strategy):
    """D-tracking of known proportions (the true w*): argmax over pairs of t·w_ab − n_ab.

    The reference that an adaptive rule should approach: it knows the optimal allocation and only
    has to stop. No forced exploration is needed since the proportions are exact.

    Parameters
    ----------
    pairs : sequence of (int, int)
        The pairs with positive optimal share.
    shares : sequence of float
        Their shares (normalized here).
    """

    name = "oracle"

    def __init__(self, pairs: Sequence[Pair], shares: Sequence[float]) -> None:
        if len(pairs) != len(shares) or not pairs:
            raise ConfigError("oracle needs one share per pair and at least one pair")
        weights = np.asarray(shares, dtype=float)
        if np.any(weights < 0) or weights.sum() <= 0:
            raise ConfigError("oracle shares must be non-negative with a positive sum")
        self.pairs = [(int(a), int(b)) for a, b in pairs]
        self.shares = weights / weights.sum()

    def select(self, model: PreferenceModel, rng: np.random.Generator) -> Pair:
        t = model.n_told + model.n_pending + 1
        counts = np.array([model.effective_count(a, b) for a, b in self.pairs])
        return self.pairs[int(np.argmax(t * self.shares - counts))]
