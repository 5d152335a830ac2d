"""Policy spaces: the set of candidate policies and the statistical model of their comparisons."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from llmpo.models.base import PreferenceModel
from llmpo.models.unstructured import UnstructuredModel
from llmpo.stats.thresholds import Threshold
from llmpo.strategies.base import Strategy
from llmpo.strategies.unstructured import BalanceRule, TrackingRule


def policy_names(policies: int | Sequence[str]) -> tuple[str, ...]:
    """Names of the policies: given, or ``p0, p1, …`` for a count. Refuses < 2 or duplicates."""
    if isinstance(policies, int):
        names: tuple[str, ...] = tuple(f"p{i}" for i in range(policies))
    else:
        names = tuple(str(name) for name in policies)
    if len(names) < 2:
        raise ValueError(f"policies: need at least 2 policies, got {len(names)}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"policies: duplicate names {duplicates}; give each policy its own name")
    return names


class Space(ABC):
    """A policy space: names the policies and builds the model and the LLM-PO sampling rules."""

    policies: tuple[str, ...]

    @property
    def n_policies(self) -> int:
        """Number of policies K."""
        return len(self.policies)

    @abstractmethod
    def make_model(
        self, delta: float, threshold: Threshold, epsilon: float, assume_condorcet: bool
    ) -> PreferenceModel:
        """The statistics of this space for one experiment."""

    @abstractmethod
    def strategies(self) -> dict[str, type[Strategy]]:
        """The adaptive (LLM-PO) sampling rules of this space, by name; the first is the default."""


class Unstructured(Space):
    """No model of the policies: the optimal policy is the Condorcet winner (DESIGN §2).

    Parameters
    ----------
    policies : int or sequence of str
        The number of policies, or their names.
    """

    def __init__(self, policies: int | Sequence[str]) -> None:
        self.policies = policy_names(policies)

    def make_model(
        self, delta: float, threshold: Threshold, epsilon: float, assume_condorcet: bool
    ) -> UnstructuredModel:
        return UnstructuredModel(self.n_policies, delta, threshold, epsilon, assume_condorcet)

    def strategies(self) -> dict[str, type[Strategy]]:
        return {BalanceRule.name: BalanceRule, TrackingRule.name: TrackingRule}

    def __repr__(self) -> str:
        return f"Unstructured({list(self.policies)!r})"
