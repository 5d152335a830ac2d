"""The interface between an experiment and the statistics of one policy space.

A :class:`PreferenceModel` holds the sufficient statistics of the comparisons told so far (and of
the comparisons asked but not yet told: *pending*), names the current leader and decides whether
the stopping rule certifies it. Sampling rules (:mod:`llmpo.strategies`) read it; the
:class:`~llmpo.experiment.Experiment` drives it. Nothing here knows of LLMs, HTTP or storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Pair = tuple[int, int]


@dataclass(frozen=True)
class Certificate:
    """The stopping rule's evidence for the current leader, one entry per rival.

    Attributes
    ----------
    leader : int
        The policy being certified.
    rivals : ndarray of int
        The other policies (or, for class B, the rivals ruled out).
    statistics : ndarray
        GLR statistic per rival: evidence that the leader beats (or the rival is not) the winner.
    thresholds : ndarray
        Stopping threshold per rival; the leader is certified when every statistic exceeds its
        threshold.
    """

    leader: int
    rivals: NDArray[np.intp]
    statistics: NDArray[np.float64]
    thresholds: NDArray[np.float64]

    @property
    def margins(self) -> NDArray[np.float64]:
        """statistic − threshold per rival (positive means that rival is ruled out)."""
        return self.statistics - self.thresholds

    @property
    def certified(self) -> bool:
        """True when every rival is ruled out."""
        return bool(np.all(self.statistics > self.thresholds))


class PreferenceModel(ABC):
    """Sufficient statistics, leader and stopping rule of one policy space."""

    #: Number of policies K.
    n_policies: int
    #: Comparisons told so far (t).
    n_told: int
    #: Comparisons asked and not yet told.
    n_pending: int

    @abstractmethod
    def tell(self, a: int, b: int, outcome: float) -> None:
        """Record one validated outcome of ``a`` vs ``b`` (1: a wins, ½: tie, 0: b wins)."""

    @abstractmethod
    def mark_pending(self, a: int, b: int) -> None:
        """Count a comparison of (a, b) that has been asked and not yet told."""

    @abstractmethod
    def unmark_pending(self, a: int, b: int) -> bool:
        """Forget one pending comparison of (a, b); return False when there was none."""

    @abstractmethod
    def effective_count(self, a: int, b: int) -> float:
        """Comparisons of the pair told plus pending."""

    @property
    @abstractmethod
    def leader(self) -> int:
        """The empirical best policy î(t)."""

    @abstractmethod
    def is_certified(self) -> bool:
        """True when the stopping rule certifies the leader (cheap: called after every tell)."""

    @abstractmethod
    def certificate(self) -> Certificate:
        """Per-rival statistic and threshold for the current leader."""

    @abstractmethod
    def target_proportions(self) -> list[tuple[int, int, float]]:
        """Current plug-in optimal proportions as ``(a, b, share)`` with a < b and share > 0."""

    @abstractmethod
    def win_prob_hat(self) -> NDArray[np.float64]:
        """Estimated K×K matrix of P(i ≻ j)."""

    @abstractmethod
    def counts(self) -> NDArray[np.float64]:
        """K×K symmetric matrix of comparisons told per pair."""

    def compared_pairs(self) -> list[tuple[int, int, int, float]]:
        """The pairs compared so far as ``(a, b, comparisons, P̂(a ≻ b))`` with a < b.

        Spaces whose K×K matrices are too large to build (the structured space) override this.
        """
        counts, win_prob = self.counts(), self.win_prob_hat()
        rows, cols = np.nonzero(np.triu(counts, 1))
        return [
            (int(a), int(b), int(counts[a, b]), float(win_prob[a, b]))
            for a, b in zip(rows, cols, strict=True)
        ]
